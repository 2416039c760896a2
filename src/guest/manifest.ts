/**
 * manifest — what an image directory holds and what it was built from (manifest.json), and the
 * check that a directory is a complete image.
 *
 * `inputs` is exactly what the image id is the hash of, so a manifest proves its own id: an image
 * whose manifest does not hash to its directory name is not trusted.
 */

import { readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { hashFile, imageIdOf } from './content-hash.js';

/** BUILDER_VERSION changes whenever the builder makes different images from the same inputs. */
export const BUILDER_VERSION = 3;

/** MANIFEST_SCHEMA is the version of manifest.json's layout. */
export const MANIFEST_SCHEMA = 1;

/** IMAGE_FILES are the names of an image directory's files. */
export const IMAGE_FILES = { kernel: 'kernel', initrd: 'initrd.img', rootDisk: 'root.img', manifest: 'manifest.json' } as const;

/** GuestInputs is everything an image is made from; the image id is its hash. */
export interface GuestInputs {
  builderVersion: number;
  kernelDeb: { file: string; sha256: string };
  kernelModules: string[];
  /** onDemandModules: the modules (and whole module directories) on the root disk, loaded on demand. */
  onDemandModules?: { names: string[]; dirs: string[] };
  /** hostFiles: guest path, content hash and mode of every file copied from the host. */
  hostFiles: Array<{ path: string; sha256: string; mode: number }>;
  agentBundleSha256: string;
  /** texts: sha256 of each text the builder writes (init scripts, /etc files). */
  texts: Record<string, string>;
}

export interface ImageFileInfo {
  size: number;
  sha256: string;
}

/** GuestManifest is manifest.json. */
export interface GuestManifest {
  schema: number;
  id: string;
  builtAt: string;
  buildMs: number;
  kernelRelease: string;
  kernelPackage: { name: string; version: string; debFile: string; debSha256: string };
  /** modules: the initramfs's modules, in load order. */
  modules: string[];
  /** onDemandModules: the root disk's modules below /lib/modules/<release>/ (absent before builder version 3). */
  onDemandModules?: string[];
  nodeVersion: string;
  inputs: GuestInputs;
  /** hostFiles: where each copied file came from (informational; not part of the id). */
  hostFiles: Array<{ guestPath: string; hostPath: string; size: number }>;
  files: { kernel: ImageFileInfo; 'initrd.img': ImageFileInfo; 'root.img': ImageFileInfo };
}

/** GuestImage is a built, validated image directory. */
export interface GuestImage {
  id: string;
  dir: string;
  kernel: string;
  initrd: string;
  rootDisk: string;
  kernelRelease: string;
  manifest: GuestManifest;
}

/** parseManifest checks the shape of a manifest.json value; throws with the first problem found. */
export function parseManifest(value: unknown): GuestManifest {
  const m = value as GuestManifest;
  const fail = (what: string): never => {
    throw new Error(`Invalid guest image manifest: ${what}`);
  };
  if (typeof m !== 'object' || m === null) fail('not an object');
  if (m.schema !== MANIFEST_SCHEMA) fail(`schema ${String(m.schema)}, expected ${MANIFEST_SCHEMA}`);
  if (typeof m.id !== 'string' || !/^[0-9a-f]{20}$/.test(m.id)) fail('bad id');
  if (typeof m.kernelRelease !== 'string' || m.kernelRelease === '') fail('bad kernelRelease');
  if (typeof m.inputs !== 'object' || m.inputs === null) fail('no inputs');
  if (imageIdOf(m.inputs) !== m.id) fail(`inputs do not hash to id ${m.id}`);
  if (typeof m.files !== 'object' || m.files === null) fail('no files');
  for (const name of [IMAGE_FILES.kernel, IMAGE_FILES.initrd, IMAGE_FILES.rootDisk] as const) {
    const f = m.files[name];
    if (typeof f !== 'object' || f === null || !Number.isSafeInteger(f.size) || f.size <= 0 || typeof f.sha256 !== 'string') {
      fail(`bad entry for ${name}`);
    }
  }
  return m;
}

/**
 * loadImage returns the image in `dir` when its manifest is valid, names the directory, and every
 * file has the size the manifest records; undefined otherwise (with the reason given to `why`).
 * Contents are not re-hashed: that is what `verifyImageFiles` is for.
 */
export async function loadImage(dir: string, why: (reason: string) => void = () => {}): Promise<GuestImage | undefined> {
  let manifest: GuestManifest;
  try {
    manifest = parseManifest(JSON.parse(await readFile(join(dir, IMAGE_FILES.manifest), 'utf8')));
  } catch (e) {
    why(`${dir}: ${(e as Error).message}`);
    return undefined;
  }
  if (manifest.id !== basename(dir)) {
    why(`${dir}: manifest is for image ${manifest.id}`);
    return undefined;
  }
  for (const name of [IMAGE_FILES.kernel, IMAGE_FILES.initrd, IMAGE_FILES.rootDisk] as const) {
    const size = await stat(join(dir, name)).then((s) => (s.isFile() ? s.size : -1), () => -1);
    if (size !== manifest.files[name].size) {
      why(`${dir}: ${name} is missing or has the wrong size`);
      return undefined;
    }
  }
  return {
    id: manifest.id,
    dir,
    kernel: join(dir, IMAGE_FILES.kernel),
    initrd: join(dir, IMAGE_FILES.initrd),
    rootDisk: join(dir, IMAGE_FILES.rootDisk),
    kernelRelease: manifest.kernelRelease,
    manifest,
  };
}

/** verifyImageFiles re-hashes an image's files and lists those whose content differs from the manifest. */
export async function verifyImageFiles(image: GuestImage): Promise<string[]> {
  const bad: string[] = [];
  for (const name of [IMAGE_FILES.kernel, IMAGE_FILES.initrd, IMAGE_FILES.rootDisk] as const) {
    const sha = await hashFile(join(image.dir, name)).catch(() => '');
    if (sha !== image.manifest.files[name].sha256) bad.push(name);
  }
  return bad;
}
