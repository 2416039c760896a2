/**
 * GuestProcess is one process the agent runs: a container's init or exec as a foreground
 * `crun run` / `crun exec` child, so the agent is its parent and learns its exit status without
 * being a subreaper (Node cannot be one), an exec started by the syscall tape program (direct
 * exec, direct-exec.ts: its parent stays the agent's child and reports the exit), or a console
 * process (console.ts). In terminal mode the
 * command runs under util-linux `script`, which gives it a terminal on its stdin (crun requires
 * one, and relays it to the container's own pty).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { constants } from 'node:os';
import { basename, dirname } from 'node:path';
import { HullError } from '../errors/index.js';
import { OutputBuffer } from './output-buffer.js';
import { EXIT_RECORD, PID_RECORD, type DirectExecPlan } from './direct-exec.js';
import { STARTER_PATH } from './exec-starter.js';

export interface StdioRequest {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  terminal: boolean;
  rows: number;
  cols: number;
}

export interface ProcessExit {
  /** exitStatus is 128+signal for a signal death, as a shell reports it. */
  exitStatus: number;
  exitedAtMs: number;
}

export interface GuestProcessOptions {
  /** command: the program and its arguments (crunCommand's for a container process). */
  command: string[];
  stdio: StdioRequest;
  /** pidFile the command writes once the process exists (not for `direct`). */
  pidFile?: string;
  /** logFile crun writes its own errors to (JSON lines); none for other commands. */
  logFile?: string;
  /** env of the command (default: a minimal PATH, SHELL and TERM). */
  env?: Record<string, string>;
  /**
   * direct: the syscall tape program runs this tape (direct-exec.ts) and reports the pid, a failure or
   * the exit status on fd 4 instead of a pid file; the program is `starter`, the agent's descriptor of
   * the sealed exec starter (exec-starter.ts), run by fd. `command` is then unused.
   */
  direct?: DirectExecPlan;
  starter?: number;
}

const CRUN = '/usr/bin/crun';
const SCRIPT = '/usr/bin/script';
const DEFAULT_ENV = { PATH: '/usr/bin:/bin', SHELL: '/bin/sh', TERM: 'xterm' };

/** crunCommand is the command line of crun running `args`, its errors logged to `logFile`. */
export function crunCommand(logFile: string, args: string[]): string[] {
  return [CRUN, `--log=file:${logFile}`, '--log-format=json', ...args];
}

export class GuestProcess {
  readonly stdout = new OutputBuffer();
  readonly stderr = new OutputBuffer();
  readonly stdio: StdioRequest;
  pid = 0;
  exit: ProcessExit | undefined;
  readonly exited: Promise<ProcessExit>;
  #resolveExited!: (exit: ProcessExit) => void;
  #child: ChildProcess | undefined;
  readonly #options: GuestProcessOptions;

