/**
 * client — TtrpcClient: unary ttrpc calls over one connection, many at once.
 *
 * The shim calls the guest agent with it (over the VM's virtio-serial port) and containerd's event
 * service. Each call gets the next odd stream id; answers may come in any order. The peer may be
 * hostile (the guest): an answer for a stream we are not waiting on is dropped, an undecodable or
 * oversized answer fails only its own call, and nothing the peer sends is buffered beyond one frame.
 * Errors are HullErrors: the peer's status via the shared table (its message cut to 4 KiB and stripped
 * of control characters: errors/peer-text.ts), 'deadline_exceeded' for timeouts,
 * 'cancelled' for aborted calls and 'unavailable' ("ttrpc: closed") once the connection is gone.
 */

import { createConnection } from 'node:net';
import type { Duplex } from 'node:stream';
import { HullError } from '../errors/index.js';
import { fromStatus, STATUS_OK } from '../errors/grpc-status.js';
import { FrameDecoder, FrameType, MAX_UNSENT_BYTES, encodeFrame, oversizedMessage, type Frame } from './frame.js';
import { decodeResponse, encodeRequest, type KeyValue, type TtrpcResponse } from './messages.js';

export interface CallOptions {
  /** timeoutMs fails the call with 'deadline_exceeded' after this long; the server is told too. */
  timeoutMs?: number;
  /** metadata is sent with the request; an array value sends the key once per element. */
  metadata?: Readonly<Record<string, string | readonly string[]>>;
  /** signal cancels the call ('cancelled'); a late answer is then dropped. */
  signal?: AbortSignal;
}

interface PendingCall {
  /** name is "service/method", for error messages. */
  name: string;
  resolve(payload: Uint8Array): void;
  reject(error: Error): void;
}

