/**
 * ext4 — turns a staged directory into the guest's root disk image with `mkfs.ext4 -d` (no root
 * privileges, no loop mounts).
 *
 * The disk is mounted read-only, so it has no journal and no reserved blocks; it is sized to its
 * content plus 20% (at least 64 MiB) and written sparse. The UUID and directory hash seed derive from
 * the image id, so the same inputs give the same file system identity. Files are owned by root in the
 * image even when the build ran as another user (mkfs copies the staged owners; debugfs fixes them).
 */

import { lstat, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HullError } from '../errors/index.js';
import { sha256Hex } from './content-hash.js';
import { run } from '../common/run.js';

const BLOCK = 4096;
const INODE_SIZE = 256;
const MiB = 1024 * 1024;
/** MIN_DISK_BYTES is the smallest root disk made. */
export const MIN_DISK_BYTES = 64 * MiB;

/** TreeUsage is what a staged tree needs on disk. */
export interface TreeUsage {
  /** bytes of file and symlink data, each rounded up to whole blocks. */
  bytes: number;
  inodes: number;
  /** foreign lists paths (relative to the tree, with a leading "/") not owned by 0:0. */
  foreign: string[];
}

/** treeUsage walks `dir` (not following symlinks). */
export async function treeUsage(dir: string): Promise<TreeUsage> {
  const usage: TreeUsage = { bytes: 0, inodes: 1, foreign: [] };
  const walk = async (rel: string): Promise<void> => {
    for (const entry of await readdir(join(dir, rel), { withFileTypes: true })) {
      const path = `${rel}/${entry.name}`;
      const st = await lstat(join(dir, path));
      usage.inodes++;
      usage.bytes += Math.ceil(st.size / BLOCK) * BLOCK;
      if (st.uid !== 0 || st.gid !== 0) usage.foreign.push(path);
      if (st.isDirectory()) await walk(path);
    }
  };
  await walk('');
  return usage;
}

/** diskSizeFor is the image size for a tree: content + metadata + 20%, at least 64 MiB, whole MiB. */
export function diskSizeFor(usage: Pick<TreeUsage, 'bytes' | 'inodes'>): number {
  const metadata = usage.inodes * INODE_SIZE + 4 * MiB; // inode tables + bitmaps, group descriptors, root
  const wanted = Math.ceil(((usage.bytes + metadata) * 1.2) / MiB) * MiB;
  return Math.max(MIN_DISK_BYTES, wanted);
}

/** uuidFrom derives a stable UUID-formatted string from a seed. */
export function uuidFrom(seed: string): string {
  const h = sha256Hex(seed);
  // Version 4 / variant 1 bits, so tools treat it as a well-formed random UUID.
  const variant = ((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export interface Ext4Options {
  label: string;
  /** seed makes the UUID and hash seed (the image id). */
  seed: string;
}

/** makeExt4Image writes `image` holding the tree in `dir`; returns its size in bytes. */
export async function makeExt4Image(image: string, dir: string, opts: Ext4Options): Promise<number> {
  const usage = await treeUsage(dir);
  const size = diskSizeFor(usage);
  const uuid = uuidFrom(`${opts.seed}/uuid`);
  const hashSeed = uuidFrom(`${opts.seed}/hash`);
  await rm(image, { force: true });
  await run('mkfs.ext4', [
    '-q',
    '-F',
    '-b', String(BLOCK),
    '-I', String(INODE_SIZE),
    '-N', String(usage.inodes + 1024),
    '-m', '0',
    '-L', opts.label,
    '-U', uuid,
    '-O', '^has_journal',
    '-E', `root_owner=0:0,hash_seed=${hashSeed}`,
    '-d', dir,
    image,
    `${size / 1024}k`,
  ]);
  if (usage.foreign.length > 0) await chownToRoot(image, usage.foreign);
  return size;
}

/** chownToRoot sets owner and group 0 on `paths` inside the image, with debugfs. */
async function chownToRoot(image: string, paths: readonly string[]): Promise<void> {
  for (const p of paths) {
    if (/[\s"\\]/.test(p)) throw new HullError('internal', `Cannot fix the owner of "${p}" in ${image}: unusual characters`);
  }
  const script = `${image}.debugfs`;
  await writeFile(script, paths.map((p) => `sif ${p} uid 0\nsif ${p} gid 0\n`).join(''));
  try {
    const res = await run('debugfs', ['-w', '-f', script, image]);
    const errors = res.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('debugfs '));
    if (errors.length > 0) throw new HullError('internal', `debugfs could not fix owners in ${image}: ${errors.slice(0, 3).join('; ')}`);
  } finally {
    await rm(script, { force: true });
  }
}
