/**
 * oci-image — OCI images for tests, built locally from Debian's busybox-static: no registry, no umoci.
 *
 * One uncompressed layer (`/bin/busybox`, its applet symlinks, /etc/passwd, /etc/group and the usual
 * empty directories), written by packaging/oci-archive.ts (reproducible, cached by a hash of its
 * inputs, so a repeated run reuses it and containerd sees the same digests: the busybox and pause
 * images share their layer), and imported with `ctr images import`.
 */
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_ENV, buildOciArchive, busyboxKey, fillBusyboxRoot, goArch, sha256, splitRef, type BuiltImage } from '../../packaging/oci-archive.js';

export { splitRef, type BuiltImage } from '../../packaging/oci-archive.js';

/** BUSYBOX_REF is the general-purpose test image: busybox with `sh` as its command. */
export const BUSYBOX_REF = 'localhost/hull-test/busybox:latest';
/** PAUSE_REF is the CRI sandbox image: same layer, a command that idles until TERM. */
export const PAUSE_REF = 'localhost/hull-test/pause:latest';
/** PAUSE_CMD sleeps forever, exits 0 on TERM/INT, and reaps its children (it runs as pid 1). */
export const PAUSE_CMD = ['/bin/sh', '-c', "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"];

/** FORMAT bumps the cache key whenever the way images are built changes. */
const FORMAT = 'hull-test-image/2';

export interface ImageOptions {
  ref: string;
  cmd: string[];
  env?: string[];
}

/** ImportTarget is the part of a PrivateContainerd that importImage needs. */
export interface ImportTarget {
  namespace: string;
  ctr(args: string[], opts?: { namespace?: string; timeoutMs?: number }): Promise<{ stdout: string; stderr: string; code: number }>;
}

/** defaultImageDir is `<repo>/.hull-test/images` (git-ignored), found from this file's place in dist/. */
export function defaultImageDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return join(dir, '.hull-test', 'images');
}

/**
 * buildBusyboxImage writes `<dir>/<name>-<tag>-<key>.tar` unless it already exists, and returns it.
 * `key` hashes the busybox binary, the options and FORMAT, so a changed input gives a new file.
 */
export async function buildBusyboxImage(dir: string, opts: ImageOptions): Promise<BuiltImage> {
  const env = opts.env ?? DEFAULT_ENV;
  const key = sha256(JSON.stringify({ FORMAT, busybox: await busyboxKey(), ref: opts.ref, cmd: opts.cmd, env, arch: goArch() }));
  return buildOciArchive(dir, {
    ref: opts.ref,
    key,
    layers: [{ comment: 'hull test harness: busybox-static', fill: fillBusyboxRoot }],
    config: { Env: env, Cmd: opts.cmd, WorkingDir: '/' },
  });
}

/**
 * importImage imports an image tar as `ref` into the harness's namespace and into `k8s.io` (the
 * namespace CRI uses; in a private containerd it is ours too). Unpacks for the default snapshotter.
 */
export async function importImage(ctrd: ImportTarget, tarPath: string, ref: string, namespaces: string[] = [ctrd.namespace, 'k8s.io']): Promise<void> {
  await stat(tarPath);
  const { name } = splitRef(ref);
  for (const ns of namespaces) {
    const r = await ctrd.ctr(['images', 'import', '--base-name', name, tarPath], { namespace: ns, timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`Cannot import image "${ref}" into namespace "${ns}": ${r.stderr.trim() || r.stdout.trim()}`);
    const check = await ctrd.ctr(['images', 'check', `name==${ref}`], { namespace: ns });
    if (check.code !== 0 || !check.stdout.includes(ref)) throw new Error(`Cannot find image "${ref}" in namespace "${ns}" after import: ${check.stderr.trim()}`);
  }
}

/** ensureTestImages builds (or reuses) the busybox and pause images and imports both. */
export async function ensureTestImages(ctrd: ImportTarget, dir = defaultImageDir()): Promise<{ busybox: BuiltImage; pause: BuiltImage }> {
  const busybox = await buildBusyboxImage(dir, { ref: BUSYBOX_REF, cmd: ['sh'] });
  const pause = await buildBusyboxImage(dir, { ref: PAUSE_REF, cmd: PAUSE_CMD });
  await importImage(ctrd, busybox.tarPath, busybox.ref);
  await importImage(ctrd, pause.tarPath, pause.ref);
  return { busybox, pause };
}
