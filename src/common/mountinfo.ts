/**
 * The one reader of /proc/<pid>/mountinfo (proc(5)): parsing, the mount on top at a path, and the
 * mounts at or below a directory. Teardown decides what to unmount from the
 * sandbox's ledger and checks it here; it never lists a directory to find mounts.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isInside } from './paths.js';

/** MountInfo is one line of /proc/<pid>/mountinfo. */
export interface MountInfo {
  mountId: number;
  parentId: number;
  /** root is the path inside the file system that is mounted ("/" for a whole one). */
  root: string;
  mountPoint: string;
  mountOptions: string[];
  fsType: string;
  source: string;
  superOptions: string[];
}

/** parseMountinfo reads /proc/<pid>/mountinfo text; malformed lines are skipped. */
export function parseMountinfo(text: string): MountInfo[] {
  const entries: MountInfo[] = [];
  for (const line of text.split('\n')) {
    const dash = line.indexOf(' - ');
    if (dash < 0) continue;
    const left = line.slice(0, dash).split(' ');
    const right = line.slice(dash + 3).split(' ');
    const [mountId, parentId, , root, mountPoint, mountOptions] = left;
    const [fsType, source, superOptions] = right;
    if (mountId === undefined || parentId === undefined || root === undefined || mountPoint === undefined || mountOptions === undefined || fsType === undefined) continue;
    if (!/^\d+$/.test(mountId) || !/^\d+$/.test(parentId)) continue;
    entries.push({
      mountId: Number(mountId),
      parentId: Number(parentId),
      root: unescapeMountinfo(root),
      mountPoint: unescapeMountinfo(mountPoint),
      mountOptions: mountOptions.split(','),
      fsType: unescapeMountinfo(fsType),
      source: unescapeMountinfo(source ?? ''),
      superOptions: (superOptions ?? '').split(',').filter(Boolean),
    });
  }
  return entries;
}

/** unescapeMountinfo undoes the kernel's octal escapes (space, tab, newline, backslash). */
export function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/** readMountinfo reads this process's mount table. */
export async function readMountinfo(): Promise<MountInfo[]> {
  return parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** readMountinfoSync is readMountinfo for synchronous callers (tests' leak checks). */
export function readMountinfoSync(): MountInfo[] {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** mountAt is the mount on top at `path` (the last one listed there), if any. */
export function mountAt(entries: readonly MountInfo[], path: string): MountInfo | undefined {
  let found: MountInfo | undefined;
  for (const entry of entries) if (entry.mountPoint === path) found = entry;
  return found;
}

/** mountContaining is the mount a resolved absolute `path` lies on: the deepest mount point above it, last listed. */
export function mountContaining(entries: readonly MountInfo[], path: string): MountInfo | undefined {
  let found: MountInfo | undefined;
  for (const entry of entries) {
    if (!isInside(entry.mountPoint, path)) continue;
    if (found === undefined || entry.mountPoint.length >= found.mountPoint.length) found = entry;
  }
  return found;
}

/** mountPointsUnder lists the mount points at or below `dir`, deepest first, each once. */
export function mountPointsUnder(entries: readonly MountInfo[], dir: string): string[] {
  const points = entries.map((e) => e.mountPoint).filter((p) => isInside(dir, p));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}
