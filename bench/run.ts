/**
 * Benchmarks of the VM core, printed as medians over N runs (default 5,
 * HULL_BENCH_RUNS to change) with runc measured in the same run:
 *   - cold boot: Sandbox.create until the agent answers (then destroy);
 *   - `hull run --bundle B -- true`, end to end, as a user types it;
 *   - `runc run` of the same bundle with `true`, the baseline.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { currentGuestImage } from '../src/guest/index.js';
import { Sandbox } from '../src/sandbox/index.js';
import { makeBusyboxBundle } from '../test/helpers/bundle.js';
import { median } from './results.js';

const runs = Number(process.env['HULL_BENCH_RUNS'] ?? 5);
const hullBin = fileURLToPath(new URL('../../bin/hull', import.meta.url));


function timeCommand(file: string, args: string[]): number {
  const started = performance.now();
  const r = spawnSync(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return performance.now() - started;
}

const image = await currentGuestImage();
if (!image) throw new Error('no guest image: run `make image` first');
const bundle = makeBusyboxBundle(['true']);
mkdirSync('/run/hull-bench', { recursive: true, mode: 0o700 });
const runRoot = mkdtempSync('/run/hull-bench/r-');
const runcRoot = mkdtempSync('/run/hull-bench/runc-');
// runc needs a spec without the terminal and with its own cgroup path.
const runcBundle = makeBusyboxBundle(['true']);
try {
  const cold: number[] = [];
  const hullRun: number[] = [];
  const runc: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    const sandbox = await Sandbox.create({ id: `bench-${i}`, image, runRoot });
    cold.push(performance.now() - started);
    await sandbox.destroy();
    hullRun.push(timeCommand(process.execPath, [hullBin, 'run', '--bundle', bundle.dir, '--', 'true']));
    runc.push(timeCommand('runc', ['--root', runcRoot, 'run', '--bundle', runcBundle.dir, `hull-bench-${process.pid}-${i}`]));
  }
  const rows = [
    { what: 'cold boot to agent ready', ms: cold },
    { what: 'hull run -- true', ms: hullRun },
    { what: 'runc run true (baseline)', ms: runc },
  ];
  const runcMedian = median(runc);
  console.log(`runs: ${runs}`);
  console.log('what                        median ms   min ms   max ms   ×runc');
  for (const row of rows) {
    const m = median(row.ms);
    console.log(`${row.what.padEnd(26)} ${m.toFixed(0).padStart(9)} ${Math.min(...row.ms).toFixed(0).padStart(8)} ${Math.max(...row.ms).toFixed(0).padStart(8)} ${(m / runcMedian).toFixed(1).padStart(7)}`);
  }
  writeFileSync(join(process.cwd(), 'bench-results.json'), JSON.stringify({ runs, rows: rows.map((r) => ({ what: r.what, medianMs: median(r.ms), samplesMs: r.ms })) }, null, 2));
} finally {
  bundle.remove();
  runcBundle.remove();
  rmSync(runRoot, { recursive: true, force: true });
  rmSync(runcRoot, { recursive: true, force: true });
}
