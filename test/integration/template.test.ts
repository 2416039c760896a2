/**
 * VM templates against the real thing: QEMU (TCG here), the Debian guest kernel, hull-agent, crun.
 * One template is made and cloned by most tests (a TCG boot costs seconds); a second set of roots
 * serves the concurrency test. Clones are started with the vmm driver and talked to with the agent
 * client directly (Sandbox does not use templates yet): SetupSandbox, then containers made from a
 * busybox rootfs bind-mounted into the clone's 9p share, as Sandbox.createContainer does.
 *
 * Every QEMU is shut down by its handle and checked gone by pid; mounts, network namespaces, RAM
 * files (on the disk, under /var/lib/hull-test) and temp dirs are removed and checked. Times and memory are diagnostics, never
 * asserted.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readSync, readdirSync, readFileSync, rmSync, statSync, statfsSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it, type TestContext } from 'node:test';
import { errorCode } from '../../src/errors/index.js';
import { currentGuestImage, type GuestImage } from '../../src/guest/index.js';
import { OutputStream } from '../../src/proto/gen/agent_pb.js';
import { connectAgent, waitForAgent, type AgentClient } from '../../src/sandbox/agent-client.js';
import { bindMount, unmount } from '../../src/sandbox/mounts.js';
import { guestContainerSpec } from '../../src/sandbox/spec.js';
import { pumpOutput } from '../../src/sandbox/stdio.js';
import type { TtrpcClient } from '../../src/ttrpc/index.js';
import { estimateTemplateBytes } from '../../src/factory/template-limits.js';
import { cloneSpec, createTemplate, listTemplates, openTemplate, removeTemplate, templateInputs, templateKey, type VmTemplate } from '../../src/factory/index.js';
import { listTemplates as listAll } from '../../src/factory/template-store.js';
import { QemuDriver, TEMPLATE_MAC, type VmHandle, type VmNetSpec, type VmSpec } from '../../src/vmm/index.js';
import { defaultSpec, makeBusyboxBundle, type TestBundle } from '../helpers/bundle.js';
import { mountsUnder, processAlive } from '../helpers/leaks.js';

const image = await currentGuestImage();
const QEMU_MISSING = spawnSync('qemu-system-x86_64', ['--version']).status === 0 ? false : 'qemu-system-x86_64 is not installed';
const SKIP = QEMU_MISSING || (image === undefined ? 'no guest image: run `hull image build` first' : false);
/** BOOT_MS bounds a template boot and every wait on a guest: TCG on a busy host is slow. */
const BOOT_MS = 120_000;
const VCPUS = 1;
const MEMORY_MIB = 512;
const TMPFS_MAGIC = 0x01021994;
/** RAM_BASE holds the tests' template RAM roots: on the disk, as template_ram_dir must be (never tmpfs). */
const RAM_BASE = '/var/lib/hull-test';
mkdirSync(RAM_BASE, { recursive: true, mode: 0o700 });

let root: string;
let ramRoot: string;
let bundle: TestBundle;
let count = 0;

before(() => {
  root = mkdtempSync(join(tmpdir(), 'hull-tpl-it-'));
  ramRoot = mkdtempSync(join(RAM_BASE, 'tpl-it-'));
  bundle = makeBusyboxBundle();
});

after(() => {
  bundle?.remove();
  assert.deepEqual(mountsUnder(root), [], 'mounts left under the test root');
  rmSync(root, { recursive: true, force: true });
  rmSync(ramRoot, { recursive: true, force: true });
  assert.deepEqual(qemuPidsWithNamePrefix(`hull-tplit-${process.pid}-`), [], 'a clone of this test survived');
});

function request(templatesRoot: string, ram: string, img: GuestImage, change: { vcpus?: number; memoryMiB?: number } = {}) {
  return { driver: new QemuDriver(), templatesRoot, ramRoot: ram, image: img, vcpus: change.vcpus ?? VCPUS, memoryMiB: change.memoryMiB ?? MEMORY_MIB, bootTimeoutMs: BOOT_MS };
}

