/**
 * The template store's directories are private: the RAM root lives in /dev/shm, which anyone may
 * write, and whoever owns or can enter a template's RAM directory can read every pod's memory that
 * its clones share, or write it and so own every clone made from it.
 */

import { chmod, lstat, mkdir } from 'node:fs/promises';
import { HullError } from '../errors/index.js';

/**
 * ensurePrivateDir makes `dir` (mode 0700) when it is missing and checks what it finds:
 * - not a real directory (a symlink, a file), or owned by another uid: refused, because someone
 *   else made it first;
 * - ours, but group or other may write it: refused too, because anyone could have put something
 *   in it (a RAM directory or file of theirs) while it was open;
 * - ours and nobody else may write it, but group or other may read or enter it (as `mkdir` with
 *   umask 022 leaves it): tightened to 0700, since nothing can have been planted in it.
 * `what` names the directory in errors (e.g. "template RAM directory").
 */
export async function ensurePrivateDir(dir: string, what: string): Promise<void> {
  const uid = process.getuid?.() ?? 0;
  const owner = uid === 0 ? 'uid 0 (root)' : `uid ${uid}`;
  // recursive: no EEXIST for a directory that is there; a symlink or file there is found below.
  const made = await mkdir(dir, { recursive: true, mode: 0o700 }).catch((error: NodeJS.ErrnoException) => error);
  const info = await lstat(dir).catch(() => undefined);
  if (info === undefined) throw new HullError('failed_precondition', `Cannot make the ${what} "${dir}": ${made instanceof Error ? made.message : 'it vanished'}`);
  const refuse = (why: string) =>
    new HullError('failed_precondition', `Refusing the ${what} "${dir}": ${why}; someone else may own or read the memory of pods. Remove it and hull makes it again (a directory owned by ${owner}, mode 0700)`);
  if (info.isSymbolicLink()) throw refuse('it is a symlink, not a directory');
  if (!info.isDirectory()) throw refuse('it is not a directory');
  if (info.uid !== uid) throw refuse(`it is owned by uid ${info.uid}, not ${owner}`);
  const mode = info.mode & 0o7777;
  if ((mode & 0o022) !== 0) throw refuse(`its mode ${mode.toString(8).padStart(4, '0')} lets ${mode & 0o002 ? 'anyone' : 'its group'} write in it`);
  if ((mode & 0o077) !== 0) await chmod(dir, mode & ~0o077);
}
