/**
 * Pod churn through CRI, as a busy node sees it: N cycles of RunPodSandbox, CreateContainer,
 * StartContainer, ExecSync `true`, StopPodSandbox, RemovePodSandbox on one private containerd.
 * What the host holds for this containerd and run root is counted before and after: processes,
 * mounts, taps and pod veths, netns, cgroups, files under the run root, jail uid leases, template
 * files, containerd's task bundles. Every count must be what it was.
 *
 * HULL_TEST_CHURN sets N (default 8, what `make test` runs; 100 is the full run).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_CONFIG } from '../../src/config/index.js';
import { currentGuestImage } from '../../src/guest/index.js';
import { hostHierarchies } from '../../src/sandbox/host-cgroup.js';
import { TAP_NAME } from '../../src/net/names.js';
import { findShims, startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig } from '../harness/cri.js';
import { entriesIn, mountsUnder, processAlive, qemuPidsUnder } from '../helpers/leaks.js';
import { leasesOf, sandboxNetns } from '../helpers/pod-traces.js';

const CYCLES = Number.parseInt(process.env['HULL_TEST_CHURN'] ?? '8', 10);
const hullRuntime = prepareHullRuntime({ name: 'churn' });
const { work, runRoot } = hullRuntime;
const cgroupParent = `/hull-churn-${randomBytes(4).toString('hex')}`;
let ctrd: PrivateContainerd;
let cri: CriClient;
let netnsDir = '';

before(async () => {
  assert.ok(Number.isInteger(CYCLES) && CYCLES > 0, 'HULL_TEST_CHURN must be a positive number');
  assert.ok(await currentGuestImage(), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 120_000 });
});

after(async () => {
  for (const pod of (await cri?.listPodSandbox().catch(() => [])) ?? []) {
    await cri.stopPodSandbox(pod.id).catch(() => {});
    await cri.removePodSandbox(pod.id).catch(() => {});
  }
  cri?.close();
  if (process.env['HULL_TEST_KEEP_LOG'] && ctrd) copyFileSync(ctrd.logPath, process.env['HULL_TEST_KEEP_LOG']);
  const report = await ctrd?.stop();
  const left = { vms: qemuPidsUnder(runRoot), mounts: [...mountsUnder(work), ...mountsUnder(runRoot)], state: entriesIn(runRoot), leases: leasesOf(runRoot, true), cgroups: cgroupDirs() };
  for (const dir of [...left.cgroups].reverse()) {
    try {
      rmdirSync(dir);
    } catch {
      // still busy: reported below
    }
  }
  hullRuntime.remove();
  assert.deepEqual(report?.leakedShims ?? [], [], 'containerd had to kill leaked shims');
  assert.deepEqual(left, { vms: [], mounts: [], state: [], leases: [], cgroups: [] });
});

let hierarchies: string[] = [];

/** cgroupDirs lists every directory below (and including) the pods' cgroup parent, parents first. */
function cgroupDirs(): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    if (!existsSync(dir)) return;
    out.push(dir);
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(join(dir, e.name));
  };
  for (const mount of hierarchies) walk(join(mount, cgroupParent));
  return out;
}

/** files lists every path below `root`, relative to it. */
function files(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of entries) {
      const path = join(dir, name);
      out.push(relative(root, path));
      try {
        if (statSync(path).isDirectory() && mountsUnder(path).length === 0) walk(path);
      } catch {
        // gone meanwhile
      }
    }
  };
  walk(root);
  return out.sort();
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** ourProcesses lists (by name) the live processes of this containerd and run root: shims, VMs, their helpers. */
function ourProcesses(): string[] {
  const pids = new Set<number>([...findShims(ctrd.address).map((s) => s.pid), ...qemuPidsUnder(runRoot)]);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(runRoot) || cmdline.includes(ctrd.dir)) pids.add(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return [...pids].filter((pid) => pid !== ctrd.pid && processAlive(pid)).map(comm).sort();
}

/** hostLinks lists hull's taps in the host's netns and the pod veths on this containerd's bridge. */
function hostLinks(): string[] {
  return [...entriesIn('/sys/class/net').filter((l) => l.includes(TAP_NAME)), ...entriesIn(`/sys/class/net/${ctrd.bridge}/brif`)].sort();
}

/**
 * templateFiles lists the files of the templates used since `since` (their `last-used` is touched by
 * every clone's start), in both template directories: other hull users on this host may add or evict
 * templates of their own meanwhile, which are not this test's to count.
 */
function templateFiles(since: number): string[] {
  const used = entriesIn(DEFAULT_CONFIG.templatesDir).filter((key) => {
    try {
      return statSync(join(DEFAULT_CONFIG.templatesDir, key, 'last-used')).mtimeMs >= since;
    } catch {
      return false;
    }
  });
  return used.flatMap((key) => [DEFAULT_CONFIG.templatesDir, DEFAULT_CONFIG.templateRamDir].flatMap((root) => files(join(root, key)).map((f) => join(root, key, f))));
}

let startedAt = 0;

function footprint() {
  return {
    processes: ourProcesses(),
    mounts: [...mountsUnder(runRoot), ...mountsUnder(ctrd.dir)].sort(),
    links: hostLinks(),
    netns: entriesIn(netnsDir),
    cgroups: cgroupDirs(),
    runRootFiles: files(runRoot),
    leases: leasesOf(runRoot, true),
    templateFiles: templateFiles(startedAt),
    taskBundles: entriesIn(join(ctrd.state, 'io.containerd.runtime.v2.task', 'k8s.io')),
  };
}

/** cycle is one pod's life as kubelet drives it, with one exec probe. */
async function cycle(i: number): Promise<string> {
  const pod = podConfig({ name: `churn-${i}`, namespace: 'hull-churn' });
  pod.linux!.cgroupParent = cgroupParent;
  const podId = await cri.runPodSandbox(pod, 'hull');
  try {
    const id = await cri.createContainer(podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', '100000'] }), pod);
    await cri.startContainer(id);
    const r = await cri.execSync(id, ['true'], 30);
    assert.equal(r.exitCode, 0, r.stderr.toString());
    if (!netnsDir) netnsDir = dirname(await sandboxNetns(cri, podId));
  } finally {
    await cri.stopPodSandbox(podId);
    await cri.removePodSandbox(podId);
  }
  return podId;
}

describe('pod churn', () => {
  it(`${CYCLES} pod create/exec/delete cycles leave the host as it was`, { timeout: 120_000 + CYCLES * 60_000 }, async (t) => {
    hierarchies = (await hostHierarchies()).map((h) => h.mount);
    // The first pod may make the VM template and containerd's first netns directory: a cache, not a leak.
    startedAt = Date.now() - 1000;
    await cycle(0);
    const before = footprint();
    t.diagnostic(`before: ${JSON.stringify(before)}`);
    const started = Date.now();
    for (let i = 1; i <= CYCLES; i++) await cycle(i);
    t.diagnostic(`${CYCLES} cycles in ${Math.round((Date.now() - started) / 1000)} s`);
    // containerd finishes a removed pod's shim in the background: give it a moment to settle.
    let afterwards = footprint();
    for (let i = 0; i < 100 && JSON.stringify(afterwards) !== JSON.stringify(before); i++) {
      await sleep(200);
      afterwards = footprint();
    }
    assert.deepEqual(afterwards, before);
    assert.deepEqual(await cri.listPodSandbox(), []);
  });
});
