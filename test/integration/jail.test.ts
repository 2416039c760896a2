/**
 * QEMU's jail, read from /proc as an operator would: for a clone (templates on), a cold-booted VM
 * and a CRI pod, the VMM runs as an unprivileged uid of its own with only 9p's capabilities,
 * no_new_privs and seccomp, in its own mount and PID namespaces whose root holds only what the VM
 * needs, with bounded rlimits; its uid lease is released with the sandbox.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { Sandbox } from '../../src/sandbox/index.js';
import { LEASES_DIR } from '../../src/sandbox/jail-uid.js';
import { TemplateFactory, createTemplate } from '../../src/factory/index.js';
import { JAIL_CAPABILITIES, QemuDriver } from '../../src/vmm/index.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { HULL_RUNTIME, prepareHullRuntime } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig } from '../harness/cri.js';
import { defaultSpec, makeBusyboxBundle } from '../helpers/bundle.js';
import { entriesIn, mountsUnder, processAlive, qemuPidsUnder } from '../helpers/leaks.js';

const image = await currentGuestImage();
mkdirSync('/run/hull-test', { recursive: true, mode: 0o700 });
const base = mkdtempSync('/run/hull-test/jail-');
// Template RAM on the disk, as template_ram_dir must be (never tmpfs).
mkdirSync('/var/lib/hull-test', { recursive: true, mode: 0o700 });
const templateRoots = { templatesRoot: join(base, 'templates'), ramRoot: `/var/lib/hull-test/jail-ram-${base.split('-').pop()}` };
// Bits of chown (0), dac_override (1), fowner (3), fsetid (4): JAIL_CAPABILITIES.
const CAP_BITS: Record<string, number> = { chown: 0, dac_override: 1, fowner: 3, fsetid: 4 };
const JAIL_CAPS = JAIL_CAPABILITIES.reduce((mask, cap) => mask | (1n << BigInt(CAP_BITS[cap]!)), 0n);

after(() => {
  rmSync(base, { recursive: true, force: true });
  rmSync(templateRoots.ramRoot, { recursive: true, force: true });
});

function status(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const at = line.indexOf(':');
    if (at > 0) out[line.slice(0, at)] = line.slice(at + 1).trim();
  }
  return out;
}

/** assertJailed checks everything /proc says about a jailed QEMU. */
function assertJailed(pid: number, extraRoot: string[] = []): number {
  assert.equal(readFileSync(`/proc/${pid}/comm`, 'utf8').trim(), 'qemu-system-x86');
  const s = status(pid);
  const uid = Number(s['Uid']!.split('\t')[0]);
  assert.ok(uid >= 2_000_000_000, `QEMU runs as uid ${uid}`);
  assert.deepEqual(s['Uid']!.split('\t'), Array(4).fill(String(uid)), 'real, effective, saved and fs uid');
  assert.deepEqual(s['Gid']!.split('\t'), Array(4).fill(String(uid)), 'its gid is its uid');
  assert.equal(s['Groups'], '', 'no supplementary groups');
  for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) assert.equal(BigInt(`0x${s[set]}`), JAIL_CAPS, `${set} ${s[set]}`);
  assert.equal(s['NoNewPrivs'], '1');
  assert.equal(s['Seccomp'], '2', 'QEMU -sandbox (seccomp filter)');
  for (const ns of ['mnt', 'pid']) assert.notEqual(readlinkSync(`/proc/${pid}/ns/${ns}`), readlinkSync(`/proc/self/ns/${ns}`), `own ${ns} namespace`);
  assert.equal(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^NSpid:\s+\d+\s+(\d+)$/m)?.[1], '1', 'PID 1 of its PID namespace');
  const root = `/proc/${pid}/root`;
  assert.deepEqual(readdirSync(root).sort(), ['bin', 'dev', 'image', 'lib', 'lib64', 'proc', 'run', 'sbin', 'shared', 'usr', ...extraRoot].sort());
  assert.equal(existsSync(join(root, 'etc')), false, 'no host /etc');
  assert.equal(existsSync(join(root, 'home')), false, 'no host /home');
  assert.deepEqual(readdirSync(join(root, 'dev')).sort(), readdirSync(join(root, 'dev')).filter((d) => ['kvm', 'net', 'null', 'random', 'urandom', 'zero'].includes(d)).sort());
  // Its procfs shows its own PID namespace only (itself), and none of the kernel's files.
  assert.deepEqual(readdirSync(join(root, 'proc')).filter((e) => /^\d+$/.test(e)), ['1']);
  assert.equal(existsSync(join(root, 'proc', 'sys')), false, 'no /proc/sys');
  const limits = readFileSync(`/proc/${pid}/limits`, 'utf8');
  assert.match(limits, /^Max core file size\s+0\s+0\s/m);
  assert.match(limits, /^Max open files\s+16384\s+16384\s/m);
  assert.match(limits, /^Max processes\s+1024\s+1024\s/m);
  return uid;
}

