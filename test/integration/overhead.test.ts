/**
 * The RuntimeClass overhead is measured, not typed (issue 20, part 5). A pod whose containers all have
 * memory limits runs in a pod cgroup limited as kubelet limits it: the limits + `overhead.podFixed`
 * as deploy/runtimeclass.yaml writes it. Its VM is the limits + the guest's slack. One container
 * holds its whole limit in unreclaimable memory, another allocates past its limit: that one is
 * OOM-killed inside its own guest cgroup, and the agent, the other container and the pod live on
 * and answer an exec. Then what the node pays for the pod, at its worst, must fit in limits + podFixed:
 * the pod cgroup's peak, plus the shim's memory charged elsewhere, plus the guest RAM the guest has
 * not touched yet and the part of TCG's translation buffer not yet filled (both can still grow to
 * their sizes). It prints the guest's own need, measured, which guest_slack_memory is set from.
 * Also: the first pod of a size (its VM becomes the template) under the same limit; a pod whose
 * limit is too small for its VM starts and its shim logs the shortfall; a pod without a pod limit
 * (a container without a memory limit) keeps default_memory + limits.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_CONFIG } from '../../src/config/index.js';
import { currentGuestImage } from '../../src/guest/index.js';
import { startContainerd, findShims, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig } from '../harness/cri.js';
import { processAlive, qemuPidsUnder } from '../helpers/leaks.js';

const MIB = 1024 * 1024;
const MEMORY_MOUNT = '/sys/fs/cgroup/memory';
const RUNTIME_CLASS = fileURLToPath(new URL('../../../deploy/runtimeclass.yaml', import.meta.url));

/** podFixedMemory reads overhead.podFixed.memory from deploy/runtimeclass.yaml, in bytes. */
function podFixedMemory(): number {
  const text = readFileSync(RUNTIME_CLASS, 'utf8');
  const m = /^overhead:\n(?:[ \t]*#.*\n|[ \t]*\n)*  podFixed:\n(?:    \S.*\n)*?    memory: "?(\d+)(Mi|Gi)"?\s*$/m.exec(text);
  assert.ok(m, `no overhead.podFixed.memory in ${RUNTIME_CLASS}`);
  return Number(m[1]) * (m[2] === 'Gi' ? 1024 * MIB : MIB);
}

const hull = prepareHullRuntime({ name: 'overhead' });
mkdirSync('/var/lib/hull-test', { recursive: true, mode: 0o700 });
const store = mkdtempSync('/var/lib/hull-test/ovh-');
appendFileSync(hull.configPath, `templates_dir = "${join(store, 'templates')}"\ntemplate_ram_dir = "${join(store, 'ram')}"\n`);
const parents: string[] = [];

let ctrd: PrivateContainerd;
let cri: CriClient;

before(async () => {
  assert.ok(await currentGuestImage(), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: hull.runtimes, extraPath: hull.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 180_000 });
});

after(async () => {
  cri?.close();
  await stopAndAssertClean(ctrd, hull);
  rmSync(store, { recursive: true, force: true });
  for (const parent of parents) if (existsSync(join(MEMORY_MOUNT, parent))) rmdirSync(join(MEMORY_MOUNT, parent));
});

/** podParent makes a pod cgroup with a memory limit, as kubelet does for a pod whose containers all have limits. */
function podParent(limitBytes: number): string {
  const parent = `/hull-test-ovh-${randomBytes(4).toString('hex')}`;
  mkdirSync(join(MEMORY_MOUNT, parent));
  parents.push(parent);
  writeFileSync(join(MEMORY_MOUNT, parent, 'memory.limit_in_bytes'), String(limitBytes));
  return parent;
}

function limitedPod(name: string, parent: string, limitsMiB: number) {
  const pod = podConfig({ name, namespace: 'hull-test', memoryLimitBytes: limitsMiB * MIB });
  pod.linux!.cgroupParent = parent;
  return pod;
}

