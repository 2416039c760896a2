/**
 * The shim's debug socket: `<sandbox state dir>/debug.sock` (0600, in the 0700 state directory),
 * HTTP over a unix socket as Kata's shim-monitor socket is. `GET /agent` answers what the guest
 * agent holds (its memory after a full GC, its exec records and bundle files per container), as
 * JSON: what tests read to show that execs leave nothing behind. `GET /status` and `GET /metrics`
 * answer the sandbox's SandboxStatus (sandbox-status.ts), as the status socket does.
 * `POST /vm/stop` stops the VM's vCPUs (QMP `stop`, on the shim's own QMP connection: QEMU serves
 * one client), as a wedged guest would be: what fault tests do. `POST /console`, upgraded, is
 * `hull console`'s session (console.ts). Only root reaches it; the socket goes with the state
 * directory when the sandbox is destroyed. `hull ps` and `hull monitor` read the status socket
 * instead (status-socket.ts: GET /status and /metrics only, for the monitor's group).
 */
import { rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { listenUnix } from '../common/unix-socket.js';
import type { AgentClient, Sandbox } from '../sandbox/index.js';
import { readDebugState } from '../sandbox/agent-client.js';
import type { SandboxStatus } from './sandbox-status.js';
import { CONSOLE_PATH } from './console-protocol.js';
import type { ConsoleServer } from './console.js';

export const DEBUG_SOCKET = 'debug.sock';
const DEBUG_CALL_TIMEOUT_MS = 10_000;

export interface DebugSocket {
  close(): Promise<void>;
}

/** serveDebugSocket listens on `<stateDir>/debug.sock`; failures are logged, never fatal. */
export async function serveDebugSocket(stateDir: string, agent: AgentClient, vm: Pick<Sandbox['vm'], 'pause'>, log: (line: string) => void, status?: (metrics: boolean) => Promise<SandboxStatus>, consoleServer?: ConsoleServer): Promise<DebugSocket> {
  const path = join(stateDir, DEBUG_SOCKET);
  const server: Server = createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/vm/stop') {
      log('debug socket: stopping the VM\'s vCPUs (QMP stop)');
      vm.pause().then(
        () => res.writeHead(200, { 'content-type': 'text/plain' }).end('stopped\n'),
        (e: Error) => res.writeHead(409, { 'content-type': 'text/plain' }).end(`vm: ${e.message}\n`),
      );
      return;
    }
    if (req.method === 'GET' && status && (req.url === '/status' || req.url === '/metrics')) {
      status(req.url === '/metrics').then(
        (s) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(s) + '\n'),
        (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`status: ${e.message}\n`),
      );
      return;
    }
    if (req.method !== 'GET' || req.url !== '/agent') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('GET /agent, /status or /metrics; POST /vm/stop; POST /console (upgraded)\n');
      return;
    }
    readDebugState(agent, DEBUG_CALL_TIMEOUT_MS).then(
      (state) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(state) + '\n'),
      (e: Error) => res.writeHead(502, { 'content-type': 'text/plain' }).end(`agent: ${e.message}\n`),
    );
  });
  server.on('error', (e) => log(`debug socket: ${e.message}`));
  server.on('upgrade', (req, socket, head) => {
    if (req.url === CONSOLE_PATH && consoleServer) consoleServer.handle(req, socket, head);
    else socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
  });
  await listenUnix(server, path);
  return {
    close: async () => {
      consoleServer?.closeAll();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(path, { force: true });
    },
  };
}