/**
 * asEscapedQemu runs `lines` (sh, with a `try` that says ALLOWED or refused) as the jailed QEMU
 * `pid` is: in its mount and PID namespaces, from its root, as its uid with its capabilities.
 */
function asEscapedQemu(pid: number, uid: number, lines: string[]): string {
  const caps = JAIL_CAPABILITIES.map((c) => `+${c}`).join(',');
  const script = `try() { if "$@" >/dev/null 2>&1; then echo "ALLOWED: $*"; else echo "refused: $*"; fi; }\n${lines.join('\n')}\n`;
  return execFileSync('nsenter', [
    `--target=${pid}`, '--mount', '--pid', '--root', '--wd', '--',
    'setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--no-new-privs',
    `--inh-caps=-all,${caps}`, `--ambient-caps=-all,${caps}`, `--bounding-set=-all,${caps}`,
    '--', '/usr/bin/sh', '-c', script,
  ], { encoding: 'utf8', env: { PATH: '/usr/bin' } });
}

describe('the jail of a VM started through the Sandbox API', () => {
  it('confines a clone and a cold-booted VM, each with a uid of its own, released with the sandbox', async () => {
    assert.ok(image, 'no guest image: run `make image` first');
    const runRoot = join(base, 'run');
    const bundle = makeBusyboxBundle();
    const driver = new QemuDriver();
    const clone = await Sandbox.create({ driver, id: 'clone', image, runRoot, memoryMiB: 512, factory: new TemplateFactory(driver, templateRoots) });
    const cold = await Sandbox.create({ driver: new QemuDriver(), id: 'cold', image, runRoot, memoryMiB: 512 });
    try {
      const cloneUid = assertJailed(clone.vm.pid, ['ram']);
      const coldUid = assertJailed(cold.vm.pid);
      assert.notEqual(cloneUid, coldUid, 'two VMs share a uid');
      assert.equal(readFileSync(join(LEASES_DIR, String(cloneUid)), 'utf8'), clone.stateDir);
      // It still runs containers: the share reaches the jail, including mounts made after it started.
      await clone.createContainer('c', { bundle: bundle.dir, spec: defaultSpec(['true']) as never, stdio: {} });
      await clone.startContainer('c');
      assert.equal((await clone.wait('c')).exitStatus, 0);
      await clone.removeContainer('c');
      // What an escaped QEMU could do: a process with its uid, capabilities, no_new_privs, mount
      // and PID namespaces and root, from inside the jail.
      const escaped = asEscapedQemu(clone.vm.pid, cloneUid, [
        'try cat /etc/shadow',
        'try ls /home',
        'try ls /proc/sys',
        `try kill -0 ${cold.vm.pid}`,
        `try kill -0 ${process.pid}`,
        'try mount -t tmpfs none /run',
        'try touch /usr/escaped',
        'try touch /image/kernel',
        'try mknod /run/disk b 8 0',
        'try chroot /usr /bin/true',
        `try test -e /proc/${cold.vm.pid}`,
        `try test -e /proc/${process.pid}`,
      ]);
      assert.deepEqual(escaped.split('\n').filter((l) => l.startsWith('ALLOWED')), [], escaped);
      assert.equal(escaped.split('\n').filter((l) => l.startsWith('refused')).length, 12, escaped);
      const vmPids = [clone.vm.pid, cold.vm.pid];
      await clone.destroy();
      await cold.destroy();
      for (const pid of vmPids) assert.equal(processAlive(pid), false);
      assert.equal(existsSync(join(LEASES_DIR, String(cloneUid))), false, 'the uid lease was not released');
      assert.equal(existsSync(join(LEASES_DIR, String(coldUid))), false, 'the uid lease was not released');
      assert.deepEqual(entriesIn(runRoot), []);
    } finally {
      await clone.destroy().catch(() => {});
      await cold.destroy().catch(() => {});
      bundle.remove();
    }
  });
});

