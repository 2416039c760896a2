/**
 * The shim's end of `hull console` (console-protocol.ts): on the debug socket (root's only), a
 * console session runs one process in the guest outside every container (the agent's console,
 * container id "") and relays its stdin, output, terminal size and exit status. Off unless the
 * config's debug_console is on; each use, refused or not, is logged. Frames from the client are
 * bounded; output waits for the client to read it, and a client that stops reading for
 * CONSOLE_STALL_MS, or goes away, ends the session and with it the guest process.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { PassThrough, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Sandbox } from '../sandbox/index.js';
import { latestOnly } from './latest-only.js';
import { CONSOLE_HEADER, CONSOLE_UPGRADE, FRAME, FrameReader, decodeRequest, exitFrame, frame, readResize, type ConsoleRequest } from './console-protocol.js';

// The most bytes one client frame may carry.
const MAX_CLIENT_FRAME = 64 * 1024;
// At most this many sessions at once per sandbox.
const MAX_SESSIONS = 4;
// A client that reads none of the output for this long is gone.
export const CONSOLE_STALL_MS = 60_000;
// Bound on the agent call that ends a session (the process is killed, its record dropped).
const END_CALL_TIMEOUT_MS = 10_000;
// Output still flowing this long after the process exited (children holding its pipes) is cut.
const OUTPUT_AFTER_EXIT_MS = 10_000;
const GUEST_SHELL = ['/bin/sh'];

export interface ConsoleServerOptions {
  sandbox: Pick<Sandbox, 'exec' | 'attach' | 'wait' | 'resize' | 'signal' | 'removeExec'>;
  enabled: boolean;
  /** configPath names the file to change in the refusal. */
  configPath: string;
  log: (line: string) => void;
}

export class ConsoleServer {
  readonly #options: ConsoleServerOptions;
  readonly #sessions = new Set<Duplex>();

  constructor(options: ConsoleServerOptions) {
    this.#options = options;
  }

