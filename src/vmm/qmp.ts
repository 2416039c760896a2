/**
 * qmp — a client for QEMU's machine protocol (QMP): JSON objects, one per line, over a unix socket.
 *
 * The server speaks first with a greeting ({"QMP": {...}}); the client must then send
 * `qmp_capabilities` before any other command. Each command we send carries a numeric id, and its
 * answer ({"return": ...} or {"error": {"class", "desc"}}) carries it back, so several commands may be
 * in flight. Asynchronous events ({"event": "STOP", ...}) may arrive between answers at any time.
 *
 * QEMU is trusted more than the guest, but a confused or compromised QEMU must not make the shim
 * buffer without bound: a line longer than `maxLineBytes` (1 MiB) or one that is not a JSON object
 * ends the connection. Once the connection is gone, waiting and future commands fail 'unavailable'.
 */

import type { Duplex } from 'node:stream';
import { connectUnix } from '../common/unix-socket.js';
import { HullError, type ErrorCode } from '../errors/index.js';

/** MAX_QMP_LINE_BYTES is the default cap on one incoming QMP line. */
export const MAX_QMP_LINE_BYTES = 1024 * 1024;

const DEFAULT_TIMEOUT_MS = 10_000;

/** QmpEvent is one asynchronous event from QEMU. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export type QmpEventListener = (event: QmpEvent) => void;

export interface QmpClientOptions {
  /** maxLineBytes caps one incoming line (default MAX_QMP_LINE_BYTES). */
  maxLineBytes?: number;
}

export interface QmpConnectOptions extends QmpClientOptions {
  /** timeoutMs bounds the greeting and `qmp_capabilities` together (default 10 000). */
  timeoutMs?: number;
}

interface PendingCommand {
  command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

/** errorCodeByQmpClass maps QMP's error classes to ours; any other class is 'internal'. */
const errorCodeByQmpClass: Readonly<Record<string, ErrorCode>> = {
  CommandNotFound: 'unimplemented',
  DeviceNotFound: 'not_found',
  DeviceNotActive: 'failed_precondition',
  KVMMissingCap: 'failed_precondition',
};

export class QmpClient {
  /** closed resolves once the connection is gone, for whatever reason. */
  readonly closed: Promise<void>;
  /** greeting is the server's {"QMP": ...} body, once it has arrived. */
  greeting: Record<string, unknown> | undefined;
  private readonly maxLineBytes: number;
  /** partLines holds the bytes of the line being received, before its newline arrives. */
  private partLines: Buffer[] = [];
  private partLength = 0;
  /** pending holds the commands waiting for their answer, by id. */
  private readonly pending = new Map<number, PendingCommand>();
  private readonly listeners = new Set<QmpEventListener>();
  private nextId = 1;
  private closeError: HullError | undefined;
  private isClosedFlag = false;
  private markClosed!: () => void;
  private greeted!: (greeting: Record<string, unknown>) => void;
  /** greetingArrived resolves with the greeting; it never rejects (closed wins the race instead). */
  private readonly greetingArrived: Promise<Record<string, unknown>>;

  /**
   * connect opens the unix socket at `path`, waits for the greeting and negotiates capabilities.
   * Fails 'unavailable' when the socket cannot be reached or closes, 'deadline_exceeded' on timeout.
   */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const socket = await connectUnix(path, 'QMP socket');
    const client = new QmpClient(socket, options);
    try {
      await client.handshake(timeoutMs);
      return client;
    } catch (error) {
      client.close();
      throw error;
    }
  }

  /** The client owns `stream` from now on; call handshake() unless connect() did. */
  constructor(
    private readonly stream: Duplex,
    options: QmpClientOptions = {},
  ) {
    this.maxLineBytes = options.maxLineBytes ?? MAX_QMP_LINE_BYTES;
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
    this.greetingArrived = new Promise((resolve) => (this.greeted = resolve));
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('end', () => stream.destroy());
    stream.on('error', (error: Error) => this.fail(new HullError('unavailable', `QMP connection failed: ${error.message}`, { cause: error })));
    stream.on('close', () => this.onClose());
  }

  get isClosed(): boolean {
    return this.isClosedFlag;
  }

  /** handshake waits for the greeting and sends `qmp_capabilities`, within `timeoutMs` overall. */
  async handshake(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    const started = Date.now();
    await this.race(this.greetingArrived, timeoutMs, 'QMP greeting');
    await this.execute('qmp_capabilities', undefined, { timeoutMs: Math.max(1, timeoutMs - (Date.now() - started)) });
  }

