/**
 * Cleanup that needs nothing in memory: what the shim's `delete` command and
 * the daemon's error paths share. Every step tolerates "already gone".
 */
import { execFile } from 'node:child_process';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { removeStateDir } from '../sandbox/index.js';

export function unmountQuietly(target: string): Promise<void> {
  return new Promise((resolve) => execFile('umount', ['--lazy', target], () => resolve()));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * killVmFromPidFile ends the VMM recorded in `<stateDir>/qemu.pid`, but only
 * if that pid still runs a QEMU for this state dir (pids are reused).
 */
export async function killVmFromPidFile(stateDir: string): Promise<void> {
  const pid = Number.parseInt((await readFile(join(stateDir, 'qemu.pid'), 'utf8').catch(() => '')).trim(), 10);
  if (!Number.isSafeInteger(pid) || pid <= 1) return;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.includes(stateDir)) return;
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && alive(pid); i++) await sleep(20);
}

/** destroySandboxState removes a sandbox's VM and host state after the daemon is gone. */
export async function destroySandboxState(stateDir: string): Promise<void> {
  await killVmFromPidFile(stateDir).catch(() => {});
  await removeStateDir(stateDir);
}

/**
 * CleanupRecord is what `delete` must undo for a container, written into its
 * bundle at Create: the daemon's config (ConfigPath) is not known to `delete`.
 */
export interface CleanupRecord {
  /** stateDir is set for the container that booted the pod's VM. */
  stateDir?: string;
  sharedRootfs?: string;
}

const CLEANUP_RECORD = 'hull-cleanup.json';

export async function writeCleanupRecord(bundle: string, record: CleanupRecord): Promise<void> {
  const tmp = join(bundle, `.${CLEANUP_RECORD}`);
  await writeFile(tmp, JSON.stringify(record));
  await rename(tmp, join(bundle, CLEANUP_RECORD));
}

export async function readCleanupRecord(bundle: string): Promise<CleanupRecord> {
  try {
    const value = JSON.parse(await readFile(join(bundle, CLEANUP_RECORD), 'utf8')) as CleanupRecord;
    const path = (p: unknown): string | undefined => (typeof p === 'string' && p.startsWith('/') ? p : undefined);
    return { stateDir: path(value.stateDir), sharedRootfs: path(value.sharedRootfs) };
  } catch {
    return {};
  }
}
