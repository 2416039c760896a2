/**
 * modules — which kernel modules the guest needs, and in which order the initramfs loads them.
 *
 * Debian's generic kernel builds virtio, ext4, 9p, overlayfs and virtio-net as modules, and its .deb
 * ships no modules.dep, so the closure is computed here from each module's own `.modinfo` section
 * (null-separated "key=value" strings; `depends=` names the modules it needs) and ordered so that a
 * module comes after everything it depends on. Modules listed in modules.builtin are already in the
 * kernel and are skipped. `softdep=` entries name crypto aliases, not modules, so they are not
 * followed: what ext4 soft-depends on (crc32c) is listed explicitly instead.
 */

import { gunzipSync } from 'node:zlib';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { HullError } from '../errors/index.js';

/**
 * GUEST_KERNEL_MODULES are the modules the guest needs, in load order: virtio transport and devices
 * (console = the agent's virtio-serial port, blk = the root disk, rng), ext4 for the root disk, 9p for
 * the shared directory, overlay for container roots, virtio-net for the pod network. Their
 * dependencies are added by moduleLoadOrder even when not listed.
 */
export const GUEST_KERNEL_MODULES: readonly string[] = Object.freeze([
  'virtio_ring',
  'virtio',
  'virtio_mmio',
  'virtio_console',
  'virtio_blk',
  'virtio_rng',
  'crc16',
  'jbd2',
  'mbcache',
  'crc32c_generic',
  'ext4',
  'netfs',
  'fscache',
  '9pnet',
  '9pnet_virtio',
  '9p',
  'overlay',
  'failover',
  'net_failover',
  'virtio_net',
]);

/** KernelModule is one module chosen for the initramfs. */
export interface KernelModule {
  /** name as the kernel knows it ("virtio_rng"). */
  name: string;
  /** fileName in the initramfs, always uncompressed ("virtio_rng.ko"). */
  fileName: string;
  /** path of the module in the extracted kernel package. */
  sourcePath: string;
  /** data is the uncompressed ELF object. */
  data: Buffer;
  depends: string[];
  /** aliases from its modinfo (what the kernel asks modprobe for: "fs-overlay", "rtnl-link-bridge"). */
  aliases: string[];
}

/** moduleNameOf maps a module file name to the module's name: no suffix, "-" becomes "_". */
export function moduleNameOf(fileName: string): string {
  return fileName.replace(/\.ko(\.(gz|xz|zst))?$/, '').replace(/-/g, '_');
}

/**
 * readModinfo returns the key=value strings of an ELF64 object's `.modinfo` section; keys that occur
 * more than once (alias=, parm=) keep every value in order.
 */
export function readModinfo(elf: Uint8Array, what = 'module'): Map<string, string[]> {
  const buf = Buffer.from(elf.buffer, elf.byteOffset, elf.byteLength);
  const bad = (why: string): HullError => new HullError('failed_precondition', `Cannot read kernel module ${what}: ${why}`);
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) throw bad('not an ELF file');
  if (buf[4] !== 2 || buf[5] !== 1) throw bad('not a little-endian 64-bit ELF file');
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const shstrndx = buf.readUInt16LE(0x3e);
  if (shentsize < 64 || shstrndx >= shnum || shoff + shnum * shentsize > buf.length) throw bad('bad section header table');
  const section = (i: number): { name: number; offset: number; size: number } => {
    const at = shoff + i * shentsize;
    const offset = Number(buf.readBigUInt64LE(at + 24));
    const size = Number(buf.readBigUInt64LE(at + 32));
    if (offset + size > buf.length) throw bad(`section ${i} lies outside the file`);
    return { name: buf.readUInt32LE(at), offset, size };
  };
  const strtab = section(shstrndx);
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const nameAt = strtab.offset + s.name;
    const nameEnd = buf.indexOf(0, nameAt);
    if (nameEnd < 0 || buf.toString('latin1', nameAt, nameEnd) !== '.modinfo') continue;
    const info = new Map<string, string[]>();
    for (const item of buf.toString('latin1', s.offset, s.offset + s.size).split('\0')) {
      const eq = item.indexOf('=');
      if (eq <= 0) continue;
      const key = item.slice(0, eq);
      const values = info.get(key) ?? [];
      values.push(item.slice(eq + 1));
      info.set(key, values);
    }
    return info;
  }
  throw bad('no .modinfo section');
}

/** dependsOf reads the `depends=` list out of a module's modinfo. */
export function dependsOf(info: Map<string, string[]>): string[] {
  return (info.get('depends') ?? []).flatMap((v) => v.split(',')).filter((d) => d !== '');
}

/**
 * moduleLoadOrder returns `roots` and everything they depend on, each module after its dependencies
 * and otherwise in the order of `roots`. Built-in modules are left out. Throws on a module that does
 * not exist and on a dependency cycle.
 */
