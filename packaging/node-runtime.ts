/**
 * node-runtime — what hull runs on a node, shipped in the installer image so that the node needs none
 * of it (kata-deploy ships its QEMU under /opt/kata the same way): node (the shim and the CLI), QEMU
 * with its TCG module and data files, the static busybox (jails, lifelines), util-linux's nsenter,
 * setpriv, unshare, mount and umount, coreutils' mkfifo, iproute2's ip and tc, nft, iptables (its nft
 * backend, with its extensions) and sysctl. The node keeps providing its kernel, containerd and systemd.
 *
 * Each program is this machine's own (Debian's), copied with every library ldd resolves for it into one
 * lib/, then re-pointed with patchelf: its loader is the runtime's (RUNTIME_PREFIX/lib/ld-linux-x86-64.so.2,
 * absolute: an ELF interpreter cannot be relative) and its library path `$ORIGIN/../lib`, as DT_RPATH,
 * which the libraries it loads inherit (a library with a path of its own gets `$ORIGIN`). So nothing of the
 * node's glibc or libraries is ever loaded, whatever its distribution. QEMU finds its modules and data
 * relative to its binary (lib/x86_64-linux-gnu/qemu, share/qemu), as under /usr; iptables its
 * extensions through XTABLES_LIBDIR (set by hull: src/common/host-runtime.ts, which also says when hull
 * uses this runtime).
 */
