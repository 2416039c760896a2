/**
 * server-connection — one client connection of a TtrpcServer: reads request frames, runs each request
 * concurrently, writes each response on the request's stream id, in whatever order they finish.
 *
 * Behaviour follows containerd/ttrpc v1.1.1 `serverConn.run`: an oversized frame is answered with
 * RESOURCE_EXHAUSTED, an undecodable request with INVALID_ARGUMENT, an even stream id with
 * INVALID_ARGUMENT, frames that are not requests are ignored. End of input closes the connection and
 * abandons the answers still being computed (their handlers see their signal abort).
 */

import type { Duplex } from 'node:stream';
import { HullError, type ErrorCode } from '../errors/index.js';
import { STATUS_UNKNOWN, toStatus } from '../errors/grpc-status.js';
import { FrameDecoder, FrameType, MAX_UNSENT_BYTES, encodeFrame, oversizedMessage, type Frame } from './frame.js';
import { decodeRequest, encodeResponse, type RpcStatus, type TtrpcRequest, type TtrpcResponse } from './messages.js';

/** UnaryMethod handles one request payload and returns the response payload. */
export type UnaryMethod = (payload: Uint8Array, ctx: CallContext) => Promise<Uint8Array>;

/** CallContext is what a handler knows about the call beyond its payload. */
export interface CallContext {
  readonly service: string;
  readonly method: string;
  /** metadata holds the request's key/value pairs; a key sent several times has several values. */
  readonly metadata: ReadonlyMap<string, readonly string[]>;
  /** deadline is the caller's deadline in Date.now() milliseconds, or undefined when it set none. */
  readonly deadline: number | undefined;
  /**
   * signal aborts at the deadline (reason: HullError 'deadline_exceeded') and when the connection
   * closes (reason: HullError 'unavailable'). The answer to an aborted call is still sent if the
   * connection is open, as ttrpc does.
   */
  readonly signal: AbortSignal;
}

/** ConnectionHost is what a connection needs from its server. */
export interface ConnectionHost {
  /** resolve returns the handler for service/method, or the UNIMPLEMENTED error to answer with. */
  resolve(service: string, method: string): UnaryMethod | HullError;
  /** closing is true once the server stopped taking new requests. */
  readonly closing: boolean;
  readonly maxInFlight: number;
  reportError(error: Error): void;
  connectionClosed(connection: ServerConnection): void;
}

/** setTimeout cannot wait longer than this; later deadlines are kept but never fire. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** MAX_STATUS_MESSAGE_CHARS keeps error messages (at most 4 bytes a char in UTF-8) far below 4 MiB. */
const MAX_STATUS_MESSAGE_CHARS = 64 << 10;

export class ServerConnection {
  private readonly decoder = new FrameDecoder();
  /** controllers of the requests being handled, one per running handler. */
  private readonly inFlight = new Set<AbortController>();
  private idleWaiters: Array<() => void> = [];
  private closed = false;

  constructor(
    private readonly stream: Duplex,
    private readonly host: ConnectionHost,
  ) {
    stream.on('data', (chunk: unknown) => this.onData(chunk));
    stream.on('end', () => this.destroy());
    stream.on('error', (error: Error) => this.onStreamError(error));
    stream.on('close', () => this.onClose());
  }

