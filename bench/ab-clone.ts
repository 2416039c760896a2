/**
 * An A/B of two hull builds (or two configs) on clone starts and idle memory, interleaved so that a
 * machine loaded by other work weighs on both alike:
 *
 *   P1  `ctr run --rm IMAGE true` (pool off: every start is a clone of the warm template), ms
 *   P2  PSS of every host process kept for `pods` idle `sleep inf` pods (shims, QEMU), MiB per pod
 *
 * Each variant has its own private containerd, shim (the `bin/` of its checkout), run root and
 * template store; rounds alternate which variant goes first. Prints medians and every sample.
 *
 *   HULL_AB_A=/path/to/built/checkout HULL_AB_A_RAM=/dev/shm/x HULL_AB_B_RAM=/var/lib/x \
 *     node dist/bench/ab-clone.js
 *
 * HULL_AB_B defaults to this checkout; HULL_AB_RUNS (P1 rounds, default 9), HULL_AB_PODS (default 5),
 * HULL_AB_P2_ROUNDS (default 3). The template RAM directories are made and removed here.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd, findShims, type PrivateContainerd } from '../test/harness/containerd.js';
import { CriClient, containerConfig, podConfig } from '../test/harness/cri.js';
import { BUSYBOX_REF, ensureTestImages } from '../test/harness/oci-image.js';
import { qemuPidsUnder } from '../test/helpers/leaks.js';
import { pssKiB, withDescendants } from './procs.js';
import { median, positiveInt, round, sleep } from './stats.js';

const HERE = fileURLToPath(new URL('../..', import.meta.url));
const RUNS = positiveInt('HULL_AB_RUNS', 9);
const PODS = positiveInt('HULL_AB_PODS', 5);
const P2_ROUNDS = positiveInt('HULL_AB_P2_ROUNDS', 3);
const SETTLE_MS = 10_000;

interface Variant {
  name: string;
  ctrd: PrivateContainerd;
  cri: CriClient;
  runRoot: string;
  dirs: string[];
  p1: number[];
  p2: number[];
}

function env(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
}

async function variant(name: string, checkout: string, ramParent: string): Promise<Variant> {
  mkdirSync('/run/hull-test', { recursive: true, mode: 0o700 });
  const work = mkdtempSync(`/run/hull-test/ab-${name}-`);
  const runRoot = mkdtempSync('/run/hull-test/r');
  const poolDir = mkdtempSync('/run/hull-test/p');
  mkdirSync(ramParent, { recursive: true, mode: 0o700 });
  const ram = mkdtempSync(join(ramParent, `ab-${name}-`));
  const shimDir = join(work, 'bin');
  mkdirSync(shimDir);
  symlinkSync(join(resolve(checkout), 'bin', 'containerd-shim-hull-v2'), join(shimDir, 'containerd-shim-hull-v2'));
  const configPath = join(work, 'config.toml');
  writeFileSync(configPath, `default_memory = 512\nrun_root = "${runRoot}"\npool_dir = "${poolDir}"\npool_size = 0\n`);
  appendFileSync(configPath, `templates_dir = "${join(work, 'templates')}"\ntemplate_ram_dir = "${ram}"\n`);
  const ctrd = await startContainerd({ runtimes: { hull: { runtimeType: 'io.containerd.hull.v2', configPath } }, extraPath: shimDir });
  await ensureTestImages(ctrd);
  const cri = await CriClient.connect(ctrd.address, { deadlineMs: 300_000 });
  return { name, ctrd, cri, runRoot, dirs: [work, runRoot, poolDir, ram], p1: [], p2: [] };
}

function timeCtrRun(v: Variant, id: string): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const args = ['-a', v.ctrd.address, '-n', v.ctrd.namespace, 'run', '--rm', '--runtime', 'io.containerd.hull.v2', '--runtime-config-path', join(v.dirs[0]!, 'config.toml'), BUSYBOX_REF, id, 'true'];
    const child = spawn('ctr', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 180_000, killSignal: 'SIGKILL' });
    const err: Buffer[] = [];
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolvePromise(performance.now() - started) : reject(new Error(`ctr run exited ${code}: ${Buffer.concat(err).toString()}`))));
  });
}

async function idlePss(v: Variant, round: number): Promise<number> {
  const pods: string[] = [];
  try {
    for (let i = 0; i < PODS; i++) {
      const pod = podConfig({ name: `ab-${v.name}-${round}-${i}`, namespace: 'hull-bench' });
      const podId = await v.cri.runPodSandbox(pod, 'hull');
      pods.push(podId);
      const id = await v.cri.createContainer(podId, containerConfig({ name: 'idle', image: BUSYBOX_REF, command: ['sleep', 'inf'] }), pod);
      await v.cri.startContainer(id);
    }
    await sleep(SETTLE_MS);
    const shims = findShims(v.ctrd.address).filter((s) => pods.some((p) => s.cmdline.includes(p))).map((s) => s.pid);
    const procs = withDescendants([...shims, ...qemuPidsUnder(v.runRoot)]);
    return pssKiB([...new Set(procs)]).total / 1024 / PODS;
  } finally {
    for (const podId of pods) {
      await v.cri.stopPodSandbox(podId).catch(() => {});
      await v.cri.removePodSandbox(podId).catch(() => {});
    }
  }
}

const a = await variant('A', env('HULL_AB_A'), env('HULL_AB_A_RAM'));
const b = await variant('B', env('HULL_AB_B', HERE), env('HULL_AB_B_RAM'));
try {
  // Warm-up: makes each variant's template (and is not counted).
  for (const v of [a, b]) await timeCtrRun(v, `warm-${v.name}`);
  for (let i = 0; i < RUNS; i++) {
    for (const v of i % 2 === 0 ? [a, b] : [b, a]) v.p1.push(await timeCtrRun(v, `p1-${v.name}-${i}`));
  }
  for (let i = 0; i < P2_ROUNDS; i++) {
    for (const v of i % 2 === 0 ? [a, b] : [b, a]) v.p2.push(await idlePss(v, i));
  }
  for (const v of [a, b]) {
    console.log(`${v.name}: P1 median ${round(median(v.p1), 0)} ms (${v.p1.map((x) => round(x, 0)).join(', ')}); P2 median ${round(median(v.p2), 1)} MiB/pod (${v.p2.map((x) => round(x, 1)).join(', ')})`);
  }
} finally {
  for (const v of [a, b]) {
    v.cri.close();
    await v.ctrd.stop();
    for (const dir of v.dirs) rmSync(dir, { recursive: true, force: true });
  }
}
