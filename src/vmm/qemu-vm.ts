/**
 * QemuVm is one running QEMU process and what the driver attached to it: QMP (connected with retries
 * until the socket answers), the console capture, the agent port's opening. It lets the vCPUs run
 * (`cont`) once all is attached, pauses and resumes them, saves a template, and stops the process
 * (QMP quit or SIGTERM, then SIGKILL), removing its files. QemuDriver.start (qemu.ts) launches it.
 */

import type { ChildProcess } from 'node:child_process';
import { chmod, lstat, writeFile } from 'node:fs/promises';
import { HullError, errorCode } from '../errors/index.js';
import { ByteTail, printable } from './byte-tail.js';
import { ConsoleCapture } from './console.js';
import { processStartTime } from '../common/process.js';
import type { Accel, RunningVm, VmExit, VmHandle, VmSpec } from './driver.js';
import { AGENT_PORT_ID, ramBacking, type QemuPaths } from './qemu-args.js';
import { removeFiles, spawnQemu } from './qemu-process.js';
import { restoreTemplateState, saveTemplateState } from './qemu-template.js';
import { QmpClient } from './qmp.js';
import { childVmProcess, watchedVmProcess, type VmProcess } from './vm-process.js';

export interface QemuDriverOptions {
  /** binary is the QEMU executable (default "qemu-system-x86_64", looked up on PATH). */
  binary?: string;
  /** consoleLogMaxBytes caps console.log + console.log.1 on disk (default 1 MiB). */
  consoleLogMaxBytes?: number;
}

const DEFAULT_START_TIMEOUT_MS = 10_000;
const DEFAULT_SHUTDOWN_DEADLINE_MS = 5_000;
/** QMP commands other than quit get this long; QEMU answers them in milliseconds. */
const COMMAND_TIMEOUT_MS = 5_000;
/** KILL_WAIT_MS bounds the wait for a SIGKILLed QEMU to be reaped (only a D-state process is slower). */
const KILL_WAIT_MS = 10_000;
/** DRAIN_WAIT_MS bounds the wait for QEMU's pipes and console socket to drain after it exited. */
const DRAIN_WAIT_MS = 2_000;
/** EXIT_NOTICE_MS is how long a failed start waits for QEMU's exit to be noticed, to report it. */
const EXIT_NOTICE_MS = 500;
const DEFAULT_CONSOLE_TAIL_BYTES = 16 * 1024;

/** QemuVm is one QEMU process and what the driver attached to it. */
export class QemuVm implements VmHandle {
  readonly pid: number;
  readonly agentSocketPath: string;
  readonly exited: Promise<VmExit>;
  readonly agentPortOpened: Promise<void>;
  private markAgentPortOpened!: () => void;
  private readonly agentPortListeners = new Set<(open: boolean) => void>();
  /** processExit resolves when the process has exited (reaped); exited also waits for its output. */
  private readonly processExit: Promise<VmExit>;
  private exitStatus: VmExit | undefined;
  /** outputTail keeps the end of QEMU's stdout and stderr, for error messages. */
  private readonly outputTail = new ByteTail(16 * 1024);
  private qmp: QmpClient | undefined;
  private console: ConsoleCapture | undefined;
  /** stopping is set once shutdown() began; start() stops attaching things from then on. */
  private stopping = false;
  private shutdownOnce: Promise<void> | undefined;

