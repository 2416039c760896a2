/**
 * PoolClient is a shim's way to the node's pool of warm VMs (the owner, owner.ts): a Sandbox's
 * VmPool. A claim that finds no owner listening starts one (detached: it outlives this shim, and
 * fills the pool for the next pods) and lets this sandbox start its own VM; so does every failure
 * (the pool is a speed-up, never a reason for a pod not to start).
 */
import { spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import type { Socket } from 'node:net';
import { connectUnix } from '../common/unix-socket.js';
import { isInside } from '../common/paths.js';
import { HullError } from '../errors/index.js';
import { POOL_VM_DIR, type PooledVm, type PoolShape, type VmPool } from '../sandbox/index.js';
import { LineReader, POOL_SOCKET, send, type LentVm, type PoolStatus } from './protocol.js';

// The owner answers from memory; handing a VM over closes two sockets. Beyond this, start our own VM.
const CLAIM_TIMEOUT_MS = 3_000;
const ANSWER_TIMEOUT_MS = 3_000;

export interface PoolClientOptions {
  /** dir is config pool_dir. */
  dir: string;
  /** configPath is passed to an owner this client starts (`hull pool serve --config PATH`). */
  configPath: string;
  log: (line: string) => void;
}

export class PoolClient implements VmPool {
  constructor(private readonly options: PoolClientOptions) {}

  async claim(shape: PoolShape, sandboxId: string): Promise<PooledVm | undefined> {
    const socket = await this.#connect();
    if (socket === undefined) return undefined;
    const reader = new LineReader(socket);
    try {
      send(socket, { op: 'claim', shape, sandboxId });
      const answer = await reader.next(CLAIM_TIMEOUT_MS);
      if (typeof answer['error'] === 'string') throw new HullError('unavailable', `the pool refused: ${answer['error']}`);
      if (answer['vm'] === null || answer['vm'] === undefined) {
        socket.end();
        return undefined;
      }
      const lent = checkLent(answer['vm'], this.options.dir);
      return {
        ...lent,
        handOver: async () => {
          send(socket, { op: 'taken' });
          await reader.next(ANSWER_TIMEOUT_MS).finally(() => socket.end());
        },
        giveBack: () => {
          send(socket, { op: 'give-back' });
          socket.end();
        },
      };
    } catch (e) {
      // Closing before "taken" gives the VM back.
      socket.destroy();
      throw e;
    }
  }

  /** status asks the owner for its pool (undefined when no owner runs). */
  async status(): Promise<PoolStatus | undefined> {
    const socket = await connectUnix(join(this.options.dir, POOL_SOCKET), 'pool socket').catch(() => undefined);
    if (socket === undefined) return undefined;
    try {
      send(socket, { op: 'status' });
      const answer = await new LineReader(socket).next(ANSWER_TIMEOUT_MS);
      return answer['status'] as PoolStatus;
    } finally {
      socket.destroy();
    }
  }

  async #connect(): Promise<Socket | undefined> {
    try {
      return await connectUnix(join(this.options.dir, POOL_SOCKET), 'pool socket');
    } catch (e) {
      const code = ((e as Error).cause as NodeJS.ErrnoException | undefined)?.code;
      if (code !== 'ENOENT' && code !== 'ECONNREFUSED') throw e;
      startOwner(this.options);
      return undefined;
    }
  }
}

/**
 * startOwner starts `hull pool serve` detached from this process (its own session, no stdio): it
 * must not die with the shim that needed it. Two shims starting one at once is fine: the second
 * owner finds the first's pid file and exits.
 */
export function startOwner(options: Pick<PoolClientOptions, 'configPath' | 'log'> & { hull?: string }): void {
  // bin/hull sits beside the shim's real file (the checkout's bin/), whatever links lead to it.
  const hull = options.hull ?? join(dirname(realpathSync(process.argv[1] ?? '')), 'hull');
  options.log(`starting the VM pool's owner: ${hull} pool serve --config ${options.configPath}`);
  const child = spawn(process.execPath, [hull, 'pool', 'serve', '--config', options.configPath], { detached: true, stdio: 'ignore', env: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin' } });
  child.on('error', (e) => options.log(`start of the VM pool's owner failed: ${e.message}`));
  child.unref();
}

/** checkLent checks the owner's answer: a VM directory of this pool, and the fields adoption uses. */
function checkLent(value: unknown, poolDir: string): LentVm {
  const fail = (why: string): never => {
    throw new HullError('internal', `the pool lent a VM that is not one: ${why}`);
  };
  const vm = value as Partial<LentVm>;
  if (typeof vm !== 'object' || vm === null) fail('not an object');
  const dir = vm.dir;
  if (typeof dir !== 'string' || posix.normalize(dir) !== dir || !isInside(poolDir, dir) || !POOL_VM_DIR.test(posix.basename(dir))) fail(`directory ${String(dir)}`);
  const spec = vm.spec;
  if (typeof spec !== 'object' || spec === null || spec.stateDir !== dir || typeof spec.lifeline !== 'string' || posix.dirname(spec.lifeline) !== dir) fail('spec');
  const running = vm.running;
  if (typeof running !== 'object' || running === null || !Number.isSafeInteger(running.pid) || typeof running.startTime !== 'string' || !Array.isArray(running.chain)) fail('running');
  const tap = vm.tap;
  if (typeof tap !== 'object' || tap === null || typeof tap.netns !== 'string' || !/^[A-Za-z0-9_.-]{1,15}$/.test(tap.name)) fail('tap');
  return vm as LentVm;
}
