/**
 * Container is one OCI container in the guest: its bundle under
 * /run/hull/containers/<id>, its init process and its execs. crun keeps the
 * runtime state; the agent keeps the processes it is the parent of.
 */
import { mkdir, readFile, readdir, rm, rmdir, stat, writeFile, realpath } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { HullError } from '../errors/index.js';
import { cgroupPids, containerCgroup, containerCgroupParent, oomKills } from './cgroup.js';
import { mountAt, readMountinfo } from '../common/mountinfo.js';
import { GUEST_CONTAINERS_DIR, GUEST_POD_TMPFS_DIR, GUEST_SHARED_DIR } from '../common/names.js';
import type { OciProcess, OciSpec } from '../common/oci.js';
import { isInside } from '../common/paths.js';
import { run } from '../common/run.js';
import { guestSpec, checkId, checkProcess, podTmpfsMounts } from './guest-spec.js';
import { podPidNamespace, sharesPodPidNamespace } from './pod-pid-namespace.js';
import { GuestProcess, crunCommand, crunErrorMessages, type StdioRequest } from './process.js';
import { differingNamespaces, planDirectExec, type ExecTarget } from './direct-exec.js';
import { homeOf, readContainerEtc } from './container-etc.js';
import { execStarter } from './exec-starter.js';

// The files exec() writes (json) and crun writes (pid, log) for each exec, in the bundle directory.
const EXEC_FILES = ['json', 'pid', 'log'] as const;

export type ContainerState = 'created' | 'running' | 'stopped';

export class Container {
  readonly id: string;
  readonly bundleDir: string;
  readonly init: GuestProcess;
  // exec id -> process; changed only by exec() and removeExec().
  readonly execs = new Map<string, GuestProcess>();
  // exec id -> the removal of its files, started once the exec is running; gone when done.
  readonly #fileRemovals = new Map<string, Promise<void>>();
  #state: ContainerState = 'created';
  #paused = false;
  // The init's namespaces that differ from the agent's, read at the first exec.
  #namespaces: Promise<Set<string>> | undefined;
  // What direct exec knows of this container, its caches with it (direct-exec.ts).
  readonly #execTarget: ExecTarget;

  // sharesPid: in the pod's PID namespace, which outlives this container's init.
  readonly #sharesPid: boolean;

  private constructor(id: string, bundleDir: string, stdio: StdioRequest, sharesPid: boolean, config: OciSpec) {
    this.#sharesPid = sharesPid;
    this.#execTarget = { initPid: 0, spec: config, cgroupProcs: join(containerCgroup(id), 'cgroup.procs'), paused: false, plans: new Map() };
    this.id = id;
    this.bundleDir = bundleDir;
    this.init = new GuestProcess({
      command: crunCommand(join(bundleDir, 'crun.log'), ['run', '--pid-file', join(bundleDir, 'init.pid'), '--bundle', bundleDir, id]),
      stdio,
      pidFile: join(bundleDir, 'init.pid'),
      logFile: join(bundleDir, 'crun.log'),
    });
  }