/** mustCreate is createTemplate for a template that fits the store's bounds (the defaults, here). */
async function mustCreate(req: Parameters<typeof createTemplate>[0]): Promise<VmTemplate & { created: boolean }> {
  const made = await createTemplate(req);
  assert.ok(made !== undefined, 'createTemplate made no template: it did not fit the bounds');
  return made;
}

/** qemuPidsWithNamePrefix lists processes with an argument starting with `prefix` (our -name hull-<id>). */
function qemuPidsWithNamePrefix(prefix: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').some((arg) => arg.startsWith(prefix));
      } catch {
        return false;
      }
    })
    .map(Number);
}

function sha256File(path: string): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buffer = Buffer.alloc(4 * 1024 * 1024);
    for (let n; (n = readSync(fd, buffer)) > 0; ) hash.update(buffer.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

function pssKiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').split('\n').find((l) => l.startsWith('Pss:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? NaN);
}

/** Guest is one running VM with a connected agent, shut down and checked gone after the test. */
interface Guest {
  vm: VmHandle;
  agent: AgentClient;
  client: TtrpcClient;
  stateDir: string;
  sharedDir: string;
  /** readyMs: from before start() to the agent's Check answered. */
  readyMs: number;
}

/** startGuest starts a clone of `template` (or a cold boot when `template` is undefined) and waits for its agent. */
async function startGuest(t: TestContext, template: VmTemplate | undefined, net?: VmNetSpec): Promise<Guest> {
  const id = `tplit-${process.pid}-${count++}`;
  const stateDir = join(root, 'vms', id);
  const sharedDir = join(stateDir, 'shared');
  await mkdir(sharedDir, { recursive: true, mode: 0o700 });
  const spec: VmSpec = template
    ? cloneSpec(template, { id, stateDir, sharedDir, net, startTimeoutMs: BOOT_MS })
    : { id, stateDir, sharedDir, vcpus: VCPUS, memoryMiB: MEMORY_MIB, kernel: image!.kernel, initrd: image!.initrd, rootDisk: image!.rootDisk, startTimeoutMs: BOOT_MS };
  const started = Date.now();
  const vm = await new QemuDriver().start(spec);
  let client: TtrpcClient | undefined;
  t.after(async () => {
    client?.close();
    await vm.shutdown({ deadlineMs: 2000 });
    assert.ok(!processAlive(vm.pid), `QEMU pid ${vm.pid} survived`);
    assert.deepEqual(mountsUnder(stateDir), [], 'mounts left in the clone state dir');
    rmSync(stateDir, { recursive: true, force: true });
  });
  const connection = await connectAgent(vm.agentSocketPath);
  client = connection.client;
  await waitForAgent(connection.agent, Date.now() + BOOT_MS, vm.agentPortOpened, vm.exited).catch((e: Error) => {
    throw new Error(`${e.message}\nconsole:\n${vm.consoleTail(4096)}`);
  });
  return { vm, agent: connection.agent, client, stateDir, sharedDir, readyMs: Date.now() - started };
}

async function setup(guest: Guest, entropy: Uint8Array = randomBytes(64)): Promise<number> {
  const started = Date.now();
  await guest.agent
    .setupSandbox({ sandboxId: guest.vm.id, hostname: 'clone', entropy, timeUnixNano: BigInt(Date.now()) * 1_000_000n, shareTag: 'hull', resolvConf: '' }, { timeoutMs: 60_000 })
    .catch((e: Error) => {
      throw new Error(`${e.message}\nconsole:\n${guest.vm.consoleTail(4096)}`);
    });
  return Date.now() - started;
}