describe("an escaped clone QEMU and its template's RAM", () => {
  // The attack the jail does not stop yet: QEMU 7.2 opens a private memory-backend-file O_RDWR (a
  // read-only bind makes it fail), so the file is bound read-write. It runs and shows what is allowed.
  const todo = "QEMU 7.2 opens a private memory-backend-file read-write: docs/security.md, 'Not yet defended'";
  it('cannot write, fallocate or truncate the RAM file of the template a running clone maps', { todo }, async () => {
    assert.ok(image, 'no guest image: run `make image` first');
    const runRoot = join(base, 'run-ram');
    const driver = new QemuDriver();
    const roots = { templatesRoot: join(base, 'templates-attacked'), ramRoot: `${templateRoots.ramRoot}-attacked` };
    const factory = new TemplateFactory(driver, roots);
    const attacker = await Sandbox.create({ driver, id: 'attacker', image, runRoot, memoryMiB: 512, factory });
    const victim = await Sandbox.create({ driver: new QemuDriver(), id: 'victim', image, runRoot, memoryMiB: 512, factory });
    const bundle = makeBusyboxBundle();
    try {
      const uid = assertJailed(attacker.vm.pid, ['ram']);
      const escaped = asEscapedQemu(attacker.vm.pid, uid, [
        'try sh -c "printf x | dd of=/ram bs=1 seek=8192 conv=notrunc"',
        'try fallocate -o 0 -l 1048576 /ram',
        'try truncate -s 4096 /ram',
      ]);
      console.log(`# an escaped clone QEMU against its template's RAM file:\n${escaped.trim().replace(/^/gm, '#   ')}`);
      assert.deepEqual(escaped.split('\n').filter((l) => l.startsWith('ALLOWED')), [], escaped);
      // The other clone of the same template runs on and runs containers.
      await victim.createContainer('c', { bundle: bundle.dir, spec: defaultSpec(['true']) as never, stdio: {} });
      await victim.startContainer('c');
      assert.equal((await victim.wait('c')).exitStatus, 0);
    } finally {
      await attacker.destroy().catch(() => {});
      await victim.destroy().catch(() => {});
      bundle.remove();
      rmSync(roots.ramRoot, { recursive: true, force: true });
    }
  });
});

describe('the jail of a template VM', () => {
  it('confines the VM a template is made from', async () => {
    assert.ok(image, 'no guest image: run `make image` first');
    const roots = { templatesRoot: join(base, 'templates-src'), ramRoot: `${templateRoots.ramRoot}-src` };
    const made = createTemplate({ ...roots, driver: new QemuDriver(), image: { ...image, id: image.id }, vcpus: 1, memoryMiB: 384, accel: 'auto', jail: { uid: 2_000_065_000, gid: 2_000_065_000 } });
    // The template VM lives for its boot and save: find it by its -name while it does.
    let seen: number | undefined;
    for (let i = 0; i < 600 && seen === undefined; i++) {
      seen = templateQemu(roots.templatesRoot);
      if (seen === undefined) await new Promise((r) => setTimeout(r, 20));
    }
    try {
      assert.ok(seen, 'the template VM was not seen running');
      assert.equal(assertJailed(seen, ['ram']), 2_000_065_000);
    } finally {
      await made;
      rmSync(roots.ramRoot, { recursive: true, force: true });
    }
  });
});

