/**
 * OutputBuffer holds what a process wrote to stdout or stderr until the host
 * reads it. It is bounded: when it holds `limitBytes` the source stream is
 * paused, so a process that writes faster than the host reads is slowed down
 * by its pipe filling up, never by the guest running out of memory.
 */
import type { Readable } from 'node:stream';

export class OutputBuffer {
  readonly #limitBytes: number;
  readonly #chunks: Buffer[] = [];
  #size = 0;
  #ended = false;
  #source: Readable | undefined;
  // Readers blocked in read(), woken by data or end; guarded by the event loop.
  #waiters: Array<() => void> = [];

  constructor(limitBytes = 1 << 20) {
    this.#limitBytes = limitBytes;
  }

  /** attach drains `source` into the buffer until it ends. */
  attach(source: Readable): void {
    this.#source = source;
    source.on('data', (chunk: Buffer) => {
      this.#chunks.push(chunk);
      this.#size += chunk.length;
      if (this.#size >= this.#limitBytes) source.pause();
      this.#wake();
    });
    const end = (): void => this.end();
    source.once('end', end);
    source.once('close', end);
    source.once('error', end);
  }

  /** end marks the stream finished; readers get eof once the buffer is drained. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#wake();
  }

  /**
   * read waits for data or the end of the stream and returns at most
   * `maxBytes`. `eof` is true only when nothing is left to read.
   */
  async read(maxBytes: number, signal?: AbortSignal): Promise<{ data: Buffer; eof: boolean }> {
    while (this.#size === 0 && !this.#ended) {
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(signal?.reason ?? new Error('read aborted'));
        if (signal?.aborted) return onAbort();
        signal?.addEventListener('abort', onAbort, { once: true });
        this.#waiters.push(() => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    }
    const data = this.#take(Math.max(1, maxBytes));
    if (this.#size < this.#limitBytes && this.#source?.isPaused()) this.#source.resume();
    return { data, eof: this.#ended && this.#size === 0 && data.length === 0 };
  }

  #take(maxBytes: number): Buffer {
    const parts: Buffer[] = [];
    let taken = 0;
    while (taken < maxBytes && this.#chunks.length > 0) {
      const head = this.#chunks[0]!;
      const want = maxBytes - taken;
      if (head.length <= want) {
        parts.push(head);
        this.#chunks.shift();
        taken += head.length;
      } else {
        parts.push(head.subarray(0, want));
        this.#chunks[0] = head.subarray(want);
        taken += want;
      }
    }
    this.#size -= taken;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, taken);
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}
