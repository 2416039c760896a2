/**
 * qemu — QemuDriver runs each VM as one `qemu-system-x86_64 -machine microvm` child process.
 *
 * start(): validate the spec, choose the accelerator, remove stale files, spawn QEMU paused (-S),
 * connect QMP (retrying the connect with a short backoff until the socket answers, the process
 * exits, or startTimeoutMs passes), attach the console capture so no boot output is lost, check the
 * agent socket, then QMP `cont`. Any failure kills QEMU and removes its files, and the HullError
 * carries QEMU's stderr and the console tail.
 *
 * Templates (template.ts): a clone is started with `-incoming defer`; before `cont` the driver
 * restores it (QMP migrate-set-capabilities x-ignore-shared, migrate-incoming on a unix socket in
 * the state dir, the saved state streamed in, MIGRATION "completed"). RAM is not in that stream:
 * the clone maps the template's RAM file privately. saveTemplate() is the other direction: stop,
 * migrate to a unix socket the driver listens on, and the bytes go to the state file. Unix sockets
 * rather than `exec:cat`, because the seccomp sandbox (spawn=deny) forbids QEMU to run programs.
 *
 * Process ownership: QEMU is spawned as an ordinary child (not detached), so it stays in the shim's
 * process group; containerd starts each shim as its own group leader, so killing that group ends the
 * VM too. `<stateDir>/qemu.pid` lets a cleanup with nothing in memory (`shim delete`) find the process;
 * its `-name hull-<id>` lets it check that the pid is really ours before signalling. QEMU gets an
 * environment holding only PATH, stdin from /dev/null, and its stdout/stderr are read into a bounded
 * tail. The seccomp `-sandbox` forbids it to spawn processes or change privileges.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { access, chmod, constants, lstat, open, readFile, rm, stat, type FileHandle } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { HullError, errorCode } from '../errors/index.js';
import { decideAccel, hostTscKhz, readHostFacts } from './accel.js';
import { ByteTail, printable } from './byte-tail.js';
import { ConsoleCapture } from './console.js';
import type { Accel, VmDriver, VmExit, VmHandle, VmSpec, VmTemplateRef } from './driver.js';
import { AGENT_PORT_ID, TEMPLATE_STATE_FILE, qemuArgs, qemuPaths, ramBacking, validateSpec, type QemuPaths } from './qemu-args.js';
import { QmpClient } from './qmp.js';

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
/** SAVE_TIMEOUT_MS bounds saveTemplate() (device state only: it takes milliseconds). */
const SAVE_TIMEOUT_MS = 60_000;
/**
 * MAX_STATE_BYTES caps a template's device state (about 75 KiB measured). A stream this large
 * means RAM was not left out (x-ignore-shared did not apply): fail rather than fill the disk.
 */
const MAX_STATE_BYTES = 64 * 1024 * 1024;
/** MIGRATION_CAPABILITIES: leave shared RAM out of the stream; report progress as MIGRATION events. */
const MIGRATION_CAPABILITIES = [
  { capability: 'x-ignore-shared', state: true },
  { capability: 'events', state: true },
];
const MIB = 1024 * 1024;

export class QemuDriver implements VmDriver {
  readonly name = 'qemu';

  constructor(private readonly options: QemuDriverOptions = {}) {}

  async start(spec: VmSpec): Promise<VmHandle> {
    validateSpec(spec);
    const facts = await readHostFacts();
    const { accel } = decideAccel(facts, spec.accel ?? 'auto');
    // Only TCG guests get tsc_early_khz: see hostTscKhz.
    const tscKhz = accel === 'tcg' ? hostTscKhz(facts.cpuinfo) : undefined;
    const paths = qemuPaths(spec.stateDir);
    if (spec.template !== undefined) await checkTemplateFiles(spec, spec.template);
    await refuseIfRunning(spec, paths);
    await removeFiles(paths);
    const args = qemuArgs(spec, accel, paths, { tscKhz, paused: true });
    return QemuVm.launch(spec, accel, paths, args, this.options);
  }
}