/** setTimeout cannot wait longer than this; longer timeouts are sent to the server but not timed here. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class TtrpcClient {
  /** closed resolves once the connection is gone, for whatever reason. */
  readonly closed: Promise<void>;
  private readonly decoder = new FrameDecoder();
  /** calls waiting for their answer, by stream id. */
  private readonly pending = new Map<number, PendingCall>();
  private nextStreamId = 1;
  private isClosedFlag = false;
  /** closeCause is the stream error that ended the connection, if one did. */
  private closeCause: Error | undefined;
  private markClosed!: () => void;

  /** connect opens a unix socket at `path` and returns a client on it. */
  static connect(path: string): Promise<TtrpcClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      const fail = (error: Error) => {
        socket.destroy();
        reject(new HullError('unavailable', `ttrpc: cannot connect to "${path}": ${error.message}`, { cause: error }));
      };
      socket.once('error', fail);
      socket.once('connect', () => {
        socket.off('error', fail);
        resolve(new TtrpcClient(socket));
      });
    });
  }

  /** The client owns `stream` from now on and destroys it on close(). */
  constructor(private readonly stream: Duplex) {
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
    stream.on('data', (chunk: unknown) => this.onData(chunk));
    stream.on('end', () => stream.destroy()); // no answer can come any more
    stream.on('error', (error: Error) => {
      this.closeCause ??= error;
      stream.destroy();
    });
    stream.on('close', () => this.onClose());
    if (stream.destroyed) this.onClose();
  }

  get isClosed(): boolean {
    return this.isClosedFlag;
  }

  /** call sends one request and resolves with the answer's payload bytes. */
  call(service: string, method: string, payload: Uint8Array, options: CallOptions = {}): Promise<Uint8Array> {
    const name = `${service}/${method}`;
    const { timeoutMs, signal } = options;
    if (this.isClosedFlag) return Promise.reject(this.closedError());
    if (signal?.aborted) return Promise.reject(cancelledError(name, signal));
    if (timeoutMs !== undefined && !(Number.isFinite(timeoutMs) && timeoutMs >= 0)) {
      return Promise.reject(new HullError('invalid_argument', `ttrpc: ${name}: invalid timeout ${timeoutMs} ms`));
    }
    if (timeoutMs === 0) return Promise.reject(deadlineError(name));
    if (this.stream.writableLength > MAX_UNSENT_BYTES) {
      return Promise.reject(new HullError('resource_exhausted', `ttrpc: ${name}: server is not reading requests`));
    }

    const streamId = this.allocateStreamId();
    let frame: Uint8Array;
    try {
      const timeoutNano = timeoutMs === undefined ? 0n : BigInt(Math.ceil(timeoutMs * 1e6));
      const metadata = metadataPairs(options.metadata);
      const data = encodeRequest({ service, method, payload, timeoutNano, metadata });
      frame = encodeFrame({ streamId, type: FrameType.Request, flags: 0, data });
    } catch (error) {
      return Promise.reject(error);
    }

    return new Promise<Uint8Array>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => finish(() => reject(cancelledError(name, signal)));
      const finish = (settle: () => void) => {
        this.pending.delete(streamId);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        settle();
      };
      this.pending.set(streamId, {
        name,
        resolve: (answer) => finish(() => resolve(answer)),
        reject: (error) => finish(() => reject(error)),
      });
      if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) {
        timer = setTimeout(() => finish(() => reject(deadlineError(name))), timeoutMs);
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.stream.write(frame);
    });
  }

  /** close drops the connection; calls still waiting fail with 'unavailable' "ttrpc: closed". Idempotent. */
  close(): void {
    this.stream.destroy();
    this.onClose(); // do not wait for the 'close' event: callers expect pending calls to fail now
  }

  private allocateStreamId(): number {
    let streamId = this.nextStreamId;
    // Ids are odd and wrap at 2^32; after a wrap, skip any id still waiting for its answer.
    while (this.pending.has(streamId)) streamId = (streamId + 2) >>> 0;
    this.nextStreamId = (streamId + 2) >>> 0;
    return streamId;
  }

  private onData(chunk: unknown): void {
    if (!(chunk instanceof Uint8Array)) {
      this.closeCause ??= new HullError('internal', 'ttrpc: stream delivered non-binary data');
      this.close();
      return;
    }
    for (const decoded of this.decoder.push(chunk)) {
      if (decoded.kind === 'oversized') {
        const { streamId, length } = decoded.oversized;
        const call = this.pending.get(streamId);
        call?.reject(new HullError('resource_exhausted', `ttrpc: ${call.name}: ${oversizedMessage(length)}`));
      } else {
        this.onFrame(decoded.frame);
      }
    }
  }

  private onFrame(frame: Frame): void {
    if (frame.type !== FrameType.Response) return;
    const call = this.pending.get(frame.streamId);
    if (call === undefined) return; // timed out, cancelled, or never asked: drop it
    let response: TtrpcResponse;
    try {
      response = decodeResponse(frame.data);
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      call.reject(new HullError('internal', `ttrpc: ${call.name}: bad response: ${detail}`, { cause: error }));
      return;
    }
    const { status, payload } = response;
    // fromStatus bounds and cleans the message: it may be the guest's, on its way to containerd.
    if (status !== undefined && status.code !== STATUS_OK) call.reject(fromStatus(status.code, status.message));
    else call.resolve(payload);
  }

  private onClose(): void {
    if (this.isClosedFlag) return;
    this.isClosedFlag = true;
    for (const call of [...this.pending.values()]) call.reject(this.closedError());
    this.markClosed();
  }

  private closedError(): HullError {
    return new HullError('unavailable', 'ttrpc: closed', this.closeCause ? { cause: this.closeCause } : undefined);
  }
}

function deadlineError(name: string): HullError {
  return new HullError('deadline_exceeded', `ttrpc: ${name}: context deadline exceeded`);
}

function cancelledError(name: string, signal: AbortSignal | undefined): HullError {
  return new HullError('cancelled', `ttrpc: ${name}: context canceled`, { cause: signal?.reason });
}

function metadataPairs(metadata: CallOptions['metadata']): KeyValue[] {
  const pairs: KeyValue[] = [];
  for (const [key, values] of Object.entries(metadata ?? {})) {
    for (const value of typeof values === 'string' ? [values] : values) pairs.push({ key, value });
  }
  return pairs;
}
