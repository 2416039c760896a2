/**
 * Cleanup that needs nothing in memory: what the shim's `delete` command and
 * the daemon's error paths share. Every step tolerates "already gone".
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../common/run.js';

export async function unmountQuietly(target: string): Promise<void> {
  await run('umount', ['--lazy', target], { allowFailure: true, timeoutMs: 30_000 }).catch(() => {});
}

/**
 * CleanupRecord is what `delete` must undo for a container, written into its
 * bundle at Create (the daemon's config, ConfigPath, is not known to `delete`):
 * where its sandbox's ledger is, and whether this container's delete ends the
 * whole sandbox or only releases its own scope of the ledger.
 */
export interface CleanupRecord {
  /** stateDir is the sandbox's state directory, which holds its ledger. */
  stateDir?: string;
  containerId?: string;
  /** endsSandbox is set for the container that booted the pod's VM. */
  endsSandbox?: boolean;
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
    const stateDir = typeof value.stateDir === 'string' && value.stateDir.startsWith('/') ? value.stateDir : undefined;
    const containerId = typeof value.containerId === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]{0,75}$/.test(value.containerId) ? value.containerId : undefined;
    return { stateDir, containerId, endsSandbox: value.endsSandbox === true };
  } catch {
    return {};
  }
}