/** run runs `script` with busybox sh in a new container of `guest` and returns its output. */
async function run(guest: Guest, script: string): Promise<{ exitStatus: number; stdout: string; stderr: string }> {
  const cid = `c${count++}`;
  const rootfs = join(guest.sharedDir, cid, 'rootfs');
  await mkdir(rootfs, { recursive: true });
  await bindMount(bundle.rootfs, rootfs);
  try {
    const spec = guestContainerSpec(defaultSpec(['sh', '-c', script]) as Parameters<typeof guestContainerSpec>[0]);
    const call = { timeoutMs: 60_000 };
    await guest.agent.createContainer({ containerId: cid, specJson: Buffer.from(JSON.stringify(spec)), rootfs: `${cid}/rootfs`, stdio: { stdout: true, stderr: true } }, call);
    try {
      await guest.agent.startContainer({ containerId: cid }, call);
      const stdout = collect();
      const stderr = collect();
      const [exit] = await Promise.all([
        guest.agent.waitProcess({ containerId: cid, execId: '' }, call),
        pumpOutput(guest.agent, cid, '', OutputStream.STDOUT, stdout.stream),
        pumpOutput(guest.agent, cid, '', OutputStream.STDERR, stderr.stream),
      ]);
      return { exitStatus: exit.exitStatus, stdout: stdout.text(), stderr: stderr.text() };
    } finally {
      await guest.agent.removeContainer({ containerId: cid }, call);
    }
  } finally {
    await unmount(rootfs);
    rmSync(join(guest.sharedDir, cid), { recursive: true, force: true });
  }
}

