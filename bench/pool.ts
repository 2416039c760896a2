/**
 * hull's pool of warm VMs in the benchmark. The main hull runtime runs with the default pool_size
 * (config's default, HULL_BENCH_POOL overrides); P3 is measured again with the pool at the batch
 * size and with no pool. Before each timed hull start the bench waits (untimed) until the pool is
 * full: the figures are those of a node whose pool had time to refill, and the refill rate is
 * reported beside them. A ready VM's memory is the PSS of its host processes (`hull pool status`).
 */
import { fileURLToPath } from 'node:url';
import { PoolClient, startOwner, type PoolStatus } from '../src/pool/index.js';
import type { HullRuntime } from '../test/harness/hull-runtime.js';
import { sleep } from './stats.js';

const FILL_TIMEOUT_MS = 600_000;
const HULL = fileURLToPath(new URL('../../bin/hull', import.meta.url));

function client(hull: HullRuntime): PoolClient {
  return new PoolClient({ dir: hull.poolDir, configPath: hull.configPath, log: () => undefined });
}

export async function poolStatus(hull: HullRuntime): Promise<PoolStatus | undefined> {
  return client(hull).status().catch(() => undefined);
}

/**
 * waitForFullPool waits until the runtime's pool holds pool_size ready VMs (none to wait for without
 * a pool), starting its owner as a pod would when none runs; the ms waited.
 */
export async function waitForFullPool(hull: HullRuntime): Promise<number> {
  if (hull.poolSize === 0) return 0;
  const started = performance.now();
  let ownerStarted = false;
  for (;;) {
    const s = await poolStatus(hull);
    if (s === undefined && !ownerStarted) {
      startOwner({ configPath: hull.configPath, hull: HULL, log: (line) => console.error(`bench: ${line}`) });
      ownerStarted = true;
    }
    if (s && s.shapes.some((shape) => shape.ready >= hull.poolSize)) return performance.now() - started;
    if (performance.now() - started > FILL_TIMEOUT_MS) throw new Error(`hull's pool (${hull.poolDir}) did not fill to ${hull.poolSize} within ${FILL_TIMEOUT_MS} ms: ${JSON.stringify(s)}`);
    await sleep(100);
  }
}
