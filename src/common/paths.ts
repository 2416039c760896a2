/** Path containment, the one check both sides use before trusting a path. */
import { posix } from 'node:path';

/** isInside tells whether `path` (normalised here) is `dir` or below it; `dir` is an absolute normalised path. */
export function isInside(dir: string, path: string): boolean {
  const normal = posix.normalize(path);
  if (dir === '/') return normal.startsWith('/');
  return normal === dir || normal.startsWith(dir.endsWith('/') ? dir : dir + '/');
}
