/**
 * cpio — a writer for the "newc" (SVR4, magic "070701") cpio format, the format the Linux kernel
 * unpacks as an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
 *
 * Each entry is a 110-byte ASCII header (the magic, then 13 fields of 8 hex digits), the path name
 * with its NUL, padding to a multiple of 4 bytes, the data, and again padding to 4. The archive ends
 * with an entry named "TRAILER!!!". Paths are written without a leading "/", and every parent
 * directory must come before what it holds (the kernel does not create missing parents).
 *
 * Owners default to root (0:0) and mtimes to 0, so equal inputs give byte-identical archives.
 */

const MAGIC = '070701';
const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';
const MAX_FIELD = 0xffffffff;

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

interface EntryBase {
  /** path inside the archive; a leading "/" is dropped. */
  path: string;
  /** mode holds the permission bits only (default 0755 for dirs, 0644 for files, 0777 for links). */
  mode?: number;
  uid?: number;
  gid?: number;
  /** mtime in seconds since the epoch (default 0). */
  mtime?: number;
}

export interface CpioDir extends EntryBase {
  type: 'dir';
}
export interface CpioFile extends EntryBase {
  type: 'file';
  data: Uint8Array;
}
export interface CpioSymlink extends EntryBase {
  type: 'symlink';
  target: string;
}
export interface CpioCharDevice extends EntryBase {
  type: 'chardev';
  major: number;
  minor: number;
}
export type CpioEntry = CpioDir | CpioFile | CpioSymlink | CpioCharDevice;

/** newcArchive encodes `entries`, in order, as one newc cpio archive ending in the trailer. */
export function newcArchive(entries: Iterable<CpioEntry>): Buffer {
  const chunks: Buffer[] = [];
  const dirs = new Set<string>();
  const seen = new Set<string>();
  let ino = 1;
  for (const entry of entries) {
    const path = normalizePath(entry.path);
    if (seen.has(path)) throw new Error(`Cannot add "${path}" to the cpio archive: added twice`);
    const parent = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
    if (parent !== '' && !dirs.has(parent)) {
      throw new Error(`Cannot add "${path}" to the cpio archive: its directory "${parent}" was not added before it`);
    }
    seen.add(path);
    if (entry.type === 'dir') dirs.add(path);
    const body = entryData(entry);
    chunks.push(
      header({
        ino: ino++,
        mode: typeBits(entry) | permBits(entry),
        uid: entry.uid ?? 0,
        gid: entry.gid ?? 0,
        nlink: entry.type === 'dir' ? 2 : 1,
        mtime: entry.mtime ?? 0,
        filesize: body.length,
        rdevmajor: entry.type === 'chardev' ? entry.major : 0,
        rdevminor: entry.type === 'chardev' ? entry.minor : 0,
        name: path,
      }),
    );
    if (body.length > 0) {
      chunks.push(Buffer.from(body.buffer, body.byteOffset, body.length));
      chunks.push(Buffer.alloc(pad4(body.length)));
    }
  }
  chunks.push(
    header({ ino: 0, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 0, filesize: 0, rdevmajor: 0, rdevminor: 0, name: TRAILER }),
  );
  return Buffer.concat(chunks);
}

interface HeaderFields {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  filesize: number;
  rdevmajor: number;
  rdevminor: number;
  name: string;
}

function header(h: HeaderFields): Buffer {
  const name = Buffer.from(h.name + '\0', 'utf8');
  const fields = [h.ino, h.mode, h.uid, h.gid, h.nlink, h.mtime, h.filesize, 0, 0, h.rdevmajor, h.rdevminor, name.length, 0];
  const text = MAGIC + fields.map((v) => hex8(v, h.name)).join('');
  const padding = pad4(HEADER_SIZE + name.length);
  return Buffer.concat([Buffer.from(text, 'ascii'), name, Buffer.alloc(padding)]);
}

function hex8(value: number, name: string): string {
  if (!Number.isInteger(value) || value < 0 || value > MAX_FIELD) {
    throw new Error(`Cannot add "${name}" to the cpio archive: header value ${value} does not fit in 32 bits`);
  }
  return value.toString(16).padStart(8, '0');
}

/** pad4 is the number of zero bytes that bring `n` up to a multiple of 4. */
function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function normalizePath(raw: string): string {
  const path = raw.replace(/^\/+/, '').replace(/\/+$/, '');
  if (path === '' || path.split('/').some((part) => part === '' || part === '.' || part === '..')) {
    throw new Error(`Cannot add "${raw}" to the cpio archive: not a plain relative path`);
  }
  if (path.includes('\0')) throw new Error(`Cannot add "${raw}" to the cpio archive: NUL in path`);
  return path;
}

function typeBits(entry: CpioEntry): number {
  switch (entry.type) {
    case 'dir':
      return S_IFDIR;
    case 'file':
      return S_IFREG;
    case 'symlink':
      return S_IFLNK;
    case 'chardev':
      return S_IFCHR;
  }
}

function permBits(entry: CpioEntry): number {
  const fallback = entry.type === 'dir' ? 0o755 : entry.type === 'symlink' ? 0o777 : entry.type === 'chardev' ? 0o600 : 0o644;
  const mode = entry.mode ?? fallback;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new Error(`Cannot add "${entry.path}" to the cpio archive: mode ${mode} is not a permission mode`);
  }
  return mode;
}

function entryData(entry: CpioEntry): Uint8Array {
  if (entry.type === 'file') return entry.data;
  if (entry.type === 'symlink') {
    if (entry.target === '' || entry.target.includes('\0')) {
      throw new Error(`Cannot add "${entry.path}" to the cpio archive: bad symlink target "${entry.target}"`);
    }
    return Buffer.from(entry.target, 'utf8');
  }
  return new Uint8Array(0);
}
