/**
 * Host mounts a sandbox makes (bind mounts of container rootfs into the
 * shared directory), and finding any left under a directory, so teardown
 * can undo exactly what exists even after a crash.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { HullError } from '../errors/index.js';

function run(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(file, args, (e, _stdout, stderr) =>
      e ? reject(new HullError('internal', `${file} ${args.join(' ')} failed: ${stderr.trim() || e.message}`)) : resolve(),
    ),
  );
}

/** bindMount mounts `source` on `target` (both existing directories), private, optionally read-only. */
export async function bindMount(source: string, target: string, readOnly = false): Promise<void> {
  await run('mount', ['--bind', '--make-private', source, target]);
  if (readOnly) await run('mount', ['-o', 'remount,bind,ro', target]);
}

/** unmount detaches `target` (lazily, so a busy mount cannot keep teardown from finishing). */
export function unmount(target: string): Promise<void> {
  return run('umount', ['--lazy', target]);
}

/** mountsUnder lists mount points at or below `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const points = mountinfo
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map(unescapeMountPath)
    .filter((p) => p === dir || p.startsWith(dir + '/'));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** unmountAllUnder detaches every mount at or below `dir`. */
export async function unmountAllUnder(dir: string): Promise<void> {
  for (const point of await mountsUnder(dir)) await unmount(point);
}

// mountinfo escapes space, tab, newline and backslash as octal.
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}
