/**
 * Finding the node's shims and asking them for their sandbox's status. The run root holds one
 * directory per sandbox (`<run_root>/<id>/`, 0700, root's), each with the shim's debug socket
 * (`debug.sock`, host-side: the guest cannot write there). Only such directories are trusted: a
 * symlink, a directory of another user or one others may open is skipped. Each request has a
 * deadline and a size cap, so a hung or hostile shim costs one sandbox's answer, never the caller.
 */
import { lstat, readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { DEBUG_SOCKET } from '../shim/debug-socket.js';
import type { SandboxStatus } from '../shim/sandbox-status.js';
import { checkStatus } from './status-check.js';

const SANDBOX_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,75}$/;
const LEDGER = 'ledger';

/** SHIM_LIMITS: the default deadline of one shim's answer, the most bytes read from it, how many are asked at once. */
export const SHIM_LIMITS = { timeoutMs: 3000, maxBytes: 1 << 20, concurrent: 128 } as const;

/** SandboxDir is a sandbox's state directory; `socket` is set when its shim serves the debug socket. */
export interface SandboxDir {
  id: string;
  dir: string;
  socket?: string;
}

/** listSandboxDirs returns the sandboxes of `runRoot` (none when it does not exist). */
export async function listSandboxDirs(runRoot: string): Promise<SandboxDir[]> {
  const names = await readdir(runRoot).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [] as string[];
    throw e;
  });
  const uid = process.getuid?.() ?? 0;
  const out: SandboxDir[] = [];
  for (const id of names.sort()) {
    if (!SANDBOX_ID.test(id)) continue;
    const dir = join(runRoot, id);
    const st = await lstat(dir).catch(() => undefined);
    if (!st?.isDirectory() || st.uid !== uid || (st.mode & 0o077) !== 0) continue;
    // A sandbox directory holds its ledger from the start; other directories are not sandboxes.
    const ledger = await lstat(join(dir, LEDGER)).catch(() => undefined);
    if (!ledger?.isFile()) continue;
    const socket = await lstat(join(dir, DEBUG_SOCKET)).catch(() => undefined);
    out.push({ id, dir, ...(socket?.isSocket() && socket.uid === uid ? { socket: join(dir, DEBUG_SOCKET) } : {}) });
  }
  return out;
}

export interface ShimRequestOptions {
  timeoutMs?: number;
  maxBytes?: number;
}

/** getFromShim GETs `path` on a debug socket: the body, or an Error (timeout, size, status, transport). */
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

/** readStatus asks one sandbox's shim for its status (`metrics`: GET /metrics, else GET /status). */
export async function readStatus(sandbox: SandboxDir, metrics: boolean, options: ShimRequestOptions = {}): Promise<ShimAnswer> {
  if (!sandbox.socket) return { id: sandbox.id, error: 'no debug socket (the shim is starting or gone)' };
  try {
    const body = await getFromShim(sandbox.socket, metrics ? '/metrics' : '/status', options);
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
 * readAll asks every sandbox of `runRoot`, up to SHIM_LIMITS.concurrent at once: with up to that
 * many sandboxes, the slowest answer (or its deadline) bounds the time.
 */
export async function readAll(runRoot: string, metrics: boolean, options: ShimRequestOptions = {}): Promise<ShimAnswer[]> {
  const dirs = await listSandboxDirs(runRoot);
  const answers: ShimAnswer[] = new Array(dirs.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < dirs.length; i = next++) answers[i] = await readStatus(dirs[i]!, metrics, options);
  };
  await Promise.all(Array.from({ length: Math.min(SHIM_LIMITS.concurrent, dirs.length) }, worker));
  return answers;
}
