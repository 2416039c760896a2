/**
 * kernel-package — the guest kernel, from Debian's `linux-image-amd64`.
 *
 * The metapackage's candidate names a versioned package (linux-image-6.1.0-NN-amd64); its .deb is
 * downloaded once with `apt-get download` into the cache and kept there, checked against the sha256
 * of apt's index, and unpacked with `dpkg-deb -x` into a scratch directory (never installed into the
 * host's /boot). Only what the guest needs is kept from it, in a prepared directory keyed by the .deb's
 * hash: the kernel image, the closure of GUEST_KERNEL_MODULES (for the initramfs) and the on-demand
 * modules laid out as `/lib/modules/<release>/` (for the root disk, see on-demand.ts).
 *
 * Without package lists apt knows no packages, so a failed look-up or download runs `apt-get update`
 * once and tries again. When apt cannot be asked at all (offline) the newest cached .deb is used.
 */

import { readFile, readdir, rename, rm, stat, writeFile, mkdir, copyFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { HullError } from '../errors/index.js';
import { hashFile, sha256Hex } from './content-hash.js';
import { run } from '../common/run.js';
import { indexModules, resolveIndexed } from './modules.js';
import { resolveOnDemand } from './on-demand.js';
import { makeTempDir } from './temp-dirs.js';
import { extractVmlinux } from './vmlinux.js';

/** KERNEL_METAPACKAGE is the Debian package that names the current generic amd64 kernel. */
export const KERNEL_METAPACKAGE = 'linux-image-amd64';

type Log = (line: string) => void;

/** KernelPackage is the versioned kernel package apt would install now. */
export interface KernelPackage {
  name: string;
  version: string;
  /** debFileName is the name the .deb has in the cache ("<name>_<version>_amd64.deb"). */
  debFileName: string;
  /** sha256 of the .deb, from apt's index; absent when the package came from the cache alone. */
  sha256?: string;
}

/** KernelDeb is a kernel .deb present in the cache. */
export interface KernelDeb {
  path: string;
  fileName: string;
  sha256: string;
}

/** PreparedKernel is what the guest keeps from a kernel .deb. */
export interface PreparedKernel {
  dir: string;
  /** kernel is what QEMU boots: an ELF vmlinux extracted from the bzImage, or the bzImage itself. */
  kernel: string;
  release: string;
  packageName: string;
  packageVersion: string;
  /** modules in load order; files are `${dir}/modules/${fileName}`. */
  modules: Array<{ name: string; fileName: string; path: string; size: number }>;
  /** moduleTree is the root disk's `/lib/modules/<release>/`: on-demand modules, modules.dep, modules.alias. */
  moduleTree: { dir: string; modules: Array<{ name: string; relPath: string; size: number }> };
}

/** OnDemandModules names the modules the root disk carries for loading on demand. */
export interface OnDemandModules {
  names: readonly string[];
  dirs: readonly string[];
}

/**
 * parseDepends finds the versioned kernel in `apt-cache depends linux-image-amd64` output.
 */
export function parseDepends(out: string): string | undefined {
  for (const line of out.split('\n')) {
    const m = /^\s*\|?Depends:\s+(linux-image-[\w.+-]+)\s*$/.exec(line);
    if (m !== null) return m[1];
  }
  return undefined;
}

/** parseShow reads the first stanza of `apt-cache show --no-all-versions PKG`. */
export function parseShow(out: string): { version: string; filename: string; sha256?: string } | undefined {
  const stanza = out.split(/\n\s*\n/)[0] ?? '';
  const field = (name: string): string | undefined => new RegExp(`^${name}:\\s*(\\S+)\\s*$`, 'm').exec(stanza)?.[1];
  const version = field('Version');
  const filename = field('Filename');
  if (version === undefined || filename === undefined) return undefined;
  return { version, filename, sha256: field('SHA256') };
}

/** resolveKernelPackage asks apt which kernel package `linux-image-amd64` stands for now. */
export async function resolveKernelPackage(): Promise<KernelPackage> {
  const deps = await run('apt-cache', ['depends', KERNEL_METAPACKAGE], { allowFailure: true });
  const name = parseDepends(deps.stdout);
  if (deps.code !== 0 || name === undefined) {
    throw new HullError('unavailable', `Cannot resolve ${KERNEL_METAPACKAGE} with apt-cache depends${deps.stderr.trim() ? `: ${deps.stderr.trim()}` : ''}`);
  }
  const show = await run('apt-cache', ['show', '--no-all-versions', name], { allowFailure: true });
  const info = parseShow(show.stdout);
  if (show.code !== 0 || info === undefined) {
    throw new HullError('unavailable', `Cannot find ${name} with apt-cache show${show.stderr.trim() ? `: ${show.stderr.trim()}` : ''}`);
  }
  const debFileName = info.filename.slice(info.filename.lastIndexOf('/') + 1);
  if (!/^[\w.+-]+\.deb$/.test(debFileName)) throw new HullError('internal', `Unexpected .deb file name "${info.filename}" for ${name}`);
  return { name, version: info.version, debFileName, sha256: info.sha256 };
}

/**
 * cachedKernelDeb returns the cached .deb of `pkg` when it is there and matches apt's hash, without
 * touching the network.
 */
export async function cachedKernelDeb(cacheDir: string, pkg: KernelPackage): Promise<KernelDeb | undefined> {
  const path = join(cacheDir, pkg.debFileName);
  const present = await stat(path).then((s) => s.isFile(), () => false);
  if (!present) return undefined;
  const sha256 = await hashFile(path);
  if (pkg.sha256 !== undefined && pkg.sha256 !== sha256) return undefined;
  return { path, fileName: pkg.debFileName, sha256 };
}

/** newestCachedKernelDeb is the most recently downloaded kernel .deb in the cache, for offline builds. */
export async function newestCachedKernelDeb(cacheDir: string): Promise<KernelDeb | undefined> {
  const names = (await readdir(cacheDir).catch(() => [] as string[])).filter((n) => /^linux-image-.*\.deb$/.test(n));
  let best: { name: string; mtime: number } | undefined;
  for (const name of names) {
    const st = await stat(join(cacheDir, name));
    if (best === undefined || st.mtimeMs > best.mtime) best = { name, mtime: st.mtimeMs };
  }
  if (best === undefined) return undefined;
  const path = join(cacheDir, best.name);
  return { path, fileName: best.name, sha256: await hashFile(path) };
}

/**
 * lookupKernelDeb tells which cached .deb a build would use now, without downloading or updating:
 * undefined when apt's current kernel is not in the cache (a build would fetch it).
 */
export async function lookupKernelDeb(cacheDir: string): Promise<KernelDeb | undefined> {
  let pkg: KernelPackage;
  try {
    pkg = await resolveKernelPackage();
  } catch {
    return newestCachedKernelDeb(cacheDir);
  }
  return cachedKernelDeb(cacheDir, pkg);
}

/**
 * fetchKernelDeb makes sure the current kernel .deb is in the cache and returns it, downloading it
 * (and running `apt-get update` once if apt knows no such package or cannot download it).
 */
export async function fetchKernelDeb(cacheDir: string, log: Log): Promise<KernelDeb> {
  await mkdir(cacheDir, { recursive: true });
  let lastError: unknown;
  for (const attempt of ['first', 'after-update'] as const) {
    if (attempt === 'after-update') {
      log('apt: running apt-get update');
      const up = await run('apt-get', ['update'], { allowFailure: true });
      if (up.code !== 0) {
        log(`apt: apt-get update failed: ${up.stderr.trim().split('\n').slice(-1)[0] ?? ''}`);
        break;
      }
    }
    try {
      const pkg = await resolveKernelPackage();
      const cached = await cachedKernelDeb(cacheDir, pkg);
      if (cached !== undefined) {
        log(`kernel: ${pkg.name} ${pkg.version} (cached ${cached.fileName})`);
        return cached;
      }
      log(`kernel: downloading ${pkg.name} ${pkg.version}`);
      return await downloadKernelDeb(cacheDir, pkg, log);
    } catch (e) {
      lastError = e;
      log(`apt: ${(e as Error).message}`);
    }
  }
  const fallback = await newestCachedKernelDeb(cacheDir);
  if (fallback !== undefined) {
    log(`kernel: apt could not be used; building with the cached ${fallback.fileName}`);
    return fallback;
  }
  throw new HullError('unavailable', `Cannot fetch the guest kernel package ${KERNEL_METAPACKAGE}: apt failed and nothing is cached in ${cacheDir}`, {
    cause: lastError,
  });
}

async function downloadKernelDeb(cacheDir: string, pkg: KernelPackage, log: Log): Promise<KernelDeb> {
  // apt-get download writes into its working directory only; a scratch directory in the cache keeps
  // a half-downloaded file out of the cache.
  const tmp = await makeTempDir(cacheDir, 'download');
  try {
    const res = await run('apt-get', ['download', `${pkg.name}=${pkg.version}`], { cwd: tmp });
    for (const line of res.stderr.split('\n')) if (line.trim() !== '') log(`apt: ${line.trim()}`);
    const debs = (await readdir(tmp)).filter((n) => n.endsWith('.deb'));
    if (debs.length !== 1) throw new HullError('internal', `apt-get download ${pkg.name} left ${debs.length} .deb files`);
    const sha256 = await hashFile(join(tmp, debs[0]!));
    if (pkg.sha256 !== undefined && sha256 !== pkg.sha256) {
      throw new HullError('failed_precondition', `Downloaded ${debs[0]} has sha256 ${sha256}, but apt's index says ${pkg.sha256}`);
    }
    const path = join(cacheDir, pkg.debFileName);
    await rename(join(tmp, debs[0]!), path);
    return { path, fileName: pkg.debFileName, sha256 };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * prepareKernel unpacks `deb` and keeps the kernel image, the module closure of `roots` and the
 * on-demand module tree in `${cacheDir}/kernel-<key>/`, reusing that directory when an earlier build
 * made it.
 */
export async function prepareKernel(
  cacheDir: string,
  deb: KernelDeb,
  roots: readonly string[],
  log: Log,
  onDemand: OnDemandModules = { names: [], dirs: [] },
): Promise<PreparedKernel> {
  const key = sha256Hex(JSON.stringify({ deb: deb.sha256, roots, onDemand, layout: 3 })).slice(0, 16);
  const dir = join(cacheDir, `kernel-${key}`);
  const existing = await readPrepared(dir);
  if (existing !== undefined) return existing;

  const work = await makeTempDir(cacheDir, 'extract');
  try {
    const tree = join(work, 'tree');
    const started = Date.now();
    await run('dpkg-deb', ['-x', deb.path, tree]);
    const packageName = (await run('dpkg-deb', ['-f', deb.path, 'Package'])).stdout.trim();
    const packageVersion = (await run('dpkg-deb', ['-f', deb.path, 'Version'])).stdout.trim();
    const kernels = (await readdir(join(tree, 'boot')).catch(() => [] as string[])).filter((n) => n.startsWith('vmlinuz-'));
    if (kernels.length !== 1) throw new HullError('failed_precondition', `${deb.fileName} holds ${kernels.length} /boot/vmlinuz-* files, expected 1`);
    const release = kernels[0]!.slice('vmlinuz-'.length);
    let moduleDir = join(tree, 'lib/modules', release);
    if (!(await stat(moduleDir).then((s) => s.isDirectory(), () => false))) moduleDir = join(tree, 'usr/lib/modules', release);
    const index = await indexModules(moduleDir, release);
    const modules = await resolveIndexed(index, roots);
    const extra = await resolveOnDemand(index, onDemand.names, onDemand.dirs, new Set(modules.map((m) => m.name)));
    const extraBytes = extra.modules.reduce((sum, m) => sum + m.data.length, 0);
    log(
      `kernel: unpacked ${packageName} ${packageVersion} (release ${release}, ${modules.length} modules at boot, ` +
        `${extra.modules.length} on demand, ${(extraBytes / 2 ** 20).toFixed(1)} MiB) in ${Date.now() - started} ms`,
    );

    const out = join(work, 'prepared');
    await mkdir(join(out, 'modules'), { recursive: true });
    // The kernel to boot: the extracted ELF where possible (PVH boot, no self-decompression), else the bzImage.
    if (!(await extractVmlinux(join(tree, 'boot', kernels[0]!), join(out, 'kernel')))) {
      await copyFile(join(tree, 'boot', kernels[0]!), join(out, 'kernel'));
    }
    for (const m of modules) await writeFile(join(out, 'modules', m.fileName), m.data);
    const moduleTree = join(out, 'tree');
    await mkdir(moduleTree);
    for (const m of extra.modules) {
      await mkdir(dirname(join(moduleTree, m.relPath)), { recursive: true });
      await writeFile(join(moduleTree, m.relPath), m.data);
    }
    await writeFile(join(moduleTree, 'modules.dep'), extra.modulesDep);
    await writeFile(join(moduleTree, 'modules.alias'), extra.modulesAlias);
    const meta: PreparedMeta = {
      release,
      packageName,
      packageVersion,
      modules: modules.map((m) => ({ name: m.name, fileName: m.fileName, size: m.data.length })),
      onDemand: extra.modules.map((m) => ({ name: m.name, relPath: m.relPath, size: m.data.length })),
    };
    await writeFile(join(out, 'kernel.json'), JSON.stringify(meta, null, 2) + '\n');
    await rename(out, dir).catch(async (e: NodeJS.ErrnoException) => {
      // Another build prepared the same kernel meanwhile: use theirs.
      if (e.code !== 'ENOTEMPTY' && e.code !== 'EEXIST') throw e;
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const prepared = await readPrepared(dir);
  if (prepared === undefined) throw new HullError('internal', `Prepared kernel directory ${dir} is incomplete`);
  return prepared;
}

interface PreparedMeta {
  release: string;
  packageName: string;
  packageVersion: string;
  modules: Array<{ name: string; fileName: string; size: number }>;
  onDemand: Array<{ name: string; relPath: string; size: number }>;
}

async function readPrepared(dir: string): Promise<PreparedKernel | undefined> {
  try {
    const meta = JSON.parse(await readFile(join(dir, 'kernel.json'), 'utf8')) as PreparedMeta;
    const modules = meta.modules.map((m) => ({ ...m, path: join(dir, 'modules', m.fileName) }));
    for (const m of modules) if ((await stat(m.path)).size !== m.size) return undefined;
    const tree = join(dir, 'tree');
    for (const m of meta.onDemand) if ((await stat(join(tree, m.relPath))).size !== m.size) return undefined;
    for (const f of ['modules.dep', 'modules.alias']) await stat(join(tree, f));
    const kernel = join(dir, 'kernel');
    await stat(kernel);
    return {
      dir,
      kernel,
      release: meta.release,
      packageName: meta.packageName,
      packageVersion: meta.packageVersion,
      modules,
      moduleTree: { dir: tree, modules: meta.onDemand },
    };
  } catch {
    return undefined;
  }
}

/** pruneKernelCache removes cached .debs and prepared kernels other than the ones named in `keep`. */
export async function pruneKernelCache(cacheDir: string, keep: { debFileName: string; preparedDir: string }, log: Log): Promise<void> {
  for (const name of await readdir(cacheDir).catch(() => [] as string[])) {
    const isDeb = /^linux-image-.*\.deb$/.test(name) && name !== keep.debFileName;
    const isPrepared = /^kernel-[0-9a-f]{16}$/.test(name) && join(cacheDir, name) !== keep.preparedDir;
    if (!isDeb && !isPrepared) continue;
    await rm(join(cacheDir, name), { recursive: true, force: true });
    log(`cache: removed old ${name}`);
  }
}