  /**
   * launch runs `argv` (QEMU, directly or through its jail) and attaches to it. `paths.host` are the
   * VM's files as the driver reaches them, `paths.qemu` as QEMU names them (they differ in a jail).
   * `wrappers` is the number of processes in argv that fork the next one (spawnQemu).
   */
  static async launch(spec: VmSpec, accel: Accel, paths: { host: QemuPaths; qemu: QemuPaths }, argv: string[], binary: string, options: QemuDriverOptions, wrappers: number): Promise<QemuVm> {
    const { child, pid, chain } = await spawnQemu(spec, argv, binary, wrappers);
    // A VM on a lifeline outlives its starter's interest in it (a pool hands it over): it is
    // watched by pid and start time, as its adopter will watch it, not reaped through `child`.
    const startTime = spec.lifeline !== undefined ? processStartTime(pid) : undefined;
    const vmProcess = startTime !== undefined ? watchedVmProcess(pid, startTime) : childVmProcess(child, pid);
    const vm = new QemuVm(spec, accel, paths.host, vmProcess, options, paths.qemu.migrateSocket, [...chain, pid], child);
    // A jailed QEMU's own pid file would say 1 (its PID namespace): the driver writes the host's.
    if (spec.jail !== undefined) await writeFile(paths.host.pidFile, `${pid}\n`, { mode: 0o600 }).catch(() => undefined);
    try {
      if (startTime === undefined && spec.lifeline !== undefined) throw new HullError('internal', `QEMU (pid ${pid}) exited at once`);
      await vm.attach(spec.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS, false);
      return vm;
    } catch (error) {
      await vm.shutdown({ deadlineMs: 0 });
      if (spec.lifeline !== undefined) child.kill('SIGKILL'); // the holder, its VMM gone
      throw vm.startFailure(error);
    }
  }

  /**
   * adopt attaches to a VM that runs already (started on a lifeline by another process, which
   * detached from it): its QMP, console and agent port, which its starter left open. The caller
   * holds the lifeline from now on.
   */
  static async adopt(spec: VmSpec, paths: QemuPaths, running: RunningVm, options: QemuDriverOptions): Promise<QemuVm> {
    const vm = new QemuVm(spec, running.accel, paths, watchedVmProcess(running.pid, running.startTime), options, paths.migrateSocket, [...running.chain], undefined);
    try {
      if (processStartTime(running.pid) !== running.startTime) throw new HullError('unavailable', `QEMU (pid ${running.pid}) is not running`);
      await vm.attach(spec.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS, true);
      return vm;
    } catch (error) {
      await vm.shutdown({ deadlineMs: 0 });
      throw vm.startFailure(error);
    }
  }

  private constructor(
    private readonly spec: VmSpec,
    readonly accel: Accel,
    private readonly paths: QemuPaths,
    private readonly vmProcess: VmProcess,
    private readonly options: QemuDriverOptions,
    /** qemuMigrateSocket is the migration socket as QEMU names it (its path in the jail). */
    private readonly qemuMigrateSocket: string,
    /** hostPids: the VM's host processes, QEMU last (a jail's unshare, a lifeline's holder before it). */
    readonly hostPids: readonly number[],
    /** child is what was spawned (QEMU, its jail or its lifeline's holder): its output is QEMU's. */
    child: ChildProcess | undefined,
  ) {
    this.pid = vmProcess.pid;
    this.agentSocketPath = paths.agentSocket;
    this.agentPortOpened = new Promise((resolve) => (this.markAgentPortOpened = resolve));
    child?.stdout?.on('data', (chunk: Buffer) => this.outputTail.push(chunk));
    child?.stderr?.on('data', (chunk: Buffer) => this.outputTail.push(chunk));
    child?.on('error', () => undefined); // a failed kill(); the exit is what we wait for
    this.processExit = vmProcess.exit.then((status) => {
      this.exitStatus = status;
      return status;
    });
    // A lifeline's holder (and its pipes) outlive QEMU: only a child that is QEMU's own has output to drain.
    const outputClosed = child !== undefined && spec.lifeline === undefined ? new Promise<void>((resolve) => child.once('close', () => resolve())) : Promise.resolve();
    this.exited = this.processExit.then(async (status) => {
      await withTimeout(Promise.all([outputClosed, this.console?.done]), DRAIN_WAIT_MS);
      return status;
    });
  }

  get id(): string {
    return this.spec.id;
  }

  consoleTail(maxBytes = DEFAULT_CONSOLE_TAIL_BYTES): string {
    return printable(this.console?.tail(maxBytes) ?? '');
  }

  pause(): Promise<void> {
    return this.command('stop');
  }

  resume(): Promise<void> {
    return this.command('cont');
  }

  shutdown(opts: { deadlineMs?: number } = {}): Promise<void> {
    this.shutdownOnce ??= this.stop(opts.deadlineMs ?? DEFAULT_SHUTDOWN_DEADLINE_MS);
    return this.shutdownOnce;
  }

