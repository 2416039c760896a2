/**
 * temp-dirs — work directories that are built beside their final place and renamed into it.
 *
 * A work directory is named ".<purpose>-<pid>-<random>", so a later build can tell the half-built
 * leftovers of a crashed build (its pid is gone) from the live work of a concurrent one.
 */

import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pidAlive } from '../common/process.js';

const TEMP_NAME = /^\.([a-z]+)-(\d+)-[0-9a-f]{8}$/;
/** MAX_TEMP_AGE_MS: a work directory older than this is stale even if its pid is alive (pid reuse). */
const MAX_TEMP_AGE_MS = 24 * 3600 * 1000;

/** makeTempDir creates a fresh work directory in `parent` and returns its path. */
export async function makeTempDir(parent: string, purpose: string): Promise<string> {
  if (!/^[a-z]+$/.test(purpose)) throw new Error(`Bad work directory purpose "${purpose}"`);
  const path = join(parent, `.${purpose}-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(path, { mode: 0o755 });
  return path;
}

/** removeStaleTempDirs deletes work directories in `parent` left by processes that are gone; returns their names. */
export async function removeStaleTempDirs(parent: string): Promise<string[]> {
  const removed: string[] = [];
  const names = await readdir(parent).catch(() => [] as string[]);
  for (const name of names) {
    const m = TEMP_NAME.exec(name);
    if (m === null) continue;
    const pid = Number(m[2]);
    const st = await lstat(join(parent, name)).catch(() => undefined);
    if (st === undefined) continue;
    const old = Date.now() - st.mtimeMs > MAX_TEMP_AGE_MS;
    if (!old && pidAlive(pid)) continue;
    await rm(join(parent, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}
