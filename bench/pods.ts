/**
 * Pod density and overhead through CRI, hull (handler `hull`) against runc (handler ''), on the same
 * private containerd in the same run:
 *
 * - P2 host memory per idle pod: N idle busybox `sleep inf` pods (HULL_BENCH_PODS, default 10), after
 *   10 s the summed PSS of every host process the runtime keeps for them (hull: this containerd's hull
 *   shims, their descendants and the QEMU processes under our run root; runc: this containerd's runc
 *   shims and their descendants), in MiB per pod.
 * - P5 idle CPU per pod: utime+stime of the same processes over 30 s, in % of one core per pod.
 * - P3 10 pods at once: RunPodSandbox+CreateContainer+StartContainer for 10 pods in parallel until all
 *   containers are Running; wall time of the batch.
 * - P4 `exec true`: CRI ExecSync(['true']) into one running container, 5 times, median.
 *
 * Prints a table and appends JSON to `bench-results-pods.json` in the current directory. Cleans up
 * everything and checks that no QEMU is left under its run root.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { currentGuestImage } from '../src/guest/index.js';
import { chooseAccel } from '../src/vmm/index.js';
import { findShims, startContainerd, type PrivateContainerd } from '../test/harness/containerd.js';
import { CriClient, containerConfig, podConfig, type PodSandboxConfig } from '../test/harness/cri.js';
import { BUSYBOX_REF, ensureTestImages } from '../test/harness/oci-image.js';
import { prepareHullRuntime } from '../test/harness/hull-runtime.js';
import { appendResult, median } from './results.js';
import { entriesIn, mountsUnder, qemuPidsUnder } from '../test/helpers/leaks.js';

const idlePods = Number(process.env['HULL_BENCH_PODS'] ?? 10);
if (!Number.isInteger(idlePods) || idlePods < 1) throw new Error(`HULL_BENCH_PODS must be a positive integer, not "${process.env['HULL_BENCH_PODS']}"`);
const BATCH = 10;
const EXEC_RUNS = 5;
const SETTLE_MS = 10_000;
const CPU_WINDOW_MS = 30_000;
const CLK_TCK = 100;
// The hull shim re-executes itself as `node <dist>/src/shim/main.js … -address …` (src/shim/start.ts).
const SHIM_MAIN = fileURLToPath(new URL('../src/shim/main.js', import.meta.url));
const MEMORY_MIB = 512;
const RESULTS = join(process.cwd(), 'bench-results-pods.json');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const round = (v: number, digits = 1): number => Math.round(v * 10 ** digits) / 10 ** digits;

interface ProcInfo {
  ppid: number;
  ticks: number;
}

/** procTable reads ppid and utime+stime (fields 4, 14, 15 of /proc/<pid>/stat) of every process. */
function procTable(): Map<number, ProcInfo> {
  const table = new Map<number, ProcInfo>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // rest[0] is field 3 (state): field n is rest[n - 3].
      table.set(Number(entry), { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) });
    } catch {
      // gone meanwhile
    }
  }
  return table;
}

/** podProcesses lists the host processes a runtime keeps for this containerd's pods: its shims, their descendants and (hull) QEMU. */
function podProcesses(address: string, runtime: 'hull' | 'runc', runRoot: string): number[] {
  const table = procTable();
  const markers = runtime === 'hull' ? ['containerd-shim-hull-v2', SHIM_MAIN] : ['containerd-shim-runc-v2'];
  const set = new Set(findShims(address).filter((s) => markers.some((m) => s.cmdline.includes(m))).map((s) => s.pid));
  if (runtime === 'hull') for (const pid of qemuPidsUnder(runRoot)) set.add(pid);
  // Descendants (runc: pause and the container's processes; hull: QEMU and any helper it starts).
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, info] of table) {
      if (!set.has(pid) && set.has(info.ppid)) {
        set.add(pid);
        grew = true;
      }
    }
  }
  return [...set].sort((a, b) => a - b);
}