function collect(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

describe('VM templates', { skip: SKIP }, () => {
  let templatesRoot: string;
  let template: VmTemplate;

  before(async () => {
    templatesRoot = join(root, 'templates');
    const started = Date.now();
    const made = await mustCreate(request(templatesRoot, ramRoot, image!));
    assert.equal(made.created, true);
    template = made;
    console.log(`# template ${made.key}: made in ${Date.now() - started} ms (boot to Check ${made.manifest.bootMs} ms, save ${made.manifest.saveMs} ms, state ${made.manifest.stateBytes} bytes)`);
  });

  it('creates a template: manifest, state and RAM on disk, no QEMU and no work files left', async () => {
    assert.match(template.key, /^[0-9a-f]{20}$/);
    assert.equal(template.dir, join(templatesRoot, template.key));
    assert.deepEqual(readdirSync(templatesRoot), [template.key], 'only the published template (no .new-* work dir)');
    assert.deepEqual(readdirSync(template.dir).sort(), ['boot-console.log', 'last-used', 'manifest.json', 'state']);
    assert.ok(template.ramFile.startsWith(join(ramRoot, template.key) + '/'), template.ramFile);
    const ram = statSync(template.ramFile);
    assert.equal(ram.size, MEMORY_MIB * 1024 * 1024);
    assert.equal(ram.mode & 0o777, 0o400, 'the RAM file is read-only once saved');
    assert.notEqual(statfsSync(template.ramFile).type, TMPFS_MAGIC, 'the RAM file is not on tmpfs');
    const manifest = JSON.parse(readFileSync(join(template.dir, 'manifest.json'), 'utf8'));
    assert.equal(manifest.key, template.key);
    assert.equal(manifest.inputs.imageId, image!.id);
    assert.equal(manifest.guestMac, TEMPLATE_MAC);
    assert.equal(manifest.bootId, readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), 'the template records the boot it was made in');
    assert.ok(manifest.stateBytes > 0 && manifest.stateBytes < 16 * 1024 * 1024, `state of ${manifest.stateBytes} bytes: RAM must not be in it`);
    assert.deepEqual(qemuPidsWithNamePrefix(`hull-template-${template.key}`), [], 'the template QEMU quit');

    const again = await mustCreate(request(templatesRoot, ramRoot, image!));
    assert.equal(again.created, false, 'an existing template is reused, not remade');
    assert.equal(again.ramFile, template.ramFile);
    const listed = await listTemplates({ templatesRoot, ramRoot });
    assert.deepEqual(listed.map((l) => [l.key, l.problem]), [[template.key, undefined]]);
    assert.ok(listed[0]!.ramAllocatedBytes > 0);
  });

  it('keys templates by their inputs: a changed image id, size or kernel argument is a different key', async () => {
    const base = request(templatesRoot, ramRoot, image!);
    const key = templateKey(await templateInputs(base));
    assert.equal(key, template.key);
    assert.equal(templateKey(await templateInputs({ ...base })), key, 'the same request, the same key');
    const others = [
      templateKey(await templateInputs({ ...base, image: { ...image!, id: '0123456789abcdef0123' } })),
      templateKey(await templateInputs({ ...base, vcpus: 2 })),
      templateKey(await templateInputs({ ...base, memoryMiB: 1024 })),
      templateKey(await templateInputs({ ...base, kernelArgs: ['hull.debug=1'] })),
    ];
    for (const other of others) assert.notEqual(other, key);
    assert.equal(new Set(others).size, others.length);
    assert.equal(await openTemplate(others[0]!, { templatesRoot, ramRoot }), undefined);
  });

  it('a clone answers the agent, runs containers and keeps the template RAM file untouched', async (t) => {
    const ramBefore = sha256File(template.ramFile);
    const guest = await startGuest(t, template);
    t.diagnostic(`clone: spawn to agent Check answered in ${guest.readyMs} ms`);
    t.diagnostic(`clone: SetupSandbox took ${await setup(guest)} ms`);
    const result = await run(guest, 'echo hello from a clone; uname -r; cat /sys/class/net/eth0/address');
    assert.equal(result.exitStatus, 0, result.stderr);
    const [hello, kernel, mac] = result.stdout.trim().split('\n');
    assert.equal(hello, 'hello from a clone');
    assert.equal(kernel, image!.kernelRelease);
    assert.equal(mac, TEMPLATE_MAC, 'the NIC keeps the MAC of the saved state');
    // The clone's own files are where a cold boot has them; console capture is attached.
    assert.ok(existsSync(join(guest.stateDir, 'console.log')));
    assert.ok(!existsSync(join(guest.stateDir, 'ram')), 'a clone has no RAM file of its own');
    await new Promise((resolve) => setTimeout(resolve, 2000));
    t.diagnostic(`clone: idle PSS ${Math.round(pssKiB(guest.vm.pid) / 1024)} MiB (QEMU ${guest.vm.pid})`);
    assert.equal(sha256File(template.ramFile), ramBefore, 'the template RAM file changed under a clone');
  });

  it('two clones never share random output: the kernel RNG and the agent\'s own are reseeded from the host entropy', async (t) => {
    const [a, b] = await Promise.all([startGuest(t, template), startGuest(t, template)]);
    t.diagnostic(`clones ready in ${a.readyMs} ms and ${b.readyMs} ms (started together)`);
    const agentBytes = async (guest: Guest): Promise<string> => {
      const { data } = await guest.agent.randomBytes({ size: 32 }, { timeoutMs: 10_000 });
      assert.equal(data.length, 32);
      return Buffer.from(data).toString('hex');
    };
    // Before SetupSandbox both agents are copies of the template's: the reason for the reseed.
    const before = await Promise.all([agentBytes(a), agentBytes(b)]);
    t.diagnostic(`agent bytes before SetupSandbox: ${before[0] === before[1] ? 'equal in both clones' : 'already different'}`);
    const readings: string[] = [];
    const agentReadings: string[] = [];
    for (const guest of [a, b]) {
      await setup(guest);
      agentReadings.push(await agentBytes(guest));
      const result = await run(guest, 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; cat /sys/power/suspend_stats/success /sys/power/pm_test');
      assert.equal(result.exitStatus, 0, result.stderr);
      const [random, suspends, pmTest] = result.stdout.trim().split('\n');
      assert.match(random!, /^[0-9a-f]{64}$/);
      assert.ok(Number(suspends) >= 1, 'SetupSandbox forced a reseed (a suspend at the freezer test level)');
      assert.match(pmTest!, /\[none\]/, 'pm_test is back to none');
      readings.push(random!);
    }
    assert.notEqual(readings[0], readings[1]);
    assert.notEqual(agentReadings[0], agentReadings[1], "the agents' own generators give the same bytes in two clones");
    await assert.rejects(a.agent.randomBytes({ size: 65 }, { timeoutMs: 10_000 }), /at most 64/);
    t.diagnostic(`PSS of two idle clones: ${pssKiB(a.vm.pid) >> 10} MiB, ${pssKiB(b.vm.pid) >> 10} MiB`);
  });

  it('a clone restores onto a tap in a pod netns (its template had no network) and passes traffic', { skip: spawnSync('busybox', ['true']).status === 0 ? false : 'busybox is not installed' }, async (t) => {
    const ns = `hulltpl${process.pid}`;
    const sh = (...args: string[]) => execFileSync(args[0]!, args.slice(1), { encoding: 'utf8' });
    sh('ip', 'netns', 'add', ns);
    t.after(() => {
      sh('ip', 'netns', 'del', ns);
    });
    sh('ip', '-n', ns, 'tuntap', 'add', 'dev', 'tap0', 'mode', 'tap');
    sh('ip', '-n', ns, 'link', 'set', 'tap0', 'up');
    sh('ip', '-n', ns, 'addr', 'add', '10.231.7.1/24', 'dev', 'tap0');
    const guest = await startGuest(t, template, { tapName: 'tap0', mac: '0a:58:0a:e7:07:02', netns: `/run/netns/${ns}` });
    await setup(guest);
    // The NIC carries the template's MAC, whatever the clone's command line asked for.
    await guest.agent.setupNetwork({ interfaces: [{ mac: TEMPLATE_MAC, mtu: 1500, addresses: ['10.231.7.2/24'] }], routes: [], neighbors: [] }, { timeoutMs: 60_000 });
    const ping = sh('ip', 'netns', 'exec', ns, 'busybox', 'ping', '-c', '2', '-W', '5', '10.231.7.2');
    assert.match(ping, /2 packets received/);
    assert.match(sh('ip', '-n', ns, 'neigh', 'show', '10.231.7.2'), new RegExp(TEMPLATE_MAC));
  });

  it('a clone that does not fit its template fails before QEMU runs; a damaged state fails cleanly', async (t) => {
    const stateDir = await mkdtemp(join(root, 'misfit-'));
    await mkdir(join(stateDir, 'shared'));
    const spec = cloneSpec(template, { id: `tplit-${process.pid}-misfit`, stateDir, sharedDir: join(stateDir, 'shared') });
    await assert.rejects(new QemuDriver().start({ ...spec, memoryMiB: MEMORY_MIB * 2 }), (e: unknown) => errorCode(e) === 'failed_precondition');
    assert.deepEqual(readdirSync(stateDir), ['shared']);

    // A state file cut short: QEMU rejects it, start() says so, and nothing is left running.
    const damaged = await mkdtemp(join(root, 'damaged-'));
    await writeFile(join(damaged, 'state'), readFileSync(join(template.dir, 'state')).subarray(0, 4096));
    await assert.rejects(new QemuDriver().start({ ...spec, template: { stateFile: join(damaged, 'state'), ramFile: template.ramFile } }), (e: Error) => {
      // QEMU exits when the state does not load; its own words are in the error.
      assert.match(e.message, /restoring the template state|load of migration failed/);
      return true;
    });
    assert.deepEqual(qemuPidsWithNamePrefix(`hull-tplit-${process.pid}-misfit`), []);
    assert.deepEqual(readdirSync(stateDir).filter((f) => !f.startsWith('console.log')), ['shared']);
    t.diagnostic('misfit and damaged clones refused');
  });

  it('removeTemplate unpublishes the template and removes its RAM file', async () => {
    assert.equal(await removeTemplate(template.key, { templatesRoot, ramRoot }), true);
    assert.ok(!existsSync(template.ramFile), 'RAM file removed');
    assert.ok(!existsSync(join(ramRoot, template.key)), 'RAM directory removed');
    assert.ok(!existsSync(template.dir), 'template directory removed');
    assert.deepEqual(readdirSync(templatesRoot), [], 'no trash left');
    assert.deepEqual(await listTemplates({ templatesRoot, ramRoot }), []);
    assert.equal(await openTemplate(template.key, { templatesRoot, ramRoot }), undefined);
    assert.equal(await removeTemplate(template.key, { templatesRoot, ramRoot }), false);
  });
});

describe('VM templates made concurrently', { skip: SKIP }, () => {
  it('two creators of one key publish one template and leave nothing else; a lost RAM file is reported', async () => {
    const templatesRoot = join(root, 'templates-race');
    const ram = mkdtempSync(join(RAM_BASE, 'tpl-it-race-'));
    try {
      const req = request(templatesRoot, ram, image!);
      const [one, two] = await Promise.all([mustCreate(req), mustCreate(req)]);
      assert.equal(one.key, two.key);
      assert.equal(one.ramFile, two.ramFile, 'both use the published RAM file');
      assert.equal([one, two].filter((x) => x.created).length, 1, 'exactly one of them published');
      assert.deepEqual(readdirSync(templatesRoot), [one.key]);
      assert.deepEqual(readdirSync(join(ram, one.key)), [one.ramFile.split('/').pop()], 'the losing RAM file is gone');

      // A template of another boot of the host is not used: its RAM file was never synced.
      const manifestFile = join(templatesRoot, one.key, 'manifest.json');
      const manifest = readFileSync(manifestFile, 'utf8');
      writeFileSync(manifestFile, manifest.replace(/"bootId": "[^"]*"/, '"bootId": "another-boot"'));
      assert.match((await listTemplates({ templatesRoot, ramRoot: ram }))[0]!.problem ?? '', /made before the host last booted/);
      writeFileSync(manifestFile, manifest);
      assert.ok(await openTemplate(one.key, { templatesRoot, ramRoot: ram }));
      // The RAM file is gone, the manifest is not.
      rmSync(one.ramFile);
      const [listed] = await listTemplates({ templatesRoot, ramRoot: ram });
      assert.match(listed!.problem ?? '', /RAM file .* is missing/);
      assert.equal(await openTemplate(one.key, { templatesRoot, ramRoot: ram }), undefined);
      assert.equal(await removeTemplate(one.key, { templatesRoot, ramRoot: ram }), true);
      assert.deepEqual(readdirSync(templatesRoot), []);
      assert.deepEqual(readdirSync(ram), []);
    } finally {
      rmSync(ram, { recursive: true, force: true });
    }
  });
});

describe('templates of an older hull or QEMU', { skip: SKIP }, () => {
  it('are removed when a template of the same image, size and accelerator is published; other sizes stay', async () => {
    const templatesRoot = join(root, 'templates-superseded');
    const ram = mkdtempSync(join(RAM_BASE, 'tpl-it-sup-'));
    try {
      // Another kernel command line stands for another hull: same shape, another key.
      const old = await mustCreate({ ...request(templatesRoot, ram, image!), kernelArgs: ['hull.made_by=old'] });
      const otherSize = await mustCreate(request(templatesRoot, ram, image!, { memoryMiB: MEMORY_MIB + 64 }));
      assert.ok(existsSync(old.ramFile));
      const current = await mustCreate(request(templatesRoot, ram, image!));
      assert.equal(current.created, true);
      assert.notEqual(current.key, old.key);
      assert.deepEqual((await listTemplates({ templatesRoot, ramRoot: ram })).map((l) => l.key).sort(), [current.key, otherSize.key].sort());
      assert.ok(!existsSync(old.ramFile), "the superseded template's RAM file is freed");
      for (const key of [current.key, otherSize.key]) await removeTemplate(key, { templatesRoot, ramRoot: ram });
      assert.deepEqual(readdirSync(ram), []);
    } finally {
      rmSync(ram, { recursive: true, force: true });
    }
  });
});

describe('a cold boot of the same size, for comparison', { skip: SKIP }, () => {
  it('measures spawn to agent Check and idle PSS (diagnostics only)', async (t) => {
    const guest = await startGuest(t, undefined);
    t.diagnostic(`cold boot: spawn to agent Check answered in ${guest.readyMs} ms`);
    await setup(guest);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    t.diagnostic(`cold boot: idle PSS ${Math.round(pssKiB(guest.vm.pid) / 1024)} MiB`);
  });
});

/** allocatedBytes is what the files under `dir` hold allocated (as du counts them). */
function allocatedBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += statSync(join(entry.parentPath ?? entry.path, entry.name)).blocks * 512;
  }
  return total;
}

