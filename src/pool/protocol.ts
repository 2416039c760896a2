/**
 * The pool's socket: `<pool_dir>/pool.sock` (0600, root only), one JSON object per line each way.
 *
 *   client → {"op":"claim","shape":{...},"sandboxId":"..."}
 *   owner  → {"vm":{dir,spec,running,tap}} or {"vm":null} (none of that shape ready) or {"error":"..."}
 *   client → {"op":"taken"} (the sandbox holds the lifeline and recorded the VM) or {"op":"give-back"}
 *   owner  → {"ok":true}
 *   client → {"op":"status"}  owner → {"status":{...}}
 *
 * A claim whose connection closes before "taken" is a give-back: the owner ends that VM.
 * Both ends bound what they read (MAX_LINE_BYTES) and how long they wait.
 */
import type { Socket } from 'node:net';
import { HullError } from '../errors/index.js';
import type { PoolShape } from '../sandbox/index.js';
import type { RunningVm, VmSpec } from '../vmm/index.js';

export const POOL_SOCKET = 'pool.sock';
export const MAX_LINE_BYTES = 64 * 1024;

/** LentVm is what the owner tells the claimer of the VM it lends. */
export interface LentVm {
  dir: string;
  spec: VmSpec;
  running: RunningVm;
  tap: { netns: string; name: string };
}

export interface PoolStatus {
  pid: number;
  size: number;
  shapes: Array<{ shape: PoolShape; ready: number; warming: number }>;
  /** readyPssBytes: the host memory (PSS of every host process) of each ready VM. */
  readyPssBytes: number[];
  /** memoryBytes: what the pool's cgroup is charged (ready VMs, the owner, and what adopted VMs were charged before adoption); null when unknown. */
  memoryBytes: number | null;
  /** memoryLimitBytes: the pool's cgroup limit (pool_memory_limit). */
  memoryLimitBytes: number;
  lent: number;
  replaced: number;
  warmFailures: number;
}

export type Request =
  | { op: 'claim'; shape: PoolShape; sandboxId: string }
  | { op: 'taken' }
  | { op: 'give-back' }
  | { op: 'status' };

/**
 * LineReader yields the socket's lines as parsed JSON objects, one at a time; a line over
 * MAX_LINE_BYTES, a line that is not a JSON object or a read past `timeoutMs` fails.
 */
export class LineReader {
  #buffer = '';
  #waiting: ((line: string | Error) => void) | undefined;
  #lines: string[] = [];
  #ended: Error | undefined;

  constructor(socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      let newline: number;
      while ((newline = this.#buffer.indexOf('\n')) >= 0) {
        this.#lines.push(this.#buffer.slice(0, newline));
        this.#buffer = this.#buffer.slice(newline + 1);
      }
      if (this.#buffer.length > MAX_LINE_BYTES) {
        this.#end(new HullError('invalid_argument', `pool socket: a line longer than ${MAX_LINE_BYTES} bytes`));
        socket.destroy();
      }
      this.#deliver();
    });
    socket.on('close', () => this.#end(new HullError('unavailable', 'pool socket closed')));
    socket.on('error', (e) => this.#end(new HullError('unavailable', `pool socket: ${e.message}`)));
  }

  /** next is the next object, within timeoutMs. */
  next(timeoutMs: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting = undefined;
        reject(new HullError('deadline_exceeded', `pool socket: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiting = (line) => {
        clearTimeout(timer);
        this.#waiting = undefined;
        if (line instanceof Error) return reject(line);
        try {
          const value = JSON.parse(line) as unknown;
          if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not a JSON object');
          resolve(value as Record<string, unknown>);
        } catch (e) {
          reject(new HullError('invalid_argument', `pool socket: ${(e as Error).message}`));
        }
      };
      this.#deliver();
    });
  }

  #end(error: Error): void {
    this.#ended ??= error;
    this.#deliver();
  }

  #deliver(): void {
    if (this.#waiting === undefined) return;
    const line = this.#lines.shift();
    if (line !== undefined) this.#waiting(line);
    else if (this.#ended) this.#waiting(this.#ended);
  }
}

export function send(socket: Socket, message: unknown): void {
  socket.write(JSON.stringify(message) + '\n');
}