/** mappings of `pid` from smaps: size and resident bytes, and whether a file backs it. */
function mappings(pid: number): { size: number; rss: number; file: boolean; perms: string }[] {
  const out: { size: number; rss: number; file: boolean; perms: string }[] = [];
  for (const block of readFileSync(`/proc/${pid}/smaps`, 'utf8').split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
    const head = block.split('\n')[0]!.split(/\s+/);
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(block)?.[1] ?? 0) * 1024;
    out.push({ size: kb('Size'), rss: kb('Rss'), file: head[4] !== '0', perms: head[1] ?? '' });
  }
  return out;
}

function statusBytes(pid: number, key: string): number {
  return Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
}

function meminfo(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^(\w+):\s+(\d+) kB$/gm)) out[m[1]!] = Number(m[2]) * 1024;
  return out;
}

const mib = (bytes: number) => `${(bytes / MIB).toFixed(0)}`;

/**
 * podAtItsLimits runs a pod of two containers under a pod cgroup limited as kubelet limits it: one
 * holds all of its limit (`holderMiB`), one allocates past its own (`hogMiB`).
 */
async function podAtItsLimits(name: string, holderMiB: number, hogMiB: number): Promise<void> {
  const HOLDER_MIB = holderMiB;
  const HOG_MIB = hogMiB;
  const LIMITS_MIB = holderMiB + hogMiB;
  const podFixed = podFixedMemory();
  // kubelet's pod cgroup: the containers' limits + the RuntimeClass overhead.
  const podLimit = LIMITS_MIB * MIB + podFixed;
  const parent = podParent(podLimit);
  const pod = limitedPod(name, parent, LIMITS_MIB);
  const podId = await cri.runPodSandbox(pod, 'hull');
  try {
    const [qemu] = qemuPidsUnder(hull.runRoot);
    assert.ok(qemu, 'no QEMU for the pod');
    const shim = findShims(ctrd.address).find((s) => s.cmdline.includes(podId));
    assert.ok(shim, 'no shim for the pod');
    const memoryArg = /\s-m\s+(\d+)M?\s/.exec(` ${readFileSync(`/proc/${qemu}/cmdline`, 'utf8').split('\0').join(' ')} `)?.[1];
    const vmMiB = Number(memoryArg);
    assert.ok(vmMiB > LIMITS_MIB && vmMiB < LIMITS_MIB + DEFAULT_CONFIG.guestSlackMemoryMiB + 64 + 16, `the VM has ${memoryArg} MiB for ${LIMITS_MIB} MiB of limits: not limits + slack`);

    const holder = await cri.createContainer(podId, containerConfig({ name: 'holder', image: BUSYBOX_REF, command: ['sh', '-c', `dd if=/dev/zero of=/dev/shm/held bs=1M count=${HOLDER_MIB - 8} 2>/dev/null; sleep 100000`], memoryLimitBytes: HOLDER_MIB * MIB }), pod);
    await cri.startContainer(holder);
    // The holder's memory is unreclaimable (tmpfs, no swap): wait until it holds it.
    let held = 0;
    for (let i = 0; i < 600 && held < (HOLDER_MIB - 8) * MIB; i++) {
      held = Number((await cri.execSync(holder, ['sh', '-c', 'stat -c %s /dev/shm/held 2>/dev/null || echo 0'], 60)).stdout.toString().trim());
      if (held < (HOLDER_MIB - 8) * MIB) await sleep(200);
    }
    const idle = meminfo((await cri.execSync(holder, ['cat', '/proc/meminfo'], 60)).stdout.toString());

    // The hog asks for more than its limit: its own cgroup's OOM killer ends it.
    const hog = await cri.createContainer(podId, containerConfig({ name: 'hog', image: BUSYBOX_REF, command: ['dd', 'if=/dev/zero', 'of=/dev/null', `bs=${HOG_MIB + 64}M`, 'count=4'], memoryLimitBytes: HOG_MIB * MIB }), pod);
    await cri.startContainer(hog);
    let state = '';
    for (let i = 0; i < 1500 && state !== 'CONTAINER_EXITED'; i++) {
      state = (await cri.listContainers({ id: hog }))[0]?.state ?? '';
      if (state !== 'CONTAINER_EXITED') await sleep(200);
    }
    assert.equal(state, 'CONTAINER_EXITED', 'the hog did not end');
    const status = (await cri.containerStatus(hog)).status;
    assert.equal(status?.reason, 'OOMKilled', `the hog ended otherwise: ${status?.reason} ${status?.exitCode}`);
    assert.equal(status?.exitCode, 137);

    // The agent, the other container and the VM live on.
    assert.ok(processAlive(qemu), 'QEMU is gone: the host killed the VM');
    const alive = await cri.execSync(holder, ['sh', '-c', 'echo alive; stat -c %s /dev/shm/held'], 60);
    assert.equal(alive.stdout.toString(), `alive\n${(HOLDER_MIB - 8) * MIB}\n`, `the pod no longer answers: ${alive.stderr.toString()}`);
    const loaded = meminfo((await cri.execSync(holder, ['cat', '/proc/meminfo'], 60)).stdout.toString());

    // The host never OOM-killed anything in the pod's cgroup (it may have reclaimed page cache there).
    const oomControl = readFileSync(join(MEMORY_MOUNT, parent, 'memory.oom_control'), 'utf8');
    assert.equal(/^oom_kill (\d+)$/m.exec(oomControl)?.[1] ?? '0', '0', `the host OOM-killed in the pod's cgroup: ${oomControl}`);
    const failcnt = Number(readFileSync(join(MEMORY_MOUNT, parent, 'memory.failcnt'), 'utf8'));
    const peak = Number(readFileSync(join(MEMORY_MOUNT, parent, 'memory.max_usage_in_bytes'), 'utf8'));

    // What the node pays, at worst: QEMU's and the shim's resident memory now, plus what can still
    // grow: the guest RAM not touched yet (a guest may touch all of it), TCG's buffer not filled yet.
    const maps = mappings(qemu);
    const ram = maps.find((m) => m.size === vmMiB * MIB);
    assert.ok(ram, 'no guest RAM mapping in QEMU');
    const tbSize = DEFAULT_CONFIG.tcgTbSizeMiB * MIB;
    // TCG's buffer: QEMU's only writable and executable memory, split into regions by guard pages.
    const tb = maps.filter((m) => !m.file && m.perms.startsWith('rwx'));
    const tbRss = tb.reduce((s, m) => s + m.rss, 0);
    assert.ok(tb.reduce((s, m) => s + m.size, 0) <= tbSize + 16 * MIB, 'TCG\'s buffer is larger than tcg_tb_size_mib');
    const tbHeadroom = Math.max(0, tbSize - tbRss);
    const shimRss = statusBytes(shim.pid, 'VmRSS');
    const qemuRss = statusBytes(qemu, 'VmRSS');
    const untouched = Math.max(0, ram.size - ram.rss);
    const worst = qemuRss + shimRss + untouched + tbHeadroom;
    // The guest's own need: RAM outside MemTotal (kernel, page descriptors) + what is in use that the
    // containers do not hold (kernel, agent, init, crun's leftovers).
    const outside = vmMiB * MIB - idle['MemTotal']!;
    const guestUsed = idle['MemTotal']! - idle['MemFree']! - held;
    const show = (m: Record<string, number>) => ['MemAvailable', 'MemFree', 'Cached', 'Mapped', 'AnonPages', 'Shmem', 'Slab', 'SUnreclaim', 'KernelStack', 'PageTables'].map((k) => `${k} ${mib(m[k] ?? 0)}`).join(', ');
    console.log(`# VM ${vmMiB} MiB for ${LIMITS_MIB} MiB of limits; guest: ${mib(outside)} MiB outside MemTotal (${mib(idle['MemTotal']!)}), ${mib(guestUsed)} MiB in use (MemTotal - MemFree, page cache included) beyond the holder's ${mib(held)} MiB; idle: ${show(idle)}; after the hog: ${show(loaded)}`);
    console.log(`# host: QEMU RSS ${mib(qemuRss)} MiB (guest RAM resident ${mib(ram.rss)}, TCG buffer resident ${mib(tbRss)} of ${mib(tbSize)} in ${tb.length} regions, the rest ${mib(qemuRss - ram.rss - tbRss)}), shim RSS ${mib(shimRss)} MiB; at worst ${mib(worst)} MiB = those + ${mib(untouched)} MiB of untouched guest RAM + ${mib(tbHeadroom)} MiB of TCG buffer to come; limits + podFixed ${mib(LIMITS_MIB * MIB + podFixed)} MiB; the pod cgroup's peak ${mib(peak)} MiB (page cache included), ${failcnt} charges over its limit`);
    assert.ok(worst <= LIMITS_MIB * MIB + podFixed, `the node may pay ${mib(worst)} MiB for the pod: more than its limits + podFixed (${mib(LIMITS_MIB * MIB + podFixed)} MiB)`);
    await cri.removeContainer(hog);
    await cri.stopContainer(holder);
    await cri.removeContainer(holder);
  } finally {
    await cri.stopPodSandbox(podId).catch(() => {});
    await cri.removePodSandbox(podId).catch(() => {});
  }
  assert.deepEqual(readdirSync(join(MEMORY_MOUNT, parent), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name), [], 'the sandbox cgroup was left');
}