import { chmod, copyFile, mkdir, readdir, realpath, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { HOST_RUNTIME_LOADER, HOST_RUNTIME_MARKER, HOST_RUNTIME_XTABLES } from '../src/common/host-runtime.js';
import { hasInterpreter, sharedLibraries } from '../src/guest/index.js';
import { findOnPath, walk } from './files.js';

const exec = promisify(execFile);

/** RUNTIME_PREFIX is where the runtime lives on a node: the entrypoint copies the image's hull dir to /opt/hull. */
export const RUNTIME_PREFIX = '/opt/hull/runtime';

/** RUNTIME_PROGRAMS: each name hull runs, and the Debian package it comes from. */
export const RUNTIME_PROGRAMS: readonly { name: string; pkg: string }[] = [
  { name: 'node', pkg: 'nodejs' },
  { name: 'qemu-system-x86_64', pkg: 'qemu-system-x86' },
  { name: 'busybox', pkg: 'busybox-static' },
  ...['nsenter', 'setpriv', 'unshare', 'mount', 'umount'].map((name) => ({ name, pkg: 'util-linux' })),
  { name: 'mkfifo', pkg: 'coreutils' },
  { name: 'ip', pkg: 'iproute2' },
  { name: 'tc', pkg: 'iproute2' },
  { name: 'nft', pkg: 'nftables' },
  { name: 'iptables', pkg: 'iptables' },
  { name: 'sysctl', pkg: 'procps' },
];

const MULTIARCH_LIB = '/usr/lib/x86_64-linux-gnu';
/** Dynamically loaded, so ldd never names them: QEMU's accelerator modules and iptables' extensions. */
const PLUGIN_DIRS = [
  { from: join(MULTIARCH_LIB, 'qemu'), to: 'lib/x86_64-linux-gnu/qemu', keep: (name: string) => name.startsWith('accel-') },
  { from: join(MULTIARCH_LIB, 'xtables'), to: HOST_RUNTIME_XTABLES, keep: (name: string) => name.endsWith('.so') },
];
const QEMU_DATA = '/usr/share/qemu';

/**
 * Patch says how patchelf re-points a file: a program gets the runtime's loader and `$ORIGIN/../lib`;
 * a plugin (dlopened by path) always gets `rpath`; a library only when it carries a path of its own
 * (a RUNPATH would hide the program's path from the libraries it loads).
 */
type Patch = { kind: 'program' } | { kind: 'plugin' | 'library'; rpath: string };

/** RuntimeFile is one file of the runtime: `src` on this machine, `dst` relative to the runtime. */
export interface RuntimeFile {
  src: string;
  dst: string;
  patch?: Patch;
}

export interface RuntimePlan {
  files: RuntimeFile[];
  /** links: name in bin/ → the program file it runs (iptables → xtables-nft-multi). */
  links: Record<string, string>;
  /** programs: each name → the file it came from. */
  programs: Record<string, string>;
}

/** planRuntime lists what goes into the runtime, from this machine's programs; throws naming what is missing. */
export async function planRuntime(): Promise<RuntimePlan> {
  const files = new Map<string, RuntimeFile>();
  const links: Record<string, string> = {};
  const programs: Record<string, string> = {};
  const withLibraries = async (src: string): Promise<void> => {
    // ldd fails on a static program (busybox): it has no libraries.
    for (const lib of await sharedLibraries(src).catch(() => [] as string[])) {
      const dst = join('lib', basename(lib));
      if (!files.has(dst)) files.set(dst, { src: await realpath(lib), dst, ...(dst === HOST_RUNTIME_LOADER ? {} : { patch: { kind: 'library', rpath: '$ORIGIN' } }) });
    }
  };
  for (const { name, pkg } of RUNTIME_PROGRAMS) {
    const found = findOnPath(name);
    if (found === undefined) throw new Error(`Cannot find ${name} on PATH: the node runtime needs it (apt-get install ${pkg})`);
    const src = await realpath(found);
    programs[name] = src;
    const file = basename(src);
    if (file !== name) links[name] = file;
    files.set(join('bin', file), { src, dst: join('bin', file), ...((await hasInterpreter(src)) ? { patch: { kind: 'program' } } : {}) });
    await withLibraries(src);
  }
  for (const plugin of PLUGIN_DIRS) {
    for (const name of (await readdir(plugin.from)).filter(plugin.keep).sort()) {
      const src = join(plugin.from, name);
      const depth = plugin.to.split('/').length - 1;
      files.set(join(plugin.to, name), { src, dst: join(plugin.to, name), patch: { kind: 'plugin', rpath: `$ORIGIN${'/..'.repeat(depth)}` } });
      await withLibraries(src);
    }
  }
  // With its links (bios-microvm.bin is one to qboot.rom): each is copied as the file it names.
  for (const rel of await walk(QEMU_DATA, undefined, true)) {
    files.set(join('share/qemu', rel), { src: await realpath(join(QEMU_DATA, rel)), dst: join('share/qemu', rel) });
  }
  if (!files.has(HOST_RUNTIME_LOADER)) throw new Error(`no ${HOST_RUNTIME_LOADER} among the programs' libraries: not an x86-64 glibc system`);
  return { files: [...files.values()].sort((a, b) => (a.dst < b.dst ? -1 : 1)), links, programs };
}

async function patchelf(args: string[]): Promise<string> {
  return (await exec('patchelf', args).catch((e: Error & { code?: string }) => {
    throw new Error(e.code === 'ENOENT' ? 'patchelf is not installed (apt-get install patchelf; scripts/install-deps.sh does)' : `patchelf ${args.join(' ')}: ${e.message}`);
  })).stdout.trim();
}

/** fillRuntime writes the runtime of `plan` into `dir` (empty), for RUNTIME_PREFIX on the node. */
export async function fillRuntime(dir: string, plan: RuntimePlan): Promise<void> {
  for (const f of plan.files) {
    const to = join(dir, f.dst);
    await mkdir(dirname(to), { recursive: true });
    await copyFile(f.src, to);
    // No set-user-ID bit (Debian's mount has one): hull runs these as root.
    await chmod(to, ((await stat(f.src)).mode & 0o777) | 0o200);
    if (f.patch?.kind === 'program') {
      await patchelf(['--set-interpreter', join(RUNTIME_PREFIX, HOST_RUNTIME_LOADER), '--force-rpath', '--set-rpath', '$ORIGIN/../lib', to]);
    } else if (f.patch !== undefined && (f.patch.kind === 'plugin' || (await patchelf(['--print-rpath', to])) !== '')) {
      await patchelf(['--force-rpath', '--set-rpath', f.patch.rpath, to]);
    }
    await chmod(to, (await stat(f.src)).mode & 0o777);
  }
  for (const [name, target] of Object.entries(plan.links)) await symlink(target, join(dir, 'bin', name));
  const lines = Object.entries(plan.programs).map(([name, src]) => `${name} ${src}`);
  await writeFile(join(dir, HOST_RUNTIME_MARKER), `hull node runtime for ${RUNTIME_PREFIX}: each program and the file it came from\n${lines.join('\n')}\n`);
}