export function moduleLoadOrder(
  roots: readonly string[],
  depends: (name: string) => readonly string[] | undefined,
  isBuiltin: (name: string) => boolean = () => false,
): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, path: readonly string[]): void => {
    if (state.get(name) === 'done' || isBuiltin(name)) return;
    if (state.get(name) === 'visiting') {
      throw new HullError('failed_precondition', `Cannot order kernel modules: dependency cycle ${[...path, name].join(' -> ')}`);
    }
    const deps = depends(name);
    if (deps === undefined) {
      const via = path.length > 0 ? ` (needed by ${path.join(' -> ')})` : '';
      throw new HullError('failed_precondition', `Cannot find kernel module "${name}" in the kernel package${via}`);
    }
    state.set(name, 'visiting');
    for (const dep of deps) visit(dep, [...path, name]);
    state.set(name, 'done');
    order.push(name);
  };
  for (const root of roots) visit(root, []);
  return order;
}

/** ModuleIndex is an extracted `/lib/modules/<release>`: each module's file by name, and the built-in ones. */
export interface ModuleIndex {
  moduleDir: string;
  release: string;
  /** files maps a module's name to its path under moduleDir/kernel. */
  files: Map<string, string>;
  builtin: Set<string>;
}

/** indexModules lists the modules of an extracted `/lib/modules/<release>` (`moduleDir`). */
export async function indexModules(moduleDir: string, release: string): Promise<ModuleIndex> {
  const files = new Map<string, string>();
  for (const path of await walk(join(moduleDir, 'kernel'))) {
    const base = path.slice(path.lastIndexOf('/') + 1);
    if (!/\.ko(\.(gz|xz|zst))?$/.test(base)) continue;
    const name = moduleNameOf(base);
    const other = files.get(name);
    if (other !== undefined) throw new HullError('failed_precondition', `Cannot index kernel modules: "${name}" is both ${other} and ${path}`);
    files.set(name, path);
  }
  const builtin = new Set<string>();
  const builtinList = await readFile(join(moduleDir, 'modules.builtin'), 'utf8').catch(() => '');
  for (const line of builtinList.split('\n')) if (line.trim() !== '') builtin.add(moduleNameOf(line.trim().split('/').pop() ?? ''));
  return { moduleDir, release, files, builtin };
}

/**
 * resolveModules finds `roots` and their dependency closure under `moduleDir`
 * (an extracted `/lib/modules/<release>`), checks each module was built for `release`, and returns
 * them in load order with their uncompressed contents.
 */
export async function resolveModules(moduleDir: string, release: string, roots: readonly string[]): Promise<KernelModule[]> {
  return resolveIndexed(await indexModules(moduleDir, release), roots);
}

/** resolveIndexed is resolveModules on an index already made. */
export async function resolveIndexed(index: ModuleIndex, roots: readonly string[]): Promise<KernelModule[]> {
  const { files, builtin, release } = index;
  const loaded = new Map<string, { path: string; data: Buffer; depends: string[]; aliases: string[] }>();
  const load = async (name: string): Promise<void> => {
    const path = files.get(name);
    if (loaded.has(name) || path === undefined || builtin.has(name)) return;
    const data = decompress(await readFile(path), path);
    const info = readModinfo(data, path);
    const vermagic = info.get('vermagic')?.[0] ?? '';
    if (!vermagic.startsWith(`${release} `)) {
      throw new HullError('failed_precondition', `Kernel module ${path} was built for "${vermagic.split(' ')[0]}", not for kernel ${release}`);
    }
    const depends = dependsOf(info);
    loaded.set(name, { path, data, depends, aliases: info.get('alias') ?? [] });
    for (const dep of depends) await load(dep);
  };
  for (const root of roots) await load(root);

  const order = moduleLoadOrder(roots, (name) => loaded.get(name)?.depends, (name) => builtin.has(name));
  return order.map((name) => {
    const m = loaded.get(name)!;
    return { name, fileName: `${name}.ko`, sourcePath: m.path, data: m.data, depends: m.depends, aliases: m.aliases };
  });
}

/** decompress returns a module's ELF bytes, gunzipping .ko.gz; xz and zstd modules are refused. */
export function decompress(data: Buffer, path: string): Buffer {
  if (data[0] === 0x1f && data[1] === 0x8b) return gunzipSync(data);
  const xz = data.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
  const zstd = data.length >= 4 && data.readUInt32LE(0) === 0xfd2fb528;
  if (xz || zstd) {
    throw new HullError(
      'failed_precondition',
      `Cannot use kernel module ${path}: it is ${xz ? 'xz' : 'zstd'}-compressed, which the guest builder does not unpack yet`,
    );
  }
  return data;
}

/** walk lists the files below `dir`, recursively. */
async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}
