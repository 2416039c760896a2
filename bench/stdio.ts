/**
 * S1/S2: a container's stdout and stdin through `ctr run`, in MiB/s. S1: the container writes
 * `mib` MiB of zeros (`head -c`); timed on the host from the first byte to the last. S2: the host
 * writes `mib` MiB into ctr's stdin, the container reads exactly that much (`head -c`) and then
 * prints a line; timed from the first write to that line. Both leave container start and exit out.
 * One untimed warm-up per runtime, then `runs` rounds in RUNTIMES order.
 */
import { spawn } from 'node:child_process';
import type { Writable } from 'node:stream';
import type { PrivateContainerd } from '../test/harness/containerd.js';
import { RUNTIMES, type BenchRuntimes, type RuntimeName } from './runtimes.js';
import { summarize, type Summary } from './stats.js';

export interface StdioResult {
  stdoutMiBps: Record<RuntimeName, Summary>;
  stdinMiBps: Record<RuntimeName, Summary>;
}

const CHUNK = Buffer.alloc(1 << 20);

/** flow runs one `ctr run` and returns MiB/s of the direction measured; it throws unless all arrived and ctr exited 0. */
function flow(ctrd: PrivateContainerd, args: string[], bytes: number, direction: 'stdout' | 'stdin'): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('ctr', ['-a', ctrd.address, '-n', ctrd.namespace, ...args], { stdio: ['pipe', 'pipe', 'pipe'], timeout: 1_800_000, killSignal: 'SIGKILL' });
    let first = 0;
    let last = 0;
    let received = 0;
    let out = '';
    const err: Buffer[] = [];
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.stdout.on('data', (c: Buffer) => {
      if (direction === 'stdout') {
        first ||= performance.now();
        received += c.length;
        if (received >= bytes) last ||= performance.now();
      } else {
        out += c.toString();
        if (out.includes('\n')) last ||= performance.now();
      }
    });
    child.stdin.on('error', () => {});
    if (direction === 'stdin') {
      void (async () => {
        first = performance.now();
        for (let sent = 0; sent < bytes && !child.stdin.destroyed; sent += CHUNK.length) {
          if (!child.stdin.write(CHUNK.subarray(0, Math.min(CHUNK.length, bytes - sent)))) await drained(child.stdin);
        }
        child.stdin.end();
      })();
    } else {
      child.stdin.end();
    }
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const complete = direction === 'stdout' ? received === bytes : out.trim() === String(bytes);
      if (code === 0 && complete && last > first) resolve(bytes / (1024 * 1024) / ((last - first) / 1000));
      else reject(new Error(`ctr ${args.join(' ')} exited ${code ?? signal} (${direction}: ${direction === 'stdout' ? received : out.trim()} of ${bytes} bytes): ${Buffer.concat(err).toString().trim()}`));
    });
  });
}

export async function measureStdio(ctrd: PrivateContainerd, rt: BenchRuntimes, runs: number, mib: number): Promise<StdioResult> {
  const bytes = mib << 20;
  const out: Record<RuntimeName, number[]> = { runc: [], gvisor: [], hull: [] };
  const inn: Record<RuntimeName, number[]> = { runc: [], gvisor: [], hull: [] };
  const stdout = (name: RuntimeName, id: string) => flow(ctrd, rt.ctrRunArgs(name, id, ['head', '-c', String(bytes), '/dev/zero']), bytes, 'stdout');
  const stdin = (name: RuntimeName, id: string) => flow(ctrd, rt.ctrRunArgs(name, id, ['sh', '-c', `head -c ${bytes} | wc -c`]), bytes, 'stdin');
  for (const name of RUNTIMES) await stdout(name, `s-warmup-${name}`);
  for (let i = 0; i < runs; i++) {
    for (const name of RUNTIMES) {
      out[name].push(await stdout(name, `s1-${name}-${i}`));
      inn[name].push(await stdin(name, `s2-${name}-${i}`));
    }
  }
  const summary = (s: Record<RuntimeName, number[]>) => ({ runc: summarize(s.runc), gvisor: summarize(s.gvisor), hull: summarize(s.hull) });
  return { stdoutMiBps: summary(out), stdinMiBps: summary(inn) };
}

/** drained resolves when `stream` can take more, or is closed. */
function drained(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}
