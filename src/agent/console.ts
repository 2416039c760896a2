/**
 * GuestConsole runs console processes (`hull console`): commands in the guest's own namespaces, as
 * root, outside every container, with the stdio of any other process. Only the host enables it
 * (SetupSandbox's debug_console); off, every console request is refused.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { HullError } from '../errors/index.js';
import type { OciProcess } from '../common/oci.js';
import { checkId } from './guest-spec.js';
import { GuestProcess, type StdioRequest } from './process.js';

const CONSOLE_DIR = '/run/hull/console';
// At most this many console processes at once: each holds stdio buffers in the agent.
const MAX_CONSOLES = 8;
const MAX_ARGS = 256;
const MAX_ARG_BYTES = 64 * 1024;
// Writes its pid where GuestProcess waits for it, then becomes the command: the pid is the command's.
const PID_THEN_EXEC = 'echo $$ > "$0" && exec "$@"';
const ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', SHELL: '/bin/sh', TERM: 'xterm' };

export class GuestConsole {
  readonly #dir: string;
  #enabled = false;
  // exec id -> process; changed only by start() and remove().
  readonly #processes = new Map<string, GuestProcess>();

  /** dir holds the processes' pid files (a test's own directory; else /run/hull/console). */
  constructor(dir = CONSOLE_DIR) {
    this.#dir = dir;
  }

  /** enable is the host's (SetupSandbox); nothing turns the console off again but a new VM. */
  enable(): void {
    this.#enabled = true;
  }

  get count(): number {
    return this.#processes.size;
  }

  async start(execId: string, processSpec: OciProcess, stdio: StdioRequest): Promise<number> {
    if (!this.#enabled) throw new HullError('failed_precondition', 'The debug console is off in this sandbox (the host did not enable it)');
    checkId('exec id', execId);
    if (this.#processes.has(execId)) throw new HullError('already_exists', `Console process "${execId}" already exists`);
    if (this.#processes.size >= MAX_CONSOLES) throw new HullError('resource_exhausted', `At most ${MAX_CONSOLES} console processes at once`);
    const args = checkArgs(processSpec.args);
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const pidFile = join(this.#dir, `${execId}.pid`);
    await rm(pidFile, { force: true });
    const proc = new GuestProcess({ command: ['/bin/sh', '-c', sizeTerminal(stdio) + PID_THEN_EXEC, pidFile, ...args], stdio, pidFile, env: ENV });
    this.#processes.set(execId, proc);
    try {
      return await proc.start();
    } catch (e) {
      await this.remove(execId);
      throw e;
    }
  }

  process(execId: string): GuestProcess {
    const proc = this.#processes.get(execId);
    if (!proc) throw new HullError('not_found', `Console process "${execId}" not found`);
    return proc;
  }

  /** remove ends the process if it still runs and forgets it, with its pid file. */
  async remove(execId: string): Promise<void> {
    const proc = this.process(execId);
    this.#processes.delete(execId);
    await proc.release();
    await rm(join(this.#dir, `${execId}.pid`), { force: true });
  }

  async removeAll(): Promise<void> {
    await Promise.allSettled([...this.#processes.keys()].map((id) => this.remove(id)));
  }
}

/** sizeTerminal sets the terminal's size before the command runs (script's new pty has none). */
function sizeTerminal(stdio: StdioRequest): string {
  const valid = (n: number) => Number.isInteger(n) && n > 0 && n <= 0xffff;
  return stdio.terminal && valid(stdio.rows) && valid(stdio.cols) ? `stty rows ${stdio.rows} cols ${stdio.cols} 2>/dev/null; ` : '';
}

function checkArgs(args: unknown): string[] {
  if (!Array.isArray(args) || args.length === 0 || args.length > MAX_ARGS || !args.every((a) => typeof a === 'string')) {
    throw new HullError('invalid_argument', `Invalid console command: a list of 1 to ${MAX_ARGS} strings`);
  }
  if (args.reduce((n: number, a: string) => n + Buffer.byteLength(a), 0) > MAX_ARG_BYTES) {
    throw new HullError('invalid_argument', `Invalid console command: over ${MAX_ARG_BYTES} bytes`);
  }
  return args as string[];
}
