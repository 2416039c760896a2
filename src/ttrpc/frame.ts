/**
 * frame — ttrpc's framing: a 10-byte header (length u32BE, stream id u32BE, type u8, flags u8) and
 * `length` bytes of data, as containerd/ttrpc v1.1.1 `channel.go` reads and writes it.
 *
 * The decoder is fed whatever chunks the socket delivers and never holds more than one frame
 * (header + at most 4 MiB) plus the unparsed rest of the latest chunk. A frame announcing more than
 * 4 MiB is reported as soon as its header arrives and its data is then skipped as it streams past,
 * never buffered, so a peer cannot make us allocate what it claims.
 */

import { HullError } from '../errors/index.js';

export const FRAME_HEADER_LENGTH = 10;
/** MAX_FRAME_DATA_LENGTH is ttrpc's messageLengthMax: 4 MiB of data per frame. */
export const MAX_FRAME_DATA_LENGTH = 4 << 20;
/**
 * MAX_UNSENT_BYTES bounds what we queue on a stream the peer is not reading: past it, a server drops the
 * connection and a client refuses new calls, instead of buffering without limit.
 */
export const MAX_UNSENT_BYTES = 4 * MAX_FRAME_DATA_LENGTH;

/** FrameType holds the frame types ttrpc 1.1.1 knows; others must be ignored (future streaming types). */
export const FrameType = { Request: 0x01, Response: 0x02 } as const;

export interface Frame {
  streamId: number;
  /** type is a FrameType value, or any other byte the peer sent. */
  type: number;
  flags: number;
  data: Uint8Array;
}

/** OversizedFrame is a frame whose header announced more data than MAX_FRAME_DATA_LENGTH. */
export interface OversizedFrame {
  streamId: number;
  type: number;
  flags: number;
  length: number;
}

export type DecodedFrame = { kind: 'frame'; frame: Frame } | { kind: 'oversized'; oversized: OversizedFrame };

/** oversizedMessage is the text ttrpc uses for a frame over the limit (channel.go). */
export function oversizedMessage(length: number): string {
  return `message length ${length} exceed maximum message size of ${MAX_FRAME_DATA_LENGTH}`;
}

/** encodeFrame returns header and data as one buffer; data over 4 MiB is refused with resource_exhausted. */
export function encodeFrame(frame: Frame): Uint8Array {
  const { streamId, type, flags, data } = frame;
  if (data.length > MAX_FRAME_DATA_LENGTH) {
    throw new HullError('resource_exhausted', `refusing to send, ${oversizedMessage(data.length)}`);
  }
  const bytes = new Uint8Array(FRAME_HEADER_LENGTH + data.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, data.length);
  view.setUint32(4, streamId >>> 0);
  view.setUint8(8, type & 0xff);
  view.setUint8(9, flags & 0xff);
  bytes.set(data, FRAME_HEADER_LENGTH);
  return bytes;
}

interface FrameHeader {
  length: number;
  streamId: number;
  type: number;
  flags: number;
}

/** FrameDecoder turns a byte stream into frames; push() each chunk as it arrives. */
export class FrameDecoder {
  /** chunks not yet consumed, oldest first; chunkOffset bytes of chunks[0] are consumed already. */
  private chunks: Uint8Array[] = [];
  private chunkOffset = 0;
  private bufferedLength = 0;
  /** header of the frame whose data we are waiting for. */
  private pendingHeader: FrameHeader | undefined;
  /** bytes of an oversized frame still to be thrown away. */
  private skipRemaining = 0;

  /** push consumes a chunk and returns every frame (or oversized report) it completed, in order. */
  push(chunk: Uint8Array): DecodedFrame[] {
    const decoded: DecodedFrame[] = [];
    let rest = chunk;
    if (this.skipRemaining > 0) {
      const skipped = Math.min(this.skipRemaining, rest.length);
      this.skipRemaining -= skipped;
      rest = rest.subarray(skipped);
    }
    if (rest.length === 0) return decoded;
    this.chunks.push(rest);
    this.bufferedLength += rest.length;

    for (;;) {
      if (this.pendingHeader === undefined) {
        if (this.bufferedLength < FRAME_HEADER_LENGTH) break;
        const header = parseHeader(this.take(FRAME_HEADER_LENGTH));
        if (header.length > MAX_FRAME_DATA_LENGTH) {
          const { length, streamId, type, flags } = header;
          decoded.push({ kind: 'oversized', oversized: { streamId, type, flags, length } });
          this.skipBuffered(length);
          continue;
        }
        this.pendingHeader = header;
      }
      const header = this.pendingHeader;
      if (this.bufferedLength < header.length) break;
      const data = this.take(header.length);
      this.pendingHeader = undefined;
      decoded.push({ kind: 'frame', frame: { streamId: header.streamId, type: header.type, flags: header.flags, data } });
    }
    return decoded;
  }

  /** skipBuffered drops `count` bytes: what is buffered now, and the remainder from later chunks. */
  private skipBuffered(count: number): void {
    const now = Math.min(count, this.bufferedLength);
    this.consume(now, undefined);
    this.skipRemaining = count - now;
  }

  /**
   * take removes and returns the next `count` buffered bytes, always as a copy: a view would keep the
   * whole socket chunk alive for as long as a handler holds its payload.
   */
  private take(count: number): Uint8Array {
    const out = new Uint8Array(count);
    this.consume(count, out);
    return out;
  }

  /** consume drops `count` buffered bytes, copying them into `into` when given. */
  private consume(count: number, into: Uint8Array | undefined): void {
    let done = 0;
    while (done < count) {
      const chunk = this.chunks[0];
      if (chunk === undefined) throw new Error('FrameDecoder: consume past buffered data');
      const available = chunk.length - this.chunkOffset;
      const step = Math.min(available, count - done);
      into?.set(chunk.subarray(this.chunkOffset, this.chunkOffset + step), done);
      done += step;
      if (step === available) {
        this.chunks.shift();
        this.chunkOffset = 0;
      } else {
        this.chunkOffset += step;
      }
    }
    this.bufferedLength -= count;
  }
}

function parseHeader(bytes: Uint8Array): FrameHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, FRAME_HEADER_LENGTH);
  return {
    length: view.getUint32(0),
    streamId: view.getUint32(4),
    type: view.getUint8(8),
    flags: view.getUint8(9),
  };
}
