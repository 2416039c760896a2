/**
 * oci-archive — OCI image archives written by hand, for `ctr images import`: no image builder, no registry.
 *
 * Each layer is a directory filled by the caller and tarred reproducibly with GNU tar (`--sort=name
 * --mtime=@0`, owner 0, uncompressed); then the image config, the manifest and an OCI image layout
 * (`oci-layout`, `index.json`, `blobs/sha256/`), tarred again. The archive is cached under a name that
 * carries the caller's key (a hash of everything that goes in), so an unchanged image is not rebuilt
 * and keeps its digests; the archives of older inputs of the same reference are removed. The test images (test/harness/oci-image.ts) and the installer image
 * (installer-image.ts) are both made here.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** BUSYBOX is Debian's busybox-static: the shell and tools of every image made here. */
export const BUSYBOX = '/bin/busybox';
export const DEFAULT_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];

export interface ImageLayer {
  /** comment goes into the config's history. */
  comment: string;
  /** fill writes the layer's files into `root`, an empty directory. */
  fill(root: string): Promise<void>;
}

export interface ImageConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env: string[];
  WorkingDir: string;
  Labels?: Record<string, string>;
}

export interface ImageSpec {
  ref: string;
  /** key names everything the image is made from: the same key reuses the cached archive. */
  key: string;
  layers: ImageLayer[];
  config: ImageConfig;
}

export interface BuiltImage {
  ref: string;
  /** tarPath is an OCI image layout in a tar, ready for `ctr images import`. */
  tarPath: string;
  manifestDigest: string;
}

/** splitRef splits `name:tag` (a registry port is not a tag: `host:5000/x` has tag `latest`). */
export function splitRef(ref: string): { name: string; tag: string } {
  const colon = ref.lastIndexOf(':');
  if (colon > ref.lastIndexOf('/')) return { name: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { name: ref, tag: 'latest' };
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function goArch(): string {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return arch[process.arch] ?? process.arch;
}

async function hashFileHex(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** tarDir archives a directory's contents reproducibly (same input → same bytes). */
async function tarDir(dir: string, out: string): Promise<void> {
  await run('tar', ['--sort=name', '--mtime=@0', '--numeric-owner', '--owner=0', '--group=0', '--format=gnu', '-C', dir, '-cf', out, '.']);
}

/**
 * fillBusyboxRoot makes a minimal root: static busybox with its applet links, /etc/passwd and
 * /etc/group, and the usual directories (/proc, /sys, /dev, /tmp, ...).
 */
export async function fillBusyboxRoot(root: string): Promise<void> {
  for (const [d, mode] of [['bin', 0o755], ['sbin', 0o755], ['usr/bin', 0o755], ['usr/sbin', 0o755], ['etc', 0o755], ['proc', 0o555], ['sys', 0o555], ['dev', 0o755], ['root', 0o700], ['tmp', 0o1777], ['var/tmp', 0o1777]] as const) {
    await mkdir(join(root, d), { recursive: true });
    await chmod(join(root, d), mode);
  }
  await chmod(root, 0o755);
  await chmod(join(root, 'usr'), 0o755);
  await chmod(join(root, 'var'), 0o755);
  await copyFile(BUSYBOX, join(root, 'bin/busybox'));
  await chmod(join(root, 'bin/busybox'), 0o755);
  const { stdout } = await run(BUSYBOX, ['--list-full']);
  for (const path of stdout.split('\n').filter(Boolean)) {
    if (path === 'bin/busybox' || !/^(bin|sbin|usr\/bin|usr\/sbin)\/[\w.[-]+$/.test(path)) continue;
    await symlink('/bin/busybox', join(root, path));
  }
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n', { mode: 0o644 });
  await writeFile(join(root, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n', { mode: 0o644 });
}

/** busyboxKey is the part of a cache key that stands for fillBusyboxRoot's output. */
export async function busyboxKey(): Promise<string> {
  return sha256(await readFile(BUSYBOX));
}

async function writeBlob(blobs: string, data: Buffer): Promise<{ digest: string; size: number }> {
  const hex = sha256(data);
  await writeFile(join(blobs, hex), data);
  return { digest: `sha256:${hex}`, size: data.length };
}

/** archivePath is where buildOciArchive puts the image of `spec` in `dir`. */
export function archivePath(dir: string, spec: Pick<ImageSpec, 'ref' | 'key'>): string {
  const { name, tag } = splitRef(spec.ref);
  return join(dir, `${name.replace(/[^\w.-]+/g, '_')}-${tag}-${spec.key.slice(0, 16)}.tar`);
}

/** pruneOlder removes the archives of the same reference made from other inputs (the installer's are ~400 MB each). */
async function pruneOlder(dir: string, keep: string): Promise<void> {
  const name = basename(keep);
  const prefix = name.slice(0, name.lastIndexOf('-') + 1);
  for (const f of await readdir(dir)) {
    if (f.startsWith(prefix) && /^[0-9a-f]{16}\.tar(\.digest)?$/.test(f.slice(prefix.length)) && !f.startsWith(name)) await rm(join(dir, f), { force: true });
  }
}

/** buildOciArchive writes the image archive of `spec` into `dir` unless one with its key is there, and returns it. */
export async function buildOciArchive(dir: string, spec: ImageSpec): Promise<BuiltImage> {
  const tarPath = archivePath(dir, spec);
  const digestPath = `${tarPath}.digest`;
  if (existsSync(tarPath) && existsSync(digestPath)) {
    return { ref: spec.ref, tarPath, manifestDigest: (await readFile(digestPath, 'utf8')).trim() };
  }

  await mkdir(dir, { recursive: true });
  const work = await mkdtemp(join(dir, '.build-'));
  try {
    const layout = join(work, 'layout');
    const blobs = join(layout, 'blobs', 'sha256');
    await mkdir(blobs, { recursive: true });
    const layers: { digest: string; size: number }[] = [];
    for (const [i, layer] of spec.layers.entries()) {
      const root = join(work, `layer-${i}`);
      await mkdir(root);
      await layer.fill(root);
      const tar = join(work, `layer-${i}.tar`);
      await tarDir(root, tar);
      await rm(root, { recursive: true, force: true });
      // Layers can be large (the installer's holds a guest image): hashed as a stream, moved, not read whole.
      const hex = await hashFileHex(tar);
      const { size } = await stat(tar);
      await rename(tar, join(blobs, hex));
      layers.push({ digest: `sha256:${hex}`, size });
    }

    const config = await writeBlob(blobs, Buffer.from(JSON.stringify({
      architecture: goArch(),
      os: 'linux',
      config: spec.config,
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
      history: spec.layers.map((l) => ({ created_by: l.comment })),
    })));
    const manifest = await writeBlob(blobs, Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...l })),
    })));
    await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await writeFile(join(layout, 'index.json'), JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        ...manifest,
        platform: { architecture: goArch(), os: 'linux' },
        // The full reference, not just the tag: `ctr images import` then names the image by it, with or without --base-name.
        annotations: { 'org.opencontainers.image.ref.name': spec.ref },
      }],
    }));

    // Rename into place last: a concurrent builder of the same key writes identical bytes.
    const tmp = `${tarPath}.${randomBytes(4).toString('hex')}`;
    await tarDir(layout, tmp);
    await rename(tmp, tarPath);
    await writeFile(`${digestPath}.tmp`, manifest.digest);
    await rename(`${digestPath}.tmp`, digestPath);
    await pruneOlder(dir, tarPath);
    return { ref: spec.ref, tarPath, manifestDigest: manifest.digest };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
