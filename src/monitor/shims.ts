/**
 * Finding the node's shims and asking them for their sandbox's status. Each shim serves a read-only
 * status socket, `<status_dir>/<id>.sock` (src/shim/status-socket.ts: GET /status and /metrics
 * only), which is all `hull monitor` reaches: the status directory is root's, group-readable by the
 * monitor's group, and only a socket of root (or of the caller) there is trusted. `hull ps` and
 * `hull console` (root) also list the run root, which holds one directory per sandbox
 * (`<run_root>/<id>/`, 0700, root's, with the shim's root-only debug socket `debug.sock`; host-side:
 * the guest cannot write there): a symlink, a directory of another user or one others may open is
 * skipped. Each request has a deadline and a size cap, so a hung or hostile shim costs one
 * sandbox's answer, never the caller.
 */
import { lstat, readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { DEBUG_SOCKET } from '../shim/debug-socket.js';
import type { SandboxStatus } from '../shim/sandbox-status.js';
import { checkStatus } from './status-check.js';

const SANDBOX_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,75}$/;
const STATUS_SOCKET = /^([A-Za-z0-9][A-Za-z0-9._-]{0,75})\.sock$/;
const LEDGER = 'ledger';

/** SHIM_LIMITS: the default deadline of one shim's answer, the most bytes read from it, how many are asked at once. */
export const SHIM_LIMITS = { timeoutMs: 3000, maxBytes: 1 << 20, concurrent: 128 } as const;

/** ShimEndpoint is a sandbox and its shim's status socket, when it serves one. */
export interface ShimEndpoint {
  id: string;
  statusSocket?: string;
}

/** SandboxDir is a sandbox's state directory; `debugSocket` is set when its shim serves the debug socket. */
export interface SandboxDir extends ShimEndpoint {
  dir: string;
  debugSocket?: string;
}

// trusted: owned by root or by this process's user (a test, a shim run by hand).
const trustedOwner = (uid: number): boolean => uid === 0 || uid === (process.getuid?.() ?? 0);

const missingIsEmpty = (e: NodeJS.ErrnoException): string[] => {
  if (e.code === 'ENOENT') return [];
  throw e;
};

/** trustedSocket returns `path` when it is a socket of a trusted owner (never through a symlink). */
async function trustedSocket(path: string): Promise<string | undefined> {
  const st = await lstat(path).catch(() => undefined);
  return st?.isSocket() && trustedOwner(st.uid) ? path : undefined;
}

/** trustedDir tells whether `dir` is a directory (not a symlink) of a trusted owner that no one else may write. */
async function trustedDir(dir: string): Promise<boolean> {
  const st = await lstat(dir).catch(() => undefined);
  return Boolean(st?.isDirectory() && trustedOwner(st.uid) && (st.mode & 0o022) === 0);
}

/** listStatusSockets returns the sandboxes whose shims serve a status socket in `statusDir` (none when it does not exist). */
export async function listStatusSockets(statusDir: string): Promise<ShimEndpoint[]> {
  const names = await readdir(statusDir).catch(missingIsEmpty);
  if (names.length === 0 || !(await trustedDir(statusDir))) return [];
  const out: ShimEndpoint[] = [];
  for (const name of names.sort()) {
    const id = STATUS_SOCKET.exec(name)?.[1];
    if (!id) continue;
    const socket = await trustedSocket(join(statusDir, name));
    if (socket) out.push({ id, statusSocket: socket });
  }
  return out;
}

/**
 * listSandboxDirs returns the sandboxes of `runRoot` (none when it does not exist), each with its
 * debug socket and, given `statusDir`, its status socket, when the shim serves them.
 */
