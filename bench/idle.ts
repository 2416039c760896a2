/**
 * P2 and P5 on `count` idle busybox `sleep inf` pods of one runtime at a time (so no runtime's
 * processes mix with another's), runtimes one after the other:
 * - P2: after SETTLE_MS, the summed PSS of every host process the runtime keeps for these pods
 *   (pods.ts podProcesses: shims and all their descendants), in MiB per pod;
 * - P5: user+system CPU time of the same processes over CPU_WINDOW_MS, in % of one core per pod.
 */
import { removePodsOrThrow, podProcesses, startPods, type PodContext } from './pods.js';
import { cpuSeconds, pssKiB } from './procs.js';
import { RUNTIMES, type RuntimeName } from './runtimes.js';
import { round, sleep } from './stats.js';

const SETTLE_MS = 10_000;
export const CPU_WINDOW_MS = 30_000;
/** START_PARALLEL bounds pod starts in flight: the start itself is not measured here. */
const START_PARALLEL = 5;

export interface IdleResult {
  pods: number;
  processes: number;
  pssMiBPerPod: number;
  /** pssMiBPerPodByCommand splits pssMiBPerPod by process name. */
  pssMiBPerPodByCommand: Record<string, number>;
  cpuPctPerPod: number;
  cpuWindowS: number;
}

export async function measureIdle(ctx: PodContext, count: number): Promise<Record<RuntimeName, IdleResult>> {
  const out = {} as Record<RuntimeName, IdleResult>;
  for (const name of RUNTIMES) {
    console.error(`bench: P2/P5: ${count} idle ${name} pods`);
    const { pods } = await startPods(ctx, name, `idle-${name}`, count, START_PARALLEL);
    await sleep(SETTLE_MS);
    const procs = podProcesses(ctx, pods);
    const pss = pssKiB(procs);
    const before = cpuSeconds(procs);
    const t0 = performance.now();
    await sleep(CPU_WINDOW_MS);
    const after = cpuSeconds(procs);
    const window = (performance.now() - t0) / 1000;
    let used = 0;
    for (const [pid, s] of after) used += s - (before.get(pid) ?? s);
    out[name] = {
      pods: count,
      processes: procs.length,
      pssMiBPerPod: round(pss.total / 1024 / count, 1),
      pssMiBPerPodByCommand: Object.fromEntries(Object.entries(pss.byCommand).map(([comm, kib]) => [comm, round(kib / 1024 / count, 1)])),
      cpuPctPerPod: round((used / window / count) * 100, 3),
      cpuWindowS: round(window, 1),
    };
    await removePodsOrThrow(ctx, pods);
  }
  return out;
}
