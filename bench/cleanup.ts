/**
 * The end of a bench run: remove every pod still there, stop our containerd, then look for anything
 * we made that is still around (shims, QEMU under our run root, runsc processes under our directory,
 * mounts, state, cgroups of our containers), end or remove it, and say what it was. Processes are
 * ended by pid, found from our containerd's address and our own paths, never by name.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { findShims, type PrivateContainerd } from '../test/harness/containerd.js';
import type { CriClient } from '../test/harness/cri.js';
import { entriesIn, mountsUnder, qemuPidsUnder } from '../test/helpers/leaks.js';
import { removePods, type PodContext } from './pods.js';
import { killTree, pidsWithArg } from './procs.js';
import type { BenchRuntimes } from './runtimes.js';
import { stopPoolOwner } from '../test/harness/hull-runtime.js';

/** runscStateLeft lists runsc container state still in our roots (the CRI and ctr roots have a level per namespace). */
function runscStateLeft(rt: BenchRuntimes): string[] {
  const { criRoot, ctrRoot, runRoot } = rt.gvisor;
  const perNamespace = (root: string): string[] => entriesIn(root).flatMap((ns) => entriesIn(join(root, ns)).map((e) => join(root, ns, e)));
  const all = [...perNamespace(criRoot), ...perNamespace(ctrRoot), ...entriesIn(runRoot).map((e) => join(runRoot, e))];
  // A lock file alone is runsc's own: its `delete`, run by containerd after we killed a gVisor shim
  // (pods.ts stopGvisorShims), can leave one behind. It goes with our directory; no failure for it.
  const locks = all.filter((e) => e.endsWith('.lock'));
  if (locks.length > 0) console.error(`bench: note: runsc left ${locks.length} lock file(s) in its state dir (removed with it)`);
  return all.filter((e) => !e.endsWith('.lock'));
}

/** cgroupsLeft lists cgroups named after our containers (CRI's `k8s.io/<id>`, or `<id>` for direct `run`s). */
function cgroupsLeft(ids: Set<string>, runPrefix: string): string[] {
  const left: string[] = [];
  for (const hierarchy of entriesIn('/sys/fs/cgroup')) {
    const base = join('/sys/fs/cgroup', hierarchy);
    for (const e of entriesIn(join(base, 'k8s.io'))) if (ids.has(e)) left.push(join(base, 'k8s.io', e));
    for (const e of entriesIn(base)) if (e.startsWith(runPrefix)) left.push(join(base, e));
  }
  return left;
}

export interface CleanupInput {
  rt: BenchRuntimes;
  ctrd?: PrivateContainerd;
  cri?: CriClient;
  ctx?: PodContext;
  /** ids are every pod sandbox and container id CRI gave us. */
  ids: Set<string>;
  /** runPrefix starts the ids of direct `runc run` / `runsc run` containers. */
  runPrefix: string;
}

/** cleanup returns what was left behind (and has now been removed); empty when the run was clean. */
export async function cleanup(o: CleanupInput): Promise<string[]> {
  const left: string[] = [];
  if (o.ctx && o.ctx.pods.length > 0) {
    left.push(...o.ctx.pods.map((p) => `pod ${p.config.metadata.name} (${p.runtime})`));
    for (const err of await removePods(o.ctx, [...o.ctx.pods])) console.error(`bench: cleanup: ${err}`);
  }
  if (o.cri) {
    for (const p of await o.cri.listPodSandbox().catch(() => [])) {
      left.push(`pod sandbox ${p.id}`);
      await o.cri.stopPodSandbox(p.id).catch(() => undefined);
      await o.cri.removePodSandbox(p.id).catch(() => undefined);
    }
    o.cri.close();
  }
  const shims = o.ctrd ? findShims(o.ctrd.address) : [];
  const report = await o.ctrd?.stop();
  const hulls = [o.rt.hull, o.rt.hullPoolBatch, o.rt.hullNoPool];
  // The pools' owners end their ready VMs; a failure to stop one is a leak like any other.
  for (const hull of hulls) if (stopPoolOwner(hull) !== 0) left.push(`VM pool owner of ${hull.poolDir}`);
  const poolDirs = hulls.map((h) => h.poolDir);
  for (const dir of poolDirs) {
    left.push(
      ...qemuPidsUnder(dir).map((p) => `pooled qemu ${p}`),
      ...mountsUnder(dir).map((m) => `mount ${m}`),
      ...entriesIn(dir).filter((e) => !e.startsWith('pool.log')).map((e) => `pool state ${dir}/${e}`),
    );
    for (const pid of qemuPidsUnder(dir)) killTree(pid);
    for (const m of mountsUnder(dir).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
  }
  const runRoots = hulls.map((h) => h.runRoot);
  const { runRoot } = o.rt.hull;
  left.push(
    ...shims.map((s) => `shim ${s.pid}`),
    ...(report?.leakedShims ?? []).map((s) => `killed shim ${s.pid}`),
    ...(report?.leakedMounts ?? []).map((m) => `mount ${m}`),
    ...runRoots.flatMap((r) => mountsUnder(r).map((m) => `mount ${m}`)),
    ...runRoots.flatMap((r) => qemuPidsUnder(r).map((p) => `qemu ${p}`)),
    ...runRoots.flatMap((r) => entriesIn(r).map((e) => `hull state ${r}/${e}`)),
    ...pidsWithArg(o.rt.gvisor.dir).map((p) => `runsc process ${p}`),
    ...runscStateLeft(o.rt).map((s) => `runsc state ${s}`),
    ...mountsUnder(o.rt.gvisor.dir).map((m) => `mount ${m}`),
  );
  // VMs and runsc sandboxes that outlived their shim are still ours (their command lines name our
  // unique directories): end them by pid, then detach what a killed process left mounted.
  for (const pid of [...qemuPidsUnder(runRoot), ...pidsWithArg(o.rt.gvisor.dir)]) killTree(pid);
  for (const m of [...mountsUnder(runRoot), ...mountsUnder(o.rt.gvisor.dir)].sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
  const cgroups = cgroupsLeft(o.ids, o.runPrefix);
  left.push(...cgroups.map((c) => `cgroup ${c}`));
  for (const c of cgroups.sort((a, b) => b.length - a.length)) {
    try {
      rmdirSync(c);
    } catch {
      // Still has processes: reported above.
    }
  }
  o.rt.remove();
  if (existsSync('/run/hull-bench') && readdirSync('/run/hull-bench').length === 0) rmdirSync('/run/hull-bench');
  return left;
}
