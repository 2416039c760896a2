/**
 * The QEMU process of a VM, apart from what runs over its sockets: spawning it, and the files it
 * leaves in the state dir.
 *
 * Process ownership: QEMU is spawned as an ordinary child (not detached), so it stays in the shim's
 * process group; containerd starts each shim as its own group leader, so killing that group ends the
 * VM too. `<stateDir>/qemu.pid` lets a cleanup with nothing in memory (`shim delete`) find the process;
 * its `-name hull-<id>` lets it check that the pid is really ours before signalling. QEMU gets an
 * environment holding only PATH, stdin from /dev/null, and its stdout/stderr are read into a bounded
 * tail. The seccomp `-sandbox` forbids it to spawn processes or change privileges.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { access, constants, readFile, rm } from 'node:fs/promises';
import { HullError } from '../errors/index.js';
import type { VmSpec } from './driver.js';
import type { QemuPaths } from './qemu-args.js';

/**
 * spawnQemu runs `binary` (default qemu-system-x86_64 on PATH) with `args` for `spec`, and returns
 * once the process runs. Fails 'failed_precondition' when QEMU cannot be started.
 */
export async function spawnQemu(spec: VmSpec, args: string[], binary = 'qemu-system-x86_64'): Promise<{ child: ChildProcess; pid: number }> {
  // A tap device can only be opened from its own network namespace: run the VMM there.
  // nsenter execs QEMU after setns, so the pid stays QEMU's.
  // setpriv/nsenter would start even when QEMU cannot: check the binary first, for a clear error.
  if (!(await findExecutable(binary))) {
    throw new HullError('failed_precondition', `Cannot start VM "${spec.id}": cannot run "${binary}": not found or not executable`);
  }
  const direct = spec.net?.netns ? ['nsenter', `--net=${spec.net.netns}`, '--', binary, ...args] : [binary, ...args];
  // The VM must not outlive the process that owns it (a shim that crashed or was killed):
  // setpriv sets the parent-death signal, which survives the exec of nsenter and QEMU.
  const [file, argv] = ['setpriv', ['--pdeathsig', 'KILL', '--', ...direct]];
  const child = spawn(file, argv, {
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
  return { child, pid: child.pid };
}

/**
 * removeFiles removes what QEMU and the driver create in the state dir, except the console log.
 * A template's RAM file is elsewhere and never removed here.
 */
export async function removeFiles(paths: QemuPaths): Promise<void> {
  await Promise.all([paths.qmpSocket, paths.agentSocket, paths.consoleSocket, paths.pidFile, paths.ram, paths.migrateSocket].map((path) => rm(path, { force: true })));
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
