/**
 * host-files — the programs the guest takes from this host, with the shared libraries they load.
 *
 * node, crun and script are copied from the host together with every library `ldd` resolves for
 * them, each kept at the path ldd names (/lib/x86_64-linux-gnu/…, /lib64/ld-linux-x86-64.so.2) with
 * symlinks followed. busybox must be the static one (Debian's busybox-static): the initramfs has no
 * libraries.
 */

import { open, realpath, stat } from 'node:fs/promises';
import { HullError } from '../errors/index.js';
import { hashFile } from './content-hash.js';
import { run } from '../common/run.js';

/** BUSYBOX is the static busybox the initramfs and the root disk run. */
export const BUSYBOX = '/bin/busybox';

/** HOST_PROGRAMS are copied to the same paths on the root disk, with their libraries. */
export const HOST_PROGRAMS: readonly string[] = Object.freeze(['/usr/bin/node', '/usr/bin/crun', '/usr/bin/script']);

/** HostFile is one file copied from the host into the guest. */
export interface HostFile {
  /** guestPath is absolute, inside the guest. */
  guestPath: string;
  /** hostPath is where the content was read, symlinks resolved. */
  hostPath: string;
  mode: number;
  size: number;
  sha256: string;
}

/**
 * parseLdd returns the library paths in `ldd` output, in order. Throws when a library is not found.
 */
export function parseLdd(out: string, binary: string): string[] {
  const paths: string[] = [];
  for (const raw of out.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (/=>\s*not found/.test(line)) {
      throw new HullError('failed_precondition', `Cannot copy ${binary} into the guest: library ${line.split(/\s/)[0]} not found`);
    }
    const m = /^(?:\S+\s+=>\s+)?(\/\S+)\s+\(0x[0-9a-f]+\)$/.exec(line);
    if (m !== null) paths.push(m[1]!);
  }
  return paths;
}

/** sharedLibraries lists the libraries `binary` loads, as resolved by ldd on this host. */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const res = await run('ldd', [binary]);
  return parseLdd(res.stdout, binary);
}

/** hasInterpreter tells whether an ELF executable asks for a dynamic loader (a PT_INTERP header). */
export async function hasInterpreter(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(64);
    await fh.read(head, 0, 64, 0);
    if (head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) {
      throw new HullError('failed_precondition', `${path} is not a 64-bit little-endian ELF executable`);
    }
    const phoff = Number(head.readBigUInt64LE(0x20));
    const phentsize = head.readUInt16LE(0x36);
    const phnum = head.readUInt16LE(0x38);
    const table = Buffer.alloc(phentsize * phnum);
    await fh.read(table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) if (table.readUInt32LE(i * phentsize) === 3 /* PT_INTERP */) return true;
    return false;
  } finally {
    await fh.close();
  }
}

async function hostFile(guestPath: string, path: string): Promise<HostFile> {
  let hostPath: string;
  try {
    hostPath = await realpath(path);
  } catch (e) {
    throw new HullError('failed_precondition', `Cannot copy ${path} into the guest: not on this host`, { cause: e });
  }
  const st = await stat(hostPath);
  if (!st.isFile()) throw new HullError('failed_precondition', `Cannot copy ${path} into the guest: not a regular file`);
  return { guestPath, hostPath, mode: st.mode & 0o777, size: st.size, sha256: await hashFile(hostPath) };
}

/**
 * collectHostFiles finds busybox, the host programs and their libraries, and hashes them; sorted by
 * guest path.
 */
export async function collectHostFiles(): Promise<HostFile[]> {
  const busybox = await hostFile(BUSYBOX, BUSYBOX);
  if (await hasInterpreter(busybox.hostPath)) {
    throw new HullError('failed_precondition', `${BUSYBOX} is dynamically linked; the guest initramfs needs the static one (apt-get install busybox-static)`);
  }
  const files = new Map<string, HostFile>([[BUSYBOX, busybox]]);
  for (const program of HOST_PROGRAMS) {
    files.set(program, await hostFile(program, program));
    for (const lib of await sharedLibraries(program)) if (!files.has(lib)) files.set(lib, await hostFile(lib, lib));
  }
  return [...files.values()].sort((a, b) => (a.guestPath < b.guestPath ? -1 : a.guestPath > b.guestPath ? 1 : 0));
}