describe('the RuntimeClass overhead covers a pod whose containers use their limits', { skip: !existsSync(join(MEMORY_MOUNT, 'memory.limit_in_bytes')) && 'no cgroup v1 memory hierarchy here' }, () => {
  it('sizes a clone\'s VM by its limits, OOM-kills a container inside its own cgroup, and the node pays at most limits + podFixed', async () => {
    // The template of this VM size is made first, under a roomy pod limit; the measured pod is a
    // clone, as most pods are.
    const roomy = podParent(4096 * MIB);
    const warmId = await cri.runPodSandbox(limitedPod('warm', roomy, 128 + 192), 'hull');
    await cri.stopPodSandbox(warmId);
    await cri.removePodSandbox(warmId);
    await podAtItsLimits('clone', 128, 192);
  });

  it('the same for the first pod of its size, whose VM boots and becomes a template under the pod\'s limit', async () => {
    await podAtItsLimits('first', 160, 224);
  });

  it('a pod whose cgroup limit cannot hold its VM starts, and its shim says how many MiB it is short', async () => {
    // podFixed of 256 MiB: the 640 MiB VM of 320 MiB of limits, TCG's buffer and QEMU do not fit in 576 MiB.
    const parent = podParent((320 + 256) * MIB);
    const podId = await cri.runPodSandbox(limitedPod('short', parent, 320), 'hull');
    try {
      const line = readFileSync(ctrd.logPath, 'utf8').split('\n').find((l) => l.includes(`sandbox ${podId}: its pod cgroup's memory limit`));
      assert.ok(line, 'the shim did not say the pod limit is short');
      assert.match(line, /memory limit \(576 MiB\) is \d+ MiB short of what its 640 MiB VM may cost the host: raise the RuntimeClass's overhead.podFixed/);
    } finally {
      await cri.stopPodSandbox(podId).catch(() => {});
      await cri.removePodSandbox(podId).catch(() => {});
    }
  });

  it('keeps default_memory + limits for a pod with a container without a limit (kubelet sets no pod limit then)', async () => {
    const parent = podParent(-1); // unlimited, as kubelet leaves it
    const podId = await cri.runPodSandbox(limitedPod('unlimited', parent, 320), 'hull');
    try {
      const [qemu] = qemuPidsUnder(hull.runRoot);
      assert.ok(qemu, 'no QEMU for the pod');
      const memoryArg = /\s-m\s+(\d+)M?\s/.exec(` ${readFileSync(`/proc/${qemu}/cmdline`, 'utf8').split('\0').join(' ')} `)?.[1];
      // The test runtime's default_memory is 512: 512 + 320, rounded up to 256 MiB.
      assert.equal(Number(memoryArg), 1024);
    } finally {
      await cri.stopPodSandbox(podId).catch(() => {});
      await cri.removePodSandbox(podId).catch(() => {});
    }
  });
});
