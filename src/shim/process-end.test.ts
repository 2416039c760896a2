import { strict as assert } from 'node:assert';
import { test, type TestContext } from 'node:test';
import { isDeadlineExceeded } from '../errors/index.js';
import { KILLED_STATUS, KILL_EXIT_DEADLINE_MS, ProcessEnd, bounded } from './process-end.js';

/** recorder is a ProcessEnd whose exits are kept in `exits`, as the task service would publish them. */
function recorder(): { end: ProcessEnd; exits: Array<{ status: number; forced: boolean }> } {
  const exits: Array<{ status: number; forced: boolean }> = [];
  const end = new ProcessEnd(async (status, forced) => {
    exits.push({ status, forced });
  });
  return { end, exits };
}

function fakeClock(t: TestContext) {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  return t.mock.timers;
}

test('a process ends once: the first report wins', async () => {
  const { end, exits } = recorder();
  assert.equal(end.ended, false);
  await end.end(3);
  await end.end(0);
  assert.deepEqual(exits, [{ status: 3, forced: false }]);
  assert.equal(end.ended, true);
});

test('a SIGKILLed process the guest never reports ends as killed at the deadline, and a late report is dropped', async (t) => {
  const clock = fakeClock(t);
  const { end, exits } = recorder();
  end.armKillDeadline();
  assert.equal(end.killed, true);
  clock.tick(KILL_EXIT_DEADLINE_MS - 1);
  assert.deepEqual(exits, []);
  clock.tick(1);
  assert.deepEqual(exits, [{ status: KILLED_STATUS, forced: true }]);
  assert.equal(KILLED_STATUS, 137);
  await end.end(0); // the guest's real exit, too late
  assert.deepEqual(exits, [{ status: 137, forced: true }]);
});

test('a guest that reports the exit in time disarms the deadline', async (t) => {
  const clock = fakeClock(t);
  const { end, exits } = recorder();
  end.armKillDeadline(50);
  await end.end(9);
  clock.tick(1000);
  assert.deepEqual(exits, [{ status: 9, forced: false }]);
});

test('a second SIGKILL does not postpone the first deadline', async (t) => {
  const clock = fakeClock(t);
  const { end, exits } = recorder();
  end.armKillDeadline(100);
  clock.tick(60);
  end.armKillDeadline(100);
  clock.tick(40);
  assert.deepEqual(exits, [{ status: 137, forced: true }]);
});

test('no deadline is armed for a process that already ended, nor left after dispose', async (t) => {
  const clock = fakeClock(t);
  const ended = recorder();
  await ended.end.end(0);
  ended.end.armKillDeadline(10);
  const deleted = recorder();
  deleted.end.armKillDeadline(10);
  deleted.end.dispose();
  clock.tick(100);
  assert.deepEqual(ended.exits, [{ status: 0, forced: false }]);
  assert.deepEqual(deleted.exits, []);
});

test('bounded fails a call that does not answer, and passes through one that does', async (t) => {
  const clock = fakeClock(t);
  const hung = bounded(new Promise<void>(() => {}), 5000, 'Signal 15 to c1 in the guest');
  clock.tick(5000);
  await assert.rejects(hung, (e: Error) => isDeadlineExceeded(e) && /^Signal 15 to c1 in the guest did not finish within 5000 ms$/.test(e.message));
  assert.equal(await bounded(Promise.resolve(7), 5000, 'x'), 7);
  await assert.rejects(bounded(Promise.reject(new Error('no such process')), 5000, 'x'), /no such process/);
  // A call that fails after its bound fails nobody (no unhandled rejection).
  let fail!: (e: Error) => void;
  const late = new Promise<void>((_, reject) => (fail = reject));
  const call = bounded(late, 10, 'y');
  clock.tick(10);
  await assert.rejects(call, isDeadlineExceeded);
  fail(new Error('late'));
});
