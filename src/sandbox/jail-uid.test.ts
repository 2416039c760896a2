import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pidsWithUid } from '../common/process.js';
import { LEASES_DIR, leaseJailUid, leasePath, releaseJailUid } from './jail-uid.js';
import type { Ledger } from './ledger.js';

/** A ledger that only keeps what is recorded: leaseJailUid needs its state dir and record(). */
function ledgerOf(stateDir: string): Ledger & { records: unknown[] } {
  const records: unknown[] = [];
  return { stateDir, records, record: (_: string, entry: unknown) => void records.push(entry) } as unknown as Ledger & { records: unknown[] };
}

// Far from the default range (2_000_000_000 + 65536) and random: other work leases there at the same time.
const UID = 2_100_000_000 + Math.floor(Math.random() * 1_000_000);
const canRun = process.getuid?.() === 0;

describe('jail uid leases', { skip: !canRun && 'needs root (leases live in /run/hull-uids; the test runs a process as the uid)' }, () => {
  it('takes over a lease whose sandbox is gone only when no process holds its uid', async (t) => {
    mkdirSync(LEASES_DIR, { recursive: true, mode: 0o700 });
    writeFileSync(leasePath(UID), '/run/hull-test/gone-sandbox-that-never-existed', { mode: 0o600 });
    t.after(() => rmSync(leasePath(UID), { force: true }));
    // A VMM that outlived its sandbox: still running as the lease's uid.
    const survivor = spawn('setpriv', [`--reuid=${UID}`, `--regid=${UID}`, '--clear-groups', '--', 'sleep', '600'], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 100 && !pidsWithUid(UID).includes(survivor.pid!); i++) await sleep(50);
      assert.deepEqual(pidsWithUid(UID), [survivor.pid]);
      await assert.rejects(leaseJailUid(ledgerOf('/run/hull-test/new-sandbox'), { base: UID, count: 1 }), /No free jail uid/);
      assert.equal(readFileSync(leasePath(UID), 'utf8'), '/run/hull-test/gone-sandbox-that-never-existed', 'the lease was taken over');
    } finally {
      survivor.kill('SIGKILL');
      await once(survivor, 'exit');
    }
    assert.deepEqual(pidsWithUid(UID), []);
    const ledger = ledgerOf('/run/hull-test/new-sandbox');
    try {
      assert.equal(await leaseJailUid(ledger, { base: UID, count: 1 }), UID);
      assert.equal(readFileSync(leasePath(UID), 'utf8'), '/run/hull-test/new-sandbox');
      // Recorded in the ledger before it was made: teardown releases it.
      assert.ok(ledger.records.length > 0 && ledger.records.every((r) => JSON.stringify(r) === JSON.stringify({ kind: 'uid-lease', uid: UID })), JSON.stringify(ledger.records));
    } finally {
      rmSync(leasePath(UID), { force: true });
    }
    assert.equal(existsSync(leasePath(UID)), false);
  });

  it('keeps a lease while a process still holds its uid, and releases it once none does', async (t) => {
    const uid = UID + 1;
    const holder = '/run/hull-test/sandbox-with-a-survivor';
    mkdirSync(LEASES_DIR, { recursive: true, mode: 0o700 });
    writeFileSync(leasePath(uid), holder, { mode: 0o600 });
    t.after(() => rmSync(leasePath(uid), { force: true }));
    const survivor = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--', 'sleep', '600'], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 100 && !pidsWithUid(uid).includes(survivor.pid!); i++) await sleep(50);
      await assert.rejects(releaseJailUid(holder, uid, 200), new RegExp(`jail uid ${uid} is still held by process ${survivor.pid}`));
      assert.equal(readFileSync(leasePath(uid), 'utf8'), holder);
      // Another sandbox's release never touches it.
      await releaseJailUid('/run/hull-test/someone-else', uid, 200);
      assert.equal(readFileSync(leasePath(uid), 'utf8'), holder);
    } finally {
      survivor.kill('SIGKILL');
      await once(survivor, 'exit');
    }
    await releaseJailUid(holder, uid, 200);
    assert.equal(existsSync(leasePath(uid)), false);
  });
});
