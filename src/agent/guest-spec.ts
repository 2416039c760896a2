/**
 * guestSpec makes the final, guest-side adjustments to an OCI spec before
 * crun sees it. The host already translated it; the agent still enforces
 * what must hold inside the VM whatever the host sent: the rootfs is inside
 * the shared directory, the cgroup is the container's own, host-only
 * settings (hooks, namespace paths, LSM labels) are gone.
 */
import { posix } from 'node:path';
import { GUEST_MODULES_DIR, GUEST_POD_TMPFS_DIR, GUEST_SHARED_DIR, GUEST_SHM_DIR, POD_TMPFS_PREFIX } from '../common/names.js';
import { guestBindOptions, isBindMount, type OciProcess, type OciSpec } from '../common/oci.js';
import { isInside } from '../common/paths.js';
import { HullError } from '../errors/index.js';

// Mount types that need nothing from the host; bind mounts are only honoured
// when their source lies in the shared directory (volumes the host shared,
// see src/sandbox/volumes.ts) or is the guest's /dev/shm.
const GUEST_MOUNT_TYPES = new Set(['proc', 'sysfs', 'tmpfs', 'devpts', 'mqueue', 'cgroup', 'cgroup2']);

/**
 * The namespaces a container shares with its pod are the guest's own (the VM is the pod), so they are
 * dropped from the spec (or were never in it). crun applies a sysctl only in a namespace the spec
 * names, so a container with sysctls names them, as joins of PID 1's: the same namespaces it is in
 * anyway, now visible to crun's check. Not UTS: no sysctl the host lets through lives there
 * (kernel.domainname is refused), and crun would set the spec's hostname in a UTS namespace it names.
 */
const POD_NAMESPACE_FILES: Readonly<Record<string, string>> = { ipc: 'ipc', network: 'net' };

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function checkId(kind: string, id: string): string {
  if (!ID_PATTERN.test(id)) throw new HullError('invalid_argument', `Invalid ${kind} "${id}": use letters, digits, '_', '.', '-' (at most 128)`);
  return id;
}

