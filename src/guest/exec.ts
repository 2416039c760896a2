/**
 * exec — runs the host tools the guest builder needs (apt-get, dpkg-deb, ldd, mkfs.ext4, …) and
 * turns their failures into HullErrors that quote the command and the tail of its stderr.
 */

import { spawn } from 'node:child_process';
import { HullError } from '../errors/index.js';

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** code is the exit status, or null when a signal ended the process. */
  code: number | null;
}

export interface ExecOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** allowFailure returns a non-zero exit as a result instead of throwing. */
  allowFailure?: boolean;
  /** maxOutputBytes caps what is kept of stdout and of stderr (default 16 MiB each). */
  maxOutputBytes?: number;
}

/** exec runs `cmd args` without a shell and collects its output. */
export function exec(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const limit = opts.maxOutputBytes ?? 16 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      // Tools' output is parsed: keep it in the C locale.
      env: { ...(opts.env ?? process.env), LC_ALL: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    child.stdout.on('data', (b: Buffer) => {
      if (outBytes < limit) out.push(b);
      outBytes += b.length;
    });
    child.stderr.on('data', (b: Buffer) => {
      if (errBytes < limit) err.push(b);
      errBytes += b.length;
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      const code = e.code === 'ENOENT' ? 'failed_precondition' : 'internal';
      const what = e.code === 'ENOENT' ? `Cannot run "${cmd}": not installed` : `Cannot run "${cmd}"`;
      reject(new HullError(code, what, { cause: e }));
    });
    child.on('close', (code, signal) => {
      const result = { stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), code };
      if (code === 0 || opts.allowFailure) {
        resolve(result);
        return;
      }
      const status = code === null ? `signal ${signal}` : `exit status ${code}`;
      reject(new HullError('internal', `Command failed (${status}): ${describe(cmd, args)}${tail(result.stderr)}`));
    });
  });
}

/** describe renders a command line for messages. */
export function describe(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/** tail gives the last few lines of a tool's stderr, prefixed for appending to a message. */
export function tail(stderr: string, lines = 6): string {
  const kept = stderr.trim().split('\n').slice(-lines).join('\n');
  return kept === '' ? '' : `:\n${kept}`;
}
