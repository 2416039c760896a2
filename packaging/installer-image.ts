/**
 * installer-image — the image deploy/daemonset.yaml runs on every node (`make oci-image`).
 *
 * Five layers, written by oci-archive.ts:
 *  1. static busybox: the entrypoint's shell, cp, nsenter;
 *  2. kubectl and systemctl of this machine, each with the libraries ldd resolves for it, at the
 *     paths ldd names: the entrypoint labels the node with kubectl, and `hull install` restarts the
 *     host's containerd with systemctl;
 *  3. the node runtime in /usr/share/hull/runtime (node-runtime.ts): node, QEMU and every program
 *     hull runs on a node, with their own loader and libraries, for /opt/hull/runtime;
 *  4. the guest image of this build (kernel, initramfs, root disk, manifest) in /usr/share/hull-guest/<id>/,
 *     shipped built rather than built on each node: a build needs apt, Debian's kernel package and
 *     the host programs it copies, none of which a node has to provide then; every node boots the
 *     same, tested guest, matched to the agent bundled next to it;
 *  5. hull in /usr/share/hull: bin/ (its launchers run the runtime's node), the compiled CLI (dist/src
 *     without tests), the bundled shim and agent, the production node_modules, and
 *     deploy/entrypoint.sh, the image's entrypoint.
 *
 * The entrypoint copies /usr/share/hull to the host's /opt/hull (the host's containerd runs the shim
 * from there, with the runtime's node) and the guest image to the host's /var/lib/hull/guest.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, readFile, realpath, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { builtGuestImage, sharedLibraries } from '../src/guest/index.js';
import { DEFAULT_CONFIG } from '../src/config/index.js';
import { DEFAULT_ENV, buildOciArchive, busyboxKey, fillBusyboxRoot, goArch, sha256, type BuiltImage, type ImageLayer } from './oci-archive.js';
import { findOnPath, walk } from './files.js';
import { RUNTIME_PREFIX, fillRuntime, planRuntime } from './node-runtime.js';

export const INSTALLER_NAME = 'localhost/hull-deploy';
/** HULL_DIR holds what the entrypoint copies to the host's /opt/hull. */
export const HULL_DIR = '/usr/share/hull';
/** GUEST_DIR holds the guest image (one directory, named by its id). */
export const GUEST_DIR = '/usr/share/hull-guest';
export const ENTRYPOINT = `${HULL_DIR}/deploy/entrypoint.sh`;
/** RUNTIME_DIR holds the node runtime, which the entrypoint copies to RUNTIME_PREFIX with the rest of HULL_DIR. */
export const RUNTIME_DIR = `${HULL_DIR}/runtime`;
/** PROGRAMS go into the image with their libraries, for the installer itself; the optional ones only when this machine has them. */
const PROGRAMS = [{ name: 'kubectl', required: true }, { name: 'systemctl', required: false }];
const FORMAT = 'hull-installer-image/2';

export interface InstallerImageOptions {
  /** repo is the checkout, built (`npm run build`): its bin/, dist/, node_modules/, deploy/entrypoint.sh. */
  repo: string;
  /** outDir receives the archive (cached there by a hash of the inputs). */
  outDir: string;
  guestImagesRoot?: string;
  log?: (line: string) => void;
}

export interface InstallerImage extends BuiltImage {
  guestImageId: string;
  /** programs maps each program put in /usr/bin to the file it came from. */
  programs: Record<string, string>;
  /** runtimePrograms maps each program of the node runtime to the file it came from. */
  runtimePrograms: Record<string, string>;
}

/** File is one regular file of a layer: `src` on this machine (or its `content`), `dst` in the image. */
interface File {
  src: string;
  dst: string;
  content?: string;
}

export function installerRef(version: string): string {
  return `${INSTALLER_NAME}:${version}`;
}

