/**
 * A pod's guest memory is the pod's (issue 20): a guest that dirties 300 MiB, cloned from a template
 * or booted cold, grows no host file — not the template's RAM file, not a file under the run root
 * or /dev/shm — while it runs and after it is gone, and its pod cgroup counts what it touched.
 *
 * "Host files" are every file the pod's QEMU maps or holds open, and every file under this test's
 * directories (run root, template store, template RAM directory): other helpers' VMs on the same
 * machine write their own files under /run and /dev/shm at the same time, so those are not summed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { HULL_RUNTIME, prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig } from '../harness/cri.js';
import { qemuPidsUnder } from '../helpers/leaks.js';

const MIB = 1024 * 1024;
const MEMORY_MOUNT = '/sys/fs/cgroup/memory';
/** TOUCH_MIB: what the guest dirties (a file on its own tmpfs: guest RAM, nothing on the host's disk). */
const TOUCH_MIB = 300;
/** SLACK_MIB: how much the host files may grow in all (logs, sockets, the template's own state). */
const SLACK_MIB = 8;

const hull = prepareHullRuntime({ name: 'memory' });
mkdirSync('/var/lib/hull-test', { recursive: true, mode: 0o700 });
// The template store of this test only, on the disk as the default one (never other helpers' templates).
const store = mkdtempSync('/var/lib/hull-test/mem-');
const templatesDir = join(store, 'templates');
const templateRamDir = join(store, 'ram');
// max_memory: the pods below (512 MiB + a 512 MiB limit) fit exactly; one more MiB is refused.
appendFileSync(hull.configPath, `templates_dir = "${templatesDir}"\ntemplate_ram_dir = "${templateRamDir}"\nmax_memory = 1024\n`);
// A second handler whose VMs always boot cold: the same config without templates.
const coldConfig = join(hull.work, 'cold.toml');
copyFileSync(hull.configPath, coldConfig);
appendFileSync(coldConfig, 'templates = false\n');
const parent = `/hull-test-mem-${randomBytes(4).toString('hex')}`;

let ctrd: PrivateContainerd;
let cri: CriClient;

before(async () => {
  assert.ok(await currentGuestImage(), 'no guest image: run `make image` first');
  // A pod cgroup parent as kubelet makes one, with room for the VM, so that its usage can be read.
  mkdirSync(join(MEMORY_MOUNT, parent));
  writeFileSync(join(MEMORY_MOUNT, parent, 'memory.limit_in_bytes'), String(4096 * MIB));
  const runtimes = { ...hull.runtimes, 'hull-cold': { runtimeType: HULL_RUNTIME, configPath: coldConfig } };
  ctrd = await startContainerd({ runtimes, extraPath: hull.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 180_000 });
});

after(async () => {
  cri?.close();
  await stopAndAssertClean(ctrd, hull);
  rmSync(store, { recursive: true, force: true });
  if (existsSync(join(MEMORY_MOUNT, parent))) rmdirSync(join(MEMORY_MOUNT, parent));
});

/** filesUnder lists the regular files below `dir` (not following symlinks, not crossing into mounts' contents twice). */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  walk(dir);
  return out;
}

/** filesOfProcess lists the regular files `pid` maps or holds open, by their host paths. */
function filesOfProcess(pid: number): string[] {
  const files = new Set<string>();
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const path = line.split(/\s+/).slice(5).join(' ');
    if (path.startsWith('/')) files.add(`/proc/${pid}/map_files/${line.split(' ')[0]}`);
  }
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    const link = `/proc/${pid}/fd/${fd}`;
    try {
      if (readlinkSync(link).startsWith('/') && statSync(link).isFile()) files.add(link);
    } catch {
      // closed meanwhile
    }
  }
  // By inode: the same file seen through several links is counted once.
  const byInode = new Map<string, string>();
  for (const link of files) {
    try {
      const s = statSync(link);
      if (s.isFile()) byInode.set(`${s.dev}:${s.ino}`, link);
    } catch {
      // gone meanwhile
    }
  }
  return [...byInode.values()];
}

/** Blocks: allocated bytes (st_blocks) per file identity (dev:ino), so that a file is counted once. */
type Blocks = Map<string, { path: string; shown: string; bytes: number }>;

