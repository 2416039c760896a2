/**
 * run — the one way hull runs a helper program (mount, ip, tc, nft, crun, apt-get, mkfs.ext4, …), on
 * the host and in the guest: no shell, output collected up to a bound, an optional deadline, and a
 * failure turned into a HullError that quotes the command and the tail of its stderr.
 */
import { spawn } from 'node:child_process';
import { HullError } from '../errors/index.js';

export interface RunResult {
  stdout: string;
  stderr: string;
  /** code is the exit status, or null when a signal ended the process. */
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** input is written to the program's stdin (which is otherwise empty). */
  input?: string | Uint8Array;
  /** timeoutMs ends the program with SIGKILL after this long; it then counts as failed. */
  timeoutMs?: number;
  /** allowFailure returns a non-zero exit as a result instead of throwing. */
  allowFailure?: boolean;
  /** maxOutputBytes caps what is kept of stdout and of stderr (default 16 MiB each). */
  maxOutputBytes?: number;
}

/** run runs `file args` and collects its output; it rejects when the program cannot start or fails. */
export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const limit = opts.maxOutputBytes ?? 16 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: opts.cwd,
      // Tools' output is parsed and quoted in errors: keep it in the C locale.
      env: { ...(opts.env ?? process.env), LC_ALL: 'C' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out = collect(child.stdout, limit);
    const err = collect(child.stderr, limit);
    let timedOut = false;
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    // A program that exits before reading its input gives EPIPE here; its exit status reports the failure.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const missing = e.code === 'ENOENT';
      reject(new HullError(missing ? 'failed_precondition' : 'internal', missing ? `Cannot run "${file}": not installed` : `Cannot run "${file}": ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = { stdout: out(), stderr: err(), code, signal };
      if ((code === 0 || opts.allowFailure) && !timedOut) {
        resolve(result);
        return;
      }
      const status = timedOut ? `killed after ${opts.timeoutMs} ms` : code === null ? `signal ${signal}` : `exit status ${code}`;
      reject(new HullError(timedOut ? 'deadline_exceeded' : 'internal', `Command failed (${status}): ${describeCommand(file, args)}${stderrTail(result.stderr)}`));
    });
  });
}

function collect(stream: NodeJS.ReadableStream, limit: number): () => string {
  const chunks: Buffer[] = [];
  let bytes = 0;
  stream.on('data', (b: Buffer) => {
    if (bytes < limit) chunks.push(b);
    bytes += b.length;
  });
  return () => Buffer.concat(chunks).toString('utf8');
}

/** describeCommand renders a command line for messages. */
export function describeCommand(file: string, args: readonly string[]): string {
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/** stderrTail is the last few lines of a program's stderr, prefixed for appending to a message. */
export function stderrTail(stderr: string, lines = 6): string {
  const kept = stderr.trim().split('\n').slice(-lines).join('\n');
  return kept === '' ? '' : `:\n${kept}`;
}
