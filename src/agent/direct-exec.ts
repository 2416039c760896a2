/**
 * Direct exec: the agent starts an exec process itself, through the syscall tape (syscall-tape.ts),
 * doing what `crun exec` does for it: join the container init's namespaces and the container's
 * cgroup, then set rlimits, supplementary groups, the capability bounding set, gid and uid, the
 * other capability sets, ambient capabilities, umask, cwd and no_new_privs, and exec the program
 * found in the process's PATH, with its environment (the container adds HOME from the container's
 * /etc/passwd beforehand, container-etc.ts). Under TCG `crun exec` costs ~100 ms (loading crun and its
 * eleven libraries alone ~45 ms); the tape program has no libraries and nothing to load. It runs from
 * a sealed memfd (exec-starter.ts), and makes itself non-dumpable before it joins anything: container
 * root cannot open /proc/<child>/exe, and could not change the program if it did.
 *
 * Anything this does not do exactly as crun would (a terminal, a seccomp profile, a personality,
 * scheduler or I/O priority settings, LSM labels, a user or time namespace, a paused container,
 * a capability or rlimit it does not know) makes planDirectExec answer undefined: crun runs it.
 *
 * The tape program reports on fd 4, in 16-byte records: [-1, pid] once the process runs (its exec
 * succeeded), [-2, wait status] when it ended, or [op index, errno] when a step failed.
 */
import { constants } from 'node:os';
import { readFileSync } from 'node:fs';
import { readlink } from 'node:fs/promises';
import type { OciProcess, OciSpec } from '../common/oci.js';
import type { EtcFile } from './container-etc.js';
import { STARTER_FD } from './exec-starter.js';
import { ERROR_RECORD, Tape, type Ref } from './syscall-tape.js';

const SYS = { read: 0, write: 1, close: 3, chdir: 80, umask: 95, setgroups: 116, setresuid: 117, setresgid: 119, capset: 126, prctl: 157, fork: 57, wait4: 61, execve: 59, exitGroup: 231, openat: 257, pipe2: 293, prlimit64: 302, setns: 308 } as const;
const PR = { setDumpable: 4, setKeepCaps: 8, capBsetDrop: 24, setNoNewPrivs: 38, capAmbient: 47, capAmbientRaise: 2 } as const;
const AT_FDCWD = -100;
const O_CLOEXEC = 0o2000000;
const O_WRONLY = 1;
const CAPABILITY_VERSION_3 = 0x20080522;

export const PID_RECORD = -1n;
export const EXIT_RECORD = -2n;

const CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK',
  'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT', 'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE',
  'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];
const RLIMITS = [
  'RLIMIT_CPU', 'RLIMIT_FSIZE', 'RLIMIT_DATA', 'RLIMIT_STACK', 'RLIMIT_CORE', 'RLIMIT_RSS', 'RLIMIT_NPROC', 'RLIMIT_NOFILE',
  'RLIMIT_MEMLOCK', 'RLIMIT_AS', 'RLIMIT_LOCKS', 'RLIMIT_SIGPENDING', 'RLIMIT_MSGQUEUE', 'RLIMIT_NICE', 'RLIMIT_RTPRIO', 'RLIMIT_RTTIME',
];
// The process fields direct exec applies (or, like crun's exec, leaves alone: oomScoreAdj); any other sends the exec to crun.
const KNOWN_PROCESS_FIELDS = new Set(['terminal', 'args', 'env', 'cwd', 'user', 'capabilities', 'rlimits', 'noNewPrivileges', 'oomScoreAdj']);
// Namespaces joined when the init's differs from the agent's, in crun's order (mnt last: paths are opened before it).
const JOINED_NAMESPACES = ['ipc', 'uts', 'net', 'cgroup', 'mnt'] as const;
// Namespaces direct exec does not join: a container with its own sends its execs to crun.
const UNJOINED_NAMESPACES = ['user', 'time'] as const;

/** ExecTarget is what direct exec needs of the container. */
export interface ExecTarget {
  initPid: number;
  spec: OciSpec;
  /** cgroupProcs is the cgroup.procs file of the container's cgroup. */
  cgroupProcs: string;
  paused: boolean;
  /** plans caches the container's tapes by process. */
  plans: Map<string, DirectExecPlan>;
  /** passwd caches the container's /etc/passwd (container-etc.ts). */
  passwd?: EtcFile;
}

// Plans kept per container (most recent first out when full).
const PLAN_CACHE_SIZE = 16;
let lastCap: number | undefined;

