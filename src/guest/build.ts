/**
 * build — buildGuestImage and friends: put the pieces together into `${imagesRoot}/<id>/`.
 *
 * The id is the hash of every input (see manifest.ts), so a build first gathers and hashes the inputs
 * and returns at once when that image is already there. Otherwise it builds in a work directory
 * beside the final one, renames it into place, and then points the `current` symlink at it; both
 * renames are atomic, so a reader sees either the old image or the complete new one. Old image
 * directories are kept (running VMs and templates may use them).
 */

import { chmod, copyFile, mkdir, readFile, readlink, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { HullError } from '../errors/index.js';
import { canonicalJson, hashFile, imageIdOf, sha256Hex } from './content-hash.js';
import { makeExt4Image } from './ext4.js';
import { run } from '../common/run.js';
import { BUSYBOX, collectHostFiles, type HostFile } from './host-files.js';
import { writeInitramfs } from './initramfs.js';
import { ETC_FILES, INITRAMFS_INIT, ROOT_INIT } from './init-scripts.js';
import { fetchKernelDeb, lookupKernelDeb, prepareKernel, pruneKernelCache, type KernelDeb } from './kernel-package.js';
import {
  BUILDER_VERSION,
  IMAGE_FILES,
  MANIFEST_SCHEMA,
  loadImage,
  type GuestImage,
  type GuestInputs,
  type GuestManifest,
} from './manifest.js';
import { GUEST_KERNEL_MODULES } from './modules.js';
import { ON_DEMAND_MODULES, ON_DEMAND_MODULE_DIRS } from './on-demand.js';
import { busyboxApplets, stageRootfs } from './rootfs.js';
import { makeTempDir, removeStaleTempDirs } from './temp-dirs.js';

/** DEFAULT_IMAGES_ROOT is where images are built unless the caller says otherwise. */
export const DEFAULT_IMAGES_ROOT = '/var/lib/hull/guest';
/** CURRENT_LINK names the symlink, in the images root, to the current image's directory. */
export const CURRENT_LINK = 'current';
const CACHE_DIR = 'cache';
const NODE = '/usr/bin/node';
const ROOT_LABEL = 'hullroot';

export interface BuildGuestImageOptions {
  /** agentBundle is the host path of the agent's one-file bundle, installed as /hull/agent.js. */
  agentBundle: string;
  imagesRoot?: string;
  /** force rebuilds even when an image with the same inputs exists (it is replaced). */
  force?: boolean;
  log?: (line: string) => void;
}

export interface GuestImageIsStaleOptions {
  agentBundle: string;
  imagesRoot?: string;
}

interface Plan {
  id: string;
  inputs: GuestInputs;
  hostFiles: HostFile[];
  /** agent is the bundle's content as hashed, so the image holds exactly what its id says. */
  agent: Buffer;
}

/** planImage hashes the inputs into the id of the image they make. */
async function planImage(deb: KernelDeb, agentBundle: string): Promise<Plan> {
  await checkAgentBundle(agentBundle);
  const agent = await readFile(agentBundle);
  const hostFiles = await collectHostFiles();
  const texts: Record<string, string> = {
    '/init (initramfs)': sha256Hex(INITRAMFS_INIT),
    '/sbin/init': sha256Hex(ROOT_INIT),
    '/etc': sha256Hex(canonicalJson(ETC_FILES)),
  };
  const inputs: GuestInputs = {
    builderVersion: BUILDER_VERSION,
    kernelDeb: { file: deb.fileName, sha256: deb.sha256 },
    kernelModules: [...GUEST_KERNEL_MODULES],
    onDemandModules: { names: [...ON_DEMAND_MODULES], dirs: [...ON_DEMAND_MODULE_DIRS] },
    hostFiles: hostFiles.map((f) => ({ path: f.guestPath, sha256: f.sha256, mode: f.mode })),
    agentBundleSha256: sha256Hex(agent),
    texts,
  };
  return { id: imageIdOf(inputs), inputs, hostFiles, agent };
}

async function checkAgentBundle(path: string): Promise<void> {
  const st = await stat(path).catch(() => undefined);
  if (st === undefined || !st.isFile()) {
    throw new HullError('invalid_argument', `Cannot build the guest image: agent bundle "${path}" is not a file`);
  }
}

/**
 * buildGuestImage makes sure the image for the current inputs exists under the images root, points
 * `current` at it and returns it. Fetches the kernel package when it is not cached.
 */
export async function buildGuestImage(opts: BuildGuestImageOptions): Promise<GuestImage> {
  const log = opts.log ?? (() => {});
  const started = Date.now();
  const root = resolve(opts.imagesRoot ?? DEFAULT_IMAGES_ROOT);
  const cache = join(root, CACHE_DIR);
  await checkAgentBundle(resolve(opts.agentBundle));
  await mkdir(cache, { recursive: true });
  for (const dir of [root, cache]) {
    for (const name of await removeStaleTempDirs(dir)) log(`cleanup: removed stale ${join(dir, name)}`);
  }

  const deb = await fetchKernelDeb(cache, log);
  const plan = await planImage(deb, resolve(opts.agentBundle));
  const finalDir = join(root, plan.id);
  if (!opts.force) {
    const existing = await loadImage(finalDir);
    if (existing !== undefined) {
      await setCurrent(root, plan.id);
      log(`image ${plan.id} is up to date (${Date.now() - started} ms)`);
      return existing;
    }
  }

  log(`building image ${plan.id}`);
  const work = await makeTempDir(root, 'build');
  try {
    const manifest = await buildInto(work, cache, deb, plan, log);
    manifest.buildMs = Date.now() - started;
    await writeFile(join(work, IMAGE_FILES.manifest), JSON.stringify(manifest, null, 2) + '\n', { mode: 0o444 });
    await chmod(work, 0o755);
    await install(root, work, finalDir, !!opts.force);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const image = await loadImage(finalDir, (why) => log(why));
  if (image === undefined) throw new HullError('internal', `Built guest image ${finalDir} does not validate`);
  await setCurrent(root, image.id);
  log(`image ${image.id} built in ${Date.now() - started} ms`);
  return image;
}

async function buildInto(work: string, cache: string, deb: KernelDeb, plan: Plan, log: (l: string) => void): Promise<GuestManifest> {
  const step = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    const result = await fn();
    log(`${what} (${Date.now() - t0} ms)`);
    return result;
  };
  const kernel = await step('kernel ready', () => prepareKernel(cache, deb, GUEST_KERNEL_MODULES, log, { names: ON_DEMAND_MODULES, dirs: ON_DEMAND_MODULE_DIRS }));
  await copyFile(kernel.kernel, join(work, IMAGE_FILES.kernel));

  const busybox = plan.hostFiles.find((f) => f.guestPath === BUSYBOX)!;
  await step('initramfs written', () => writeInitramfs(join(work, IMAGE_FILES.initrd), { busybox: busybox.hostPath, modules: kernel.modules }));

  const rootfs = join(work, 'rootfs');
  await mkdir(rootfs);
  const applets = await busyboxApplets(busybox.hostPath);
  await step('root file system staged', () => stageRootfs(rootfs, { hostFiles: plan.hostFiles, agent: plan.agent, applets, moduleTree: { release: kernel.release, dir: kernel.moduleTree.dir } }));
  await step('root disk written', () => makeExt4Image(join(work, IMAGE_FILES.rootDisk), rootfs, { label: ROOT_LABEL, seed: plan.id }));
  await rm(rootfs, { recursive: true, force: true });

  const files = {} as GuestManifest['files'];
  for (const name of [IMAGE_FILES.kernel, IMAGE_FILES.initrd, IMAGE_FILES.rootDisk] as const) {
    const path = join(work, name);
    await chmod(path, 0o444);
    files[name] = { size: (await stat(path)).size, sha256: await hashFile(path) };
  }
  await pruneKernelCache(cache, { debFileName: deb.fileName, preparedDir: kernel.dir }, log);
  return {
    schema: MANIFEST_SCHEMA,
    id: plan.id,
    builtAt: new Date().toISOString(),
    buildMs: 0,
    kernelRelease: kernel.release,
    kernelPackage: { name: kernel.packageName, version: kernel.packageVersion, debFile: deb.fileName, debSha256: deb.sha256 },
    modules: kernel.modules.map((m) => m.fileName),
    onDemandModules: kernel.moduleTree.modules.map((m) => m.relPath),
    nodeVersion: (await run(NODE, ['--version'])).stdout.trim(),
    inputs: plan.inputs,
    hostFiles: plan.hostFiles.map((f) => ({ guestPath: f.guestPath, hostPath: f.hostPath, size: f.size })),
    files,
  };
}

/** install renames the finished work directory to `finalDir`, replacing an invalid (or, forced, any) old one. */
async function install(root: string, work: string, finalDir: string, replace: boolean): Promise<void> {
  const existing = await stat(finalDir).then(() => true, () => false);
  if (existing) {
    const valid = (await loadImage(finalDir)) !== undefined;
    if (valid && !replace) return; // another build finished the same image meanwhile
    const old = await makeTempDir(root, 'old');
    await rename(finalDir, join(old, 'image'));
    await rename(work, finalDir);
    await rm(old, { recursive: true, force: true });
    return;
  }
  await rename(work, finalDir).catch(async (e: NodeJS.ErrnoException) => {
    if ((e.code === 'ENOTEMPTY' || e.code === 'EEXIST') && (await loadImage(finalDir)) !== undefined) return;
    throw e;
  });
}

/** setCurrent points `${root}/current` at image `id`, atomically. */
async function setCurrent(root: string, id: string): Promise<void> {
  const link = join(root, CURRENT_LINK);
  if ((await readlink(link).catch(() => undefined)) === id) return;
  const tmp = join(root, `.current-${process.pid}-${sha256Hex(`${Date.now()}${Math.random()}`).slice(0, 8)}`);
  await symlink(id, tmp);
  await rename(tmp, link).catch(async (e) => {
    await rm(tmp, { force: true });
    throw e;
  });
}

/** currentGuestImage returns the image `current` points to, if it is there and validates. */
export async function currentGuestImage(imagesRoot: string = DEFAULT_IMAGES_ROOT): Promise<GuestImage | undefined> {
  const root = resolve(imagesRoot);
  const target = await readlink(join(root, CURRENT_LINK)).catch(() => undefined);
  if (target === undefined || !/^[0-9a-f]{20}$/.test(target)) return undefined;
  return loadImage(join(root, target));
}

/**
 * builtGuestImage returns the image a build now would make, if it is already built (`current` or
 * not): what ships with this agent bundle even when `current` points at another build's image.
 * Never downloads or runs apt-get update.
 */
export async function builtGuestImage(opts: GuestImageIsStaleOptions): Promise<GuestImage | undefined> {
  const root = resolve(opts.imagesRoot ?? DEFAULT_IMAGES_ROOT);
  const deb = await lookupKernelDeb(join(root, CACHE_DIR));
  if (deb === undefined) return undefined;
  const plan = await planImage(deb, resolve(opts.agentBundle));
  return loadImage(join(root, plan.id));
}

/**
 * guestImageIsStale tells whether a build now would make a different image than `current`: no valid
 * current image, a newer kernel package, or any changed host file, agent bundle or builder text.
 * Never downloads or runs apt-get update.
 */
export async function guestImageIsStale(opts: GuestImageIsStaleOptions): Promise<boolean> {
  const root = resolve(opts.imagesRoot ?? DEFAULT_IMAGES_ROOT);
  await checkAgentBundle(resolve(opts.agentBundle));
  const current = await currentGuestImage(root);
  if (current === undefined) return true;
  const deb = await lookupKernelDeb(join(root, CACHE_DIR));
  if (deb === undefined) return true;
  const plan = await planImage(deb, resolve(opts.agentBundle));
  return plan.id !== current.id;
}