  /** idle resolves once no request is being handled or the connection is closed. */
  idle(): Promise<void> {
    if (this.inFlight.size === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** destroy drops the connection; running handlers see their signal abort before this returns. */
  destroy(): void {
    this.stream.destroy();
    this.onClose();
  }

  private onData(chunk: unknown): void {
    if (!(chunk instanceof Uint8Array)) {
      this.host.reportError(new HullError('internal', 'ttrpc: stream delivered non-binary data'));
      this.destroy();
      return;
    }
    for (const decoded of this.decoder.push(chunk)) {
      if (this.closed) return;
      if (decoded.kind === 'oversized') {
        const { streamId, length } = decoded.oversized;
        this.sendError(streamId, 'resource_exhausted', oversizedMessage(length));
      } else {
        this.onFrame(decoded.frame);
      }
    }
  }

  private onFrame(frame: Frame): void {
    if (frame.type !== FrameType.Request) return; // ttrpc ignores other types, for future compatibility
    let request: TtrpcRequest;
    try {
      request = decodeRequest(frame.data);
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      this.sendError(frame.streamId, 'invalid_argument', `unmarshal request error: ${detail}`);
      return;
    }
    if (frame.streamId % 2 !== 1) {
      this.sendError(frame.streamId, 'invalid_argument', 'StreamID must be odd for client initiated streams');
      return;
    }
    if (this.host.closing) {
      this.sendError(frame.streamId, 'unavailable', 'ttrpc: server closed');
      return;
    }
    if (this.inFlight.size >= this.host.maxInFlight) {
      this.sendError(frame.streamId, 'resource_exhausted', 'ttrpc: too many requests in flight');
      return;
    }
    const handler = this.host.resolve(request.service, request.method);
    if (handler instanceof HullError) {
      this.sendError(frame.streamId, handler.code, handler.message);
      return;
    }
    this.run(frame.streamId, request, handler);
  }

  private run(streamId: number, request: TtrpcRequest, handler: UnaryMethod): void {
    const controller = new AbortController();
    this.inFlight.add(controller);
    let deadline: number | undefined;
    let deadlineTimer: NodeJS.Timeout | undefined;
    if (request.timeoutNano !== 0n) {
      const timeoutMs = Number(request.timeoutNano) / 1e6;
      deadline = Date.now() + timeoutMs;
      const expire = () => controller.abort(new HullError('deadline_exceeded', 'context deadline exceeded'));
      if (timeoutMs <= 0) expire();
      else if (timeoutMs <= MAX_TIMER_MS) deadlineTimer = setTimeout(expire, timeoutMs);
      // The timer must not outlive the call: a closed connection aborts the call early.
      controller.signal.addEventListener('abort', () => clearTimeout(deadlineTimer), { once: true });
    }
    const ctx: CallContext = {
      service: request.service,
      method: request.method,
      metadata: metadataMap(request),
      deadline,
      signal: controller.signal,
    };
    const answer = async (): Promise<TtrpcResponse> => {
      try {
        const payload = await handler(request.payload, ctx);
        if (!(payload instanceof Uint8Array)) {
          throw new HullError('internal', `ttrpc: ${request.service}/${request.method} returned no bytes`);
        }
        return { payload };
      } catch (error) {
        return errorResponse(error);
      }
    };
    void answer().then((response) => {
      clearTimeout(deadlineTimer);
      this.inFlight.delete(controller);
      this.send(streamId, response);
      if (this.inFlight.size === 0) this.wakeIdleWaiters();
    });
  }

  private sendError(streamId: number, code: ErrorCode, message: string): void {
    this.send(streamId, errorResponse(new HullError(code, message)));
  }

  private send(streamId: number, response: TtrpcResponse): void {
    if (this.closed) return;
    let bytes: Uint8Array;
    try {
      bytes = encodeFrame({ streamId, type: FrameType.Response, flags: 0, data: encodeResponse(response) });
    } catch (error) {
      // Only an answer over 4 MiB can fail to encode; tell the caller instead of sending it.
      const data = encodeResponse(errorResponse(error));
      bytes = encodeFrame({ streamId, type: FrameType.Response, flags: 0, data });
    }
    this.stream.write(bytes);
    if (this.stream.writableLength > MAX_UNSENT_BYTES) {
      this.host.reportError(new HullError('resource_exhausted', 'ttrpc: client is not reading its responses'));
      this.destroy();
    }
  }

  private onStreamError(error: Error): void {
    this.host.reportError(error);
    this.destroy();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    const reason = new HullError('unavailable', 'ttrpc: closed');
    for (const controller of this.inFlight) controller.abort(reason);
    this.wakeIdleWaiters();
    this.host.connectionClosed(this);
  }

  private wakeIdleWaiters(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }
}

/**
 * errorResponse answers with the status for `error` (HullError codes via the table, else UNKNOWN).
 * It never throws, and cuts the message so that the answer always fits in a frame.
 */
function errorResponse(error: unknown): TtrpcResponse {
  let status: RpcStatus;
  try {
    const { code, message } = toStatus(error);
    status = { code, message: message.slice(0, MAX_STATUS_MESSAGE_CHARS), details: [] };
  } catch {
    status = { code: STATUS_UNKNOWN, message: 'ttrpc: handler failed with an unprintable error', details: [] };
  }
  return { status, payload: new Uint8Array(0) };
}

function metadataMap(request: TtrpcRequest): Map<string, string[]> {
  const metadata = new Map<string, string[]>();
  for (const { key, value } of request.metadata) {
    const values = metadata.get(key);
    if (values === undefined) metadata.set(key, [value]);
    else values.push(value);
  }
  return metadata;
}
