/**
 * What a private containerd needs to run hull pods: the shim on a directory
 * for containerd's PATH (as `hull install` places it) and a hull config with
 * its own short run root. CRI sandbox ids are 64 hex digits and unix socket
 * paths hold 107 bytes, so the run root must stay short.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RuntimeSpec } from './containerd.js';
import { mountsUnder } from '../helpers/leaks.js';

export const HULL_RUNTIME = 'io.containerd.hull.v2';
const SHIM = fileURLToPath(new URL('../../../bin/containerd-shim-hull-v2', import.meta.url));

export interface HullRuntime {
  /** work holds the shim link and the config. */
  work: string;
  runRoot: string;
  /** shimDir goes on containerd's PATH (startContainerd's extraPath). */
  shimDir: string;
  configPath: string;
  /** runtimes is startContainerd's runtimes table with the `hull` handler. */
  runtimes: Record<string, RuntimeSpec>;
  remove(): void;
}

/** prepareHullRuntime makes the directories and files; `memoryMiB` keeps VMs small on a 2-core machine. */
export function prepareHullRuntime(opts: { name: string; memoryMiB?: number }): HullRuntime {
  mkdirSync('/run/hull-test', { recursive: true, mode: 0o700 });
  const work = mkdtempSync(`/run/hull-test/${opts.name}-`);
  const runRoot = mkdtempSync('/run/hull-test/r');
  const shimDir = join(work, 'bin');
  const configPath = join(work, 'config.toml');
  mkdirSync(shimDir);
  symlinkSync(SHIM, join(shimDir, 'containerd-shim-hull-v2'));
  writeFileSync(configPath, `default_memory = ${opts.memoryMiB ?? 512}\nrun_root = "${runRoot}"\n`);
  return {
    work,
    runRoot,
    shimDir,
    configPath,
    runtimes: { hull: { runtimeType: HULL_RUNTIME, configPath } },
    remove() {
      // A failed run may leave a sandbox's binds here: a recursive delete would go through them into
      // their sources (rootfs snapshots, hostPath directories). Detach them first, deepest first.
      for (const point of [...mountsUnder(runRoot), ...mountsUnder(work)].sort((a, b) => b.length - a.length)) {
        spawnSync('umount', ['--lazy', point]);
      }
      rmSync(work, { recursive: true, force: true });
      rmSync(runRoot, { recursive: true, force: true });
    },
  };
}
