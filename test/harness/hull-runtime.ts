/**
 * What a private containerd needs to run hull pods: the shim on a directory
 * for containerd's PATH (as `hull install` places it) and a hull config with
 * its own short run root. CRI sandbox ids are 64 hex digits and unix socket
 * paths hold 107 bytes, so the run root must stay short.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { pidAlive } from '../../src/common/process.js';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PrivateContainerd, RuntimeSpec } from './containerd.js';
import { entriesIn, mountsUnder, qemuPidsUnder } from '../helpers/leaks.js';

export const HULL_RUNTIME = 'io.containerd.hull.v2';
const SHIM = fileURLToPath(new URL('../../../bin/containerd-shim-hull-v2', import.meta.url));
const HULL = fileURLToPath(new URL('../../../bin/hull', import.meta.url));
/** HULL_TEST_POOL: pool_size of the suites' runtimes (default 0: no pool; the pool suite sets its own). */
const TEST_POOL_SIZE = Number(process.env['HULL_TEST_POOL'] ?? 0);

export interface HullRuntime {
  /** work holds the shim link and the config. */
  work: string;
  runRoot: string;
  /**
   * statusDir is the runtime's status_dir (the shims' read-only status sockets): directly under /run,
   * as /run/hull-status is, so that the monitor's group can reach it (/run/hull-test is root's only).
   */
  statusDir: string;
  /** poolDir is the runtime's pool_dir (its VM pool's owner runs only when poolSize > 0). */
  poolDir: string;
  poolSize: number;
  /** shimDir goes on containerd's PATH (startContainerd's extraPath). */
  shimDir: string;
  configPath: string;
  /** runtimes is startContainerd's runtimes table with the `hull` handler. */
  runtimes: Record<string, RuntimeSpec>;
  remove(): void;
}

/** prepareHullRuntime makes the directories and files; `memoryMiB` keeps VMs small on a 2-core machine. */
export function prepareHullRuntime(opts: { name: string; memoryMiB?: number; poolSize?: number }): HullRuntime {
  mkdirSync('/run/hull-test', { recursive: true, mode: 0o700 });
  const work = mkdtempSync(`/run/hull-test/${opts.name}-`);
  const runRoot = mkdtempSync('/run/hull-test/r');
  const poolDir = mkdtempSync('/run/hull-test/p');
  const statusDir = mkdtempSync('/run/hull-status-test-');
  const poolSize = opts.poolSize ?? TEST_POOL_SIZE;
  const shimDir = join(work, 'bin');
  const configPath = join(work, 'config.toml');
  mkdirSync(shimDir);
  symlinkSync(SHIM, join(shimDir, 'containerd-shim-hull-v2'));
  writeFileSync(configPath, `default_memory = ${opts.memoryMiB ?? 512}\nrun_root = "${runRoot}"\npool_dir = "${poolDir}"\npool_size = ${poolSize}\nstatus_dir = "${statusDir}"\n`);
  return {
    work,
    runRoot,
    statusDir,
    poolDir,
    poolSize,
    shimDir,
    configPath,
    runtimes: { hull: { runtimeType: HULL_RUNTIME, configPath } },
    remove() {
      // A failed run may leave a sandbox's binds here: a recursive delete would go through them into
      // their sources (rootfs snapshots, hostPath directories). Detach them first, deepest first.
      for (const point of [...mountsUnder(runRoot), ...mountsUnder(work), ...mountsUnder(poolDir)].sort((a, b) => b.length - a.length)) {
        spawnSync('umount', ['--lazy', point]);
      }
      rmSync(work, { recursive: true, force: true });
      rmSync(runRoot, { recursive: true, force: true });
      rmSync(poolDir, { recursive: true, force: true });
      rmSync(statusDir, { recursive: true, force: true });
    },
  };
}

/**
 * stopAndAssertClean stops the test's containerd, removes the runtime's directories and asserts
 * that nothing of hull was left: no shim containerd had to kill, no QEMU, mount or state entry.
 */
export async function stopAndAssertClean(ctrd: PrivateContainerd | undefined, hull: HullRuntime): Promise<void> {
  const report = await ctrd?.stop();
  // The pool's owner (started by a shim) ends its ready VMs; adopted ones went with their pods.
  const poolStop = stopPoolOwner(hull);
  const left = {
    vms: [...qemuPidsUnder(hull.runRoot), ...qemuPidsUnder(hull.poolDir)],
    mounts: [...mountsUnder(hull.work), ...mountsUnder(hull.runRoot), ...mountsUnder(hull.poolDir)],
    state: [...entriesIn(hull.runRoot), ...entriesIn(hull.statusDir), ...entriesIn(hull.poolDir).filter((e) => !e.startsWith('pool.log'))],
  };
  hull.remove();
  assert.deepEqual(report?.leakedShims ?? [], [], 'containerd had to kill leaked shims');
  assert.equal(poolStop, 0, 'hull pool stop failed');
  assert.deepEqual(left, { vms: [], mounts: [], state: [] });
}

/**
 * podQemuPids are the QEMU processes of the runtime's sandboxes: started for them under the run
 * root, or adopted from the pool (a sandbox's ledger names the pooled VM's directory, whose
 * driver-written pid file names QEMU). The pool's ready VMs are not among them.
 */
export function podQemuPids(hull: HullRuntime): number[] {
  const pids = qemuPidsUnder(hull.runRoot);
  for (const sandbox of entriesIn(hull.runRoot)) {
    let ledger = '';
    try {
      ledger = readFileSync(join(hull.runRoot, sandbox, 'ledger'), 'utf8');
    } catch {
      continue;
    }
    for (const line of ledger.split('\n')) {
      const dir = /"kind":"pool-vm","dir":"([^"]+)"/.exec(line)?.[1];
      if (!dir) continue;
      const pid = Number(readFileSync(join(dir, 'vm', 'qemu.pid'), 'utf8').trim());
      if (pidAlive(pid)) pids.push(pid);
    }
  }
  return pids;
}

/** stopPoolOwner runs `hull pool stop` for the runtime's config (nothing to do when no owner runs): its exit status. */
export function stopPoolOwner(hull: HullRuntime): number | null {
  return spawnSync(process.execPath, [HULL, 'pool', 'stop', '--config', hull.configPath], { stdio: 'inherit' }).status;
}
