/**
 * `make bench`: issue #5's benchmark in one run. runc, gVisor (Debian's runsc) and hull, all on one
 * private containerd (test/harness), the same busybox image, hull VMs of 512 MiB / 1 vCPU:
 *
 *   P1 `ctr run --rm IMAGE true`                     bench/ctr-run.ts
 *   P2 host memory per idle pod, P5 idle CPU per pod bench/idle.ts
 *   P3 10 pods in parallel through CRI to Running    bench/batch.ts
 *   P4 `exec true`, P6 256 MiB written with fsync    bench/exec.ts
 *   B1/B2 `run` of a bundle, no containerd; hull cold too   bench/boot.ts
 *   S1/S2 stdout and stdin MiB/s through `ctr run`         bench/stdio.ts
 *
 * Environment: HULL_BENCH_RUNS (P1, P4, P6, B1/B2; default 5), HULL_BENCH_PODS (P2/P5; default 20),
 * HULL_BENCH_REPEATS (P3; default 3), HULL_BENCH_STDIO_RUNS (S1/S2; default 3), HULL_BENCH_STDIO_MIB (S1/S2;
 * default 32), HULL_BENCH_ONLY=stdio (S1/S2 alone). Prints one table with issue #5's targets and saves
 * everything (samples, medians, machine) to `bench-results.json` in the current directory. Cleans up
 * all it made and fails if anything was left behind.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_CONFIG } from '../src/config/index.js';
import { currentGuestImage } from '../src/guest/index.js';
import { chooseAccel } from '../src/vmm/index.js';
import { startContainerd, type PrivateContainerd } from '../test/harness/containerd.js';
import { CriClient } from '../test/harness/cri.js';
import { BUSYBOX_REF, ensureTestImages } from '../test/harness/oci-image.js';
import { measureBatch, measureHullBatch } from './batch.js';
import { poolStatus } from './pool.js';
import { stopPoolOwner } from '../test/harness/hull-runtime.js';
import { measureBoot, RUN_PREFIX } from './boot.js';
import { cleanup } from './cleanup.js';
import { measureCtrRun } from './ctr-run.js';
import { measureExec, WRITE_MIB } from './exec.js';
import { measureStdio } from './stdio.js';
import { CPU_WINDOW_MS, measureIdle } from './idle.js';
import { machineInfo } from './machine.js';
import type { PodContext } from './pods.js';
import { formatTable, stdioRows, tableRows } from './report.js';
import { HULL_NO_POOL, HULL_POOL_BATCH, prepareRuntimes, RUNTIMES, VM_MEMORY_MIB, type RuntimeName } from './runtimes.js';
import { median, positiveInt, round } from './stats.js';

const BATCH = 10;
const RESULTS = join(process.cwd(), 'bench-results.json');
const options = {
  runs: positiveInt('HULL_BENCH_RUNS', 5),
  pods: positiveInt('HULL_BENCH_PODS', 20),
  repeats: positiveInt('HULL_BENCH_REPEATS', 3),
  stdioRuns: positiveInt('HULL_BENCH_STDIO_RUNS', 3),
  stdioMiB: positiveInt('HULL_BENCH_STDIO_MIB', 32),
  batch: BATCH,
  image: BUSYBOX_REF,
  hull: { memoryMiB: VM_MEMORY_MIB, vcpus: 1, templates: true, poolSize: Number(process.env['HULL_BENCH_POOL'] ?? DEFAULT_CONFIG.poolSize) },
  gvisor: { network: 'none', platform: 'runsc default (ptrace)', via: 'containerd-shim-runc-v2 with runsc as its binary' },
  p6: `dd if=/dev/zero of=/bench.dat bs=1M count=${WRITE_MIB} conv=fsync via CRI ExecSync, timed on the host around the exec`,
};

/** StdioOnly ends a HULL_BENCH_ONLY=stdio run after S1/S2, through the usual cleanup. */
class StdioOnly extends Error {}

const log = (msg: string): void => console.error(`bench: ${msg}`);
const started = performance.now();
const image = await currentGuestImage();
if (!image) throw new Error('No guest image: run `make image` first');
const accel = await chooseAccel();

