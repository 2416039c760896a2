/**
 * The files of hull install and uninstall: the links in the bin dir to this checkout's bin/, and the
 * file helpers both share (read when present, follow a symlink to the real file, rewrite atomically
 * keeping mode and owner).
 */
import { constants as fsConstants } from 'node:fs';
import { access, chmod, chown, lstat, readFile, readlink, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HullError } from '../errors/index.js';

/** BINARIES are the names install links into the bin dir, from this checkout's bin/. */
export const BINARIES = ['containerd-shim-hull-v2', 'hull'] as const;

/** hullBinDir is this checkout's bin/ (real path), which the links point at. */
export async function hullBinDir(): Promise<string> {
  const dir = fileURLToPath(new URL('../../../bin', import.meta.url));
  try {
    const real = await realpath(dir);
    for (const name of BINARIES) await access(join(real, name), fsConstants.X_OK);
    return real;
  } catch (e) {
    throw new HullError('failed_precondition', `Cannot find hull's bin/ (${BINARIES.join(', ')}) next to the running hull at "${dir}": ${(e as Error).message}`);
  }
}

export async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** realFile follows symlinks to the file that holds the text (it may not exist yet). */
export async function realFile(file: string): Promise<string> {
  return realpath(file).catch(() => resolve(file));
}

/** writeAtomic replaces `file` with `text`, keeping its mode and owner when it existed. */
export async function writeAtomic(file: string, text: string, tmp = `${file}.hull-tmp`): Promise<void> {
  const old = await stat(file).catch(() => undefined);
  await writeFile(tmp, text, { mode: old ? old.mode & 0o7777 : 0o644 });
  try {
    if (old) {
      await chmod(tmp, old.mode & 0o7777);
      await chown(tmp, old.uid, old.gid).catch(() => undefined);
    }
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export type LinkState = { state: 'missing' } | { state: 'ours' } | { state: 'other-hull'; target: string } | { state: 'foreign'; what: string };

/** linkState tells what is at `path`: nothing, our link, a link to another hull's file of that name, or something else. */
export async function linkState(path: string, target: string): Promise<LinkState> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return { state: 'missing' };
  if (!st.isSymbolicLink()) return { state: 'foreign', what: st.isDirectory() ? 'a directory' : 'a file, not a link' };
  const to = await readlink(path);
  const abs = resolve(dirname(path), to);
  if (abs === target) return { state: 'ours' };
  if (basename(abs) === basename(target)) return { state: 'other-hull', target: abs };
  return { state: 'foreign', what: `a link to "${to}"` };
}

export async function placeLink(path: string, target: string): Promise<void> {
  const tmp = `${path}.hull-tmp`;
  await rm(tmp, { force: true });
  await symlink(target, tmp);
  await rename(tmp, path);
}
