/**
 * files — finding what goes into an image on this machine: a program on PATH, the files of a tree.
 */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

/** findOnPath is the first `name` in PATH's directories, then /usr/sbin and /usr/bin; undefined when none has it. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter).concat(['/usr/sbin', '/usr/bin'])) {
    if (dir !== '' && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/**
 * walk lists the regular files below `dir` (and symbolic links, with `links`), sorted, as paths
 * relative to `dir`, keeping those `keep` accepts.
 */
export async function walk(dir: string, keep: (rel: string) => boolean = () => true, links = false, base = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const rel = join(base, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(join(dir, entry.name), keep, links, rel)));
    else if ((entry.isFile() || (links && entry.isSymbolicLink())) && keep(rel)) out.push(rel);
  }
  return out;
}
