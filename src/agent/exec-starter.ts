/**
 * The exec starter: the syscall tape program (syscall-tape.ts) that starts every direct exec
 * (direct-exec.ts), held in a sealed memfd that no file system shows, and run by fd.
 *
 * Why: the starter's child joins a container before it execs the container's program, so container
 * root may reach the starter through /proc/<child>/exe (CVE-2019-5736: runc's binary, overwritten
 * through that link, then run by the next exec as host root). A file on the guest's writable /run
 * could be reopened for writing that way; a memfd sealed against writing, growing and shrinking (and
 * against new seals) cannot be changed by anyone, root included. The tape also makes its child
 * non-dumpable before it joins anything (direct-exec.ts), so the link is refused in the first place.
 *
 * Node has no memfd_create, so the tape program makes the memfd itself, once per agent: a bootstrap
 * tape run from a file in the guest's /run (outside every container's namespaces, removed at once)
 * creates it, writes the program into it, seals it and reports its fd; the agent opens
 * /proc/<bootstrap>/fd/<n> for its own read-only descriptor before the bootstrap exits. Each direct
 * exec gets that descriptor as its fd STARTER_FD and node spawns `/proc/self/fd/STARTER_FD`, as
 * glibc's fexecve does; the tape closes it first thing.
 */
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { ERROR_RECORD, Tape, syscallTapeElf } from './syscall-tape.js';

/** STARTER_FD is the starter's descriptor in a direct exec's process (after stdin, stdout, stderr, the tape and the records). */
export const STARTER_FD = 5;
/** STARTER_PATH is what a direct exec's spawn runs: the starter, by fd. */
export const STARTER_PATH = `/proc/self/fd/${STARTER_FD}`;

const SYS = { read: 0, write: 1, fcntl: 72, prctl: 157, exitGroup: 231, memfdCreate: 319 } as const;
const MFD_CLOEXEC = 1;
const MFD_ALLOW_SEALING = 2;
// MFD_EXEC (Linux 6.3): says the memfd is meant to be executed; older kernels refuse the flag.
const MFD_EXEC = 0x10;
const F_ADD_SEALS = 1033;
const F_SEAL_SEAL = 1;
const F_SEAL_SHRINK = 2;
const F_SEAL_GROW = 4;
const F_SEAL_WRITE = 8;
const PR_SET_DUMPABLE = 4;
const FD_RECORD = -3n;
const BOOTSTRAP_DEADLINE_MS = 10_000;

let made: Promise<number> | undefined;

/**
 * execStarter makes the sealed starter once (per agent; `dir` holds the bootstrap for a moment)
 * and returns the agent's descriptor of it. A failure is not kept: the next call tries again.
 */
export function execStarter(dir = '/run/hull'): Promise<number> {
  made ??= makeStarter(dir).catch((e: unknown) => {
    made = undefined;
    throw e;
  });
  return made;
}

/** bootstrapTape makes the memfd, writes `elf` into it, seals it, reports its fd and waits for stdin to end. */
export function bootstrapTape(elf: Buffer): Buffer {
  const t = new Tape();
  t.syscall(SYS.prctl, [PR_SET_DUMPABLE, 0, 0, 0, 0]);
  const name = t.string('hull-exec-starter');
  const record = t.words([FD_RECORD, 0n]);
  const fd = t.at(record, 8);
  t.syscall(SYS.memfdCreate, [name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC], { store: fd, fail: 'withoutExecFlag' });
  t.jump('created');
  t.label('withoutExecFlag');
  t.syscall(SYS.memfdCreate, [name, MFD_CLOEXEC | MFD_ALLOW_SEALING], { store: fd, fail: 'failed' });
  t.label('created');
  t.syscall(SYS.write, [{ load: fd }, t.bytes(elf), elf.length], { fail: 'failed' });
  t.syscall(SYS.fcntl, [{ load: fd }, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE], { fail: 'failed' });
  t.syscall(SYS.write, [4, record, 16], { fail: 'failed' });
  t.syscall(SYS.read, [0, t.words([0n]), 8]);
  t.syscall(SYS.exitGroup, [0]);
  t.label('failed');
  t.syscall(SYS.write, [4, BigInt(ERROR_RECORD), 16]);
  t.syscall(SYS.exitGroup, [1]);
  return t.build();
}

async function makeStarter(dir: string): Promise<number> {
  const elf = syscallTapeElf();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const bootstrap = join(dir, `exec-bootstrap.${process.pid}`);
  await rm(bootstrap, { force: true });
  await writeFile(bootstrap, elf, { mode: 0o500, flag: 'wx' });
  try {
    const fd = await runBootstrap(bootstrap, bootstrapTape(elf));
    try {
      checkStarter(fd, elf);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    return fd;
  } finally {
    await rm(bootstrap, { force: true });
  }
}

/** runBootstrap runs the bootstrap tape and opens the memfd it reports, before it exits. */
function runBootstrap(program: string, tape: Buffer): Promise<number> {
  const child = spawn(program, [], { stdio: ['pipe', 'ignore', 'ignore', 'pipe', 'pipe'], env: {} });
  const tapeIn = child.stdio[3] as Writable;
  tapeIn.on('error', () => {});
  tapeIn.end(tape);
  child.stdin!.on('error', () => {});
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  return new Promise<number>((resolve, reject) => {
    let pending = Buffer.alloc(0);
    let fd: number | undefined;
    const fail = (why: string): void => {
      child.kill('SIGKILL');
      reject(new Error(`Cannot make the exec starter: ${why}`));
    };
    const timer = setTimeout(() => fail(`no answer in ${BOOTSTRAP_DEADLINE_MS} ms`), BOOTSTRAP_DEADLINE_MS);
    (child.stdio[4] as Readable).on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (pending.length < 16 || fd !== undefined) return;
      const [kind, value] = [pending.readBigInt64LE(0), pending.readBigInt64LE(8)];
      if (kind !== FD_RECORD) return fail(`step ${kind} failed with errno ${value}`);
      try {
        fd = openSync(`/proc/${child.pid}/fd/${value}`, 'r');
      } catch (e) {
        return fail((e as Error).message);
      }
      child.stdin!.end(); // the bootstrap may exit: its writable descriptor goes, and the memfd can be executed
    });
    child.once('error', (e) => fail(e.message));
    void exited.then(() => {
      clearTimeout(timer);
      if (fd === undefined) fail(`the bootstrap exited with status ${child.exitCode ?? child.signalCode}`);
      else if (child.exitCode !== 0) {
        closeSync(fd);
        fail(`the bootstrap exited with status ${child.exitCode ?? child.signalCode}`);
      } else resolve(fd);
    });
  });
}

/** checkStarter makes sure the memfd holds exactly the program. */
function checkStarter(fd: number, elf: Buffer): void {
  const size = fstatSync(fd).size;
  const got = Buffer.alloc(elf.length + 1);
  const n = readSync(fd, got, 0, got.length, 0);
  if (size !== elf.length || n !== elf.length || !got.subarray(0, n).equals(elf)) {
    throw new Error(`Cannot make the exec starter: the memfd holds ${size} bytes, not the ${elf.length}-byte program`);
  }
}