function blocksOf(paths: Iterable<string>): Blocks {
  const out: Blocks = new Map();
  for (const path of paths) {
    try {
      const s = statSync(path);
      // A link through /proc is shown as the file it names (mappings: the path in QEMU's jail).
      const shown = path.startsWith('/proc/') ? readlinkSync(path) : path;
      if (s.isFile()) out.set(`${s.dev}:${s.ino}`, { path, shown, bytes: s.blocks * 512 });
    } catch {
      // gone
    }
  }
  return out;
}

/** growth is how much the files of `now` grew since `before` (files new since then count whole). */
function growth(before: Blocks, now: Blocks): { total: number; worst: string } {
  let total = 0;
  let worst = '';
  let worstBytes = 0;
  for (const [id, file] of now) {
    const grew = file.bytes - (before.get(id)?.bytes ?? 0);
    total += grew;
    if (grew > worstBytes) {
      worstBytes = grew;
      worst = `${file.shown} +${(grew / MIB).toFixed(1)} MiB`;
    }
  }
  return { total, worst };
}

/** ourDirFiles are the files under this test's directories (run root, pool, config, template store). */
function ourDirFiles(): string[] {
  return [hull.runRoot, hull.poolDir, hull.work, store].flatMap(filesUnder);
}

/** ramMappings are QEMU's file mappings at least as large as the guest's RAM (`memoryMiB`). */
function ramMappings(pid: number, memoryMiB: number): string[] {
  return readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter((line) => {
      const [range, , , , inode, ...path] = line.split(/\s+/);
      if (!range || inode === '0' || path.join(' ') === '') return false;
      const [start, end] = range.split('-').map((h) => parseInt(h, 16));
      return end! - start! >= memoryMiB * MIB;
    });
}

/**
 * touchAndMeasure runs a pod (handler `handler`) whose container dirties TOUCH_MIB of guest memory,
 * and checks the host files' blocks while it runs and after it is removed, and its cgroup's usage.
 */
async function touchAndMeasure(name: string, handler: string, opts: { fileBackedRam: boolean }): Promise<void> {
  const limit = 512 * MIB;
  const pod = podConfig({ name, namespace: 'hull-test', memoryLimitBytes: limit });
  pod.linux!.cgroupParent = parent;
  const seen = new Set<string>();
  const before0 = blocksOf(ourDirFiles());
  const podId = await cri.runPodSandbox(pod, handler);
  let qemu: number | undefined;
  try {
    [qemu] = qemuPidsUnder(hull.runRoot);
    assert.ok(qemu, 'no QEMU for the pod');
    const id = await cri.createContainer(podId, containerConfig({ name: 'toucher', image: BUSYBOX_REF, command: ['sleep', '1000'], memoryLimitBytes: limit }), pod);
    await cri.startContainer(id);
    for (const f of filesOfProcess(qemu)) seen.add(f);
    // The baseline: everything the pod's VM has open, and our directories, before the guest dirties memory.
    const before = blocksOf([...ourDirFiles(), ...seen]);
    for (const [k, v] of before0) if (!before.has(k)) before.set(k, v);
    const usageFile = join(MEMORY_MOUNT, parent, podId, 'memory.usage_in_bytes');
    const usageBefore = Number(readFileSync(usageFile, 'utf8'));
    const r = await cri.execSync(id, ['sh', '-c', `dd if=/dev/zero of=/dev/shm/fill bs=1M count=${TOUCH_MIB} 2>/dev/null && echo filled`], 300);
    assert.equal(r.stdout.toString(), 'filled\n', `the guest did not fill its memory: ${r.stderr.toString()}`);
    const usageAfter = Number(readFileSync(usageFile, 'utf8'));
    // What the guest touched is QEMU's own anonymous memory (a clone's copies, a cold VM's RAM).
    const anon = Number(/^RssAnon:\s+(\d+) kB/m.exec(readFileSync(`/proc/${qemu}/status`, 'utf8'))?.[1]) * 1024;
    for (const f of filesOfProcess(qemu)) seen.add(f);
    const whileRunning = growth(before, blocksOf([...ourDirFiles(), ...seen]));
    // The VM: 512 MiB of limits + the guest's slack (the pod cgroup is limited: every container has a limit).
    const ramMaps = ramMappings(qemu, 512);
    console.log(`# ${name}: host files grew ${(whileRunning.total / MIB).toFixed(1)} MiB while the guest held ${TOUCH_MIB} MiB (largest: ${whileRunning.worst || 'none'}); pod cgroup usage ${(usageBefore / MIB).toFixed(0)} -> ${(usageAfter / MIB).toFixed(0)} MiB, QEMU's anonymous memory ${(anon / MIB).toFixed(0)} MiB; guest RAM file mappings: ${ramMaps.map((l) => l.split(/\s+/).slice(5).join(' ')).join(', ') || 'none'}`);
    assert.ok(whileRunning.total < SLACK_MIB * MIB, `host files grew ${(whileRunning.total / MIB).toFixed(1)} MiB while the guest dirtied ${TOUCH_MIB} MiB (${whileRunning.worst})`);
    assert.ok(anon >= 256 * MIB, `QEMU holds ${(anon / MIB).toFixed(0)} MiB of anonymous memory after its guest dirtied ${TOUCH_MIB} MiB`);
    assert.ok(usageAfter >= anon, `the pod cgroup counts ${(usageAfter / MIB).toFixed(0)} MiB, less than QEMU's ${(anon / MIB).toFixed(0)} MiB of anonymous memory`);
    if (!opts.fileBackedRam) assert.deepEqual(ramMaps, [], 'a cold-booted guest\'s RAM is a file');
    await cri.stopContainer(id);
    await cri.removeContainer(id);
    // What the files grew to, measured again after the pod is gone (the links through /proc went with QEMU: by path).
    const paths = [...before.values()].map((f) => f.path).filter((p) => !p.startsWith('/proc/'));
    await cri.stopPodSandbox(podId);
    await cri.removePodSandbox(podId);
    const afterwards = growth(before, blocksOf([...ourDirFiles(), ...paths]));
    console.log(`# ${name}: host files grew ${(afterwards.total / MIB).toFixed(1)} MiB in all once the pod was removed (largest: ${afterwards.worst || 'none'})`);
    assert.ok(afterwards.total < SLACK_MIB * MIB, `host files grew ${(afterwards.total / MIB).toFixed(1)} MiB after the pod was removed (${afterwards.worst})`);
  } finally {
    await cri.stopPodSandbox(podId).catch(() => {});
    await cri.removePodSandbox(podId).catch(() => {});
  }
}

