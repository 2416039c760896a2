/**
 * What a private containerd needs to run hull pods: the shim on a directory
 * for containerd's PATH (as `hull install` places it) and a hull config with
 * its own short run root. CRI sandbox ids are 64 hex digits and unix socket
 * paths hold 107 bytes, so the run root must stay short.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PrivateContainerd, RuntimeSpec } from './containerd.js';
import { entriesIn, mountsUnder, qemuPidsUnder } from '../helpers/leaks.js';

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

/**
 * stopAndAssertClean stops the test's containerd, removes the runtime's directories and asserts
 * that nothing of hull was left: no shim containerd had to kill, no QEMU, mount or state entry.
 */
export async function stopAndAssertClean(ctrd: PrivateContainerd | undefined, hull: HullRuntime): Promise<void> {
  const report = await ctrd?.stop();
  const left = { vms: qemuPidsUnder(hull.runRoot), mounts: [...mountsUnder(hull.work), ...mountsUnder(hull.runRoot)], state: entriesIn(hull.runRoot) };
  hull.remove();
  assert.deepEqual(report?.leakedShims ?? [], [], 'containerd had to kill leaked shims');
  assert.deepEqual(left, { vms: [], mounts: [], state: [] });
}
