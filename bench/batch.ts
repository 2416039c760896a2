/**
 * P3: `size` pods of one runtime started in parallel through CRI (RunPodSandbox, CreateContainer,
 * StartContainer each) until every container is Running; wall time of the batch. `repeats` rounds
 * in RUNTIMES order, each batch removed (untimed) before the next.
 */
import { removePodsOrThrow, startPods, type PodContext } from './pods.js';
import { RUNTIMES, type RuntimeName } from './runtimes.js';
import { summarize, type Summary } from './stats.js';

export async function measureBatch(ctx: PodContext, size: number, repeats: number): Promise<Record<RuntimeName, Summary>> {
  const samples: Record<RuntimeName, number[]> = { runc: [], gvisor: [], hull: [] };
  for (let i = 0; i < repeats; i++) {
    for (const name of RUNTIMES) {
      console.error(`bench: P3 round ${i + 1}/${repeats}: ${size} ${name} pods in parallel`);
      const batch = await startPods(ctx, name, `p3-${name}-${i}`, size);
      samples[name].push(batch.ms);
      await removePodsOrThrow(ctx, batch.pods);
    }
  }
  return { runc: summarize(samples.runc, 0), gvisor: summarize(samples.gvisor, 0), hull: summarize(samples.hull, 0) };
}