/** QemuVm is one QEMU process and what the driver attached to it. */
class QemuVm implements VmHandle {
  readonly pid: number;
  readonly agentSocketPath: string;
  readonly exited: Promise<VmExit>;
  readonly agentPortOpened: Promise<void>;
  private markAgentPortOpened!: () => void;
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

  static async launch(spec: VmSpec, accel: Accel, paths: QemuPaths, args: string[], options: QemuDriverOptions): Promise<QemuVm> {
    const binary = options.binary ?? 'qemu-system-x86_64';
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
    const vm = new QemuVm(spec, accel, paths, child, child.pid, options);
    try {
      await vm.attach(spec.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
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
    private readonly child: ChildProcess,
    pid: number,
    private readonly options: QemuDriverOptions,
  ) {
    this.pid = pid;
    this.agentSocketPath = paths.agentSocket;
    this.agentPortOpened = new Promise((resolve) => (this.markAgentPortOpened = resolve));
    child.stdout?.on('data', (chunk: Buffer) => this.outputTail.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => this.outputTail.push(chunk));
    child.on('error', () => undefined); // a failed kill(); the exit is what we wait for
    this.processExit = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitStatus = { code, signal };
        resolve(this.exitStatus);
      });
    });
    const outputClosed = new Promise<void>((resolve) => child.once('close', () => resolve()));
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

  /** attach connects QMP and the console, checks the agent socket and lets the vCPUs run. */
  private async attach(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const steps = async () => {
      this.qmp = await this.connectQmp(deadline);
      this.checkStopping();
      this.console = await ConsoleCapture.connect(this.paths.consoleSocket, this.paths.consoleLog, {
        maxLogBytes: this.options.consoleLogMaxBytes,
      });
      this.checkStopping();
      // Listen before the guest runs: the event cannot be missed. (A clone's port comes back open
      // from its saved state, announced by the same event once it runs.)
      this.qmp.on('event', (e) => {
        if (e.event === 'VSERPORT_CHANGE' && e.data['id'] === AGENT_PORT_ID && e.data['open'] === true) this.markAgentPortOpened();
      });
      if (this.spec.template !== undefined) {
        await this.restoreTemplate(this.qmp, join(this.spec.template.dir, TEMPLATE_STATE_FILE), deadline);
        this.checkStopping();
      }
      const agent = await lstat(this.paths.agentSocket).catch(() => undefined);
      if (!agent?.isSocket()) throw new HullError('internal', `agent socket "${this.paths.agentSocket}" was not created`);
      // The directory is 0700 already; this keeps the files private if it ever is not. A clone's
      // RAM file is its template's, not this VM's to change.
      const ram = ramBacking(this.spec, this.paths);
      const own = [this.paths.qmpSocket, this.paths.agentSocket, this.paths.consoleSocket, ...(ram.share || ram.path === this.paths.ram ? [ram.path] : [])];
      await Promise.all(own.map((path) => chmod(path, 0o600)));
      await this.qmp.execute('cont', undefined, { timeoutMs: Math.max(1, deadline - Date.now()) });
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

  /**
   * restoreTemplate loads a clone's saved device state: QEMU listens on the migration socket, the
   * driver streams the state file into it, and QEMU reports the migration "completed". The vCPUs
   * stay stopped (-S) until attach() sends `cont`.
   */
  private async restoreTemplate(qmp: QmpClient, stateFile: string, deadline: number): Promise<void> {
    const left = () => Math.max(1, deadline - Date.now());
    await qmp.execute('migrate-set-capabilities', { capabilities: MIGRATION_CAPABILITIES }, { timeoutMs: left() });
    const finished = migrationFinished(qmp, left());
    finished.catch(() => undefined); // awaited below; a failed send must not leave it unhandled
    await qmp.execute('migrate-incoming', { uri: `unix:${this.paths.migrateSocket}` }, { timeoutMs: left() });
    this.checkStopping();
    const socket = await connectUnix(this.paths.migrateSocket);
    const sent = pipeline(createReadStream(stateFile), socket);
    try {
      // Done when QEMU says so, or failed as soon as sending fails (then QEMU's reason is asked).
      await Promise.race([finished, sent.then(() => finished)]);
    } catch (error) {
      socket.destroy();
      throw await migrationError(qmp, 'restoring the template state', error);
    } finally {
      await rm(this.paths.migrateSocket, { force: true });
    }
    await sent.catch(() => undefined); // QEMU has read all of it: it said "completed".
  }

  async saveTemplate(stateFile: string): Promise<void> {
    if (this.spec.templateRamFile === undefined) {
      throw new HullError('failed_precondition', `Cannot save VM "${this.spec.id}" as a template: it was not started with a template RAM file`);
    }
    const qmp = this.runningQmp('saveTemplate');
    const deadline = Date.now() + SAVE_TIMEOUT_MS;
    const left = () => Math.max(1, deadline - Date.now());
    // Stopped for good: the guest must not write the shared RAM file after its state is taken.
    await qmp.execute('stop', undefined, { timeoutMs: left() });
    await qmp.execute('migrate-set-capabilities', { capabilities: MIGRATION_CAPABILITIES }, { timeoutMs: left() });
    const file = await open(stateFile, 'wx', 0o600);
    let server: Server | undefined;
    let saved = false;
    try {
      await rm(this.paths.migrateSocket, { force: true });
      server = await listenUnix(this.paths.migrateSocket);
      const listening = server;
      const received = new Promise<void>((resolve, reject) => {
        listening.once('connection', (connection: Socket) => {
          listening.close(); // one connection: QEMU's
          copyBounded(connection, file, MAX_STATE_BYTES, 'the template device state').then(resolve, (error: unknown) => {
            connection.destroy();
            reject(error);
          });
        });
      });
      received.catch(() => undefined); // awaited below, after the migration's outcome
      const finished = migrationFinished(qmp, left());
      finished.catch(() => undefined);
      await qmp.execute('migrate', { uri: `unix:${this.paths.migrateSocket}` }, { timeoutMs: left() });
      try {
        await finished;
        await withDeadline(received, left(), 'the template state stream to end');
      } catch (error) {
        throw await migrationError(qmp, 'saving the template state', error);
      }
      await file.sync();
      saved = true;
    } finally {
      await file.close();
      server?.close();
      await rm(this.paths.migrateSocket, { force: true });
      if (!saved) await rm(stateFile, { force: true });
    }
  }

  /** stop ends the process (quit or SIGTERM, then SIGKILL after deadlineMs) and removes the files. */
  private async stop(deadlineMs: number): Promise<void> {
    this.stopping = true;
    if (this.exitStatus === undefined && deadlineMs > 0) {
      if (this.qmp !== undefined && !this.qmp.isClosed) {
        // QEMU may close the socket before its answer arrives: the exit is what counts.
        this.qmp.execute('quit', undefined, { timeoutMs: deadlineMs }).catch(() => undefined);
      } else {
        this.child.kill('SIGTERM');
      }
      await withTimeout(this.processExit, deadlineMs);
    }
    if (this.exitStatus === undefined) {
      this.child.kill('SIGKILL'); // a no-op once Node has reaped the child, so never another process
      if (!(await withTimeout(this.processExit, KILL_WAIT_MS))) {
        throw new HullError('internal', `QEMU (pid ${this.pid}) of VM "${this.spec.id}" did not die within ${KILL_WAIT_MS} ms of SIGKILL`);
      }
    }
    this.qmp?.close();
    await this.exited;
    await this.console?.close();
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

/**
 * removeFiles removes what QEMU and the driver create in the state dir, except the console log.
 * A template's RAM file is elsewhere and never removed here.
 */
async function removeFiles(paths: QemuPaths): Promise<void> {
  await Promise.all([paths.qmpSocket, paths.agentSocket, paths.consoleSocket, paths.pidFile, paths.ram, paths.migrateSocket].map((path) => rm(path, { force: true })));
}

/**
 * checkTemplateFiles fails 'not_found' / 'failed_precondition' before QEMU runs when a clone's
 * template is missing or does not fit: a RAM file smaller than the VM would be grown by QEMU, i.e.
 * written, and every other clone of it corrupted.
 */
async function checkTemplateFiles(spec: VmSpec, template: VmTemplateRef): Promise<void> {
  const stateFile = join(template.dir, TEMPLATE_STATE_FILE);
  const [ram, state] = await Promise.all([stat(template.ramFile).catch(() => undefined), stat(stateFile).catch(() => undefined)]);
  const problem =
    ram === undefined || !ram.isFile() ? `RAM file ${template.ramFile} does not exist`
    : state === undefined || !state.isFile() ? `state file ${stateFile} does not exist`
    : ram.size !== spec.memoryMiB * MIB ? `RAM file has ${ram.size} bytes, the VM ${spec.memoryMiB} MiB`
    : undefined;
  if (problem !== undefined) {
    throw new HullError(problem.endsWith('does not exist') ? 'not_found' : 'failed_precondition', `Cannot start VM "${spec.id}" from template ${template.dir}: ${problem}`);
  }
}

/**
 * migrationFinished resolves when QEMU reports the migration "completed" and rejects when it
 * reports "failed" or "cancelled", or after `timeoutMs`. Call it before starting the migration.
 */
async function migrationFinished(qmp: QmpClient, timeoutMs: number): Promise<void> {
  const terminal = new Set(['completed', 'failed', 'cancelled']);
  const event = await qmp.waitForEvent('MIGRATION', timeoutMs, (e) => terminal.has(String(e.data['status'])));
  const status = String(event.data['status']);
  if (status !== 'completed') throw new HullError('internal', `migration ${status}`);
}

/** migrationError explains a failed migration with QEMU's own reason (query-migrate error-desc). */
async function migrationError(qmp: QmpClient, what: string, cause: unknown): Promise<HullError> {
  const info = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate', undefined, { timeoutMs: 1000 }).catch(() => undefined);
  const reason = info?.['error-desc'] ?? (cause instanceof Error ? cause.message : String(cause));
  const code = errorCode(cause);
  return new HullError(code === 'deadline_exceeded' ? code : 'internal', `QEMU failed ${what}: ${reason}`, { cause });
}

function connectUnix(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

async function listenUnix(path: string): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(path, 0o600);
  return server;
}

/** copyBounded writes everything `source` yields to `file`, failing once it passed `max` bytes. */
async function copyBounded(source: AsyncIterable<Buffer>, file: FileHandle, max: number, what: string): Promise<void> {
  let total = 0;
  for await (const chunk of source) {
    total += chunk.length;
    if (total > max) throw new HullError('resource_exhausted', `${what} is larger than ${max} bytes`);
    await file.write(chunk);
  }
}

/** withDeadline settles like `promise`, or rejects 'deadline_exceeded' after `ms`. */
async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HullError('deadline_exceeded', `${what} did not happen within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** refuseIfRunning fails when the pid file names a live QEMU of this very VM (a second start). */
async function refuseIfRunning(spec: VmSpec, paths: QemuPaths): Promise<void> {
  const pid = Number((await readFile(paths.pidFile, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0) return;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (cmdline.split('\0').includes(`hull-${spec.id}`)) {
    throw new HullError('already_exists', `Cannot start VM "${spec.id}": QEMU pid ${pid} is already running it`);
  }
}

function describeExit(status: VmExit): string {
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

/** findExecutable resolves a command as execvp would (a path, or a name on PATH). */
async function findExecutable(command: string): Promise<string | undefined> {
  const candidates = command.includes('/') ? [command] : (process.env.PATH ?? '/usr/bin:/bin').split(':').map((dir) => `${dir}/${command}`);
  for (const candidate of candidates) {
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}
