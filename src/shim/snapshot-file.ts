/**
 * The shim daemon's startup snapshot: a V8 heap with the daemon's modules
 * already loaded, which `npm run build` makes (scripts/bundle.mjs) with the
 * node that builds, and `start` runs the daemon from when this node can load
 * it. A snapshot only loads in the node version, platform and architecture
 * that made it, hence those in its name: any other node finds no file and
 * runs the plain bundle.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export function snapshotFileName(version = process.version, platform = process.platform, arch = process.arch): string {
  return `daemon-${version}-${platform}-${arch}.blob`;
}

/** daemonSnapshot is the snapshot in `dir` this node can run, or undefined. */
export function daemonSnapshot(dir: string): string | undefined {
  const path = join(dir, snapshotFileName());
  return existsSync(path) ? path : undefined;
}