export async function listSandboxDirs(runRoot: string, statusDir?: string): Promise<SandboxDir[]> {
  const names = await readdir(runRoot).catch(missingIsEmpty);
  const uid = process.getuid?.() ?? 0;
  const statusTrusted = statusDir !== undefined && (await trustedDir(statusDir));
  const out: SandboxDir[] = [];
  for (const id of names.sort()) {
    if (!SANDBOX_ID.test(id)) continue;
    const dir = join(runRoot, id);
    const st = await lstat(dir).catch(() => undefined);
    if (!st?.isDirectory() || st.uid !== uid || (st.mode & 0o077) !== 0) continue;
    // A sandbox directory holds its ledger from the start; other directories are not sandboxes.
    const ledger = await lstat(join(dir, LEDGER)).catch(() => undefined);
    if (!ledger?.isFile()) continue;
    const debug = await lstat(join(dir, DEBUG_SOCKET)).catch(() => undefined);
    const statusSocket = statusTrusted ? await trustedSocket(join(statusDir, `${id}.sock`)) : undefined;
    out.push({ id, dir, ...(debug?.isSocket() && debug.uid === uid ? { debugSocket: join(dir, DEBUG_SOCKET) } : {}), ...(statusSocket ? { statusSocket } : {}) });
  }
  return out;
}

export interface ShimRequestOptions {
  timeoutMs?: number;
  maxBytes?: number;
}

/** getFromShim GETs `path` on a shim's socket: the body, or an Error (timeout, size, status, transport). */
export function getFromShim(socket: string, path: string, options: ShimRequestOptions = {}): Promise<Buffer> {
  const timeoutMs = options.timeoutMs ?? SHIM_LIMITS.timeoutMs;
  const maxBytes = options.maxBytes ?? SHIM_LIMITS.maxBytes;
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (e: Error | undefined, body?: Buffer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (e) {
        req.destroy();
        reject(e);
      } else resolve(body!);
    };
    // One deadline for the whole exchange: connect, headers and body (a shim that trickles bytes included).
    const timer = setTimeout(() => finish(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    const req = request({ socketPath: socket, path, method: 'GET', headers: { host: 'hull' }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let length = 0;
      res.on('data', (chunk: Buffer) => {
        length += chunk.length;
        if (length > maxBytes) finish(new Error(`answer over ${maxBytes} bytes`));
        else chunks.push(chunk);
      });
      res.on('end', () => {
        if (res.statusCode !== 200) finish(new Error(`status ${res.statusCode}: ${Buffer.concat(chunks).toString('utf8', 0, 200).trim()}`));
        else finish(undefined, Buffer.concat(chunks));
      });
      res.on('error', (e) => finish(e));
    });
    req.on('error', (e) => finish(e));
    req.end();
  });
}

/** ShimAnswer is one sandbox's status, or why there is none. */
export type ShimAnswer = { id: string; status: SandboxStatus } | { id: string; error: string };

export const NO_STATUS_SOCKET = 'no status socket (the shim is starting or gone)';

/** readStatus asks one sandbox's shim, on its status socket, for its status (`metrics`: GET /metrics, else GET /status). */
export async function readStatus(sandbox: ShimEndpoint, metrics: boolean, options: ShimRequestOptions = {}): Promise<ShimAnswer> {
  if (!sandbox.statusSocket) return { id: sandbox.id, error: NO_STATUS_SOCKET };
  try {
    const body = await getFromShim(sandbox.statusSocket, metrics ? '/metrics' : '/status', options);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw new Error('answer is not JSON');
    }
    return { id: sandbox.id, status: checkStatus(parsed, sandbox.id) };
  } catch (e) {
    return { id: sandbox.id, error: (e as Error).message.slice(0, 300) };
  }
}

/**
 * readAll asks every sandbox of `sandboxes`, up to SHIM_LIMITS.concurrent at once: with up to that
 * many sandboxes, the slowest answer (or its deadline) bounds the time.
 */
export async function readAll(sandboxes: readonly ShimEndpoint[], metrics: boolean, options: ShimRequestOptions = {}): Promise<ShimAnswer[]> {
  const answers: ShimAnswer[] = new Array(sandboxes.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < sandboxes.length; i = next++) answers[i] = await readStatus(sandboxes[i]!, metrics, options);
  };
  await Promise.all(Array.from({ length: Math.min(SHIM_LIMITS.concurrent, sandboxes.length) }, worker));
  return answers;
}
