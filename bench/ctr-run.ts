/**
 * P1: `ctr run --rm IMAGE true` through each runtime on our containerd: what a container start costs
 * end to end behind containerd (shim start, sandbox, create, start, wait, delete, shim exit). One
 * untimed warm-up each, then `runs` rounds in RUNTIMES order, so all see the same machine state.
 */
import { spawn } from 'node:child_process';
import type { PrivateContainerd } from '../test/harness/containerd.js';
import { waitForFullPool } from './pool.js';
import { RUNTIMES, type BenchRuntimes, type RuntimeName } from './runtimes.js';
import { summarize, type Summary } from './stats.js';

/** timeCtr times one `ctr` invocation from spawn to exit; it throws unless ctr exits 0. */
function timeCtr(ctrd: PrivateContainerd, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn('ctr', ['-a', ctrd.address, '-n', ctrd.namespace, ...args], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 180_000, killSignal: 'SIGKILL' });
    const err: Buffer[] = [];
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const elapsed = performance.now() - started;
      if (code === 0) resolve(elapsed);
      else reject(new Error(`ctr ${args.join(' ')} exited ${code ?? signal}: ${Buffer.concat(err).toString().trim()}`));
    });
  });
}

export async function measureCtrRun(ctrd: PrivateContainerd, rt: BenchRuntimes, runs: number): Promise<Record<RuntimeName, Summary>> {
  const samples: Record<RuntimeName, number[]> = { runc: [], gvisor: [], hull: [] };
  // hull's warm-up also starts its pool's owner; each hull round then waits (untimed) for a full pool.
  for (const name of RUNTIMES) await timeCtr(ctrd, rt.ctrRunArgs(name, `warmup-${name}`));
  for (let i = 0; i < runs; i++) {
    for (const name of RUNTIMES) {
      if (name === 'hull') await waitForFullPool(rt.hull);
      samples[name].push(await timeCtr(ctrd, rt.ctrRunArgs(name, `p1-${name}-${i}`)));
    }
  }
  return { runc: summarize(samples.runc), gvisor: summarize(samples.gvisor), hull: summarize(samples.hull) };
}
