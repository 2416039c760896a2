import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { errorCode } from '../errors/index.js';
import { SandboxGate, TaskLocks } from './task-lock.js';

/** gate is a promise the test opens by hand. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

test('requests on one task run one at a time, in arrival order', async () => {
  const locks = new TaskLocks();
  const log: string[] = [];
  const first = gate();
  const a = locks.run('t', async () => {
    log.push('a starts');
    await first.opened;
    log.push('a ends');
    return 'a';
  });
  const b = locks.run('t', async () => {
    log.push('b runs');
    return 'b';
  });
  await tick();
  assert.deepEqual(log, ['a starts'], 'b waits for a');
  first.open();
  assert.deepEqual(await Promise.all([a, b]), ['a', 'b']);
  assert.deepEqual(log, ['a starts', 'a ends', 'b runs']);
  assert.equal(locks.busy('t'), false, 'an idle task keeps no queue');
});

test('requests on different tasks run side by side', async () => {
  const locks = new TaskLocks();
  const blocker = gate();
  const slow = locks.run('t1', () => blocker.opened);
  let ran = false;
  await locks.run('t2', async () => {
    ran = true;
  });
  assert.equal(ran, true);
  blocker.open();
  await slow;
});

test('a failed request fails alone and does not block the next', async () => {
  const locks = new TaskLocks();
  const failed = locks.run('t', async () => {
    throw new Error('boom');
  });
  const next = locks.run('t', async () => 'next');
  await assert.rejects(failed, /boom/);
  assert.equal(await next, 'next');
});

test('of two Creates racing before the VM is up, one boots and the other waits, then joins', async () => {
  const g = new SandboxGate();
  const first = g.claim('sandbox');
  const second = g.claim('app');
  assert.equal(first.boot, true);
  assert.equal(second.boot, false);
  let joined = false;
  const waiting = !second.boot ? second.wait().then(() => (joined = true)) : undefined;
  await tick();
  assert.equal(joined, false, 'the second waits for the boot');
  if (first.boot) first.settle();
  await waiting;
  assert.equal(joined, true);
});

test('a Create waiting for a boot that failed fails, naming the task that was booting', async () => {
  const g = new SandboxGate();
  const first = g.claim('sandbox');
  const second = g.claim('app');
  if (!first.boot || second.boot) throw new Error('unexpected roles');
  first.settle(new Error('no guest image'));
  await assert.rejects(second.wait(), (e: Error) => errorCode(e) === 'failed_precondition' && /^No pod VM to join: the Create of task "sandbox", which was starting it, failed: no guest image$/.test(e.message));
  // The gate is free again: a later Create may try to boot.
  assert.equal(g.claim('again').boot, true);
});
