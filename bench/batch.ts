/**
 * P3: `size` pods of one runtime started in parallel through CRI (RunPodSandbox, CreateContainer,
 * StartContainer each) until every container is Running; wall time of the batch. `repeats` rounds
 * in RUNTIMES order, each batch removed (untimed) before the next; before each hull batch the bench
 * waits (untimed) for hull's pool to be full (bench/pool.ts). measureHullBatch does the same for one
 * more hull runtime (a pool of the batch's size, or none) reached through its own CRI handler.
 */
import type { HullRuntime } from '../test/harness/hull-runtime.js';
import { removePodsOrThrow, startPods, type PodContext } from './pods.js';
import { waitForFullPool } from './pool.js';
import { RUNTIMES, type RuntimeName } from './runtimes.js';
import { summarize, type Summary } from './stats.js';

export async function measureBatch(ctx: PodContext, size: number, repeats: number, hull: HullRuntime): Promise<Record<RuntimeName, Summary>> {
  const samples: Record<RuntimeName, number[]> = { runc: [], gvisor: [], hull: [] };
  for (let i = 0; i < repeats; i++) {
    for (const name of RUNTIMES) {
      console.error(`bench: P3 round ${i + 1}/${repeats}: ${size} ${name} pods in parallel`);
      if (name === 'hull') await waitForFullPool(hull);
      const batch = await startPods(ctx, name, `p3-${name}-${i}`, size);
      samples[name].push(batch.ms);
      await removePodsOrThrow(ctx, batch.pods);
    }
  }
  return { runc: summarize(samples.runc, 0), gvisor: summarize(samples.gvisor, 0), hull: summarize(samples.hull, 0) };
}

/** measureHullBatch is P3 for the hull runtime `hull` behind CRI handler `handler`. */
export async function measureHullBatch(ctx: PodContext, handler: string, hull: HullRuntime, size: number, repeats: number): Promise<{ summary: Summary; fillMs: number[] }> {
  const samples: number[] = [];
  const fillMs: number[] = [];
  const variant: PodContext = { ...ctx, handler: () => handler, hullRunRoot: hull.runRoot };
  for (let i = 0; i < repeats; i++) {
    console.error(`bench: P3 round ${i + 1}/${repeats}: ${size} hull pods in parallel, pool_size ${hull.poolSize}`);
    fillMs.push(await waitForFullPool(hull));
    const batch = await startPods(variant, 'hull', `p3-${handler}-${i}`, size);
    samples.push(batch.ms);
    await removePodsOrThrow(variant, batch.pods);
  }
  return { summary: summarize(samples, 0), fillMs };
}