export function parseJson<T>(what: string, bytes: Uint8Array): T {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw new HullError('invalid_argument', `Cannot parse ${what}: ${(e as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new HullError('invalid_argument', `Cannot parse ${what}: not a JSON object`);
  }
  return value as T;
}

export function checkProcess(process: OciProcess | undefined, what: string): OciProcess {
  if (!process) throw new HullError('invalid_argument', `Invalid ${what}: no process`);
  const { args } = process;
  if (!Array.isArray(args) || args.length === 0 || !args.every((a) => typeof a === 'string')) {
    throw new HullError('invalid_argument', `Invalid ${what}: process.args must be a non-empty list of strings`);
  }
  if (process.cwd !== undefined && (typeof process.cwd !== 'string' || !process.cwd.startsWith('/'))) {
    throw new HullError('invalid_argument', `Invalid ${what}: process.cwd must be an absolute path`);
  }
  const cleaned = { ...process };
  delete cleaned.apparmorProfile;
  delete cleaned.selinuxLabel;
  cleaned.cwd ??= '/';
  // Like runc, give a process without PATH the usual one (crun looks args[0] up in it).
  if (!(cleaned.env ?? []).some((e) => e.startsWith('PATH='))) cleaned.env = [...(cleaned.env ?? []), `PATH=${DEFAULT_PATH}`];
  cleaned.user ??= { uid: 0, gid: 0 };
  checkUser(cleaned.user, what);
  checkRlimits(cleaned.rlimits, what);
  return cleaned;
}

// The largest id: (uid_t)-1 means "unchanged" to setresuid, and wider values would be cut to 32 bits.
const MAX_ID = 2 ** 32 - 2;
// NGROUPS_MAX.
const MAX_GROUPS = 65536;
const RLIMIT_TYPES = new Set(['RLIMIT_CPU', 'RLIMIT_FSIZE', 'RLIMIT_DATA', 'RLIMIT_STACK', 'RLIMIT_CORE', 'RLIMIT_RSS', 'RLIMIT_NPROC', 'RLIMIT_NOFILE',
  'RLIMIT_MEMLOCK', 'RLIMIT_AS', 'RLIMIT_LOCKS', 'RLIMIT_SIGPENDING', 'RLIMIT_MSGQUEUE', 'RLIMIT_NICE', 'RLIMIT_RTPRIO', 'RLIMIT_RTTIME']);

function isId(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= MAX_ID;
}

/** checkUser refuses ids outside the kernel's range: they would be cut to 32 bits, or mean "unchanged". */
function checkUser(user: unknown, what: string): void {
  const u = user as { uid?: unknown; gid?: unknown; additionalGids?: unknown; umask?: unknown };
  for (const key of ['uid', 'gid'] as const) {
    if (!isId(u[key])) throw new HullError('invalid_argument', `Invalid ${what}: user.${key} ${JSON.stringify(u[key])} is not an id from 0 to ${MAX_ID}`);
  }
  if (u.additionalGids !== undefined) {
    if (!Array.isArray(u.additionalGids) || u.additionalGids.length > MAX_GROUPS) {
      throw new HullError('invalid_argument', `Invalid ${what}: user.additionalGids must be a list of at most ${MAX_GROUPS} ids`);
    }
    const bad = u.additionalGids.find((g) => !isId(g));
    if (u.additionalGids.some((g) => !isId(g))) {
      throw new HullError('invalid_argument', `Invalid ${what}: user.additionalGids holds ${JSON.stringify(bad)}, not an id from 0 to ${MAX_ID}`);
    }
  }
  if (u.umask !== undefined && !(typeof u.umask === 'number' && Number.isInteger(u.umask) && u.umask >= 0 && u.umask <= 0o777)) {
    throw new HullError('invalid_argument', `Invalid ${what}: user.umask ${JSON.stringify(u.umask)} is not a mode from 0 to 0777`);
  }
}

/**
 * checkRlimits refuses unknown limits and values outside 0..2^64-1 (RLIM_INFINITY; JSON's
 * 18446744073709551615 reads as 2^64 in JavaScript, the largest value let through), and a soft
 * limit above its hard one.
 */
function checkRlimits(rlimits: unknown, what: string): void {
  if (rlimits === undefined) return;
  if (!Array.isArray(rlimits)) throw new HullError('invalid_argument', `Invalid ${what}: process.rlimits must be a list`);
  const u64 = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 2 ** 64;
  for (const r of rlimits as Array<{ type?: unknown; soft?: unknown; hard?: unknown }>) {
    const type = String(r?.type);
    if (!RLIMIT_TYPES.has(type)) throw new HullError('invalid_argument', `Invalid ${what}: unknown rlimit ${JSON.stringify(r?.type)}`);
    for (const key of ['soft', 'hard'] as const) {
      if (!u64(r[key])) throw new HullError('invalid_argument', `Invalid ${what}: ${type} ${key} ${JSON.stringify(r[key])} is not a limit from 0 to 18446744073709551615`);
    }
    if ((r.soft as number) > (r.hard as number)) throw new HullError('invalid_argument', `Invalid ${what}: ${type} soft limit ${r.soft} is above its hard limit ${r.hard}`);
  }
}

function podTmpfsKey(m: { type?: string; source?: string }): string | undefined {
  if (m.type !== 'tmpfs' || typeof m.source !== 'string' || !m.source.startsWith(POD_TMPFS_PREFIX)) return undefined;
  const key = m.source.slice(POD_TMPFS_PREFIX.length);
  if (!/^[0-9a-f]{16}$/.test(key)) throw new HullError('invalid_argument', `Invalid pod tmpfs "${m.source}"`);
  return key;
}

/** podTmpfsMounts lists the pod tmpfs a spec needs: key and the tmpfs options (size, mode, owner). */
export function podTmpfsMounts(spec: OciSpec): Array<{ key: string; options: string[] }> {
  return (spec.mounts ?? []).flatMap((m) => {
    const key = podTmpfsKey(m);
    const options = (m.options ?? []).filter((o) => /^(size|mode|uid|gid)=[0-9a-zA-Z]+$/.test(o));
    return key ? [{ key, options }] : [];
  });
}

/** guestSpec returns the spec crun will run for container `id`. */
export function guestSpec(id: string, spec: OciSpec, rootfsPath: string, terminal: boolean, podPidNamespace?: string): OciSpec {
  const process = checkProcess(spec.process, `spec of container "${id}"`);
  process.terminal = terminal;
  const namespaces = (spec.linux?.namespaces ?? []).flatMap((ns) => {
    // A shared PID namespace (the host's path is the sandbox's) is the pod's one in the guest.
    if (ns.type === 'pid' && ns.path && podPidNamespace) return [{ type: 'pid', path: podPidNamespace }];
    // The VM is the pod: its network is the pod network, and the other namespaces the host asked
    // to join (paths) are the pod's own, which the guest already is.
    return ns.type !== 'network' && !ns.path ? [ns] : [];
  });
  if (Object.keys(spec.linux?.sysctl ?? {}).length > 0) {
    for (const [type, file] of Object.entries(POD_NAMESPACE_FILES)) {
      if (!namespaces.some((ns) => ns.type === type)) namespaces.push({ type, path: `/proc/1/ns/${file}` });
    }
  }
  const mounts = (spec.mounts ?? []).flatMap((m) => {
    if (typeof m?.destination !== 'string' || !m.destination.startsWith('/')) {
      throw new HullError('invalid_argument', `Invalid mount in spec of container "${id}": destination must be an absolute path`);
    }
    if (m.options !== undefined && (!Array.isArray(m.options) || !m.options.every((o) => typeof o === 'string'))) {
      throw new HullError('invalid_argument', `Invalid mount "${m.destination}" in spec of container "${id}": options must be a list of strings`);
    }
    if (isBindMount(m)) {
      const source = guestBindSource(m.source);
      return source ? [{ destination: m.destination, type: 'bind', source, options: guestBindOptions(m.options) }] : [];
    }
    if (!GUEST_MOUNT_TYPES.has(m.type ?? '')) return [];
    const podTmpfs = podTmpfsKey(m);
    if (podTmpfs) {
      const readOnly = (m.options ?? []).some((o) => o === 'ro');
      return [{ destination: m.destination, type: 'bind', source: `${GUEST_POD_TMPFS_DIR}/${podTmpfs}`, options: ['rbind', ...(readOnly ? ['ro'] : []), 'nosuid', 'nodev'] }];
    }
    // containerd's default spec has "strict" on /dev (a runc no-op); crun hands it to the kernel, which refuses it.
    return [{ ...m, ...(m.options ? { options: m.options.filter((o) => o !== 'strict') } : {}) }];
  });
  // Device nodes cannot live on the 9p rootfs (QEMU refuses to open them), so
  // crun must create them in a tmpfs /dev.
  if (!mounts.some((m) => m.destination === '/dev')) {
    mounts.unshift({ destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755', 'size=65536k'] });
  }
  // A container that may load modules (privileged) sees the guest kernel's, so its own modprobe works
  // as on a node; a mount of its own at /lib/modules wins.
  if (mayLoadModules(process) && !mounts.some((m) => isInside(GUEST_MODULES_DIR, posix.normalize(m.destination)))) {
    mounts.push({ destination: GUEST_MODULES_DIR, type: 'bind', source: GUEST_MODULES_DIR, options: ['rbind', 'ro', 'nosuid', 'nodev'] });
  }
  const out: OciSpec = {
    ...spec,
    process,
    root: { path: rootfsPath, readonly: spec.root?.readonly ?? false },
    mounts,
    linux: { ...spec.linux, cgroupsPath: `/hull/${id}/ctr`, namespaces },
  };
  delete out.hooks;
  return out;
}

/** mayLoadModules tells whether a process keeps CAP_SYS_MODULE in its bounding set. */
export function mayLoadModules(process: OciProcess): boolean {
  const caps = process['capabilities'] as { bounding?: unknown } | undefined;
  return Array.isArray(caps?.bounding) && caps.bounding.includes('CAP_SYS_MODULE');
}

/** guestBindSource is the normalised source of a bind the guest honours (below the shared directory, or /dev/shm), else undefined. */
export function guestBindSource(source: unknown): string | undefined {
  if (typeof source !== 'string' || !source.startsWith('/')) return undefined;
  const normal = posix.normalize(source).replace(/(.)\/+$/, '$1');
  if (normal === GUEST_SHM_DIR) return normal;
  if (normal.startsWith(`${GUEST_POD_TMPFS_DIR}/`) && /^[0-9a-f]{16}$/.test(normal.slice(GUEST_POD_TMPFS_DIR.length + 1))) return normal;
  return normal !== GUEST_SHARED_DIR && isInside(GUEST_SHARED_DIR, normal) ? normal : undefined;
}
