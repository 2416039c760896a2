/**
 * `ctr run --rm IMAGE true` through hull and through runc, on the same private containerd in the same
 * run: what a container start costs end to end behind containerd (shim start, sandbox boot, create,
 * start, wait, delete, shim exit). N runs each (default 5, HULL_BENCH_RUNS to change), interleaved
 * hull, runc, hull, runc… after one untimed warm-up of each, so both see the same machine state.
 *
 * Prints min/median/max and the ratio of medians hull/runc, and appends the result to
 * `bench-results-ctr.json` in the current directory (git-ignored). Checks that no QEMU, shim or state
 * of its own is left afterwards.
 */
import { spawn, spawnSync } from 'node:child_process';
import { release } from 'node:os';
import { join } from 'node:path';
import { currentGuestImage } from '../src/guest/index.js';
import { chooseAccel } from '../src/vmm/index.js';
import { findShims, startContainerd, type PrivateContainerd } from '../test/harness/containerd.js';
import { BUSYBOX_REF, ensureTestImages } from '../test/harness/oci-image.js';
import { HULL_RUNTIME, prepareHullRuntime } from '../test/harness/hull-runtime.js';
import { appendResult } from './results.js';
import { entriesIn, mountsUnder, qemuPidsUnder } from '../test/helpers/leaks.js';

const runs = Number(process.env['HULL_BENCH_RUNS'] ?? 5);
if (!Number.isInteger(runs) || runs < 1) throw new Error(`HULL_BENCH_RUNS must be a positive integer, not "${process.env['HULL_BENCH_RUNS']}"`);
const RUNC_RUNTIME = 'io.containerd.runc.v2';
const MEMORY_MIB = 512;
const RESULTS = join(process.cwd(), 'bench-results-ctr.json');

interface Stats {
  minMs: number;
  medianMs: number;
  maxMs: number;
  samplesMs: number[];
}

function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  const round = (v: number): number => Math.round(v * 10) / 10;
  return { minMs: round(sorted[0]!), medianMs: round(median), maxMs: round(sorted[sorted.length - 1]!), samplesMs: samples.map(round) };
}



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
      else reject(new Error(`ctr ${args.join(' ')} exited ${code ?? signal}: ${Buffer.concat(err).toString().trim()}\n--- containerd log (tail) ---\n${ctrd.logTail(20)}`));
    });
  });
}


const image = await currentGuestImage();
if (!image) throw new Error('no guest image: run `make image` first');
const accel = await chooseAccel();

const hullRuntime = prepareHullRuntime({ name: 'bench', memoryMiB: MEMORY_MIB });
const { runRoot, shimDir, configPath } = hullRuntime;

let ctrd: PrivateContainerd | undefined;
let failed = false;
try {
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: shimDir, logLevel: 'info' });
  await ensureTestImages(ctrd);
  const c = ctrd;
  const variants = [
    { name: 'hull', args: (id: string) => ['run', '--rm', '--runtime', HULL_RUNTIME, '--runtime-config-path', configPath, BUSYBOX_REF, id, 'true'], samples: [] as number[] },
    { name: 'runc', args: (id: string) => ['run', '--rm', '--runtime', RUNC_RUNTIME, BUSYBOX_REF, id, 'true'], samples: [] as number[] },
  ];
  for (const v of variants) await timeCtr(c, v.args(`warmup-${v.name}`));
  for (let i = 0; i < runs; i++) {
    for (const v of variants) v.samples.push(await timeCtr(c, v.args(`bench-${v.name}-${i}`)));
  }
  const [hull, runc] = variants.map((v) => stats(v.samples)) as [Stats, Stats];
  const ratio = hull.medianMs / runc.medianMs;

  console.log(`ctr run --rm ${BUSYBOX_REF} true: ${runs} runs each, interleaved, after one warm-up each`);
  console.log(`accel ${accel.accel}, hull VM ${MEMORY_MIB} MiB / 1 vCPU, guest ${image.kernelRelease}, host ${release()}`);
  console.log('runtime        median ms   min ms   max ms   ×runc');
  for (const [name, s] of [['hull', hull], ['runc', runc]] as const) {
    const cols = [s.medianMs, s.minMs, s.maxMs].map((v) => v.toFixed(0).padStart(8));
    console.log(`${name.padEnd(12)} ${cols[0]!.padStart(11)} ${cols[1]} ${cols[2]} ${(s.medianMs / runc.medianMs).toFixed(1).padStart(7)}`);
  }
  appendResult(RESULTS, {
    bench: 'ctr run --rm IMAGE true',
    date: new Date().toISOString(),
    runs,
    accel: accel.accel,
    memoryMiB: MEMORY_MIB,
    guestKernel: image.kernelRelease,
    hostKernel: release(),
    hull,
    runc,
    ratioOfMedians: Math.round(ratio * 100) / 100,
  });
  console.log(`saved to ${RESULTS}`);
} catch (e) {
  failed = true;
  console.error(`bench: ${(e as Error).message}`);
} finally {
  const shims = ctrd ? findShims(ctrd.address) : [];
  const report = await ctrd?.stop();
  const left = [
    ...shims.map((s) => `shim ${s.pid}`),
    ...(report?.leakedShims ?? []).map((s) => `killed shim ${s.pid}`),
    ...(report?.leakedMounts ?? []).map((m) => `mount ${m}`),
    ...mountsUnder(runRoot).map((m) => `mount ${m}`),
    ...qemuPidsUnder(runRoot).map((p) => `qemu ${p}`),
    ...entriesIn(runRoot).map((e) => `state ${runRoot}/${e}`),
  ];
  // A VM that outlived its shim is still ours (its state is under our unique run root): end it by pid.
  for (const pid of qemuPidsUnder(runRoot)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  // Mounts a killed shim left in its sandbox dir (container rootfs) are ours too: detach them first.
  for (const m of mountsUnder(runRoot).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
  hullRuntime.remove();
  if (left.length > 0) {
    failed = true;
    console.error(`bench: left behind: ${left.join(', ')}`);
  }
}
process.exit(failed ? 1 : 0);
