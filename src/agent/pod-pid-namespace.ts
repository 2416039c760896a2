/**
 * The pod's shared PID namespace, for pods with shareProcessNamespace. With runc their containers
 * join pause's namespace. A hull pod runs no pause in the guest, and the guest's own namespace would
 * show them init and the agent (and let them signal it). So the first container that asks starts a
 * holder whose child is PID 1 of a new namespace, as pause is; every container of the pod that asks
 * joins that namespace. The holder lives as long as the VM.
 *
 * Containers see that PID 1 in their /proc, so it holds nothing a container could use: it is a tape
 * (syscall-tape.ts) run from the sealed exec starter (exec-starter.ts), not dumpable, in a mount
 * namespace of its own whose root is an empty read-only tmpfs (its /proc/1/root and cwd lead nowhere),
 * as uid and gid 65534 with no groups, no capabilities and no_new_privs: even a container that holds
 * CAP_SYS_PTRACE gains nothing by tracing it.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { HullError } from '../errors/index.js';
import { STARTER_FD, STARTER_PATH, execStarter } from './exec-starter.js';
import { Tape } from './syscall-tape.js';

const HOLDER_READY_MS = 5000;
/** HOLDER_NAME is the holder's argv[0], what `ps` shows as the pod namespace's PID 1. */
export const HOLDER_NAME = 'hull-pod-pid-holder';
const NOBODY = 65534;
const SYS = { pause: 34, fork: 57, wait4: 61, exitGroup: 231, chdir: 80, setgroups: 116, setresuid: 117, setresgid: 119, pivotRoot: 155, prctl: 157, mount: 165, umount2: 166, unshare: 272, close: 3 } as const;
const CLONE_NEWNS = 0x20000;
const CLONE_NEWPID = 0x20000000;
const MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8, MS_REC = 0x4000, MS_PRIVATE = 0x40000;
const MNT_DETACH = 2;
const PR_SET_DUMPABLE = 4;
const PR_SET_NO_NEW_PRIVS = 38;

/** holderTape: the parent unshares, moves to an empty root and forks PID 1, which drops everything and pauses for good. */
export function holderTape(): Buffer {
  const t = new Tape();
  const fail = { fail: 'failed' };
  t.syscall(SYS.close, [STARTER_FD]);
  t.syscall(SYS.prctl, [PR_SET_DUMPABLE, 0, 0, 0, 0], fail);
  t.syscall(SYS.unshare, [CLONE_NEWNS | CLONE_NEWPID], fail);
  t.syscall(SYS.mount, [0, t.string('/'), 0, MS_REC | MS_PRIVATE, 0], fail);
  // An empty read-only tmpfs over /run, in this mount namespace only, becomes the root.
  t.syscall(SYS.mount, [t.string('none'), t.string('/run'), t.string('tmpfs'), MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, t.string('size=4k,mode=0555')], fail);
  t.syscall(SYS.chdir, [t.string('/run')], fail);
  t.syscall(SYS.pivotRoot, [t.string('.'), t.string('.')], fail);
  t.syscall(SYS.umount2, [t.string('.'), MNT_DETACH], fail);
  t.syscall(SYS.chdir, [t.string('/')], fail);
  t.syscall(SYS.fork, [], fail);
  t.ifZero('pid1');
  t.syscall(SYS.wait4, [-1, 0, 0, 0]);
  t.syscall(SYS.exitGroup, [0]);
  t.label('pid1');
  t.syscall(SYS.setgroups, [0, 0], fail);
  t.syscall(SYS.setresgid, [NOBODY, NOBODY, NOBODY], fail);
  t.syscall(SYS.setresuid, [NOBODY, NOBODY, NOBODY], fail); // from root to another uid: every capability goes
  t.syscall(SYS.prctl, [PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0], fail);
  t.label('pause');
  t.syscall(SYS.pause, []);
  t.jump('pause');
  t.label('failed');
  t.syscall(SYS.exitGroup, [1]);
  return t.build();
}

let holder: Promise<string> | undefined;

/** podPidNamespace returns the path of the pod's shared PID namespace, made on first use. */
export function podPidNamespace(): Promise<string> {
  if (holder) return holder;
  // A namespace whose PID 1 died takes no new process: once this holder fails or exits, the next
  // container that asks makes another.
  const forget = (): void => {
    if (holder === made) holder = undefined;
  };
  const made: Promise<string> = startHolder(forget).catch((e: unknown) => {
    forget();
    throw e;
  });
  holder = made;
  return made;
}

/** sharesPodPidNamespace tells whether a container spec asks to join a PID namespace (the pod's). */
export function sharesPodPidNamespace(namespaces: ReadonlyArray<{ type: string; path?: string }> | undefined): boolean {
  return (namespaces ?? []).some((ns) => ns.type === 'pid' && !!ns.path);
}

async function startHolder(onExit: () => void): Promise<string> {
  const starter = await execStarter();
  const unshare = spawn(STARTER_PATH, [], { argv0: HOLDER_NAME, stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'ignore', starter], env: {} });
  const tapeIn = unshare.stdio[3] as Writable;
  tapeIn.on('error', () => {});
  tapeIn.end(holderTape());
  const failed = new Promise<never>((_, reject) => {
    unshare.once('error', (e) => reject(new HullError('internal', `Cannot start the pod PID namespace holder: ${e.message}`)));
    unshare.once('exit', (code, signal) => {
      onExit();
      reject(new HullError('internal', `The pod PID namespace holder exited (${code ?? signal})`));
    });
  });
  failed.catch(() => undefined);
  const pid = unshare.pid;
  if (pid === undefined) return failed;
  // The forked child is PID 1 of the new namespace: join through it once it exists.
  const deadline = Date.now() + HOLDER_READY_MS;
  for (;;) {
    const children = await Promise.race([readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => ''), failed]);
    const child = Number.parseInt(children.trim().split(/\s+/)[0] ?? '', 10);
    if (Number.isSafeInteger(child) && child > 0) return `/proc/${child}/ns/pid`;
    if (Date.now() > deadline) {
      unshare.kill('SIGKILL');
      throw new HullError('internal', `The pod PID namespace holder had no child after ${HOLDER_READY_MS} ms`);
    }
    await sleep(5);
  }
}
