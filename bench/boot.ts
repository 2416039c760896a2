/**
 * Starting a container without containerd: `runc run`, `runsc run` and `hull run` of one busybox
 * bundle running `true`, end to end as a user types them; hull twice, as a clone of a VM template
 * (the default) and with templates off, where every run boots its VM cold. Warm-up once each, then
 * `runs` rounds in RUNTIMES order with the cold hull run last.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { makeBusyboxBundle } from '../test/helpers/bundle.js';
import type { BenchRuntimes, RuntimeName } from './runtimes.js';
import { summarize, type Summary } from './stats.js';

const HULL_BIN = fileURLToPath(new URL('../../bin/hull', import.meta.url));
/** RUN_PREFIX starts the ids of this process's direct `runc run` / `runsc run` containers. */
export const RUN_PREFIX = `bench-${process.pid}-`;

export interface BootResult {
  /** run is `<runtime> run` of the bundle (hull with templates). */
  run: Record<RuntimeName, Summary>;
  /** hullCold is `hull run` with `templates = false`: a cold VM boot every time. */
  hullCold: Summary;
}

function timeCommand(file: string, args: string[]): number {
  const started = performance.now();
  const r = spawnSync(file, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 180_000, killSignal: 'SIGKILL' });
  const ms = performance.now() - started;
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr?.toString().trim()}`);
  return ms;
}

export function measureBoot(rt: BenchRuntimes, runs: number): BootResult {
  const bundle = makeBusyboxBundle(['true']);
  const runcRoot = mkdtempSync('/run/hull-bench/runc-');
  let n = 0;
  const variants: { name: RuntimeName | 'hullCold'; run: () => number; samples: number[] }[] = [
    { name: 'runc', run: () => timeCommand('runc', ['--root', runcRoot, 'run', '--bundle', bundle.dir, `${RUN_PREFIX}${n++}`]), samples: [] },
    { name: 'gvisor', run: () => timeCommand(rt.gvisor.wrapper, ['--root', rt.gvisor.runRoot, 'run', '--bundle', bundle.dir, `${RUN_PREFIX}${n++}`]), samples: [] },
    { name: 'hull', run: () => timeCommand(process.execPath, [HULL_BIN, 'run', '--config', rt.hullConfigs.templates, '--bundle', bundle.dir, '--', 'true']), samples: [] },
    { name: 'hullCold', run: () => timeCommand(process.execPath, [HULL_BIN, 'run', '--config', rt.hullConfigs.cold, '--bundle', bundle.dir, '--', 'true']), samples: [] },
  ];
  try {
    for (const v of variants) v.run();
    for (let i = 0; i < runs; i++) for (const v of variants) v.samples.push(v.run());
  } finally {
    bundle.remove();
    rmSync(runcRoot, { recursive: true, force: true });
  }
  const get = (name: string): Summary => summarize(variants.find((v) => v.name === name)!.samples);
  return { run: { runc: get('runc'), gvisor: get('gvisor'), hull: get('hull') }, hullCold: get('hullCold') };
}
