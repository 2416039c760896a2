/**
 * The shim's read-only status socket: `<status_dir>/<sandbox-id>.sock`, HTTP over a unix socket that
 * answers GET /status and GET /metrics (the sandbox's SandboxStatus, sandbox-status.ts) and nothing
 * else: every other method is 405, every other path 404, no upgrade. It is what `hull monitor` and
 * `hull ps` read, so that the monitor never needs the debug socket (debug-socket.ts: stopping the VM,
 * the console, agent calls), which stays root's alone in the sandbox's 0700 state directory.
 *
 * status_dir is host-only (the guest shares nothing of it; QEMU's jail does not see it) and root's:
 * root:<monitor_gid> 0750, each socket root:<monitor_gid> 0660, so that the monitor's group, and no
 * one else but root, may connect. Requests of one kind that arrive while one is answered share its
 * answer: a client that asks in a loop costs the guest one stats call at a time.
 */
import { chmod, chown, lstat, mkdir, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { listenUnix } from '../common/unix-socket.js';
import { HullError } from '../errors/index.js';
import type { SandboxStatus } from './sandbox-status.js';

export const STATUS_DIR_MODE = 0o750;
export const STATUS_SOCKET_MODE = 0o660;
// A client may hold a few connections; the monitor keeps one per scrape.
const MAX_CONNECTIONS = 16;

/** statusSocketPath is `<statusDir>/<sandboxId>.sock`. */
export function statusSocketPath(statusDir: string, sandboxId: string): string {
  return join(statusDir, `${sandboxId}.sock`);
}

/**
 * prepareStatusDir makes `dir` (or takes the one there) root:<gid> 0750. A symlink, a non-directory or
 * a directory of another user is refused: the sockets are made there as root.
 */
export async function prepareStatusDir(dir: string, gid: number): Promise<void> {
  await mkdir(dir, { recursive: true, mode: STATUS_DIR_MODE });
  const st = await lstat(dir);
  const uid = process.getuid?.() ?? 0;
  if (!st.isDirectory() || st.uid !== uid) throw new HullError('failed_precondition', `Status directory "${dir}" is not a directory of uid ${uid}`);
  if (st.gid !== gid) await chown(dir, uid, gid);
  if ((st.mode & 0o7777) !== STATUS_DIR_MODE) await chmod(dir, STATUS_DIR_MODE);
}

export interface StatusSocket {
  close(): Promise<void>;
}

/**
 * serveStatusSocket listens on `path` (root:<gid> 0660) until close(). The caller records the path in
 * the sandbox's ledger first and has made the directory with prepareStatusDir.
 */
export async function serveStatusSocket(path: string, gid: number, status: (metrics: boolean) => Promise<SandboxStatus>, log: (line: string) => void): Promise<StatusSocket> {
  const inFlight = new Map<boolean, Promise<SandboxStatus>>();
  const shared = (metrics: boolean): Promise<SandboxStatus> => {
    let answer = inFlight.get(metrics);
    if (!answer) {
      answer = status(metrics).finally(() => inFlight.delete(metrics));
      inFlight.set(metrics, answer);
    }
    return answer;
  };
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '';
    if (url !== '/status' && url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('GET /status or /metrics\n');
      return;
    }
    if (req.method !== 'GET') {
      res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET' }).end('read-only: GET only\n');
      return;
    }
    shared(url === '/metrics').then(
      (s) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(s) + '\n'),
      (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`status: ${e.message}\n`),
    );
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.on('error', (e) => log(`status socket: ${e.message}`));
  // An upgrade (a console, anything) is never served here.
  server.on('upgrade', (_req, socket) => socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'));
  await listenUnix(server, path);
  await chown(path, process.getuid?.() ?? 0, gid);
  await chmod(path, STATUS_SOCKET_MODE);
  return {
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(path, { force: true });
    },
  };
}
