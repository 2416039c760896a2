/**
 * console — ConsoleCapture reads a VM's serial console from the hypervisor's console socket and
 * keeps it twice: a small in-memory tail (for error messages and `consoleTail`) and a log file on
 * disk (for post-mortems and `hull console`).
 *
 * The guest writes what it likes to its console, so both are bounded. The log rotates: when
 * `console.log` would pass half of `maxLogBytes` it becomes `console.log.1` (replacing the previous
 * one) and a new `console.log` starts, so the two never hold more than `maxLogBytes` together.
 * Reading pauses while a write is in flight; QEMU then holds the guest's serial output back, so a
 * guest that floods its console slows itself down instead of growing our buffers.
 */

import { open, rename, type FileHandle } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { connectUnix } from '../common/unix-socket.js';
import { ByteTail } from './byte-tail.js';

export interface ConsoleCaptureOptions {
  /** maxLogBytes caps console.log plus console.log.1 (default 1 MiB). */
  maxLogBytes?: number;
  /** tailBytes is the size of the in-memory tail (default 64 KiB). */
  tailBytes?: number;
}

export class ConsoleCapture {
  /** done resolves once the socket has closed and everything read is on disk (or dropped on a disk error). */
  readonly done: Promise<void>;
  /** logError is the first error writing the log; from then on only the in-memory tail is kept. */
  logError: Error | undefined;
  private readonly tailBuffer: ByteTail;
  private readonly maxFileBytes: number;
  /** fileBytes is how much the current console.log holds; changed only inside the `writes` chain. */
  private fileBytes = 0;
  /** writes serialises every file operation, in arrival order. */
  private writes: Promise<void> = Promise.resolve();
  private queued = 0;

  /** connect opens the console socket (as a client) and starts a fresh log at `logPath`. */
  static async connect(socketPath: string, logPath: string, options: ConsoleCaptureOptions = {}): Promise<ConsoleCapture> {
    const socket = await connectUnix(socketPath, 'console socket');
    // Nothing is read before the constructor adds the 'data' listener, so nothing is lost meanwhile.
    try {
      const file = await open(logPath, 'w', 0o600);
      return new ConsoleCapture(socket, file, logPath, options);
    } catch (error) {
      socket.destroy();
      throw error;
    }
  }

  private constructor(
    private readonly socket: Socket,
    private file: FileHandle | undefined,
    private readonly logPath: string,
    options: ConsoleCaptureOptions,
  ) {
    this.tailBuffer = new ByteTail(options.tailBytes ?? 64 * 1024);
    this.maxFileBytes = Math.max(1, Math.floor((options.maxLogBytes ?? 1024 * 1024) / 2));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => socket.destroy()); // the VM went away; 'close' follows
    const socketClosed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    this.done = socketClosed.then(() => this.enqueue(() => this.closeFile()));
  }

  /** tail returns the last `maxBytes` of console output, decoded as UTF-8 (raw: see printable()). */
  tail(maxBytes?: number): string {
    return this.tailBuffer.text(maxBytes);
  }

  /** close stops reading and resolves once the log file is closed. Idempotent. */
  async close(): Promise<void> {
    this.socket.destroy();
    await this.done;
  }

  private onData(chunk: Buffer): void {
    this.tailBuffer.push(chunk);
    this.socket.pause();
    void this.enqueue(() => this.append(chunk)).then(() => {
      if (this.queued === 0 && !this.socket.destroyed) this.socket.resume();
    });
  }

  private enqueue(operation: () => Promise<void>): Promise<void> {
    this.queued++;
    const next = this.writes.then(operation).catch((error: Error) => {
      this.logError ??= error;
      return this.closeFile().catch(() => undefined);
    });
    this.writes = next.finally(() => this.queued--);
    return this.writes;
  }

  /** append writes `chunk` to the log, rotating first whenever the current file is full. */
  private async append(chunk: Buffer): Promise<void> {
    let rest = chunk;
    while (rest.length > 0 && this.file !== undefined) {
      if (this.fileBytes >= this.maxFileBytes) await this.rotate();
      const piece = rest.subarray(0, this.maxFileBytes - this.fileBytes);
      await this.file.write(piece);
      this.fileBytes += piece.length;
      rest = rest.subarray(piece.length);
    }
  }

  private async rotate(): Promise<void> {
    await this.file?.close();
    this.file = undefined;
    await rename(this.logPath, `${this.logPath}.1`);
    this.file = await open(this.logPath, 'w', 0o600);
    this.fileBytes = 0;
  }

  private async closeFile(): Promise<void> {
    const file = this.file;
    this.file = undefined;
    await file?.close();
  }
}
