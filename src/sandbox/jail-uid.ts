/**
 * Each sandbox's VMM runs as a uid/gid of its own (src/vmm/jail.ts), leased from a range no host
 * user has (config `jail_uid_base`, `jail_uid_count`): distinct VMs cannot signal, trace or share
 * files with each other through their uid. A lease is a file `/run/hull-uids/<uid>` holding the
 * sandbox's state dir, made with O_EXCL (two shims never get one uid, whatever their run roots:
 * uids are the host's) and recorded in the sandbox's ledger before it is made, so teardown
 * releases it. A lease left by a sandbox that is gone is taken over only when no process holds its
 * uid any more: a VMM that outlived its sandbox must never share a uid with a new one.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pidsWithUid } from '../common/process.js';
import { HullError } from '../errors/index.js';
import type { Ledger } from './ledger.js';

export const LEASES_DIR = '/run/hull-uids';

export interface UidRange {
  base: number;
  count: number;
}

/** DEFAULT_JAIL_UIDS: config's jail_uid_base and jail_uid_count defaults. */
export const DEFAULT_JAIL_UIDS: UidRange = { base: 2_000_000_000, count: 65_536 };

/** leasePath is the lease file of `uid`. */
export function leasePath(uid: number): string {
  return join(LEASES_DIR, String(uid));
}

/** leaseJailUid leases a free uid of `range` for the sandbox whose state dir the ledger keeps. */
export async function leaseJailUid(ledger: Ledger, range: UidRange): Promise<number> {
  const holder = ledger.stateDir;
  await mkdir(LEASES_DIR, { recursive: true, mode: 0o700 });
  // Start where the state dir hashes to: leases of concurrent starts rarely meet.
  const start = createHash('sha256').update(holder).digest().readUInt32BE(0) % range.count;
  for (let i = 0; i < range.count; i++) {
    const uid = range.base + ((start + i) % range.count);
    const path = leasePath(uid);
    ledger.record('', { kind: 'uid-lease', uid });
    try {
      await writeFile(path, holder, { flag: 'wx', mode: 0o600 });
      return uid;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // A lease whose sandbox has no state dir any more was left by a crash that no replay followed.
    const other = await readFile(path, 'utf8').catch(() => '');
    if (other.startsWith('/') && !(await stat(other).then(() => true, () => false)) && pidsWithUid(uid).length === 0) {
      if (await unlink(path).then(() => true, () => false)) i--; // try this uid again
    }
  }
  throw new HullError('resource_exhausted', `No free jail uid in ${range.base}..${range.base + range.count - 1}: raise jail_uid_count`);
}

/** UID_DRAIN_MS bounds the wait for a released uid's processes to end (QEMU dies with the jail's unshare, just killed). */
const UID_DRAIN_MS = 5_000;

/**
 * releaseJailUid removes the lease of `uid` if it is still this sandbox's and no process holds the
 * uid any more; with one left after `drainMs`, it keeps the lease and throws (the replay reports it).
 */
export async function releaseJailUid(stateDir: string, uid: number, drainMs = UID_DRAIN_MS): Promise<void> {
  const path = leasePath(uid);
  const holder = await readFile(path, 'utf8').catch(() => undefined);
  if (holder !== stateDir) return;
  const deadline = Date.now() + drainMs;
  let left = pidsWithUid(uid);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(20);
    left = pidsWithUid(uid);
  }
  if (left.length > 0) throw new HullError('internal', `jail uid ${uid} is still held by process ${left.join(', ')}: its lease stays until they end`);
  await unlink(path).catch(() => {});
}