  /** create validates the spec and writes the bundle; nothing runs until start(). */
  static async create(id: string, spec: OciSpec, rootfs: string, stdio: StdioRequest): Promise<Container> {
    checkId('container id', id);
    const rootfsPath = await resolveRootfs(rootfs);
    const bundleDir = join(GUEST_CONTAINERS_DIR, id);
    const sharesPid = sharesPodPidNamespace(spec.linux?.namespaces);
    const config = guestSpec(id, spec, rootfsPath, stdio.terminal, sharesPid ? await podPidNamespace() : undefined);
    if (stdio.terminal) setConsoleSize(config.process!, stdio);
    for (const { key, options } of podTmpfsMounts(spec)) await ensurePodTmpfs(key, options);
    await mkdir(GUEST_CONTAINERS_DIR, { recursive: true, mode: 0o700 });
    try {
      await mkdir(bundleDir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new HullError('already_exists', `Container "${id}" already exists`);
      throw e;
    }
    await writeFile(join(bundleDir, 'config.json'), JSON.stringify(config));
    return new Container(id, bundleDir, stdio, sharesPid, config);
  }

  get state(): ContainerState {
    return this.#state;
  }

  /** oomKilled tells whether the kernel OOM-killed a process of this container (also after it ended). */
  async oomKilled(): Promise<boolean> {
    return (await oomKills(this.id)) > 0;
  }

  async start(): Promise<number> {
    if (this.#state !== 'created') throw new HullError('failed_precondition', `Container "${this.id}" is ${this.#state}, not created`);
    this.#state = 'running';
    await mkdir(containerCgroupParent(this.id), { recursive: true });
    void this.init.exited.then(() => this.#onInitExit());
    let pid: number;
    try {
      pid = await this.init.start();
    } catch (e) {
      this.#state = 'stopped';
      throw e;
    }
    return pid;
  }

  async exec(execId: string, processSpec: OciProcess, stdio: StdioRequest): Promise<number> {
    checkId('exec id', execId);
    if (this.#state !== 'running') throw new HullError('failed_precondition', `Container "${this.id}" is not running`);
    if (this.execs.has(execId)) throw new HullError('already_exists', `Exec "${execId}" already exists in container "${this.id}"`);
    const process = checkProcess(processSpec, `process of exec "${execId}"`);
    process.terminal = stdio.terminal;
    if (stdio.terminal) setConsoleSize(process, stdio);
    this.#addHome(process);
    // A removed exec's id may come back: its files must be gone before the new ones are written.
    await this.#fileRemovals.get(execId);
    const direct = await this.#planDirectExec(process, stdio);
    const starter = direct ? await execStarter().catch(logStarterFailure) : undefined;
    const proc = direct && starter !== undefined ? new GuestProcess({ command: [], stdio, direct, starter }) : await this.#crunExec(execId, process, stdio);
    this.execs.set(execId, proc);
    let pid: number;
    try {
      pid = await proc.start();
    } catch (e) {
      // The host never learns of an exec that did not start: nothing of it may stay.
      this.execs.delete(execId);
      await proc.release();
      await this.#removeExecFiles(execId);
      throw e;
    }
    if (direct) return pid;
    // crun has read the process file and written the pid; its log is read only when a start fails.
    // Removed now, not by RemoveExec: that call is off the host's path (an exec's Delete does not wait
    // for it), and files of an exec that ended would otherwise wait for it.
    const removal = this.#removeExecFiles(execId).finally(() => this.#fileRemovals.delete(execId));
    this.#fileRemovals.set(execId, removal);
    return pid;
  }

  /**
   * #addHome gives an exec without HOME the home of its uid from the container's /etc/passwd, as
   * crun would, read by the agent within the container's root (container-etc.ts) for direct and crun
   * execs alike: crun, given HOME, reads nothing. A passwd the agent must refuse (a symlink, a FIFO,
   * over 1 MiB) fails the exec with the reason; no passwd or no entry leaves HOME unset.
   */
  #addHome(process: OciProcess): void {
    const env = (process.env ??= []);
    if (env.some((e) => e.startsWith('HOME=')) || this.init.pid <= 0) return;
    const uid = process.user?.uid ?? 0;
    const passwd = readContainerEtc(this.init.pid, 'passwd', this.#execTarget.passwd, `look up HOME of uid ${uid}`);
    if (passwd) this.#execTarget.passwd = passwd;
    const home = passwd ? homeOf(passwd.text, uid) : null;
    if (home !== null) env.push(`HOME=${home}`);
  }

  /** #planDirectExec has the agent start the exec itself when it can do exactly what crun would (direct-exec.ts). */
  async #planDirectExec(process: OciProcess, stdio: StdioRequest) {
    if (this.init.pid <= 0) return undefined;
    this.#namespaces ??= differingNamespaces(this.init.pid);
    this.#execTarget.initPid = this.init.pid;
    this.#execTarget.paused = this.#paused;
    return planDirectExec(this.#execTarget, process, stdio.terminal, await this.#namespaces);
  }

  async #crunExec(execId: string, process: OciProcess, stdio: StdioRequest): Promise<GuestProcess> {
    const processFile = join(this.bundleDir, `exec-${execId}.json`);
    await writeFile(processFile, JSON.stringify(process));
    return new GuestProcess({
      command: crunCommand(join(this.bundleDir, `exec-${execId}.log`), ['exec', '--pid-file', join(this.bundleDir, `exec-${execId}.pid`), '--process', processFile, ...(stdio.terminal ? ['--tty'] : []), this.id]),
      stdio,
      pidFile: join(this.bundleDir, `exec-${execId}.pid`),
      logFile: join(this.bundleDir, `exec-${execId}.log`),
    });
  }

  async #removeExecFiles(execId: string): Promise<void> {
    await Promise.all(EXEC_FILES.map((ext) => rm(join(this.bundleDir, `exec-${execId}.${ext}`), { force: true })));
  }

  process(execId: string): GuestProcess {
    if (execId === '') return this.init;
    const proc = this.execs.get(execId);
    if (!proc) throw new HullError('not_found', `Exec "${execId}" not found in container "${this.id}"`);
    return proc;
  }

  /** signal delivers to one process, or with `all` to every process of the container. */
  async signal(execId: string, signal: number, all: boolean): Promise<void> {
    if (!all || execId !== '') return this.process(execId).signal(signal);
    if (this.#state !== 'running') throw new HullError('not_found', 'process already finished');
    for (const pid of await this.pids()) {
      try {
        process.kill(pid, signal);
      } catch {
        // it exited meanwhile
      }
    }
  }

  pids(): Promise<number[]> {
    return cgroupPids(containerCgroup(this.id));
  }

  /**
   * removeExec forgets an exec: its record, and with it its stdio buffers (its files went when it
   * started). The host removes an exec once it has ended; one that still runs (its exit was forced
   * on the host) is killed first. The record goes before the first await: an Exec of the same id
   * that the host sends next finds it gone.
   */
  async removeExec(execId: string): Promise<void> {
    checkId('exec id', execId);
    const proc = this.execs.get(execId);
    if (!proc) throw new HullError('not_found', `Exec "${execId}" not found in container "${this.id}"`);
    this.execs.delete(execId);
    await proc.release();
    await this.#fileRemovals.get(execId);
  }

  /** bundleFiles counts the entries of the bundle directory (DebugState). */
  async bundleFiles(): Promise<number> {
    return (await readdir(this.bundleDir).catch(() => [])).length;
  }

  async pause(): Promise<void> {
    // Marked before crun runs: no direct exec may start into a cgroup being frozen.
    this.#paused = true;
    await this.#crun(['pause', this.id]);
  }

  async resume(): Promise<void> {
    await this.#crun(['resume', this.id]);
    this.#paused = false;
  }

  async update(resources: Record<string, unknown>): Promise<void> {
    if (this.#state !== 'running') throw new HullError('failed_precondition', `Container "${this.id}" is not running`);
    const file = join(this.bundleDir, 'resources.json');
    await writeFile(file, JSON.stringify(resources));
    await this.#crun(['update', '--resources', file, this.id]);
  }

  /** remove kills whatever still runs and deletes the bundle and crun's state. */
  async remove(): Promise<void> {
    await this.kill();
    await this.#crun(['delete', '--force', this.id]).catch(() => {});
    await rmdir(containerCgroupParent(this.id)).catch(() => {});
    await rm(this.bundleDir, { recursive: true, force: true });
  }

  /** kill ends every process of the container and waits for its init to be gone. */
  async kill(): Promise<void> {
    if (this.#state !== 'running') return;
    await this.signal('', 9, true).catch(() => {});
    for (const proc of [this.init, ...this.execs.values()]) proc.killCrun();
    await this.init.exited;
  }

  #onInitExit(): void {
    // When init exits its own PID namespace is gone and execs die with it. In the pod's shared one
    // they would live on: end them, as runc's shim does. Make sure their crun parents end too so
    // every Wait completes.
    if (this.#sharesPid) void this.signal('', 9, true).catch(() => {});
    this.#state = 'stopped';
    for (const proc of this.execs.values()) proc.killCrun();
  }

  async #crun(args: string[]): Promise<void> {
    const log = join(this.bundleDir, 'crun-cmd.log');
    try {
      await run('/usr/bin/crun', [`--log=file:${log}`, '--log-format=json', ...args]);
    } catch (e) {
      const messages = crunErrorMessages(await readFile(log, 'utf8').catch(() => ''));
      throw new HullError('failed_precondition', `crun ${args[0]} failed: ${messages.join('; ') || (e as Error).message}`);
    }
  }
}

let starterFailureLogged = false;

/** logStarterFailure: without the sealed starter every exec goes to crun (logged once). */
function logStarterFailure(e: unknown): undefined {
  if (!starterFailureLogged) console.error(`hull-agent: direct exec is off, crun runs every exec: ${(e as Error).message}`);
  starterFailureLogged = true;
  return undefined;
}

async function resolveRootfs(rootfs: string): Promise<string> {
  const path = posix.join(GUEST_SHARED_DIR, rootfs);
  if (rootfs.startsWith('/') || !isInside(GUEST_SHARED_DIR, path) || path === GUEST_SHARED_DIR) {
    throw new HullError('invalid_argument', `Invalid rootfs "${rootfs}": must be a path inside the shared directory`);
  }
  let real: string;
  try {
    real = await realpath(path);
    if (!(await stat(real)).isDirectory()) throw new Error('not a directory');
  } catch (e) {
    throw new HullError('invalid_argument', `Rootfs "${rootfs}" is missing or not a directory: ${(e as Error).message}`);
  }
  if (!isInside(GUEST_SHARED_DIR, real)) throw new HullError('invalid_argument', `Rootfs "${rootfs}" resolves outside the shared directory`);
  return real;
}

/** ensurePodTmpfs mounts the pod tmpfs `key` once; later containers bind the same one. */
async function ensurePodTmpfs(key: string, options: string[]): Promise<void> {
  const dir = join(GUEST_POD_TMPFS_DIR, key);
  if (mountAt(await readMountinfo(), dir) !== undefined) return;
  await mkdir(dir, { recursive: true });
  await run('/bin/mount', ['-t', 'tmpfs', '-o', ['nosuid', 'nodev', ...options].join(','), 'tmpfs', dir]).catch((e: Error) => {
    throw new HullError('internal', `Cannot mount the pod tmpfs ${key}: ${e.message}`);
  });
}

/** setConsoleSize makes crun create the pty at the requested size, before the process runs. */
function setConsoleSize(process: OciProcess, stdio: StdioRequest): void {
  if (stdio.rows > 0 && stdio.cols > 0) process.consoleSize = { height: stdio.rows, width: stdio.cols };
}
