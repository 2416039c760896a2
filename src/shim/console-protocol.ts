/**
 * The console protocol between `hull console` and the shim, on the debug socket: `POST /console`
 * with the request in the `hull-console` header (base64url JSON), upgraded (101) to a stream of
 * frames both ways. A frame is a type byte, a 4-byte big-endian length and that many bytes. The
 * shim refuses with a plain HTTP answer (403 when the console is off) instead of upgrading.
 */
import { HullError } from '../errors/index.js';

export const CONSOLE_PATH = '/console';
export const CONSOLE_UPGRADE = 'hull-console';
export const CONSOLE_HEADER = 'hull-console';

/** Frame types: client to shim (stdin, its end, a terminal size) and shim to client (output, exit status, error). */
export const FRAME = { stdin: 1, stdinEnd: 2, resize: 3, stdout: 17, stderr: 18, exit: 19, error: 20 } as const;

const HEADER_BYTES = 5;
// The header of a request carries at most this (Node's HTTP header limit is 16 KiB).
const MAX_REQUEST_HEADER = 12 * 1024;
const MAX_ARGS = 256;

export interface ConsoleRequest {
  /** args: the command; empty for the guest's shell. */
  args: string[];
  /** tty: run it on a terminal of `rows` x `cols`. */
  tty: boolean;
  rows: number;
  cols: number;
  /** who ran `hull console`, as the client says (the socket is root's only): for the log. */
  user: string;
}

export function encodeRequest(req: ConsoleRequest): string {
  const text = Buffer.from(JSON.stringify(req)).toString('base64url');
  if (text.length > MAX_REQUEST_HEADER) throw new HullError('invalid_argument', 'The console command is too long');
  return text;
}

/** decodeRequest checks what a client sent; it throws 'invalid_argument' for anything else. */
export function decodeRequest(header: string | undefined): ConsoleRequest {
  const bad = (why: string) => new HullError('invalid_argument', `Invalid console request: ${why}`);
  if (!header || header.length > MAX_REQUEST_HEADER) throw bad(`no ${CONSOLE_HEADER} header, or one over ${MAX_REQUEST_HEADER} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(header, 'base64url').toString('utf8'));
  } catch {
    throw bad('not JSON');
  }
  const r = value as Partial<ConsoleRequest> | null;
  if (typeof r !== 'object' || r === null) throw bad('not an object');
  if (!Array.isArray(r.args) || r.args.length > MAX_ARGS || !r.args.every((a) => typeof a === 'string' && !a.includes('\0'))) throw bad(`args must be at most ${MAX_ARGS} strings`);
  if (typeof r.tty !== 'boolean') throw bad('tty must be true or false');
  const size = (n: unknown) => Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 0xffff;
  if (!size(r.rows) || !size(r.cols)) throw bad('rows and cols must be integers 0..65535');
  if (typeof r.user !== 'string' || r.user.length > 200) throw bad('user must be a short string');
  return { args: r.args, tty: r.tty, rows: r.rows!, cols: r.cols!, user: r.user };
}

export function frame(type: number, payload: Uint8Array = new Uint8Array()): Buffer {
  const out = Buffer.alloc(HEADER_BYTES + payload.length);
  out[0] = type;
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, HEADER_BYTES);
  return out;
}

export function resizeFrame(rows: number, cols: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt16BE(rows, 0);
  payload.writeUInt16BE(cols, 2);
  return frame(FRAME.resize, payload);
}

export function exitFrame(status: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(status, 0);
  return frame(FRAME.exit, payload);
}

export interface Frame {
  type: number;
  payload: Buffer;
}

/**
 * FrameReader splits a byte stream into frames; a frame over `maxPayload` bytes is an error (the
 * peer is broken or hostile), and so is a frame type the caller does not expect.
 */
export class FrameReader {
  #pending: Buffer = Buffer.alloc(0);
  readonly #maxPayload: number;

  constructor(maxPayload: number) {
    this.#maxPayload = maxPayload;
  }

  push(chunk: Buffer): Frame[] {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const frames: Frame[] = [];
    while (this.#pending.length >= HEADER_BYTES) {
      const length = this.#pending.readUInt32BE(1);
      if (length > this.#maxPayload) throw new HullError('invalid_argument', `Console frame of ${length} bytes, over ${this.#maxPayload}`);
      if (this.#pending.length < HEADER_BYTES + length) break;
      frames.push({ type: this.#pending[0]!, payload: Buffer.from(this.#pending.subarray(HEADER_BYTES, HEADER_BYTES + length)) });
      this.#pending = this.#pending.subarray(HEADER_BYTES + length);
    }
    return frames;
  }
}

export function readResize(payload: Buffer): { rows: number; cols: number } | undefined {
  if (payload.length !== 4) return undefined;
  return { rows: payload.readUInt16BE(0), cols: payload.readUInt16BE(2) };
}

export function readExit(payload: Buffer): number | undefined {
  return payload.length === 4 ? payload.readUInt32BE(0) : undefined;
}