describe('the template store is bounded', { skip: SKIP }, () => {
  it('keeps at most the count and byte bounds, evicting the least recently used; a clone of an evicted template keeps running', async (t) => {
    const templatesRoot = join(root, 'templates-bounded');
    const ram = mkdtempSync(join(RAM_BASE, 'tpl-it-bound-'));
    t.after(() => rmSync(ram, { recursive: true, force: true }));
    const MIB = 1024 * 1024;
    // minIdleMs 0: templates made seconds apart may be evicted (the default protects 30 s of use).
    const logged: string[] = [];
    const log = (line: string) => logged.push(line);
    const bounded = (memoryMiB: number, bounds: { maxCount: number; maxRamMiB: number }) => ({ ...request(templatesRoot, ram, image!, { memoryMiB }), ...bounds, minIdleMs: 0, log });
    const store = async () => {
      const listed = await listAll({ templatesRoot, ramRoot: ram });
      return { keys: listed.map((l) => l.key).sort(), bytes: listed.reduce((sum, l) => sum + l.ramAllocatedBytes, 0) };
    };
    const checkBounds = async (bounds: { maxCount: number; maxRamMiB: number }, step: string) => {
      const { keys, bytes } = await store();
      assert.ok(keys.length <= bounds.maxCount, `${step}: ${keys.length} templates, at most ${bounds.maxCount}`);
      assert.ok(allocatedBytes(ram) <= bounds.maxRamMiB * MIB, `${step}: ${allocatedBytes(ram)} bytes allocated, at most ${bounds.maxRamMiB} MiB`);
      assert.equal(allocatedBytes(ram), bytes, `${step}: only published templates hold RAM files`);
      t.diagnostic(`${step}: ${keys.length} templates, ${Math.round(bytes / MIB)} MiB allocated`);
    };

    const two = { maxCount: 2, maxRamMiB: 4096 };
    const a = await mustCreate(bounded(256, two));
    const b = await mustCreate(bounded(320, two));
    await checkBounds(two, 'A 256 MiB, B 320 MiB');
    const clone = await startGuest(t, b);
    await setup(clone);
    // A clone starts from A: A is now more recently used than B.
    assert.equal((await mustCreate(bounded(256, two))).created, false);
    const c = await mustCreate(bounded(384, two));
    assert.deepEqual((await store()).keys, [a.key, c.key].sort(), 'B, the least recently used, was evicted');
    assert.ok(!existsSync(b.ramFile) && !existsSync(b.dir), "B's files are gone");
    await checkBounds(two, 'C 384 MiB');
    // B's clone maps B's RAM: it keeps running, and runs containers.
    const result = await run(clone, 'echo still here');
    assert.equal(result.exitStatus, 0, result.stderr);
    assert.equal(result.stdout.trim(), 'still here');

    // The byte bound: A and C with a new estimate do not fit, so A (the least recently used) goes.
    const { bytes } = await store();
    const tight = { maxCount: 3, maxRamMiB: Math.floor(bytes / MIB) + estimateTemplateBytes(448) / MIB - 1 };
    const d = await mustCreate(bounded(448, tight));
    assert.deepEqual((await store()).keys, [c.key, d.key].sort(), 'A, the least recently used, was evicted for the byte bound');
    await checkBounds(tight, 'D 448 MiB');

    // Every template used within minIdleMs (the default, 30 s): no room is made, the VM boots cold.
    assert.equal((await mustCreate(bounded(384, two))).created, false); // C is used now, D was just made
    assert.equal(await createTemplate({ ...bounded(512, two), minIdleMs: undefined }), undefined);
    assert.deepEqual((await store()).keys, [c.key, d.key].sort(), 'nothing was evicted');
    assert.deepEqual(logged.map((line) => /^evicted VM template (\w+)/.exec(line)?.[1] ?? line.replace(/:.*/, '')), [b.key, a.key, 'no VM template made for 1 vCPU 512 MiB, the VM boots cold']);
    for (const key of [c.key, d.key]) await removeTemplate(key, { templatesRoot, ramRoot: ram });
    assert.deepEqual(readdirSync(ram), []);
  });

  it('a tenant cycling through 20 VM sizes leaves the store within its byte and count bounds', async (t) => {
    const templatesRoot = join(root, 'templates-cycle');
    const ram = mkdtempSync(join(RAM_BASE, 'tpl-it-cycle-'));
    t.after(() => rmSync(ram, { recursive: true, force: true }));
    const MIB = 1024 * 1024;
    const bounds = { maxCount: 2, maxRamMiB: 400 };
    let made = 0;
    for (let i = 0; i < 20; i++) {
      const memoryMiB = 256 + 64 * i;
      const got = await createTemplate({ ...request(templatesRoot, ram, image!, { memoryMiB }), ...bounds });
      if (got?.created) made++;
      const bytes = allocatedBytes(ram);
      assert.ok(bytes <= bounds.maxRamMiB * MIB, `size ${memoryMiB} MiB: ${Math.round(bytes / MIB)} MiB allocated, at most ${bounds.maxRamMiB}`);
      assert.ok(readdirSync(templatesRoot).filter((n) => /^[0-9a-f]{20}$/.test(n)).length <= bounds.maxCount);
    }
    t.diagnostic(`20 sizes: ${made} templates made, ${Math.round(allocatedBytes(ram) / MIB)} MiB allocated at the end`);
    for (const l of await listAll({ templatesRoot, ramRoot: ram })) await removeTemplate(l.key, { templatesRoot, ramRoot: ram });
  });

  it('a template that alone would pass the byte bound is not made: the VM boots cold, nothing is evicted', async () => {
    const templatesRoot = join(root, 'templates-too-big');
    const ram = mkdtempSync(join(RAM_BASE, 'tpl-it-big-'));
    try {
      assert.equal(await createTemplate({ ...request(templatesRoot, ram, image!, { memoryMiB: 2048 }), maxRamMiB: 256 }), undefined);
      assert.deepEqual(readdirSync(templatesRoot), []);
      assert.deepEqual(readdirSync(ram), [], 'no RAM file was made: no template VM was started');
    } finally {
      rmSync(ram, { recursive: true, force: true });
    }
  });

  it('refuses a RAM root or key directory someone else made first, or others can write', async () => {
    const templatesRoot = join(root, 'templates-refused');
    const refusal = (dir: string, why: RegExp) => (e: Error) => {
      assert.equal(errorCode(e), 'failed_precondition');
      assert.ok(e.message.startsWith(`Refusing the template RAM directory "${dir}": `), e.message);
      assert.match(e.message, why);
      assert.match(e.message, /someone else may own or read the memory of pods/);
      return true;
    };
    const theirs = mkdtempSync(join(RAM_BASE, 'tpl-it-theirs-'));
    const open = mkdtempSync(join(RAM_BASE, 'tpl-it-open-'));
    const good = mkdtempSync(join(RAM_BASE, 'tpl-it-good-'));
    try {
      chownSync(theirs, 65534, 65534);
      await assert.rejects(createTemplate(request(templatesRoot, theirs, image!)), refusal(theirs, /owned by uid 65534, not uid 0 \(root\)/));
      assert.equal(statSync(theirs).uid, 65534, 'left as it was');
      chmodSync(open, 0o777);
      await assert.rejects(createTemplate(request(templatesRoot, open, image!)), refusal(open, /its mode 0777 lets anyone write in it/));
      // The RAM root is ours, but the template's own directory in it was made by someone else, who
      // put a file in it. (An empty one is pruned as a leftover, and made again.)
      const key = templateKey(await templateInputs(request(templatesRoot, good, image!)));
      mkdirSync(join(good, key), { mode: 0o700 });
      writeFileSync(join(good, key, 'planted'), '');
      chownSync(join(good, key), 65534, 65534);
      await assert.rejects(createTemplate(request(templatesRoot, good, image!)), refusal(join(good, key), /owned by uid 65534/));
      assert.deepEqual(readdirSync(templatesRoot), [], 'nothing was made');
      assert.deepEqual(qemuPidsWithNamePrefix(`hull-template-${key}`), [], 'no template VM was started');
      // A RAM root on tmpfs: every page a clone touched would stay allocated in the template's file.
      const shm = mkdtempSync('/dev/shm/hull-tpl-it-shm-');
      try {
        await assert.rejects(createTemplate(request(templatesRoot, shm, image!)), /is on tmpfs, where every page a clone touches would stay allocated/);
        assert.deepEqual(readdirSync(shm), [], 'nothing was made');
      } finally {
        rmSync(shm, { recursive: true, force: true });
      }
    } finally {
      for (const dir of [theirs, open, good]) rmSync(dir, { recursive: true, force: true });
    }
  });
});