const onlyStdio = process.env['HULL_BENCH_ONLY'] === 'stdio';
const rt = prepareRuntimes(BATCH);
let ctrd: PrivateContainerd | undefined;
let cri: CriClient | undefined;
let ctx: PodContext | undefined;
const ids = new Set<string>();
let failed = false;
try {
  if (!onlyStdio) log(`B1/B2: run of a bundle without containerd, ${options.runs} rounds`);
  const boot = onlyStdio ? undefined : measureBoot(rt, options.runs);
  ctrd = await startContainerd({ runtimes: rt.containerd, extraPath: rt.hull.shimDir, logLevel: 'info' });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 300_000 });
  ctx = { cri, address: ctrd.address, hullRunRoot: rt.hull.runRoot, handler: rt.handler, pods: [], ids, gvisorStateRoot: rt.gvisor.criRoot };
  log(`S1/S2: ${options.stdioMiB} MiB through stdout and stdin, ${options.stdioRuns} rounds`);
  const stdio = await measureStdio(ctrd, rt, options.stdioRuns, options.stdioMiB);
  const sRows = stdioRows(stdio, options.stdioMiB, options.stdioRuns);
  if (onlyStdio || !boot) {
    console.log(formatTable(sRows));
    writeFileSync(RESULTS, JSON.stringify({ bench: 'hull stdio', date: new Date().toISOString(), options, table: sRows, results: { stdio } }, null, 2) + '\n');
    throw new StdioOnly();
  }
  log(`P1: ctr run --rm, ${options.runs} rounds`);
  const p1CtrRunMs = await measureCtrRun(ctrd, rt, options.runs);
  log(`P4/P6: exec true, ${WRITE_MIB} MiB write, ${options.runs} rounds`);
  const exec = await measureExec(ctx, options.runs);
  const p3BatchMs = await measureBatch(ctx, BATCH, options.repeats, rt.hull);
  const p3PoolBatch = await measureHullBatch(ctx, HULL_POOL_BATCH, rt.hullPoolBatch, BATCH, options.repeats);
  // The ready VMs of a full batch-sized pool: what each costs in host memory.
  const readyPssMiB = ((await poolStatus(rt.hullPoolBatch))?.readyPssBytes ?? []).map((b) => round(b / (1024 * 1024), 1));
  const p3NoPool = await measureHullBatch(ctx, HULL_NO_POOL, rt.hullNoPool, BATCH, options.repeats);
  // Only the main runtime's pool stays for the rest: the others' ready VMs would be counted in P2/P5's host.
  stopPoolOwner(rt.hullPoolBatch);
  const p2p5Idle = await measureIdle(ctx, options.pods);
  const pool = {
    size: rt.hull.poolSize,
    p3PoolBatchMs: p3PoolBatch.summary,
    p3NoPoolMs: p3NoPool.summary,
    batchPoolFillMs: p3PoolBatch.fillMs.map((ms) => round(ms, 0)),
    readyVmPssMiB: { median: median(readyPssMiB), samples: readyPssMiB },
  };

  const results = { p1CtrRunMs, p2p5Idle, p3BatchMs, exec, boot, pool, stdio };
  const rows = [...tableRows(results, { ...options, cpuWindowS: CPU_WINDOW_MS / 1000, writeMiB: WRITE_MIB }), ...sRows];
  const machine = machineInfo({ accel: accel.accel, accelReason: accel.reason, guestKernel: image.kernelRelease, guestImage: image.id, templateRamDir: DEFAULT_CONFIG.templateRamDir });
  const durationS = round((performance.now() - started) / 1000, 0);
  console.log(`hull bench (issue #5): ${machine.cores} cores, accel ${machine.accel}, host ${machine.hostKernel}, guest ${machine.guestKernel}, ${machine.runsc}`);
  console.log(`medians; P1/P4/P6/B ×${options.runs}, P3 ×${options.repeats}; hull VM ${VM_MEMORY_MIB} MiB / 1 vCPU, templates on; gVisor --network=none through the runc shim`);
  console.log(formatTable(rows));
  console.log(`P2 counts every host process kept for the pods: runc ${p2p5Idle.runc.processes}, gVisor ${p2p5Idle.gvisor.processes}, hull ${p2p5Idle.hull.processes} processes for ${options.pods} pods each.`);
  const split = (r: RuntimeName): string => Object.entries(p2p5Idle[r].pssMiBPerPodByCommand).map(([c, m]) => `${c} ${m}`).join(', ');
  console.log(`P2 per pod by process, MiB: ${RUNTIMES.map((r) => `${r}: ${split(r)}`).join('; ')}`);
  console.log(`hull's VM templates hold ${machine.hullTemplateRamMiB ?? '?'} MiB allocated on the disk in all (shared by every clone as page cache; in no process's PSS in full).`);
  console.log(`hull's pool: pool_size ${pool.size} for the table (every timed start waited for a full pool); P3 with a pool of ${BATCH}: ${pool.p3PoolBatchMs.median} ms, with no pool: ${pool.p3NoPoolMs.median} ms (medians ×${options.repeats}); refilling a pool of ${BATCH} took ${pool.batchPoolFillMs.join(', ')} ms; each ready VM holds ${pool.readyVmPssMiB.median} MiB of host memory (PSS, median of ${readyPssMiB.length}).`);
  console.log('P6 is timed on the host around one exec; B2\'s runc column repeats B1\'s `runc run`.');
  console.log(`total ${Math.floor(durationS / 60)} min ${durationS % 60} s`);
  writeFileSync(RESULTS, JSON.stringify({ bench: 'hull issue #5', date: new Date().toISOString(), durationS, machine, options, table: rows, results }, null, 2) + '\n');
  console.log(`saved to ${RESULTS}`);
} catch (e) {
  failed = !(e instanceof StdioOnly);
  if (failed) log((e as Error).stack ?? String(e));
  if (ctrd && failed) console.error(`--- containerd log (tail) ---\n${ctrd.logTail(20)}`);
} finally {
  const left = await cleanup({ rt, ctrd, cri, ctx, ids, runPrefix: RUN_PREFIX });
  if (left.length > 0) {
    failed = true;
    log(`left behind (now removed): ${left.join(', ')}`);
  } else {
    console.log('cleanup: no pod, shim, QEMU, runsc process, mount, state or cgroup of ours left');
  }
}
process.exit(failed ? 1 : 0);