export interface DirectExecPlan {
  tape: Buffer;
  /** describe tells what failed from an error record. */
  describe(op: number, errno: number): string;
}

/**
 * planDirectExec builds the tape for `process` (checked by checkProcess) in `target`, or answers
 * undefined when crun must run it. `namespaces` are the init's that differ from the agent's.
 */
export async function planDirectExec(target: ExecTarget, process: OciProcess, terminal: boolean, namespaces: Set<string>): Promise<DirectExecPlan | undefined> {
  if (terminal || target.paused || target.initPid <= 0) return undefined;
  const linux = (target.spec.linux ?? {}) as Record<string, unknown>;
  if (linux['seccomp'] !== undefined || linux['personality'] !== undefined) return undefined;
  if (Object.keys(process).some((k) => !KNOWN_PROCESS_FIELDS.has(k))) return undefined;
  if (UNJOINED_NAMESPACES.some((ns) => namespaces.has(ns))) return undefined;
  const caps = capabilitySets(process['capabilities']);
  const rlimits = rlimitList(process['rlimits']);
  if (!caps || !rlimits) return undefined;
  const user = process.user ?? { uid: 0, gid: 0 };
  const umask = (user as { umask?: unknown }).umask;
  if (umask !== undefined && (typeof umask !== 'number' || !Number.isInteger(umask) || umask < 0 || umask > 0o777)) return undefined;
  const env = [...(process.env ?? [])];
  // The same exec (a probe) comes again and again: its tape is built once.
  const key = JSON.stringify(process);
  const cached = target.plans.get(key);
  if (cached) return cached;
  lastCap ??= Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8').trim());
  let plan: DirectExecPlan;
  try {
    plan = buildTape({ target, process, env, caps, rlimits, umask, namespaces, lastCap, user });
  } catch {
    return undefined; // a tape past the program's buffer (huge arguments or environment): crun takes it
  }
  if (target.plans.size >= PLAN_CACHE_SIZE) target.plans.delete(target.plans.keys().next().value!);
  target.plans.set(key, plan);
  return plan;
}

/** joinedNamespaces lists the namespaces of `initPid` that differ from the agent's own. */
export async function differingNamespaces(initPid: number): Promise<Set<string>> {
  const out = new Set<string>();
  for (const ns of ['pid', ...JOINED_NAMESPACES, ...UNJOINED_NAMESPACES]) {
    const [theirs, ours] = await Promise.all([readlink(`/proc/${initPid}/ns/${ns}`).catch(() => '?'), readlink(`/proc/self/ns/${ns}`).catch(() => '')]);
    if (theirs !== ours) out.add(ns);
  }
  return out;
}

interface CapabilitySets {
  bounding: bigint;
  effective: bigint;
  permitted: bigint;
  inheritable: bigint;
  ambient: bigint;
}

function capabilitySets(value: unknown): CapabilitySets | undefined {
  const sets = (value ?? {}) as Record<string, unknown>;
  const out: Record<string, bigint> = {};
  for (const name of ['bounding', 'effective', 'permitted', 'inheritable', 'ambient']) {
    const list = sets[name] ?? [];
    if (!Array.isArray(list)) return undefined;
    let mask = 0n;
    for (const cap of list) {
      const bit = CAPABILITIES.indexOf(String(cap).toUpperCase());
      if (bit < 0) return undefined;
      mask |= 1n << BigInt(bit);
    }
    out[name] = mask;
  }
  if (Object.keys(sets).some((k) => !(k in out))) return undefined;
  return out as unknown as CapabilitySets;
}

function rlimitList(value: unknown): Array<{ resource: number; soft: bigint; hard: bigint }> | undefined {
  if (value === undefined) return [];
  if (!Array.isArray(value)) return undefined;
  const out = [];
  for (const r of value as Array<{ type?: unknown; soft?: unknown; hard?: unknown }>) {
    const resource = RLIMITS.indexOf(String(r?.type));
    if (resource < 0 || !isU64(r.soft) || !isU64(r.hard)) return undefined;
    out.push({ resource, soft: rlimitValue(r.soft as number), hard: rlimitValue(r.hard as number) });
  }
  return out;
}

function isU64(v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 2 ** 64;
}

/** rlimitValue: JSON's 18446744073709551615 (RLIM_INFINITY) reads as 2^64, which must not wrap to 0. */
function rlimitValue(v: number): bigint {
  return v >= 2 ** 64 ? (1n << 64n) - 1n : BigInt(v);
}

