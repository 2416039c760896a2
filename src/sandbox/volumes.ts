/**
 * Volumes: the bind mounts of a container's spec carried into its VM. That is
 * every kubelet volume (hostPath, emptyDir, configMap, secret, projected
 * service-account tokens) and CRI's files (/etc/hosts, /etc/hostname,
 * /etc/resolv.conf, /dev/termination-log, /dev/shm).
 *
 * A host path reaches the guest through the sandbox's virtio-9p share: the
 * source of spec mount N is bind-mounted (private, non-recursive, nosuid,
 * nodev, read-only when the spec says so) at `<mounts>/<cid>/volumes/<N>` —
 * seen by the guest through the read-only view `<shared>` (share.ts) —
 * a directory, or an empty file for a single-file source — and the guest spec
 * binds `/run/hull/shared/<cid>/volumes/<N>` at the destination. Nothing else
 * of the host is exposed:
 *  - the source is resolved (realpath) on the host before binding, must be a
 *    directory or a regular file (sockets, FIFOs and devices cannot cross 9p
 *    and are refused), must not lie in the sandbox's own state directory
 *    (whose contents the guest writes), and the bind is checked to show the
 *    very inode that was checked;
 *  - the bind is not recursive (as Kata does): mounts below the source stay
 *    on the host, and the host-side `ro` then covers all of the volume, so
 *    even a hostile guest kernel cannot write through QEMU;
 *  - paths are walked by QEMU's 9p `local` backend relative to the export
 *    root with O_NOFOLLOW (since the CVE-2016-9602 fixes), and symlinks are
 *    followed by the guest kernel in the guest's namespace: a link to
 *    `/etc/shadow` or `../../..` in a volume resolves inside the container.
 * 9p with cache=none reads live files, so configMap, secret and token updates
 * (kubelet swaps a `..data` symlink inside the directory it gives) show up in
 * the guest at once; that is why directories are shared, not files.
 *
 * Two sources become guest memory instead of a share, because 9p with
 * cache=none refuses writable shared mmap (EINVAL, measured) and because
 * their memory belongs to the pod, i.e. to the VM:
 *  - an emptyDir with `medium: Memory`: kubelet mounts a tmpfs (with `size=`
 *    when the pod has a sizeLimit) at `…/volumes/kubernetes.io~empty-dir/<name>`.
 *    The container gets its own tmpfs at the destination with the same size,
 *    mode and owner; the host tmpfs stays unused and the memory is accounted
 *    in the VM (Kata's users ask for exactly this). NOTE: each container gets
 *    its own tmpfs, so two containers of one pod do not share a memory
 *    emptyDir; that needs a pod-wide tmpfs made by the agent.
 *  - /dev/shm from the CRI sandbox (a bind of a host tmpfs): the container
 *    binds the guest's own /dev/shm, a tmpfs every container of the VM (the
 *    pod) shares, so POSIX shared memory works and is shared pod-wide as
 *    with runc. Its size is the guest's default (half the VM's memory), not
 *    CRI's 64 MiB.
 */