/** templateQemu finds the QEMU of a template being made under `templatesRoot` (its jail's parent names the root). */
function templateQemu(templatesRoot: string): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv[0] !== 'unshare' || !argv.some((a) => a.startsWith(templatesRoot + '/'))) continue;
      const child = Number(readFileSync(`/proc/${entry}/task/${entry}/children`, 'utf8').trim().split(' ')[0]);
      // Caught once QEMU has set itself up (its -sandbox seccomp filter is among the first things).
      if (child > 0 && readFileSync(`/proc/${child}/comm`, 'utf8').trim() === 'qemu-system-x86' && /^Seccomp:\s+2$/m.test(readFileSync(`/proc/${child}/status`, 'utf8'))) return child;
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

describe('the jail of a CRI pod\'s VM', () => {
  const hullRuntime = prepareHullRuntime({ name: 'jail' });
  let ctrd: PrivateContainerd;
  let cri: CriClient;

  before(async () => {
    ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
    await ensureTestImages(ctrd);
    cri = await CriClient.connect(ctrd.address);
  });

  after(async () => {
    cri?.close();
    await ctrd?.stop();
    const left = { vms: qemuPidsUnder(hullRuntime.runRoot), mounts: mountsUnder(hullRuntime.runRoot), state: entriesIn(hullRuntime.runRoot) };
    hullRuntime.remove();
    assert.deepEqual(left, { vms: [], mounts: [], state: [] });
  });

  it('runs a ctr task\'s QEMU jailed, in the task\'s cgroup', async () => {
    const run = ctrd.ctr(['run', '-d', '--runtime', HULL_RUNTIME, '--runtime-config-path', hullRuntime.configPath, BUSYBOX_REF, 'jailed-task', 'sleep', '1000'], { timeoutMs: 120_000 });
    await run;
    try {
      const [qemu] = qemuPidsUnder(hullRuntime.runRoot);
      assert.ok(qemu, 'no VM process under the run root');
      assertJailed(qemu, ['ram']);
      // ctr gives the task cgroupsPath /<namespace>/<id>: QEMU is there in every hierarchy.
      for (const line of readFileSync(`/proc/${qemu}/cgroup`, 'utf8').split('\n').filter(Boolean)) {
        assert.ok(line.endsWith(`:/${ctrd.namespace}/jailed-task`), `QEMU is not in the task's cgroup: ${line}`);
      }
    } finally {
      await ctrd.ctr(['task', 'kill', '-s', 'SIGKILL', 'jailed-task']).catch(() => undefined);
      await ctrd.ctr(['task', 'delete', '--force', 'jailed-task'], { timeoutMs: 60_000 }).catch(() => undefined);
      await ctrd.ctr(['container', 'delete', 'jailed-task']).catch(() => undefined);
    }
  });

  it('runs the pod\'s QEMU jailed, in the pod netns, and the pod works', async () => {
    const pod = podConfig({ name: 'jailed', namespace: 'hull-test' });
    const podId = await cri.runPodSandbox(pod, 'hull');
    try {
      const id = await cri.createContainer(podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', '1000'] }), pod);
      await cri.startContainer(id);
      const r = await cri.execSync(id, ['sh', '-c', 'echo jailed > /tmp/x && cat /tmp/x && id -u']);
      assert.equal(r.stdout.toString(), 'jailed\n0\n');
      // The VM's outer process (unshare) names the run root; QEMU is its child, PID 1 of the jail.
      const [qemu] = qemuPidsUnder(hullRuntime.runRoot);
      assert.ok(qemu, 'no VM process under the run root');
      assertJailed(qemu, ['ram']);
      // In the pod's network namespace, where its tap is (owned by its uid).
      const info = JSON.parse((await cri.podSandboxStatus(podId, true)).info['info'] ?? '{}') as { runtimeSpec?: { linux?: { namespaces?: Array<{ type: string; path?: string }> } } };
      const netns = info.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
      assert.ok(netns, 'no pod netns in the sandbox spec');
      // The pod netns is a bind-mounted nsfs file: the same namespace has the same inode.
      assert.equal(statSync(`/proc/${qemu}/ns/net`).ino, statSync(netns).ino, 'QEMU is not in the pod netns');
      await cri.stopContainer(id, 0);
      await cri.removeContainer(id);
    } finally {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
  });
});
