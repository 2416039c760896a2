/**
 * container-etc reads a file of a container's /etc (its passwd, for HOME) from the agent, which sees
 * the container's root only through /proc/<init>/root, without leaving that root. (The agent looks up
 * no user or group names: containerd resolves names to ids on the host, and /etc/group is not read.)
 *
 * The container's root may write its /etc at any time: a symlink there would be resolved against the
 * guest's root (an absolute target) or climb out of the container with `..`, a FIFO would block the
 * reader for good and a huge file would fill the agent's memory. Node has no openat2
 * (RESOLVE_IN_ROOT), so: /etc is opened with O_DIRECTORY|O_NOFOLLOW below the magic link, the file
 * by name in that directory through /proc/self/fd/<dirfd> with O_NOFOLLOW|O_NONBLOCK (no `..` and no
 * symlink anywhere after the root), fstat must say a regular file, and at most MAX_ETC_FILE_BYTES are
 * read. Anything else is refused with an error that says why.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, type Stats } from 'node:fs';
import { HullError } from '../errors/index.js';

/** MAX_ETC_FILE_BYTES bounds a container file the agent reads (a passwd of ~10,000 users). */
export const MAX_ETC_FILE_BYTES = 1024 * 1024;

/** EtcFile is what was read, with its stamp (inode, size, modification time) to tell a change. */
export interface EtcFile {
  stamp: string;
  text: string;
}

// libuv opens every file O_CLOEXEC.
const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK } = constants;

/**
 * readContainerEtc reads /etc/`name` of the container whose init is `initPid`: null when /etc or
 * the file does not exist, the cached copy when its stamp is unchanged. Synchronous: small reads,
 * where each asynchronous call would cost a thread-pool round trip.
 */
export function readContainerEtc(initPid: number, name: string, cached?: EtcFile, purpose = `read the container's /etc/${name}`): EtcFile | null {
  const what = `the container's /etc/${name}`;
  // The common case, a file that did not change, costs two lstats (9p round trips) and reads nothing:
  // the copy was read safely, and a swap after this check reaches nothing either.
  if (cached && unchanged(`/proc/${initPid}/root/etc`, name, cached)) return cached;
  const refuse = (why: string): never => {
    throw new HullError('failed_precondition', `Cannot ${purpose}: ${why}`);
  };
  let dir: number;
  try {
    dir = openSync(`/proc/${initPid}/root/etc`, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    // O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR: lstat tells which, for the message only.
    if (code === 'ELOOP' || (code === 'ENOTDIR' && isSymlink(`/proc/${initPid}/root/etc`))) return refuse("the container's /etc is a symbolic link");
    if (code === 'ENOTDIR') return refuse("the container's /etc is not a directory");
    return refuse(`the container's /etc: ${(e as Error).message}`);
  }
  let fd: number;
  try {
    fd = openSync(`/proc/self/fd/${dir}/${name}`, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') return refuse(`${what} is a symbolic link`);
    return refuse(`${what}: ${(e as Error).message}`);
  } finally {
    closeSync(dir);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return refuse(`${what} is not a regular file`);
    if (st.size > MAX_ETC_FILE_BYTES) return refuse(`${what} is larger than ${MAX_ETC_FILE_BYTES} bytes`);
    const stamp = stampOf(st);
    if (cached?.stamp === stamp) return cached;
    const buf = Buffer.alloc(MAX_ETC_FILE_BYTES + 1);
    let n = 0;
    for (let got = -1; got !== 0 && n < buf.length; n += got) got = readSync(fd, buf, n, buf.length - n, null);
    if (n > MAX_ETC_FILE_BYTES) return refuse(`${what} is larger than ${MAX_ETC_FILE_BYTES} bytes`);
    return { stamp, text: buf.subarray(0, n).toString('utf8') };
  } finally {
    closeSync(fd);
  }
}

function stampOf(st: Stats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
}

/** unchanged: /etc is a directory and the file a regular file with the cached stamp (nothing followed). */
function unchanged(etc: string, name: string, cached: EtcFile): boolean {
  try {
    if (!lstatSync(etc).isDirectory()) return false;
    const st = lstatSync(`${etc}/${name}`);
    return st.isFile() && stampOf(st) === cached.stamp;
  } catch {
    return false;
  }
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

/**
 * homeOf is the home directory of `uid` in a passwd text (the first line with that uid, as glibc's
 * fgetpwent finds it), or null when it has none.
 */
export function homeOf(passwd: string, uid: number): string | null {
  for (const line of passwd.split('\n')) {
    const fields = line.split(':');
    if (fields.length >= 7 && fields[2] === String(uid)) return fields[5]!;
  }
  return null;
}