interface TapeInputs {
  target: ExecTarget;
  process: OciProcess;
  env: string[];
  caps: CapabilitySets;
  rlimits: Array<{ resource: number; soft: bigint; hard: bigint }>;
  umask: number | undefined;
  namespaces: Set<string>;
  lastCap: number;
  user: { uid: number; gid: number; additionalGids?: number[] };
}

function buildTape(i: TapeInputs): DirectExecPlan {
  const t = new Tape();
  const steps = new Map<number, string>();
  const step = (what: string, nr: number, args: Parameters<Tape['syscall']>[1], opts: Parameters<Tape['syscall']>[2] = {}): void => {
    steps.set(t.syscall(nr, args, opts), what);
  };
  const slot = (): Ref => t.words([0n]);
  // The parent: opens what the child needs while paths still resolve in the guest, joins the PID
  // namespace (it applies to the children), forks, reports and waits.
  // The starter's descriptor is the tape's business only; not dumpable from here to the execve, so
  // no process of the container passes the ptrace check on /proc/<child>/exe (inherited by fork).
  t.syscall(SYS.close, [STARTER_FD]);
  step('make the exec process non-dumpable', SYS.prctl, [PR.setDumpable, 0, 0, 0, 0], { fail: 'parentFailed' });
  const nsFds = new Map<string, Ref>();
  for (const ns of ['pid', ...JOINED_NAMESPACES]) {
    if (!i.namespaces.has(ns)) continue;
    const fd = slot();
    step(`open the ${ns} namespace`, SYS.openat, [AT_FDCWD, t.string(`/proc/${i.target.initPid}/ns/${ns}`), O_CLOEXEC], { store: fd, fail: 'parentFailed' });
    nsFds.set(ns, fd);
  }
  const cgroup = slot();
  step(`open ${i.target.cgroupProcs}`, SYS.openat, [AT_FDCWD, t.string(i.target.cgroupProcs), O_WRONLY | O_CLOEXEC], { store: cgroup, fail: 'parentFailed' });
  const pidNs = nsFds.get('pid');
  if (pidNs) step('join the pid namespace', SYS.setns, [{ load: pidNs }, 0], { fail: 'parentFailed' });
  const pipe = slot();
  const pipeWrite = t.at(pipe, 4);
  step('pipe', SYS.pipe2, [pipe, O_CLOEXEC], { fail: 'parentFailed' });
  const pidRecord = t.words([PID_RECORD, 0n]);
  const childPid = { load: t.at(pidRecord, 8) };
  step('fork', SYS.fork, [], { store: t.at(pidRecord, 8), fail: 'parentFailed' });
  t.ifZero('child');
  t.syscall(SYS.close, [{ load: pipeWrite }]);
  const childError = t.words([0n, 0n]);
  t.syscall(SYS.read, [{ load: pipe }, childError, 16]);
  t.ifZero('started'); // end of file: the exec succeeded and closed the pipe
  t.syscall(SYS.write, [4, childError, 16]);
  t.syscall(SYS.wait4, [childPid, 0, 0, 0]);
  t.syscall(SYS.exitGroup, [1]);
  t.label('started');
  t.syscall(SYS.write, [4, pidRecord, 16]);
  const exitRecord = t.words([EXIT_RECORD, 0n]);
  t.syscall(SYS.wait4, [childPid, t.at(exitRecord, 8), 0, 0]);
  t.syscall(SYS.write, [4, exitRecord, 16]);
  t.syscall(SYS.exitGroup, [0]);
  t.label('parentFailed');
  t.syscall(SYS.write, [4, BigInt(ERROR_RECORD), 16]);
  t.syscall(SYS.exitGroup, [1]);

  // The child: becomes the exec process.
  t.label('child');
  t.syscall(SYS.close, [3]);
  t.syscall(SYS.close, [4]);
  step('join the container cgroup', SYS.write, [{ load: cgroup }, t.string('0'), 1], { fail: 'childFailed' });
  for (const ns of JOINED_NAMESPACES) {
    const fd = nsFds.get(ns);
    if (fd) step(`join the ${ns} namespace`, SYS.setns, [{ load: fd }, 0], { fail: 'childFailed' });
  }
  for (const r of i.rlimits) {
    step(`setrlimit ${RLIMITS[r.resource]}`, SYS.prlimit64, [0, r.resource, t.words([r.soft, r.hard]), 0], { fail: 'childFailed' });
  }
  const groups = i.user.additionalGids ?? [];
  const groupBytes = Buffer.alloc(4 * groups.length);
  groups.forEach((g, k) => groupBytes.writeUInt32LE(g, 4 * k));
  step('setgroups', SYS.setgroups, [groups.length, t.bytes(groupBytes)], { fail: 'childFailed' });
  step('keep capabilities', SYS.prctl, [PR.setKeepCaps, 1, 0, 0, 0], { fail: 'childFailed' });
  for (let cap = 0; cap <= i.lastCap; cap++) {
    if (!(i.caps.bounding & (1n << BigInt(cap)))) step(`drop ${CAPABILITIES[cap] ?? cap} from the bounding set`, SYS.prctl, [PR.capBsetDrop, cap, 0, 0, 0], { fail: 'childFailed' });
  }
  step('setresgid', SYS.setresgid, [i.user.gid, i.user.gid, i.user.gid], { fail: 'childFailed' });
  step('setresuid', SYS.setresuid, [i.user.uid, i.user.uid, i.user.uid], { fail: 'childFailed' });
  const header = Buffer.alloc(8);
  header.writeUInt32LE(CAPABILITY_VERSION_3, 0);
  const data = Buffer.alloc(24);
  const low = (m: bigint): number => Number(m & 0xffffffffn);
  const high = (m: bigint): number => Number(m >> 32n);
  [low(i.caps.effective), low(i.caps.permitted), low(i.caps.inheritable), high(i.caps.effective), high(i.caps.permitted), high(i.caps.inheritable)].forEach((v, k) => data.writeUInt32LE(v, 4 * k));
  step('capset', SYS.capset, [t.bytes(header), t.bytes(data)], { fail: 'childFailed' });
  for (let cap = 0; cap <= i.lastCap; cap++) {
    if (i.caps.ambient & (1n << BigInt(cap))) step(`raise ambient ${CAPABILITIES[cap]}`, SYS.prctl, [PR.capAmbient, PR.capAmbientRaise, cap, 0, 0], { fail: 'childFailed' });
  }
  if (i.umask !== undefined) t.syscall(SYS.umask, [i.umask]);
  const cwd = i.process.cwd ?? '/';
  step(`chdir to cwd ("${cwd}") set in the process spec`, SYS.chdir, [t.string(cwd)], { fail: 'childFailed' });
  if (i.process['noNewPrivileges'] === true) step('set no_new_privs', SYS.prctl, [PR.setNoNewPrivs, 1, 0, 0, 0], { fail: 'childFailed' });
  const program = i.process.args![0]!;
  const argv = t.pointerArray(i.process.args!);
  const envp = t.pointerArray(i.env);
  const candidates = executableCandidates(program, i.env);
  const notFound = program.includes('/') ? `exec \`${program}\`` : `executable file \`${program}\` not found in $PATH`;
  candidates.forEach((path, k) => {
    // A candidate that is missing (or not executable) leads to the next one, as a PATH lookup does.
    const last = k === candidates.length - 1;
    step(notFound, SYS.execve, [t.string(path), argv, envp], last ? { fail: 'childFailed' } : {});
  });
  if (candidates.length === 0) step(notFound, SYS.execve, [t.string(''), argv, envp], { fail: 'childFailed' });
  t.label('childFailed');
  t.syscall(SYS.write, [{ load: pipeWrite }, BigInt(ERROR_RECORD), 16]);
  t.syscall(SYS.exitGroup, [127]);

  const tape = t.build();
  return { tape, describe: (op, errno) => `${steps.get(op) ?? `step ${op}`}: ${errnoText(errno)}` };
}

/** executableCandidates are the paths execve tries: the program itself, or each PATH entry's. */
export function executableCandidates(program: string, env: string[]): string[] {
  if (program.includes('/')) return [program];
  // The last PATH wins, as when the environment is set one entry at a time.
  const path = [...env].reverse().find((e) => e.startsWith('PATH='))?.slice(5) ?? '';
  return path.split(':').map((dir) => `${dir || '.'}/${program}`);
}

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  ENOTDIR: 'Not a directory',
  EINVAL: 'Invalid argument',
  ENOEXEC: 'Exec format error',
  EAGAIN: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
};

function errnoText(errno: number): string {
  const name = Object.entries(constants.errno).find(([, n]) => n === errno)?.[0];
  return name ? (ERRNO_TEXT[name] ?? name) : `errno ${errno}`;
}