  constructor(options: GuestProcessOptions) {
    this.#options = options;
    this.stdio = options.stdio;
    this.exited = new Promise((resolve) => (this.#resolveExited = resolve));
  }

  /**
   * start spawns the command and resolves with the process's pid once the command has written
   * it. If the command exits first, the start failed: the error carries crun's own message (e.g.
   * "executable file `x` not found in $PATH").
   */
  async start(): Promise<number> {
    const { stdio, command, starter } = this.#options;
    const direct = starter !== undefined ? this.#options.direct : undefined;
    if (this.#options.direct && !direct) throw new HullError('internal', 'A direct exec needs the exec starter');
    const [file, args] = direct
      ? [STARTER_PATH, []]
      : stdio.terminal
        ? [SCRIPT, ['-q', '-e', '-E', 'never', '-c', shellQuote(command), '/dev/null']]
        : [command[0]!, command.slice(1)];
    // A direct exec's fds: 3 the tape, 4 the records, 5 (STARTER_FD) the starter, closed by the tape first thing.
    const extra = direct ? (['pipe', 'pipe', starter!] as const) : [];
    const child = spawn(file, args, {
      stdio: [stdio.stdin ? 'pipe' : 'ignore', stdio.stdout ? 'pipe' : 'ignore', stdio.stderr && !stdio.terminal ? 'pipe' : 'ignore', ...extra],
      env: direct ? {} : (this.#options.env ?? DEFAULT_ENV),
    });
    this.#child = child;
    if (child.stdout) this.stdout.attach(child.stdout);
    else this.stdout.end();
    if (child.stderr) this.stderr.attach(child.stderr);
    else this.stderr.end();
    child.stdin?.on('error', () => {}); // EPIPE after the process exited is expected
    const records = direct ? readRecords(child.stdio[4] as Readable) : undefined;
    if (direct) {
      const tapeIn = child.stdio[3] as Writable;
      tapeIn.on('error', () => {}); // the program died before reading it: its exit says so
      tapeIn.end(direct.tape);
    }
    child.once('exit', (code, signal) => {
      const finish = (waitStatus: number | undefined): void => {
        this.exit = { exitStatus: waitStatus !== undefined ? shellStatus(waitStatus) : (code ?? 128 + signalNumber(signal)), exitedAtMs: Date.now() };
        this.#resolveExited(this.exit);
      };
      // The tape program reports the process's wait status on fd 4 before it exits (none if it was killed).
      if (records) void records.ended.then(() => finish(records.exitStatus));
      else finish(undefined);
    });
    const spawnFailed = new Promise<never>((_, reject) =>
      child.once('error', (e) => reject(new HullError('internal', `Cannot run ${file}: ${e.message}`, { cause: e }))),
    );

    if (records && direct) {
      const started = await Promise.race([records.started, spawnFailed]);
      if (typeof started === 'number') {
        this.pid = started;
        return started;
      }
      const detail = started ? direct.describe(started.op, started.errno) : `the exec program ended with status ${(await this.exited).exitStatus}`;
      throw new HullError('failed_precondition', `Cannot start process: ${detail}`);
    }
    const pid = await Promise.race([waitForPidFile(this.#options.pidFile ?? '', this.exited), spawnFailed]);
    if (pid === undefined) throw await this.#startError();
    this.pid = pid;
    return pid;
  }

  async #startError(): Promise<HullError> {
    const log = this.#options.logFile ? await readFile(this.#options.logFile, 'utf8').catch(() => '') : '';
    const messages = crunErrorMessages(log);
    const detail = messages.length > 0 ? messages.join('; ') : `${basename(this.#options.command[0] ?? '')} exited with status ${this.exit?.exitStatus}`;
    return new HullError('failed_precondition', `Cannot start process: ${detail}`);
  }

  async writeStdin(data: Uint8Array): Promise<number> {
    const stdin = this.#child?.stdin;
    if (!stdin || stdin.destroyed || stdin.writableEnded) throw new HullError('failed_precondition', 'stdin is closed');
    await new Promise<void>((resolve, reject) => stdin.write(data, (e) => (e ? reject(e) : resolve())));
    return data.length;
  }

  closeStdin(): void {
    this.#child?.stdin?.end();
  }

  signal(signal: number): void {
    if (this.exit || this.pid === 0) throw new HullError('not_found', 'process already finished');
    try {
      process.kill(this.pid, signal);
    } catch (e) {
      throw new HullError('not_found', 'process already finished', { cause: e });
    }
  }

  /** resize sets the window size of the process's terminal (its fd 0 is the pty). */
  async resize(rows: number, cols: number): Promise<void> {
    if (!this.stdio.terminal) throw new HullError('failed_precondition', 'process has no terminal');
    if (this.exit || this.pid === 0) throw new HullError('not_found', 'process already finished');
    await new Promise<void>((resolve, reject) =>
      execFile('/bin/stty', ['-F', `/proc/${this.pid}/fd/0`, 'rows', String(rows), 'cols', String(cols)], (e) =>
        e ? reject(new HullError('internal', `Cannot resize terminal: ${e.message}`)) : resolve(),
      ),
    );
  }

  /** kill ends the crun child itself, for when the container is being torn down. */
  killCrun(): void {
    if (!this.exit) this.#child?.kill('SIGKILL');
  }

  /**
   * release ends the process if it still runs (SIGKILL to it and to its crun parent), waits for
   * crun to be gone, and drops its stdio: readers still blocked get end of stream.
   */
  async release(): Promise<void> {
    if (this.#child && !this.exit) {
      if (this.pid > 0) {
        try {
          process.kill(this.pid, 9);
        } catch {
          // already gone
        }
      }
      this.killCrun();
      await this.exited;
    }
    for (const stream of [this.#child?.stdin, this.#child?.stdout, this.#child?.stderr]) stream?.destroy();
    this.stdout.end();
    this.stderr.end();
    this.#child = undefined;
  }
}

interface Records {
  /** started: the pid, the failed step, or undefined if the stream ended without either. */
  started: Promise<number | { op: number; errno: number } | undefined>;
  ended: Promise<void>;
  exitStatus: number | undefined;
}

/** readRecords follows the tape program's 16-byte records (direct-exec.ts) on `stream`. */
function readRecords(stream: Readable): Records {
  let pending = Buffer.alloc(0);
  let resolveStarted!: Records['started'] extends Promise<infer T> ? (v: T) => void : never;
  const out: Records = { started: new Promise((r) => (resolveStarted = r)), ended: Promise.resolve(), exitStatus: undefined };
  out.ended = new Promise<void>((resolve) => {
    stream.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 16) {
        const kind = pending.readBigInt64LE(0);
        const value = pending.readBigInt64LE(8);
        pending = pending.subarray(16);
        if (kind === PID_RECORD) resolveStarted(Number(value));
        else if (kind === EXIT_RECORD) out.exitStatus = Number(value & 0xffffn);
        else resolveStarted({ op: Number(kind), errno: Number(value) });
      }
    });
    const end = (): void => {
      resolveStarted(undefined);
      resolve();
    };
    stream.once('end', end);
    stream.once('close', end);
    stream.once('error', end);
  });
  return out;
}

/** shellStatus is a wait status as a shell reports it: the exit code, or 128 + the signal. */
function shellStatus(waitStatus: number): number {
  const signal = waitStatus & 0x7f;
  return signal === 0 ? (waitStatus >> 8) & 0xff : 128 + signal;
}

/** waitForPidFile resolves with the pid crun wrote, or undefined if `exited` settles first. */
async function waitForPidFile(pidFile: string, exited: Promise<unknown>): Promise<number | undefined> {
  const dir = dirname(pidFile);
  const name = basename(pidFile);
  let wake: () => void = () => {};
  const watcher = watch(dir, (_event, file) => {
    if (file === null || file === name) wake();
  });
  let done = false;
  void exited.then(() => {
    done = true;
    wake();
  });
  try {
    for (;;) {
      const changed = new Promise<void>((resolve) => (wake = resolve));
      const pid = await readPid(pidFile);
      if (pid !== undefined) return pid;
      if (done) return readPid(pidFile);
      await changed;
    }
  } finally {
    watcher.close();
  }
}

async function readPid(pidFile: string): Promise<number | undefined> {
  const text = await readFile(pidFile, 'utf8').catch(() => '');
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** crunErrorMessages picks the error messages out of crun's JSON log. */
export function crunErrorMessages(log: string): string[] {
  const messages: string[] = [];
  for (const line of log.split('\n')) {
    if (!line.trim()) continue;
    try {
      const entry = JSON.parse(line) as { level?: unknown; msg?: unknown };
      if (entry.level === 'error' && typeof entry.msg === 'string') messages.push(entry.msg);
    } catch {
      messages.push(line.trim());
    }
  }
  return messages;
}

export function shellQuote(words: string[]): string {
  return words.map((w) => `'${w.replaceAll("'", `'\\''`)}'`).join(' ');
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return (signal && constants.signals[signal]) ?? 0;
}
