/**
 * initramfs — the guest's initramfs: /init, a static busybox, and the kernel modules in load order.
 *
 * It is written uncompressed: the kernel then only copies it out of memory, where gzip would cost an
 * inflate of ~6 MB on every boot (slow under TCG) to save a few MB of a file read once from the page
 * cache; and templates never boot again anyway.
 */

import { readFile, writeFile } from 'node:fs/promises';
import { newcArchive, type CpioEntry } from './cpio.js';
import { INITRAMFS_APPLETS, INITRAMFS_INIT, MODULE_ORDER_FILE } from './init-scripts.js';

export interface InitramfsInput {
  /** busybox is the host path of the static busybox. */
  busybox: string;
  /** modules in load order: file name in /lib/modules and host path of the uncompressed .ko. */
  modules: ReadonlyArray<{ fileName: string; path: string }>;
}

/** initramfsEntries lists the archive's entries, parents before children. */
export async function initramfsEntries(input: InitramfsInput): Promise<CpioEntry[]> {
  const entries: CpioEntry[] = [];
  for (const dir of ['bin', 'dev', 'lib', 'lib/modules', 'newroot', 'proc', 'sys']) entries.push({ type: 'dir', path: dir });
  // The kernel's built-in initramfs has /dev/console too; having our own makes /init's stdio not
  // depend on that.
  entries.push({ type: 'chardev', path: 'dev/console', major: 5, minor: 1, mode: 0o600 });
  entries.push({ type: 'file', path: 'init', mode: 0o755, data: Buffer.from(INITRAMFS_INIT) });
  entries.push({ type: 'file', path: 'bin/busybox', mode: 0o755, data: await readFile(input.busybox) });
  for (const applet of INITRAMFS_APPLETS) entries.push({ type: 'symlink', path: `bin/${applet}`, target: 'busybox' });
  for (const m of input.modules) {
    if (!/^[\w.-]+\.ko$/.test(m.fileName)) throw new Error(`Bad kernel module file name "${m.fileName}"`);
    entries.push({ type: 'file', path: `lib/modules/${m.fileName}`, mode: 0o644, data: await readFile(m.path) });
  }
  const order = input.modules.map((m) => m.fileName + '\n').join('');
  entries.push({ type: 'file', path: MODULE_ORDER_FILE, mode: 0o644, data: Buffer.from(order) });
  return entries;
}

/** writeInitramfs writes the initramfs to `path` and returns its size in bytes. */
export async function writeInitramfs(path: string, input: InitramfsInput): Promise<number> {
  const archive = newcArchive(await initramfsEntries(input));
  await writeFile(path, archive, { mode: 0o644 });
  return archive.length;
}