describe('a pod\'s guest memory is the pod\'s', { skip: !existsSync(join(MEMORY_MOUNT, 'memory.limit_in_bytes')) && 'no cgroup v1 memory hierarchy here' }, () => {
  it('a clone that dirties 300 MiB grows no template file and no host file, and its pod cgroup counts it', async () => {
    // The first pod of this size makes the template; the second is a clone of a template made before it.
    const warm = podConfig({ name: 'warm', namespace: 'hull-test', memoryLimitBytes: 512 * MIB });
    const warmId = await cri.runPodSandbox(warm, 'hull');
    await cri.stopPodSandbox(warmId);
    await cri.removePodSandbox(warmId);
    const ramFiles = filesUnder(templateRamDir);
    assert.ok(ramFiles.length > 0, 'no template RAM file was made');
    await touchAndMeasure('clone', 'hull', { fileBackedRam: true });
    // And a second clone of the same template does the same: the template is as it was made.
    await touchAndMeasure('clone2', 'hull', { fileBackedRam: true });
  });

  it('a cold-booted pod that dirties 300 MiB has anonymous guest RAM and grows no host file', async () => {
    await touchAndMeasure('cold', 'hull-cold', { fileBackedRam: false });
  });

  it('a pod larger than max_memory is refused at RunPodSandbox, with the reason, and nothing is left', async () => {
    const pod = podConfig({ name: 'too-big', namespace: 'hull-test', memoryLimitBytes: 513 * MIB });
    await assert.rejects(cri.runPodSandbox(pod, 'hull'), /hull pods on this node may not be this large: the pod's VM would need 1280 MiB of memory \(max_memory is 1024 MiB\)/);
    assert.deepEqual(readdirSync(hull.runRoot), [], 'state left in the run root');
    assert.deepEqual(qemuPidsUnder(hull.runRoot), [], 'a VM was started');
    assert.deepEqual(await cri.listPodSandbox(), [], 'a sandbox was left');
  });
});
