/**
 * `hull console SANDBOX [-- CMD...]`: a root shell in a sandbox's guest, outside every container, or
 * one command, through the shim's debug socket (src/shim/console.ts). The sandbox is found by id or
 * unique id prefix among the run root's trusted sandbox directories (src/monitor/shims.ts). With
 * a terminal on both stdin and stdout, the guest process gets one and the local one goes raw.
 */
import { request } from 'node:http';
import { userInfo } from 'node:os';
import type { Socket } from 'node:net';
import { HullError } from '../errors/index.js';
import { listSandboxDirs } from '../monitor/index.js';
import { CONSOLE_HEADER, CONSOLE_PATH, CONSOLE_UPGRADE, FRAME, FrameReader, encodeRequest, frame, readExit, resizeFrame } from '../shim/console-protocol.js';

// Bounds on what the shim sends: an answer that is not a session, and each output frame.
const MAX_REFUSAL_BYTES = 64 * 1024;
const MAX_OUTPUT_FRAME = 1 << 20;
// The shim answers once the guest process runs (an agent call, bounded by the shim).
const ANSWER_TIMEOUT_MS = 60_000;
const STDIN_CHUNK = 64 * 1024;
/** Exit status when the console could not run the command (docker's convention for "the tool failed"). */
const FAILED = 125;

/** findSandboxSocket resolves an id or unique id prefix to its shim's debug socket. */
export async function findSandboxSocket(runRoot: string, idOrPrefix: string): Promise<{ id: string; socket: string }> {
  const dirs = await listSandboxDirs(runRoot);
  const matches = dirs.filter((d) => d.id === idOrPrefix).length === 1 ? dirs.filter((d) => d.id === idOrPrefix) : dirs.filter((d) => d.id.startsWith(idOrPrefix));
  if (matches.length === 0) throw new HullError('not_found', `No sandbox "${idOrPrefix}" in ${runRoot} (hull ps lists them)`);
  if (matches.length > 1) throw new HullError('invalid_argument', `"${idOrPrefix}" matches ${matches.length} sandboxes: ${matches.map((d) => d.id).join(', ')}`);
  const { id, debugSocket: socket } = matches[0]!;
  if (!socket) throw new HullError('unavailable', `Sandbox ${id} has no debug socket (its shim is starting or gone)`);
  return { id, socket };
}

/** openConsole runs the session and resolves with the exit status `hull console` exits with. */
export async function openConsole(runRoot: string, idOrPrefix: string, args: string[]): Promise<number> {
  if (process.getuid?.() !== 0) throw new HullError('failed_precondition', 'hull console must be run as root');
  const { socket: path } = await findSandboxSocket(runRoot, idOrPrefix);
  const tty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  const user = `uid ${process.getuid()}${process.env['SUDO_USER'] ? ` (sudo by ${process.env['SUDO_USER']})` : ` (${userInfo().username})`}`;
  const header = encodeRequest({ args, tty, rows: tty ? process.stdout.rows : 0, cols: tty ? process.stdout.columns : 0, user });
  const socket = await connectConsole(path, header);
  return relay(socket, tty);
}

/** connectConsole asks for a session: the upgraded socket, or the shim's refusal as an error. */
export function connectConsole(path: string, header: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: path, path: CONSOLE_PATH, method: 'POST', agent: false, headers: { host: 'hull', connection: 'Upgrade', upgrade: CONSOLE_UPGRADE, [CONSOLE_HEADER]: header } });
    const timer = setTimeout(() => req.destroy(new Error(`the shim did not answer within ${ANSWER_TIMEOUT_MS} ms`)), ANSWER_TIMEOUT_MS);
    req.on('upgrade', (_res, socket, head) => {
      clearTimeout(timer);
      if (head.length > 0) socket.unshift(head);
      resolve(socket as Socket);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let length = 0;
      res.on('data', (chunk: Buffer) => {
        length += chunk.length;
        if (length <= MAX_REFUSAL_BYTES) chunks.push(chunk);
      });
      res.on('end', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8', 0, MAX_REFUSAL_BYTES).trim();
        reject(new HullError(res.statusCode === 403 ? 'failed_precondition' : 'unavailable', text || `the shim answered ${res.statusCode}`));
      });
    });
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(new HullError('unavailable', `Cannot reach the shim at ${path}: ${e.message}`));
    });
    req.end();
  });
}

/** relay carries the local stdio over the session until the guest process's exit status arrives. */
function relay(socket: Socket, tty: boolean): Promise<number> {
  const stdin = process.stdin;
  const onResize = () => socket.write(resizeFrame(process.stdout.rows, process.stdout.columns));
  if (tty) {
    stdin.setRawMode(true);
    process.stdout.on('resize', onResize);
  }
  const onInput = (chunk: Buffer) => {
    for (let offset = 0; offset < chunk.length; offset += STDIN_CHUNK) {
      if (!socket.write(frame(FRAME.stdin, chunk.subarray(offset, offset + STDIN_CHUNK)))) {
        stdin.pause();
        socket.once('drain', () => stdin.resume());
      }
    }
  };
  const onInputEnd = () => socket.write(frame(FRAME.stdinEnd));
  stdin.on('data', onInput);
  stdin.once('end', onInputEnd);
  return new Promise((resolve) => {
    let status: number | undefined;
    let failed = false;
    const reader = new FrameReader(MAX_OUTPUT_FRAME);
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const f of reader.push(chunk)) {
          if (f.type === FRAME.stdout) {
            if (!process.stdout.write(f.payload)) {
              socket.pause();
              process.stdout.once('drain', () => socket.resume());
            }
          } else if (f.type === FRAME.stderr) process.stderr.write(f.payload);
          else if (f.type === FRAME.exit) status = readExit(f.payload);
          else if (f.type === FRAME.error) {
            failed = true;
            process.stderr.write(`hull: ${f.payload.toString('utf8', 0, 4096)}\n`);
          }
          else throw new Error(`unexpected frame type ${f.type}`);
        }
      } catch (e) {
        process.stderr.write(`hull: the shim sent a bad frame: ${(e as Error).message}\n`);
        socket.destroy();
      }
    });
    socket.on('error', () => {});
    socket.once('close', () => {
      if (tty) {
        stdin.setRawMode(false);
        process.stdout.off('resize', onResize);
      }
      stdin.off('data', onInput);
      stdin.off('end', onInputEnd);
      stdin.pause();
      // stdin may be a terminal or a pipe that never ends: it must not keep the process alive.
      stdin.destroy();
      if (status === undefined && !failed) process.stderr.write('hull: the console ended without an exit status\n');
      resolve(status !== undefined && status <= 255 ? status : FAILED);
    });
  });
}