import { createHash } from 'node:crypto';
import { realpath, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { HullError } from '../errors/index.js';
import { mountAt, mountContaining, readMountinfo, type MountInfo } from '../common/mountinfo.js';
import { GUEST_SHARED_DIR, GUEST_SHM_DIR, POD_TMPFS_PREFIX } from '../common/names.js';
import { guestBindOptions, isBindMount, isReadOnly, type OciMount } from '../common/oci.js';
import { isInside } from '../common/paths.js';
/** VOLUMES_DIR is the folder of a container's shared volumes in its `<shared>/<cid>/`. */
export const VOLUMES_DIR = 'volumes';
// A spec with more bind mounts than this is not one anyone meant.
export const MAX_VOLUMES = 1024;

const EMPTY_DIR_MARKER = '/volumes/kubernetes.io~empty-dir/';

/** VolumePlan says what one bind mount of the spec becomes. */
export interface VolumePlan {
  /** index is the mount's position in spec.mounts. */
  index: number;
  /** guest replaces the host bind in the guest spec. */
  guest: OciMount;
  /** share is set when a host path is bind-mounted into the shared directory. */
  share?: HostShare;
  /** warning is for the shim's log: what of the spec the VM cannot honour. */
  warning?: string;
}

/** HostShare is a host path to bind at `<shared>/<cid>/volumes/<name>`. */
export interface HostShare {
  name: string;
  /** source and destination as the spec gave them (for messages). */
  source: string;
  destination: string;
  /** realSource is the resolved path that is bound. */
  realSource: string;
  file: boolean;
  readOnly: boolean;
  /**
   * propagation 'slave' (the spec asked rslave or rshared: HostToContainer or Bidirectional) binds
   * the source recursively as a slave: mounts the host makes below it later reach the guest.
   */
  propagation: 'private' | 'slave';
  /** dev and ino identify what was checked; the bind must show the same. */
  dev: number;
  ino: number;
}

/**
 * memoryEmptyDir tells whether `path` (resolved) is a kubelet emptyDir with
 * medium Memory: a whole tmpfs mounted there, under `volumes/kubernetes.io~empty-dir/`.
 */
export function memoryEmptyDir(entries: readonly MountInfo[], path: string): MountInfo | undefined {
  if (!path.includes(EMPTY_DIR_MARKER)) return undefined;
  const top = mountAt(entries, path);
  return top?.fsType === 'tmpfs' && top.root === '/' ? top : undefined;
}

/** parseSize reads a tmpfs `size=` value (bytes, or k/m/g/t/p/e as the kernel's memparse) into bytes. */
export function parseSize(value: string): number {
  const match = /^(\d+)([kmgtpe]?)$/i.exec(value);
  if (!match) throw new HullError('invalid_argument', `Cannot read tmpfs size "${value}": expected a number of bytes with an optional k, m, g, t, p or e`);
  const suffix = (match[2] ?? '').toLowerCase();
  const shift = suffix === '' ? 0 : 'kmgtpe'.indexOf(suffix) + 1;
  const bytes = Number(match[1]) * 1024 ** shift;
  if (!Number.isSafeInteger(bytes)) throw new HullError('invalid_argument', `Cannot read tmpfs size "${value}": too large`);
  return bytes;
}

/** tmpfsSize is the `size=` option of a tmpfs's super options as written there, checked; undefined when it has none. */
export function tmpfsSize(superOptions: readonly string[]): string | undefined {
  let size: string | undefined;
  for (const option of superOptions) if (option.startsWith('size=')) size = option.slice('size='.length);
  if (size !== undefined) parseSize(size);
  return size;
}

/**
 * hostPropagation is the propagation a bind's options ask for (the last one wins, as in mount(8)):
 * rslave/slave is CRI's HostToContainer, rshared/shared its Bidirectional.
 */
export function hostPropagation(options: readonly string[] | undefined): 'private' | 'slave' | 'shared' {
  let found: 'private' | 'slave' | 'shared' = 'private';
  for (const o of options ?? []) {
    if (o === 'rslave' || o === 'slave') found = 'slave';
    else if (o === 'rshared' || o === 'shared') found = 'shared';
    else if (o === 'rprivate' || o === 'private') found = 'private';
  }
  return found;
}

/** guestShareMount is the guest's bind of volume `index` of container `containerId` from the share. */
export function guestShareMount(containerId: string, index: number, mount: OciMount): OciMount {
  return {
    destination: mount.destination,
    type: 'bind',
    source: posix.join(GUEST_SHARED_DIR, containerId, VOLUMES_DIR, String(index)),
    options: guestBindOptions(mount.options),
  };
}

/**
 * guestTmpfsMount is a guest tmpfs standing in for a memory emptyDir. With a
 * `podKey` the agent makes one tmpfs per key and binds it into every
 * container that names it (see POD_TMPFS_PREFIX in src/common/names.ts).
 */
export function guestTmpfsMount(destination: string, t: { size?: string; mode: number; uid: number; gid: number; readOnly: boolean; podKey?: string }): OciMount {
  return {
    destination,
    type: 'tmpfs',
    source: t.podKey ? `${POD_TMPFS_PREFIX}${t.podKey}` : 'tmpfs',
    options: [
      'nosuid',
      'nodev',
      `mode=${(t.mode & 0o7777).toString(8).padStart(4, '0')}`,
      `uid=${t.uid}`,
      `gid=${t.gid}`,
      ...(t.size !== undefined ? [`size=${t.size}`] : []),
      ...(t.readOnly ? ['ro'] : []),
    ],
  };
}

/** guestShmMount binds the guest's pod-wide /dev/shm at the destination. */
export function guestShmMount(mount: OciMount): OciMount {
  const options = guestBindOptions(mount.options);
  for (const flag of ['nosuid', 'nodev', 'noexec']) if (!options.includes(flag)) options.push(flag);
  return { destination: mount.destination, type: 'bind', source: GUEST_SHM_DIR, options };
}

/** guestMounts maps spec.mounts indexes to the mounts the guest gets instead (for guestContainerSpec). */
export function guestMounts(plans: readonly VolumePlan[]): Map<number, OciMount> {
  return new Map(plans.map((p) => [p.index, p.guest]));
}

/**
 * ProtectedPaths are host paths no volume may lie in or contain: the sandbox's own state
 * directory and hull's roots (run root, guest images, templates, template RAM). A volume there
 * would hand the guest other pods' state, its own share's structure, or the pods' memory.
 */
export interface ProtectedPaths {
  stateDir: string;
  roots: readonly string[];
}

/**
 * KERNEL_FS_TYPES are the kernel's interface file systems: a volume on one would hand the guest a
 * view of the host kernel (procfs, sysfs, devtmpfs, cgroupfs and their kin).
 */
const KERNEL_FS_TYPES = new Set(['proc', 'sysfs', 'devtmpfs', 'devpts', 'cgroup', 'cgroup2', 'securityfs', 'debugfs', 'tracefs', 'bpf', 'configfs', 'efivarfs', 'pstore', 'fusectl', 'binfmt_misc', 'mqueue', 'nsfs', 'hugetlbfs']);

/**
 * planVolumes checks every bind mount of a spec and says what each becomes.
 * It changes nothing: a missing, forbidden or unshareable source fails here,
 * before anything is mounted.
 */
export async function planVolumes(containerId: string, mounts: readonly OciMount[], protectedPaths: ProtectedPaths): Promise<VolumePlan[]> {
  const binds = mounts.flatMap((m, index) => (isBindMount(m) ? [{ m, index }] : []));
  if (binds.length === 0) return [];
  if (binds.length > MAX_VOLUMES) throw new HullError('invalid_argument', `Cannot share ${binds.length} volumes with the VM: at most ${MAX_VOLUMES}`);
  const entries = await readMountinfo();
  const guard = await resolveProtected(protectedPaths);
  const plans: VolumePlan[] = [];
  for (const { m, index } of binds) plans.push(await planVolume(containerId, m, index, entries, guard));
  return plans;
}

interface Guard {
  /** stateDirs: the state directory as given and as resolved (a run root behind a symlink must not hide it). */
  stateDirs: string[];
  /** roots: each of hull's roots as given and as resolved. */
  roots: string[];
}

async function resolveProtected(p: ProtectedPaths): Promise<Guard> {
  const both = async (path: string): Promise<string[]> => {
    const normal = posix.normalize(path);
    return [normal, await realpath(normal).catch(() => normal)];
  };
  const roots = (await Promise.all(p.roots.filter((r) => r.startsWith('/')).map(both))).flat();
  return { stateDirs: [...new Set(await both(p.stateDir))], roots: [...new Set(roots)] };
}

/** forbiddenReason says why a volume source at `path` (normalised or resolved) is refused, if it is. */
function forbiddenReason(path: string, guard: Guard): string | undefined {
  if (guard.stateDirs.some((dir) => isInside(dir, path))) return "it lies in the sandbox's own state directory";
  const inside = guard.roots.find((root) => isInside(root, path));
  if (inside !== undefined) return `it lies in hull's own directory "${inside}"`;
  const contains = guard.roots.find((root) => isInside(path, root));
  if (contains !== undefined) return `it contains hull's own directory "${contains}"`;
  return undefined;
}

async function planVolume(containerId: string, m: OciMount, index: number, entries: readonly MountInfo[], guard: Guard): Promise<VolumePlan> {
  const destination = m.destination;
  if (typeof destination !== 'string' || !destination.startsWith('/')) {
    throw new HullError('invalid_argument', `Invalid mount ${index} in the OCI spec: destination must be an absolute path`);
  }
  const source = m.source;
  const fail = (reason: string): never => {
    throw new HullError('invalid_argument', `Cannot share volume "${source ?? ''}" for "${destination}": ${reason}`);
  };
  if (typeof source !== 'string' || !source.startsWith('/')) return fail('the source must be an absolute path');
  const given = forbiddenReason(posix.normalize(source), guard);
  if (given !== undefined) return fail(given);
  let real: string;
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    real = await realpath(source);
    st = await stat(real);
  } catch (e) {
    return fail(errnoReason(e));
  }
  const resolved = forbiddenReason(real, guard);
  if (resolved !== undefined) return fail(`it resolves to "${real}": ${resolved}`);
  const fsType = mountContaining(entries, real)?.fsType;
  if (fsType !== undefined && KERNEL_FS_TYPES.has(fsType)) return fail(`it is on ${fsType}, a kernel interface: it cannot be shared with the VM`);
  if (!st.isDirectory() && !st.isFile()) return fail(`${fileKind(st)}: only directories and regular files can be shared with the VM`);
  const readOnly = isReadOnly(m.options);
  if (st.isDirectory()) {
    const memory = memoryEmptyDir(entries, real);
    if (memory) {
      let size: string | undefined;
      try {
        size = tmpfsSize(memory.superOptions);
      } catch (e) {
        return fail((e as Error).message);
      }
      // Keyed by the host path: every container of the pod that mounts this emptyDir gets the same guest tmpfs.
      const podKey = createHash('sha256').update(real).digest('hex').slice(0, 16);
      return { index, guest: guestTmpfsMount(destination, { size, mode: st.mode, uid: st.uid, gid: st.gid, readOnly, podKey }) };
    }
    const top = mountAt(entries, real);
    if (posix.normalize(destination).replace(/(.)\/+$/, '$1') === GUEST_SHM_DIR && top?.fsType === 'tmpfs' && top.root === '/') return { index, guest: guestShmMount(m) };
  }
  const propagation = hostPropagation(m.options);
  const plan: VolumePlan = {
    index,
    guest: guestShareMount(containerId, index, m),
    share: { name: String(index), source, destination, realSource: real, file: st.isFile(), readOnly, propagation: propagation === 'private' ? 'private' : 'slave', dev: st.dev, ino: st.ino },
  };
  if (propagation === 'shared') {
    plan.warning = `Volume "${source}" at "${destination}" asks for Bidirectional propagation: mounts the host makes below it reach the container, but mounts made in the container cannot reach the host (they are in the VM's kernel)`;
  }
  return plan;
}

function errnoReason(e: unknown): string {
  switch ((e as NodeJS.ErrnoException).code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return 'no such file';
    case 'EACCES':
      return 'permission denied';
    case 'ELOOP':
      return 'too many levels of symbolic links';
    default:
      return (e as Error).message;
  }
}

function fileKind(st: { isSocket(): boolean; isFIFO(): boolean; isBlockDevice(): boolean; isCharacterDevice(): boolean }): string {
  if (st.isSocket()) return 'it is a socket';
  if (st.isFIFO()) return 'it is a FIFO';
  if (st.isBlockDevice() || st.isCharacterDevice()) return 'it is a device';
  return 'it is not a file or directory';
}
