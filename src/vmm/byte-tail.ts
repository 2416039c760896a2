/**
 * byte-tail — ByteTail keeps only the last `capacity` bytes of a stream: QEMU's stderr, the guest's
 * console. Memory stays bounded however much the (possibly hostile) writer sends.
 */

export class ByteTail {
  /** chunks hold the kept bytes in order; their total length is `length` ≤ capacity. */
  private chunks: Buffer[] = [];
  private length = 0;

  constructor(readonly capacity: number) {}

  push(chunk: Buffer): void {
    if (chunk.length >= this.capacity) {
      this.chunks = [Buffer.from(chunk.subarray(chunk.length - this.capacity))];
      this.length = this.capacity;
      return;
    }
    this.chunks.push(Buffer.from(chunk)); // a copy: callers may reuse their buffer
    this.length += chunk.length;
    while (this.length > this.capacity) {
      const first = this.chunks[0]!;
      const excess = this.length - this.capacity;
      if (first.length <= excess) {
        this.chunks.shift();
        this.length -= first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.length -= excess;
      }
    }
  }

  /** text returns the last `maxBytes` bytes (default all kept) decoded as UTF-8. */
  text(maxBytes = this.capacity): string {
    const all = Buffer.concat(this.chunks, this.length);
    return all.subarray(Math.max(0, all.length - maxBytes)).toString('utf8');
  }
}

/**
 * printable makes untrusted text safe to put in an error message or log line: control characters
 * other than newline and tab (terminal escapes, lone carriage returns) become U+FFFD; a serial
 * console's CRLF line ends become LF.
 */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\r\n/g, '\n').replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '\ufffd');
}
