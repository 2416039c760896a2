/**
 * The QEMU process of a VM, apart from what runs over its sockets: spawning it, and the files it
 * leaves in the state dir.
 *
 * Process ownership: QEMU is spawned as an ordinary child (not detached), so it stays in the shim's
 * process group; containerd starts each shim as its own group leader, so killing that group ends the
 * VM too. The sandbox's ledger records QEMU's pid and start time for a cleanup with nothing in memory;
 * `qemu.pid` and its `-name hull-<id>` let a second start of the same VM be refused. QEMU gets an
 * environment holding only PATH, stdin from /dev/null, and its stdout/stderr are read into a bounded
 * tail. The seccomp `-sandbox` forbids it to spawn processes or change privileges.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { access, constants, readFile, rm } from 'node:fs/promises';
import { HullError } from '../errors/index.js';
import type { VmSpec } from './driver.js';
import type { QemuPaths } from './qemu-args.js';

/**
 * qemuCommand is the argv (file first) that runs QEMU unjailed: in the pod's netns when there is
 * one (a tap can only be opened from its own netns; nsenter execs QEMU, so the pid stays QEMU's),
 * with the parent-death signal set (it survives the execs of nsenter and QEMU) so the VM never
 * outlives the shim. A jailed QEMU is started by jail.ts's jailCommand instead.
 */
export function qemuCommand(spec: VmSpec, binary: string, args: readonly string[]): string[] {
  const direct = spec.net?.netns ? ['nsenter', `--net=${spec.net.netns}`, '--', binary, ...args] : [binary, ...args];
  return ['setpriv', '--pdeathsig', 'KILL', '--', ...direct];
}

// The lifeline's holder: a shell that keeps the lifeline FIFO open for reading and the VMM as its
// child, whose parent-death signal (setpriv --pdeathsig, in argv) points at this shell. It blocks
// until no process holds the FIFO for writing any more (then `read` sees EOF), and exits: the
// kernel then kills the VMM. Lines written to the FIFO are ignored.
const LIFELINE_SCRIPT = `exec 3<"$1"; shift
"$@" 3<&- &
while read -r _ <&3; do :; done
`;

/**
 * lifelineCommand wraps `argv` (which must set the parent-death signal, as qemuCommand and
 * jailCommand do) so that the VM lives as long as some process holds `fifo` open for writing,
 * whoever started it: the starter opens it before, and may hand it over (a VM pool to a pod's shim).
 */
export function lifelineCommand(busybox: string, fifo: string, argv: readonly string[]): string[] {
  return [busybox, 'sh', '-c', LIFELINE_SCRIPT, 'hull-lifeline', fifo, ...argv];
}

// How long a jail may take to be built before QEMU runs in it (a few mounts).
const JAIL_START_TIMEOUT_MS = 10_000;

/**
 * spawnQemu runs `argv` and returns once the process runs, with QEMU's pid and the pids of the
 * processes above it (`chain`, spawned first): the spawned process itself is QEMU, unless argv has
 * `wrappers` levels of processes that fork it (a jail's `unshare --fork`: its child, PID 1 of the
 * jail's PID namespace, becomes QEMU once the jail is built; a lifeline's holder shell).
 * Fails 'failed_precondition' when QEMU cannot be started.
 */
export async function spawnQemu(spec: VmSpec, argv: readonly string[], binary: string, wrappers: number): Promise<{ child: ChildProcess; pid: number; chain: number[] }> {
  // setpriv/nsenter/unshare would start even when QEMU cannot: check the binary first, for a clear error.
  if (!(await findExecutable(binary))) {
    throw new HullError('failed_precondition', `Cannot start VM "${spec.id}": cannot run "${binary}": not found or not executable`);
  }
  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin' },
  });
  const spawnError = await new Promise<Error | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined));
    child.once('error', resolve);
  });
  if (spawnError !== undefined || child.pid === undefined) {
    throw new HullError('failed_precondition', `Cannot start VM "${spec.id}": cannot run "${binary}": ${spawnError?.message}`, { cause: spawnError });
  }
  const chain = [child.pid];
  const deadline = Date.now() + JAIL_START_TIMEOUT_MS;
  for (let level = 0; level < wrappers; level++) {
    const pid = await firstChild(child, chain[chain.length - 1]!, deadline);
    if (pid === undefined) {
      child.kill('SIGKILL');
      throw new HullError('internal', `Cannot start VM "${spec.id}": its jail did not start within ${JAIL_START_TIMEOUT_MS} ms`);
    }
    chain.push(pid);
  }
  const pid = chain.pop()!;
  return { child, pid, chain };
}

/** firstChild waits for the first child of `pid` (a descendant of `spawned`), while `spawned` runs. */
async function firstChild(spawned: ChildProcess, pid: number, deadline: number): Promise<number | undefined> {
  while (Date.now() < deadline && spawned.exitCode === null && spawned.signalCode === null) {
    const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')).trim();
    const first = Number(children.split(' ')[0]);
    if (Number.isSafeInteger(first) && first > 1) return first;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  return undefined;
}

/**
 * removeFiles removes what QEMU and the driver create in the state dir, except the console log.
 * A template's RAM file is elsewhere and never removed here.
 */
export async function removeFiles(paths: QemuPaths): Promise<void> {
  await Promise.all([paths.qmpSocket, paths.agentSocket, paths.consoleSocket, paths.pidFile, paths.migrateSocket].map((path) => rm(path, { force: true })));
}

/** refuseIfRunning fails when the pid file names a live QEMU of this very VM (a second start). */
export async function refuseIfRunning(spec: VmSpec, paths: QemuPaths): Promise<void> {
  const pid = Number((await readFile(paths.pidFile, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0) return;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (cmdline.split('\0').includes(`hull-${spec.id}`)) {
    throw new HullError('already_exists', `Cannot start VM "${spec.id}": QEMU pid ${pid} is already running it`);
  }
}

/** findExecutable resolves a command as execvp would (a path, or a name on PATH). */
export async function findExecutable(command: string): Promise<string | undefined> {
  const candidates = command.includes('/') ? [command] : (process.env.PATH ?? '/usr/bin:/bin').split(':').map((dir) => `${dir}/${command}`);
  for (const candidate of candidates) {
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}