function pssKiB(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function cpuTicks(pids: number[]): Map<number, number> {
  const table = procTable();
  const out = new Map<number, number>();
  for (const pid of pids) {
    const info = table.get(pid);
    if (info) out.set(pid, info.ticks);
  }
  return out;
}

interface Pod {
  config: PodSandboxConfig;
  podId?: string;
  containerId?: string;
}

async function startPod(cri: CriClient, handler: string, name: string, pods: Pod[]): Promise<Pod> {
  const pod: Pod = { config: podConfig({ name, namespace: 'bench' }) };
  pods.push(pod);
  pod.podId = await cri.runPodSandbox(pod.config, handler);
  pod.containerId = await cri.createContainer(pod.podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', 'inf'] }), pod.config);
  await cri.startContainer(pod.containerId);
  for (;;) {
    const st = await cri.containerStatus(pod.containerId);
    if (st.status.state === 'CONTAINER_RUNNING') return pod;
    if (st.status.state !== 'CONTAINER_CREATED') throw new Error(`container ${name} is ${st.status.state}`);
    await sleep(50);
  }
}

async function removePods(cri: CriClient, pods: Pod[]): Promise<string[]> {
  const errors: string[] = [];
  await Promise.all(
    pods.splice(0).map(async (pod) => {
      try {
        if (pod.containerId) {
          await cri.stopContainer(pod.containerId, 0);
          await cri.removeContainer(pod.containerId);
        }
        if (pod.podId) {
          await cri.stopPodSandbox(pod.podId);
          await cri.removePodSandbox(pod.podId);
        }
      } catch (e) {
        errors.push((e as Error).message.split('\n')[0]!);
      }
    }),
  );
  return errors;
}

interface RuntimeResult {
  idlePods: number;
  processes: number;
  memMiBPerPod: number;
  cpuPctPerPod: number;
  batchStartMs: number;
  execTrueMs: { median: number; samples: number[] };
}

async function measure(cri: CriClient, address: string, name: 'hull' | 'runc', handler: string, runRoot: string, pods: Pod[]): Promise<RuntimeResult> {
  // P2 / P5 / P4 on N idle pods.
  console.error(`bench: ${name}: starting ${idlePods} idle pods`);
  await Promise.all(Array.from({ length: idlePods }, (_, i) => startPod(cri, handler, `idle-${name}-${i}`, pods)));
  await sleep(SETTLE_MS);
  const procs = podProcesses(address, name, runRoot);
  const memKiB = procs.reduce((sum, pid) => sum + pssKiB(pid), 0);
  const before = cpuTicks(procs);
  const t0 = performance.now();
  await sleep(CPU_WINDOW_MS);
  const after = cpuTicks(procs);
  const seconds = (performance.now() - t0) / 1000;
  let ticks = 0;
  for (const [pid, t] of after) ticks += t - (before.get(pid) ?? t);
  const cpuPct = ((ticks / CLK_TCK) / seconds) * 100;
  const target = pods[0]!.containerId!;
  const execSamples: number[] = [];
  for (let i = 0; i < EXEC_RUNS; i++) {
    const t = performance.now();
    const r = await cri.execSync(target, ['true']);
    execSamples.push(performance.now() - t);
    if (r.exitCode !== 0) throw new Error(`exec true in ${name} exited ${r.exitCode}: ${r.stderr.toString().trim()}`);
  }
  const errs = await removePods(cri, pods);
  if (errs.length > 0) throw new Error(`removing ${name} idle pods: ${errs.join('; ')}`);

  // P3: a batch of 10 at once.
  console.error(`bench: ${name}: starting ${BATCH} pods in parallel`);
  const tb = performance.now();
  await Promise.all(Array.from({ length: BATCH }, (_, i) => startPod(cri, handler, `batch-${name}-${i}`, pods)));
  const batchMs = performance.now() - tb;
  const errs2 = await removePods(cri, pods);
  if (errs2.length > 0) throw new Error(`removing ${name} batch pods: ${errs2.join('; ')}`);

  return {
    idlePods,
    processes: procs.length,
    memMiBPerPod: round(memKiB / 1024 / idlePods),
    cpuPctPerPod: round(cpuPct / idlePods, 2),
    batchStartMs: Math.round(batchMs),
    execTrueMs: { median: round(median(execSamples)), samples: execSamples.map((v) => round(v)) },
  };
}


const image = await currentGuestImage();
if (!image) throw new Error('no guest image: run `make image` first');
const accel = await chooseAccel();

const hullRuntime = prepareHullRuntime({ name: 'bench', memoryMiB: MEMORY_MIB });
const { runRoot, shimDir } = hullRuntime;

let ctrd: PrivateContainerd | undefined;
let cri: CriClient | undefined;
const pods: Pod[] = [];
let failed = false;
try {
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: shimDir, logLevel: 'info' });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 300_000 });
  const hull = await measure(cri, ctrd.address, 'hull', 'hull', runRoot, pods);
  const runc = await measure(cri, ctrd.address, 'runc', '', runRoot, pods);

  console.log(`pods through CRI: ${idlePods} idle busybox \`sleep inf\` pods, batch of ${BATCH}, exec true ×${EXEC_RUNS}`);
  console.log(`accel ${accel.accel}, hull VM ${MEMORY_MIB} MiB / 1 vCPU, templates default, guest ${image.kernelRelease}, host ${release()}`);
  const rows: [string, (r: RuntimeResult) => number, number][] = [
    ['P2 host memory, MiB/pod (PSS)', (r) => r.memMiBPerPod, 1],
    ['P5 idle CPU, % core/pod', (r) => r.cpuPctPerPod, 2],
    [`P3 ${BATCH} pods in parallel, ms`, (r) => r.batchStartMs, 0],
    ['P4 exec true, median ms', (r) => r.execTrueMs.median, 1],
  ];
  console.log(`${'metric'.padEnd(34)} ${'hull'.padStart(10)} ${'runc'.padStart(10)} ${'hull/runc'.padStart(10)}`);
  for (const [label, get, digits] of rows) {
    const h = get(hull);
    const r = get(runc);
    const ratio = r > 0 ? (h / r).toFixed(1) : '-';
    console.log(`${label.padEnd(34)} ${h.toFixed(digits).padStart(10)} ${r.toFixed(digits).padStart(10)} ${ratio.padStart(10)}`);
  }
  console.log(`processes counted: hull ${hull.processes} (shims + QEMU), runc ${runc.processes} (shims + pause + sleep)`);
  appendResult(RESULTS, {
    bench: 'pods through CRI',
    date: new Date().toISOString(),
    accel: accel.accel,
    memoryMiB: MEMORY_MIB,
    guestKernel: image.kernelRelease,
    hostKernel: release(),
    hull,
    runc,
    ratios: {
      memory: runc.memMiBPerPod > 0 ? round(hull.memMiBPerPod / runc.memMiBPerPod, 2) : null,
      idleCpu: runc.cpuPctPerPod > 0 ? round(hull.cpuPctPerPod / runc.cpuPctPerPod, 2) : null,
      batchStart: round(hull.batchStartMs / runc.batchStartMs, 2),
      execTrue: round(hull.execTrueMs.median / runc.execTrueMs.median, 2),
    },
  });
  console.log(`saved to ${RESULTS}`);
} catch (e) {
  failed = true;
  console.error(`bench: ${(e as Error).message}`);
  if (ctrd) console.error(`--- containerd log (tail) ---\n${ctrd.logTail(20)}`);
} finally {
  if (cri) {
    for (const err of await removePods(cri, pods)) console.error(`bench: cleanup: ${err}`);
    for (const p of await cri.listPodSandbox().catch(() => [])) {
      await cri.stopPodSandbox(p.id).catch(() => undefined);
      await cri.removePodSandbox(p.id).catch(() => undefined);
    }
  }
  cri?.close();
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
  for (const m of mountsUnder(runRoot).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
  hullRuntime.remove();
  if (left.length > 0) {
    failed = true;
    console.error(`bench: left behind: ${left.join(', ')}`);
  } else {
    console.log('cleanup: no QEMU, shim, mount or state left under the run root');
  }
}
process.exit(failed ? 1 : 0);