  /** handle serves an upgrade request for the console path on `socket`. */
  handle(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const { log, enabled, configPath } = this.#options;
    socket.on('error', () => {});
    // The client never half-closes (its stdin's end is a frame): its end is its going away.
    socket.once('end', () => socket.destroy());
    if (head.length > 0) socket.unshift(head);
    if ((req.headers.upgrade ?? '').toLowerCase() !== CONSOLE_UPGRADE || req.method !== 'POST') {
      refuse(socket, 400, `The console needs POST with "Upgrade: ${CONSOLE_UPGRADE}"`);
      return;
    }
    if (!enabled) {
      log('console: refused (debug_console is off)');
      refuse(socket, 403, `The debug console is off: set debug_console = true in ${configPath}, then recreate the pod (the setting is read when a sandbox starts)`);
      return;
    }
    let request: ConsoleRequest;
    try {
      request = decodeRequest(req.headers[CONSOLE_HEADER] as string | undefined);
    } catch (e) {
      refuse(socket, 400, (e as Error).message);
      return;
    }
    if (this.#sessions.size >= MAX_SESSIONS) {
      refuse(socket, 429, `At most ${MAX_SESSIONS} console sessions at once in a sandbox`);
      return;
    }
    this.#sessions.add(socket);
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${CONSOLE_UPGRADE}\r\nConnection: Upgrade\r\n\r\n`);
    void this.#run(socket, request).finally(() => this.#sessions.delete(socket));
  }

  /** closeAll ends every session (the sandbox is going away). */
  closeAll(): void {
    for (const socket of this.#sessions) socket.destroy();
  }

  async #run(socket: Duplex, request: ConsoleRequest): Promise<void> {
    const { sandbox, log } = this.#options;
    const execId = `console-${randomBytes(6).toString('hex')}`;
    const args = request.args.length > 0 ? request.args : GUEST_SHELL;
    const what = `console ${execId} (${request.user}, ${request.tty ? 'tty' : 'no tty'}): ${JSON.stringify(args).slice(0, 500)}`;
    log(`${what}: started`);
    try {
      await sandbox.exec('', execId, { args, cwd: '/', terminal: request.tty }, { stdin: true, stdout: true, stderr: !request.tty, terminal: request.tty, rows: request.rows, cols: request.cols });
    } catch (e) {
      log(`${what}: failed: ${(e as Error).message}`);
      socket.end(frame(FRAME.error, Buffer.from(`Cannot start the console process: ${(e as Error).message}`)));
      return;
    }
    const exited = sandbox.wait('', execId);
    // The client gone (or stalled) ends the process, and with it the session.
    const end = () => void sandbox.signal('', execId, 9).catch(() => {});
    if (socket.destroyed) end();
    else socket.once('close', end);
    const stdin = this.#readClient(socket, execId, what);
    const sinks = [frameSink(socket, FRAME.stdout), frameSink(socket, FRAME.stderr)] as const;
    const attached = sandbox.attach('', execId, { stdin, stdout: sinks[0], stderr: sinks[1] });
    attached.catch(() => {}); // awaited below; an early failure must not go unhandled meanwhile
    let afterExit: NodeJS.Timeout | undefined;
    try {
      const exit = await Promise.race([exited, unreported(socket)]);
      // Removing the process (finally) ends its output streams: what its children still hold too.
      await Promise.race([attached, new Promise((resolve) => (afterExit = setTimeout(resolve, OUTPUT_AFTER_EXIT_MS)))]);
      // The exit status goes after every output frame.
      await Promise.all(sinks.map((sink) => finished(sink.end()).catch(() => {})));
      log(`${what}: exited with status ${exit.exitStatus}${socket.destroyed ? ' (the client had gone)' : ''}`);
      if (!socket.destroyed) socket.end(exitFrame(exit.exitStatus));
    } catch (e) {
      log(`${what}: ${(e as Error).message}`);
      if (!socket.destroyed) socket.end(frame(FRAME.error, Buffer.from((e as Error).message)));
    } finally {
      clearTimeout(afterExit);
      stdin.destroy();
      await sandbox.removeExec('', execId, END_CALL_TIMEOUT_MS).catch((e: Error) => log(`${what}: remove: ${e.message}`));
      await attached.catch(() => {});
    }
  }

  /** #readClient turns the client's frames into the process's stdin (with flow control) and resizes. */
  #readClient(socket: Duplex, execId: string, what: string): PassThrough {
    const stdin = new PassThrough({ highWaterMark: MAX_CLIENT_FRAME });
    const reader = new FrameReader(MAX_CLIENT_FRAME);
    const resize = latestOnly((size: { rows: number; cols: number }) => this.#options.sandbox.resize('', execId, size.rows, size.cols));
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const f of reader.push(chunk)) {
          if (f.type === FRAME.stdin && !stdin.writableEnded) {
            if (!stdin.write(f.payload)) {
              socket.pause();
              stdin.once('drain', () => socket.resume());
            }
          } else if (f.type === FRAME.stdinEnd) stdin.end();
          else if (f.type === FRAME.resize) {
            const size = readResize(f.payload);
            if (size && size.rows > 0 && size.cols > 0) resize(size);
          } else throw new Error(`unexpected frame type ${f.type}`);
        }
      } catch (e) {
        this.#options.log(`${what}: client sent a bad frame: ${(e as Error).message}`);
        socket.destroy();
      }
    });
    if (socket.destroyed) stdin.end();
    else socket.once('close', () => stdin.end());
    return stdin;
  }
}

/**
 * unreported rejects once the client has gone and the guest has not reported the killed process's
 * end within OUTPUT_AFTER_EXIT_MS: a guest that never answers cannot hold the session (and one of
 * MAX_SESSIONS) for ever.
 */
function unreported(socket: Duplex): Promise<never> {
  return new Promise((_resolve, reject) => {
    const fail = () => setTimeout(() => reject(new Error('the guest did not report the end of the killed process')), OUTPUT_AFTER_EXIT_MS).unref();
    if (socket.destroyed) fail();
    else socket.once('close', fail);
  });
}

/** frameSink writes output as frames; a client that does not take them for CONSOLE_STALL_MS is dropped. */
function frameSink(socket: Duplex, type: number): Writable {
  const sink = new Writable({
    highWaterMark: 256 * 1024,
    write(chunk: Buffer, _encoding, done) {
      if (socket.destroyed) return done();
      if (socket.write(frame(type, chunk))) return done();
      const stalled = setTimeout(() => socket.destroy(), CONSOLE_STALL_MS);
      const resume = () => {
        clearTimeout(stalled);
        socket.off('drain', resume);
        socket.off('close', resume);
        done();
      };
      socket.on('drain', resume);
      socket.on('close', resume);
    },
  });
  // Output that comes after the session ended (write after end) is dropped.
  sink.on('error', () => {});
  return sink;
}

function refuse(socket: Duplex, status: number, message: string): void {
  const reason = { 400: 'Bad Request', 403: 'Forbidden', 429: 'Too Many Requests' }[status] ?? 'Error';
  const body = Buffer.from(`${message}\n`);
  socket.end(`HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body.toString()}`);
}