  onAgentPortChange(listener: (open: boolean) => void): () => void {
    this.agentPortListeners.add(listener);
    return () => this.agentPortListeners.delete(listener);
  }

  /**
   * detach lets go of a VM on a lifeline without ending it: QMP and the console are closed (their
   * sockets then accept its adopter), the process is no longer watched. What it returns is what
   * QemuDriver.adopt needs; this handle is of no more use.
   */
  async detach(): Promise<RunningVm> {
    const startTime = processStartTime(this.pid);
    if (this.spec.lifeline === undefined) throw new HullError('failed_precondition', `VM "${this.spec.id}" has no lifeline: it cannot be handed over`);
    if (startTime === undefined || this.exitStatus !== undefined || this.stopping) throw new HullError('failed_precondition', `VM "${this.spec.id}" is not running`);
    this.stopping = true;
    this.shutdownOnce = Promise.resolve();
    this.vmProcess.release();
    this.qmp?.close();
    await this.console?.close();
    return { pid: this.pid, startTime, chain: this.hostPids.slice(0, -1), accel: this.accel };
  }

  /** attach connects QMP and the console, checks the agent socket and lets the vCPUs run (a running VM's run already). */
  private async attach(timeoutMs: number, running: boolean): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const steps = async () => {
      this.qmp = await this.connectQmp(deadline);
      // QEMU's exit closes QMP first: look for the exit at once rather than at the next poll.
      void this.qmp.closed.then(() => this.vmProcess.check());
      this.checkStopping();
      this.console = await ConsoleCapture.connect(this.paths.consoleSocket, this.paths.consoleLog, {
        maxLogBytes: this.options.consoleLogMaxBytes,
      });
      this.checkStopping();
      // Listen before the guest runs: the event cannot be missed. (A clone's port comes back open
      // from its saved state, announced by the same event once it runs.) A running VM's agent had
      // the port open: its starter talked to it.
      if (running) this.markAgentPortOpened();
      this.qmp.on('event', (e) => {
        if (e.event !== 'VSERPORT_CHANGE' || e.data['id'] !== AGENT_PORT_ID || typeof e.data['open'] !== 'boolean') return;
        if (e.data['open']) this.markAgentPortOpened();
        for (const listener of this.agentPortListeners) listener(e.data['open']);
      });
      if (this.spec.template !== undefined && !running) {
        await restoreTemplateState(this.qmp, this.paths.migrateSocket, this.spec.template.stateFile, deadline, () => this.checkStopping(), this.qemuMigrateSocket);
        this.checkStopping();
      }
      const agent = await lstat(this.paths.agentSocket).catch(() => undefined);
      if (!agent?.isSocket()) throw new HullError('internal', `agent socket "${this.paths.agentSocket}" was not created`);
      // The directory is 0700 already; this keeps the files private if it ever is not. A clone's
      // RAM file is its template's, not this VM's to change.
      const ram = ramBacking(this.spec);
      const own = [this.paths.qmpSocket, this.paths.agentSocket, this.paths.consoleSocket, ...(ram?.share ? [ram.path] : [])];
      await Promise.all(own.map((path) => chmod(path, 0o600)));
      if (!running) await this.qmp.execute('cont', undefined, { timeoutMs: Math.max(1, deadline - Date.now()) });
    };
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HullError('deadline_exceeded', `QEMU was not ready within ${timeoutMs} ms`)), timeoutMs);
    });
    const exitError = (status: VmExit) => new HullError('internal', `QEMU exited (${describeExit(status)}) before it was ready`);
    const exitedEarly = this.processExit.then((status) => {
      throw exitError(status);
    });
    const attached = steps();
    try {
      await Promise.race([attached, timedOut, exitedEarly]);
    } catch (error) {
      // Let the steps notice and settle (each is bounded by the deadline), so that whatever they
      // attached is in this.qmp / this.console for shutdown() to close.
      this.stopping = true;
      await attached.catch(() => undefined);
      // A lost connection usually means QEMU died and is about to be reaped: say that instead.
      if (errorCode(error) !== 'deadline_exceeded' && (await withTimeout(this.processExit, EXIT_NOTICE_MS))) {
        throw exitError(this.exitStatus!);
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** connectQmp retries connecting while the socket is not there yet (ENOENT) or not listening yet. */
  private async connectQmp(deadline: number): Promise<QmpClient> {
    let backoffMs = 2;
    for (;;) {
      this.checkStopping();
      try {
        return await QmpClient.connect(this.paths.qmpSocket, { timeoutMs: Math.max(1, deadline - Date.now()) });
      } catch (error) {
        const cause = (error as { cause?: { code?: unknown } }).cause?.code;
        // Retry until attach() gives up (it sets `stopping` at its deadline or on exit).
        if (cause !== 'ENOENT' && cause !== 'ECONNREFUSED') throw error;
      }
      await Promise.race([delay(backoffMs), this.processExit]);
      backoffMs = Math.min(backoffMs * 2, 50);
    }
  }

  private checkStopping(): void {
    if (this.stopping || this.exitStatus !== undefined) throw new HullError('cancelled', 'VM start was abandoned');
  }

  private async command(name: string): Promise<void> {
    await this.runningQmp(name).execute(name, undefined, { timeoutMs: COMMAND_TIMEOUT_MS });
  }

  private runningQmp(what: string): QmpClient {
    const qmp = this.qmp;
    if (this.exitStatus !== undefined || this.stopping || qmp === undefined || qmp.isClosed) {
      throw new HullError('failed_precondition', `Cannot run "${what}" on VM "${this.spec.id}": it is not running`);
    }
    return qmp;
  }

  async saveTemplate(stateFile: string): Promise<void> {
    if (this.spec.templateRamFile === undefined) {
      throw new HullError('failed_precondition', `Cannot save VM "${this.spec.id}" as a template: it was not started with a template RAM file`);
    }
    await saveTemplateState(this.runningQmp('saveTemplate'), this.paths.migrateSocket, stateFile, this.qemuMigrateSocket);
  }

  /** stop ends the process (quit or SIGTERM, then SIGKILL after deadlineMs) and removes the files. */
  private async stop(deadlineMs: number): Promise<void> {
    this.stopping = true;
    if (this.exitStatus === undefined && deadlineMs > 0) {
      if (this.qmp !== undefined && !this.qmp.isClosed) {
        // QEMU may close the socket before its answer arrives: the exit is what counts.
        this.qmp.execute('quit', undefined, { timeoutMs: deadlineMs }).catch(() => undefined);
      } else {
        this.vmProcess.kill('SIGTERM');
      }
      await withTimeout(this.processExit, deadlineMs);
    }
    if (this.exitStatus === undefined) {
      this.vmProcess.kill('SIGKILL');
      await withTimeout(this.processExit, KILL_WAIT_MS);
    }
    // Our ends of the sockets are closed whether or not QEMU is gone: the shim must not keep them.
    this.qmp?.close();
    if (this.exitStatus !== undefined) await this.exited;
    await this.console?.close();
    if (this.exitStatus === undefined) {
      throw new HullError('internal', `QEMU (pid ${this.pid}) of VM "${this.spec.id}" did not die within ${KILL_WAIT_MS} ms of SIGKILL`);
    }
    await removeFiles(this.paths);
  }

  /** startFailure wraps why start() failed with what QEMU and the guest said. */
  startFailure(error: unknown): HullError {
    const reason = error instanceof Error ? error.message : String(error);
    const lines = [`Cannot start VM "${this.spec.id}": ${reason}`];
    const output = printable(this.outputTail.text()).trim();
    if (output !== '') lines.push(`QEMU output: ${output}`);
    const console = this.consoleTail(4096).trim();
    if (console !== '') lines.push(`console tail:\n${console}`);
    const code = errorCode(error);
    return new HullError(code === 'cancelled' || code === 'unknown' ? 'internal' : code, lines.join('\n'), { cause: error });
  }
}

function describeExit(status: VmExit): string {
  if (status.code === null && status.signal === null) return 'status unknown: not our child';
  return status.signal !== null ? `signal ${status.signal}` : `code ${status.code}`;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** withTimeout resolves true when `promise` settles within `ms`, false otherwise. */
async function withTimeout(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true, () => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