/** productionPackages lists the directories of package.json's dependencies and theirs (node's lookup: nested first). */
async function productionPackages(repo: string): Promise<string[]> {
  const lookup = (from: string, name: string): string | undefined => {
    let dir = from;
    for (;;) {
      const candidate = join(dir, 'node_modules', name);
      if (existsSync(join(candidate, 'package.json'))) return candidate;
      if (dir === repo) return undefined;
      const i = dir.lastIndexOf('/node_modules/');
      dir = i < 0 ? repo : dir.slice(0, i);
    }
  };
  const found = new Set<string>();
  const visit = async (from: string): Promise<void> => {
    const pkg = JSON.parse(await readFile(join(from, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    for (const name of Object.keys(pkg.dependencies ?? {})) {
      const dir = lookup(from, name);
      if (dir === undefined) throw new Error(`Cannot find the package "${name}" (needed by ${from}) under ${repo}/node_modules: run npm ci`);
      if (found.has(dir)) continue;
      found.add(dir);
      await visit(dir);
    }
  };
  await visit(repo);
  return [...found].sort();
}

/** hullFiles are the files of /usr/share/hull. */
async function hullFiles(repo: string): Promise<File[]> {
  const files: File[] = [];
  const add = (src: string): void => void files.push({ src, dst: join(HULL_DIR, relative(repo, src)) });
  add(join(repo, 'package.json'));
  add(join(repo, 'deploy', 'entrypoint.sh'));
  for (const name of ['hull', 'containerd-shim-hull-v2']) {
    // On the node, the launchers run the runtime's node, not whatever `node` the node may have.
    const src = join(repo, 'bin', name);
    const launcher = await readFile(src, 'utf8');
    if (!launcher.startsWith('#!/usr/bin/env node\n')) throw new Error(`${src} does not start with #!/usr/bin/env node`);
    files.push({ src, dst: join(HULL_DIR, 'bin', name), content: `#!${RUNTIME_PREFIX}/bin/node\n${launcher.slice(launcher.indexOf('\n') + 1)}` });
  }
  const dist = join(repo, 'dist');
  if (!existsSync(join(dist, 'src', 'cli', 'main.js')) || !existsSync(join(dist, 'shim')) || !existsSync(join(dist, 'agent'))) {
    throw new Error(`${dist} is not a built hull: run npm run build`);
  }
  const noMaps = (rel: string): boolean => !rel.endsWith('.map');
  const under = async (dir: string, keep?: (rel: string) => boolean): Promise<void> => {
    for (const rel of await walk(dir, keep)) add(join(dir, rel));
  };
  await under(join(dist, 'src'), (rel) => noMaps(rel) && !rel.endsWith('.test.js'));
  for (const sub of ['shim', 'agent']) await under(join(dist, sub), noMaps);
  for (const pkg of await productionPackages(repo)) await under(pkg);
  return files;
}

/** programFiles are kubectl and systemctl in /usr/bin and their libraries at the paths ldd names. */
async function programFiles(log: (line: string) => void): Promise<{ files: File[]; programs: Record<string, string> }> {
  const files = new Map<string, File>();
  const programs: Record<string, string> = {};
  for (const { name, required } of PROGRAMS) {
    const path = findOnPath(name);
    if (path === undefined) {
      if (required) throw new Error(`Cannot find ${name} on PATH: the installer image needs it`);
      log(`installer image: no ${name} here; the image will have none (hull install then prints the containerd restart instead of running it)`);
      continue;
    }
    const src = await realpath(path);
    programs[name] = src;
    files.set(`/usr/bin/${name}`, { src, dst: `/usr/bin/${name}` });
    // ldd fails on a static program (kubectl): it has no libraries to copy.
    const libs = await sharedLibraries(src).catch(() => [] as string[]);
    for (const lib of libs) if (!files.has(lib)) files.set(lib, { src: await realpath(lib), dst: lib });
  }
  return { files: [...files.values()].sort((a, b) => (a.dst < b.dst ? -1 : 1)), programs };
}

function copyLayer(comment: string, files: File[]): ImageLayer {
  return {
    comment,
    fill: async (root) => {
      for (const f of files) {
        const to = join(root, f.dst);
        await mkdir(dirname(to), { recursive: true });
        if (f.content !== undefined) await writeFile(to, f.content);
        else await copyFile(f.src, to);
        await chmod(to, (await stat(f.src)).mode & 0o7777);
      }
    },
  };
}

/** statKey stands for a file by name, size, mtime and mode (big files: hashing them all would cost more than the build). */
async function statKey(files: File[]): Promise<string> {
  const hash = createHash('sha256');
  for (const f of files) {
    const st = await stat(f.src);
    hash.update(`${f.dst}\0${f.src}\0${st.size}\0${st.mtimeMs}\0${st.mode}\n`);
  }
  return hash.digest('hex');
}

/** buildInstallerImage writes the installer image archive (or reuses it) and returns it. */
export async function buildInstallerImage(opts: InstallerImageOptions): Promise<InstallerImage> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const imagesRoot = opts.guestImagesRoot ?? DEFAULT_CONFIG.guestImagesDir;
  const agentBundle = join(opts.repo, 'dist', 'agent', 'hull-agent.js');
  const guest = await builtGuestImage({ agentBundle, imagesRoot });
  if (guest === undefined) throw new Error(`${imagesRoot} has no guest image for this build (its agent, kernel or host files changed): run make image first`);
  const guestFiles: File[] = (await readdir(guest.dir)).sort().map((name) => ({ src: join(guest.dir, name), dst: join(GUEST_DIR, guest.id, name) }));
  const { files: progFiles, programs } = await programFiles(log);
  const hull = await hullFiles(opts.repo);
  const version = (JSON.parse(await readFile(join(opts.repo, 'package.json'), 'utf8')) as { version: string }).version;
  const ref = installerRef(version);
  const config = {
    Entrypoint: [ENTRYPOINT],
    Cmd: ['install'],
    Env: DEFAULT_ENV,
    WorkingDir: '/',
    Labels: { 'org.opencontainers.image.title': 'hull-deploy', 'org.opencontainers.image.version': version, 'dev.hull.guest-image': guest.id },
  };
  const hullHash = createHash('sha256');
  for (const f of hull) hullHash.update(`${f.dst}\0${sha256(f.content ?? (await readFile(f.src)))}\0${(await stat(f.src)).mode}\n`);
  const runtime = await planRuntime();
  const runtimeKey = `${RUNTIME_PREFIX}\0${JSON.stringify(runtime.links)}\0${await statKey(runtime.files)}`;
  const key = sha256(JSON.stringify({
    FORMAT, ref, config, arch: goArch(), busybox: await busyboxKey(), programs: await statKey(progFiles), runtime: runtimeKey, guest: guest.id, hull: hullHash.digest('hex'),
  }));
  log(`installer image: ${ref} (guest image ${guest.id}, ${hull.length} hull files, programs ${Object.keys(programs).join(', ')})`);
  const built = await buildOciArchive(opts.outDir, {
    ref,
    key,
    layers: [
      { comment: 'static busybox', fill: fillBusyboxRoot },
      copyLayer(`${Object.keys(programs).join(', ')} with their libraries`, progFiles),
      { comment: `node runtime for ${RUNTIME_PREFIX}: ${Object.keys(runtime.programs).join(', ')}`, fill: (root) => fillRuntime(join(root, RUNTIME_DIR), runtime) },
      copyLayer(`guest image ${guest.id}`, guestFiles),
      copyLayer(`hull ${version}`, hull),
    ],
    config,
  });
  return { ...built, guestImageId: guest.id, programs, runtimePrograms: runtime.programs };
}
