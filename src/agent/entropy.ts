/**
 * entropy — randomness in a guest that may be a clone of a VM template.
 *
 * A clone starts from its template's memory: the kernel's RNG (input pool and ChaCha key) and this
 * process's own generator (OpenSSL's DRBG behind crypto.randomBytes) are the same in every clone of
 * one template until something reseeds them. The host sends 64 fresh random bytes in SetupSandbox;
 * seedRandomness() makes both generators depend on them before anything else runs:
 *
 * - Kernel. Writing to /dev/urandom mixes the bytes into the input pool, but on Linux 6.1 does not
 *   rekey the ChaCha generator that /dev/urandom and getrandom() read: that happens on a timer, up to
 *   60 s later, so clones would go on producing one stream. The ioctl that forces it (RNDRESEEDCRNG)
 *   is out of Node's reach, and the VM generation ID device that makes the kernel reseed on restore
 *   by itself has no ACPI description on QEMU's microvm. What is left is random.c's PM notifier,
 *   which reseeds on PM_POST_SUSPEND: a suspend-to-idle under /sys/power/pm_test = "freezer"
 *   freezes user tasks and thaws them at once (pm_test_delay 0), then sends that notification
 *   ("random: crng reseeded on system resumption"). It needs CONFIG_PM_DEBUG (Debian has it); the
 *   suspend counter proves it happened. It runs before any container exists: only the agent and
 *   init are frozen, for milliseconds.
 * - Agent. AgentEntropy is an HMAC-SHA256 generator keyed with the host's bytes and fresh kernel
 *   output (read after the reseed), mixing OpenSSL's output into every block. Any randomness the
 *   agent needs comes from agentRandomBytes(), never from crypto.randomBytes directly.
 */
import { createHmac, randomBytes as opensslRandomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { HullError } from '../errors/index.js';

const POWER = '/sys/power';
const PM_TEST_DELAY = '/sys/module/suspend/parameters/pm_test_delay';
/** MAX_RANDOM_BYTES bounds one agentRandomBytes() call. */
const MAX_RANDOM_BYTES = 1 << 20;

/**
 * AgentEntropy is the agent's own random generator: HMAC-SHA256 in counter mode under a key that
 * every reseed() and every output changes (an old key is gone once used: output already given
 * cannot be recomputed from a later state). `source` is OpenSSL's generator (tests pass their own).
 */
export class AgentEntropy {
  #key: Buffer;
  #counter = 0n;
  readonly #source: (size: number) => Buffer;

  constructor(source: (size: number) => Buffer = opensslRandomBytes) {
    this.#source = source;
    this.#key = source(32);
  }

  /** reseed makes all later output depend on `inputs` (each length-prefixed, so none can shift into another). */
  reseed(...inputs: Uint8Array[]): void {
    const mac = createHmac('sha256', this.#key).update('hull reseed');
    for (const input of inputs) mac.update(u64(BigInt(input.length))).update(input);
    this.#key = mac.update(this.#source(32)).digest();
  }

  randomBytes(size: number): Buffer {
    if (!Number.isInteger(size) || size < 0 || size > MAX_RANDOM_BYTES) throw new RangeError(`random byte count ${size} is not in 0..${MAX_RANDOM_BYTES}`);
    const out = Buffer.alloc(size);
    for (let offset = 0; offset < size; offset += 32) {
      createHmac('sha256', this.#key).update('hull output').update(u64(this.#counter++)).update(this.#source(32)).digest().copy(out, offset);
    }
    this.#key = createHmac('sha256', this.#key).update('hull next').update(u64(this.#counter++)).digest();
    return out;
  }
}

export const agentEntropy = new AgentEntropy();

/** agentRandomBytes is where the agent's randomness comes from (see the file comment). */
export function agentRandomBytes(size: number): Buffer {
  return agentEntropy.randomBytes(size);
}

/**
 * seedRandomness mixes the host's bytes into the kernel's input pool, forces the kernel generator
 * to rekey from it, then reseeds the agent's generator with the host's bytes and fresh kernel output.
 *
 * It is synchronous on purpose: it runs first in a fresh clone, where nothing else may run before
 * it, and a dozen small sysfs writes cost less on the event loop's thread than through libuv's
 * thread pool, whose first use in a clone under TCG took ~100 ms.
 */
export function seedRandomness(hostEntropy: Uint8Array): void {
  if (hostEntropy.length > 0) writeFileSync('/dev/urandom', hostEntropy);
  reseedKernelRng();
  agentEntropy.reseed(hostEntropy, readUrandom(32));
}

/**
 * reseedKernelRng makes the kernel rekey its ChaCha generator from the input pool now, by a
 * suspend-to-idle that stops at the freezer test level (see the file comment). Fails when the
 * kernel did not go through the suspend path.
 */
export function reseedKernelRng(): void {
  const before = suspendCount();
  // Settings changed for the moment of the reseed, put back afterwards.
  const saved = new Map<string, string>();
  for (const name of ['sync_on_suspend', 'pm_freeze_timeout']) {
    const value = readOr(`${POWER}/${name}`, '').trim();
    if (value !== '') saved.set(name, value);
  }
  try {
    writeFileSync(PM_TEST_DELAY, '0');
    writeFileSync(`${POWER}/pm_test`, 'freezer');
    // Nothing to flush (the root disk is read-only, nothing else is mounted yet): skip the sync.
    if (saved.has('sync_on_suspend')) writeFileSync(`${POWER}/sync_on_suspend`, '0');
    // A task that cannot freeze (stuck in I/O) fails the suspend after this long, not after 20 s.
    if (saved.has('pm_freeze_timeout')) writeFileSync(`${POWER}/pm_freeze_timeout`, '2000');
    writeFileSync(`${POWER}/state`, 'freeze');
  } catch (error) {
    throw new HullError('failed_precondition', `Cannot reseed the kernel RNG through /sys/power: ${(error as Error).message}`, { cause: error });
  } finally {
    ignoreErrors(() => writeFileSync(`${POWER}/pm_test`, 'none'));
    for (const [name, value] of saved) ignoreErrors(() => writeFileSync(`${POWER}/${name}`, value));
  }
  if (suspendCount() <= before) throw new HullError('failed_precondition', 'Cannot reseed the kernel RNG: the kernel did not go through a suspend');
}

function suspendCount(): number {
  const count = Number(readOr(`${POWER}/suspend_stats/success`, '').trim());
  return Number.isInteger(count) ? count : -1;
}

function readUrandom(size: number): Buffer {
  const fd = openSync('/dev/urandom', 'r');
  try {
    const buffer = Buffer.alloc(size);
    const bytesRead = readSync(fd, buffer, 0, size, null);
    if (bytesRead !== size) throw new HullError('internal', `/dev/urandom gave ${bytesRead} of ${size} bytes`);
    return buffer;
  } finally {
    closeSync(fd);
  }
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
}

function ignoreErrors(action: () => void): void {
  try {
    action();
  } catch {
    // best effort: putting a setting back
  }
}

function u64(value: bigint): Buffer {
  const buffer = Buffer.alloc(8);
  buffer.writeBigUInt64BE(BigInt.asUintN(64, value));
  return buffer;
}
