/**
 * oci-image — OCI images for tests, built locally from Debian's busybox-static: no registry, no umoci.
 *
 * One uncompressed layer (`/bin/busybox`, its applet symlinks, /etc/passwd, /etc/group and the usual
 * empty directories) made reproducible with GNU tar (`--sort=name --mtime=@0`, owner 0), an image config,
 * a manifest and an OCI image layout, tarred for `ctr images import`. The tar is cached under a name
 * derived from everything that goes into it, so a repeated run reuses it and containerd sees the same
 * digests (the busybox and pause images share their layer).
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile, copyFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** BUSYBOX_REF is the general-purpose test image: busybox with `sh` as its command. */
export const BUSYBOX_REF = 'localhost/hull-test/busybox:latest';
/** PAUSE_REF is the CRI sandbox image: same layer, a command that idles until TERM. */
export const PAUSE_REF = 'localhost/hull-test/pause:latest';
/** PAUSE_CMD sleeps forever, exits 0 on TERM/INT, and reaps its children (it runs as pid 1). */
export const PAUSE_CMD = ['/bin/sh', '-c', "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"];

const BUSYBOX = '/bin/busybox';
const ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];
/** FORMAT bumps the cache key whenever the way images are built changes. */
const FORMAT = 'hull-test-image/1';

export interface ImageOptions {
  ref: string;
  cmd: string[];
  env?: string[];
}

export interface BuiltImage {
  ref: string;
  /** tarPath is an OCI image layout in a tar, ready for `ctr images import`. */
  tarPath: string;
  manifestDigest: string;
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

/** splitRef splits `name:tag` (a registry port is not a tag: `host:5000/x` has tag `latest`). */
export function splitRef(ref: string): { name: string; tag: string } {
  const colon = ref.lastIndexOf(':');
  if (colon > ref.lastIndexOf('/')) return { name: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { name: ref, tag: 'latest' };
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

function goArch(): string {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return arch[process.arch] ?? process.arch;
}

/** tarDir archives a directory's contents reproducibly (same input → same bytes). */
async function tarDir(dir: string, out: string): Promise<void> {
  await run('tar', ['--sort=name', '--mtime=@0', '--numeric-owner', '--owner=0', '--group=0', '--format=gnu', '-C', dir, '-cf', out, '.']);
}

async function makeRootfs(rootfs: string): Promise<void> {
  for (const [d, mode] of [['bin', 0o755], ['sbin', 0o755], ['usr/bin', 0o755], ['usr/sbin', 0o755], ['etc', 0o755], ['proc', 0o555], ['sys', 0o555], ['dev', 0o755], ['root', 0o700], ['tmp', 0o1777], ['var/tmp', 0o1777]] as const) {
    await mkdir(join(rootfs, d), { recursive: true });
    await chmod(join(rootfs, d), mode);
  }
  await chmod(rootfs, 0o755);
  await chmod(join(rootfs, 'usr'), 0o755);
  await chmod(join(rootfs, 'var'), 0o755);
  await copyFile(BUSYBOX, join(rootfs, 'bin/busybox'));
  await chmod(join(rootfs, 'bin/busybox'), 0o755);
  const { stdout } = await run(BUSYBOX, ['--list-full']);
  for (const path of stdout.split('\n').filter(Boolean)) {
    if (path === 'bin/busybox' || !/^(bin|sbin|usr\/bin|usr\/sbin)\/[\w.[-]+$/.test(path)) continue;
    await symlink('/bin/busybox', join(rootfs, path));
  }
  await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n', { mode: 0o644 });
  await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n', { mode: 0o644 });
}

async function writeBlob(blobs: string, data: Buffer): Promise<{ digest: string; size: number }> {
  const hex = sha256(data);
  await writeFile(join(blobs, hex), data);
  return { digest: `sha256:${hex}`, size: data.length };
}

/**
 * buildBusyboxImage writes `<dir>/<name>-<key>.tar` unless it already exists, and returns it. `key`
 * hashes the busybox binary, the options and FORMAT, so a changed input gives a new file.
 */
export async function buildBusyboxImage(dir: string, opts: ImageOptions): Promise<BuiltImage> {
  const env = opts.env ?? ENV;
  const busybox = await readFile(BUSYBOX);
  const key = sha256(JSON.stringify({ FORMAT, busybox: sha256(busybox), ref: opts.ref, cmd: opts.cmd, env, arch: goArch() })).slice(0, 16);
  const { name, tag } = splitRef(opts.ref);
  const tarPath = join(dir, `${name.replace(/[^\w.-]+/g, '_')}-${tag}-${key}.tar`);
  const digestPath = `${tarPath}.digest`;
  if (existsSync(tarPath) && existsSync(digestPath)) {
    return { ref: opts.ref, tarPath, manifestDigest: (await readFile(digestPath, 'utf8')).trim() };
  }

  await mkdir(dir, { recursive: true });
  const work = await mkdtemp(join(dir, '.build-'));
  try {
    const rootfs = join(work, 'rootfs');
    const layout = join(work, 'layout');
    const blobs = join(layout, 'blobs', 'sha256');
    await mkdir(rootfs);
    await mkdir(blobs, { recursive: true });
    await makeRootfs(rootfs);
    await tarDir(rootfs, join(work, 'layer.tar'));

    const layer = await writeBlob(blobs, await readFile(join(work, 'layer.tar')));
    const config = await writeBlob(blobs, Buffer.from(JSON.stringify({
      architecture: goArch(),
      os: 'linux',
      config: { Env: env, Cmd: opts.cmd, WorkingDir: '/' },
      rootfs: { type: 'layers', diff_ids: [layer.digest] },
      history: [{ created_by: 'hull test harness: busybox-static' }],
    })));
    const manifest = await writeBlob(blobs, Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
    })));
    await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await writeFile(join(layout, 'index.json'), JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        ...manifest,
        platform: { architecture: goArch(), os: 'linux' },
        annotations: { 'org.opencontainers.image.ref.name': tag },
      }],
    }));

    // Rename into place last: a concurrent builder of the same key writes identical bytes.
    const tmp = `${tarPath}.${randomBytes(4).toString('hex')}`;
    await tarDir(layout, tmp);
    await rename(tmp, tarPath);
    await writeFile(`${digestPath}.tmp`, manifest.digest);
    await rename(`${digestPath}.tmp`, digestPath);
    return { ref: opts.ref, tarPath, manifestDigest: manifest.digest };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
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