  /**
   * execute runs one command and resolves with its "return" value. A QMP error rejects with a
   * HullError naming the command, QEMU's description and error class.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number } = {}): Promise<T> {
    if (this.isClosedFlag) return Promise.reject(this.closedError());
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new HullError('deadline_exceeded', `QMP command "${command}" got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (value: unknown) => void, reject, timer });
      const message = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.stream.write(JSON.stringify(message) + '\r\n');
    });
  }

  /** on adds a listener for every event; listeners must not throw. */
  on(type: 'event', listener: QmpEventListener): this {
    this.listeners.add(listener);
    return this;
  }

  off(type: 'event', listener: QmpEventListener): this {
    this.listeners.delete(listener);
    return this;
  }

  /**
   * waitForEvent resolves with the next event called `name` (that `match` accepts). Register it
   * before doing what triggers the event: events that came earlier are not kept.
   */
  waitForEvent(name: string, timeoutMs: number, match: (event: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    let listener!: QmpEventListener;
    const arrived = new Promise<QmpEvent>((resolve) => {
      listener = (event) => {
        if (event.event === name && match(event)) resolve(event);
      };
      this.on('event', listener);
    });
    return this.race(arrived, timeoutMs, `QMP event "${name}"`).finally(() => this.off('event', listener));
  }

  /** close ends the connection; pending commands and waiters fail 'unavailable'. Idempotent. */
  close(): void {
    this.stream.destroy();
  }

  /** race settles with `promise`, or fails on timeout or when the connection closes first. */
  private race<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HullError('deadline_exceeded', `${what} did not arrive within ${timeoutMs} ms`)), timeoutMs);
    });
    const closed = this.closed.then(() => {
      throw this.closedError();
    });
    return Promise.race([promise, timedOut, closed]).finally(() => clearTimeout(timer));
  }

  private onData(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(0x0a, start);
      const end = newline < 0 ? chunk.length : newline;
      if (this.partLength + (end - start) > this.maxLineBytes) {
        this.fail(new HullError('internal', `QMP line longer than ${this.maxLineBytes} bytes; closing the connection`));
        return;
      }
      if (newline < 0) {
        if (end > start) {
          this.partLines.push(chunk.subarray(start));
          this.partLength += end - start;
        }
        return;
      }
      this.partLines.push(chunk.subarray(start, newline));
      const line = Buffer.concat(this.partLines).toString('utf8').trim();
      this.partLines = [];
      this.partLength = 0;
      start = newline + 1;
      if (line !== '' && !this.onLine(line)) return;
    }
  }

  /** onLine handles one message; false when it ended the connection. */
  private onLine(line: string): boolean {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      message = undefined;
    }
    if (!isObject(message)) {
      this.fail(new HullError('internal', `QMP sent a line that is not a JSON object: ${JSON.stringify(line.slice(0, 200))}`));
      return false;
    }
    if (isObject(message.QMP)) {
      this.greeting = message.QMP;
      this.greeted(message.QMP);
    } else if (typeof message.event === 'string') {
      this.emit(message);
    } else if (typeof message.id === 'number') {
      this.answer(message.id, message);
    } // an answer without our id (to a request we did not send) is dropped
    return true;
  }

  private emit(message: Record<string, unknown>): void {
    const event: QmpEvent = { event: message.event as string, data: isObject(message.data) ? message.data : {} };
    if (isObject(message.timestamp)) event.timestamp = message.timestamp as QmpEvent['timestamp'];
    for (const listener of [...this.listeners]) listener(event);
  }

  private answer(id: number, message: Record<string, unknown>): void {
    const call = this.pending.get(id);
    if (call === undefined) return; // timed out already, or never ours
    this.pending.delete(id);
    clearTimeout(call.timer);
    if (isObject(message.error)) {
      const errorClass = String(message.error.class ?? 'GenericError');
      const code = errorCodeByQmpClass[errorClass] ?? 'internal';
      call.reject(new HullError(code, `QMP command "${call.command}" failed: ${String(message.error.desc ?? '')} (${errorClass})`));
    } else {
      call.resolve(message.return);
    }
  }

  /** fail ends the connection because of `error`, which pending callers then see. */
  private fail(error: HullError): void {
    this.closeError ??= error;
    this.stream.destroy();
  }

  private closedError(): HullError {
    return this.closeError ?? new HullError('unavailable', 'QMP connection closed');
  }

  private onClose(): void {
    if (this.isClosedFlag) return;
    this.isClosedFlag = true;
    const error = this.closedError();
    for (const call of this.pending.values()) {
      clearTimeout(call.timer);
      call.reject(error);
    }
    this.pending.clear();
    this.markClosed();
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
