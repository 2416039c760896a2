import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { errorCode } from '../errors/index.js';
import { Status } from '../proto/gen/task_status_pb.js';
import { ProcessLifecycle, createdKillStatus, type ProcessOp, type ProcessState } from './process-state.js';

/** at walks a new process to `state` along the machine's own transitions. */
function at(state: ProcessState, kind: 'init' | 'exec' = 'init'): ProcessLifecycle {
  const p = new ProcessLifecycle(kind);
  const path: Record<ProcessState, ProcessState[]> = {
    created: [],
    running: ['running'],
    paused: ['running', 'paused'],
    stopped: ['running', 'stopped'],
    deleted: ['running', 'stopped', 'deleted'],
  };
  for (const next of path[state]) p.to(next);
  return p;
}

/** refusal is the error `op` gets in `state` as [code, message], or 'ok'. */
function refusal(state: ProcessState, op: ProcessOp, kind: 'init' | 'exec' = 'init'): 'ok' | [string, string] {
  try {
    at(state, kind).check(op);
    return 'ok';
  } catch (e) {
    return [errorCode(e), (e as Error).message];
  }
}

test('a process walks created → running ⇄ paused → stopped → deleted', () => {
  const p = new ProcessLifecycle('init');
  assert.equal(p.state, 'created');
  assert.equal(p.status, Status.CREATED);
  p.to('running');
  p.to('paused');
  assert.equal(p.status, Status.PAUSED);
  p.to('running');
  p.to('stopped');
  assert.equal(p.ended, true);
  assert.equal(p.status, Status.STOPPED);
  p.to('deleted');
  assert.equal(p.state, 'deleted');
});

test('a created process may stop (killed before it started) or be deleted', () => {
  const killed = new ProcessLifecycle('exec');
  killed.to('stopped');
  assert.equal(killed.state, 'stopped');
  const deleted = new ProcessLifecycle('exec');
  deleted.to('deleted');
  assert.equal(deleted.state, 'deleted');
});

test('moves the machine does not have are bugs, and throw', () => {
  for (const [from, to] of [
    ['stopped', 'running'],
    ['stopped', 'paused'],
    ['running', 'created'],
    ['running', 'deleted'],
    ['paused', 'deleted'],
    ['created', 'paused'],
    ['deleted', 'stopped'],
  ] as const) {
    assert.throws(() => at(from).to(to), (e: Error) => errorCode(e) === 'internal' && e.message === `invalid state transition "${from}" to "${to}"`);
  }
});

test("requests in the wrong state get runc's message as FailedPrecondition", () => {
  const fp = (message: string): [string, string] => ['failed_precondition', message];
  assert.deepEqual(refusal('stopped', 'pause'), fp('cannot pause a stopped container'));
  assert.deepEqual(refusal('stopped', 'resume'), fp('cannot resume a stopped container'));
  assert.deepEqual(refusal('stopped', 'start'), fp('cannot start a stopped process'));
  assert.deepEqual(refusal('stopped', 'update'), fp('cannot update a stopped container'));
  assert.deepEqual(refusal('stopped', 'exec'), fp('cannot exec in a stopped state'));
  assert.deepEqual(refusal('created', 'pause'), fp('cannot pause task in created state'));
  assert.deepEqual(refusal('created', 'resume'), fp('cannot resume task in created state'));
  assert.deepEqual(refusal('running', 'start'), fp('cannot start a running process'));
  assert.deepEqual(refusal('running', 'resume'), fp('cannot resume a running process'));
  assert.deepEqual(refusal('running', 'delete'), fp('cannot delete a running process'));
  assert.deepEqual(refusal('running', 'delete', 'exec'), fp('cannot delete a running process'));
  assert.deepEqual(refusal('paused', 'pause'), fp('cannot pause a paused container'));
  assert.deepEqual(refusal('paused', 'delete'), fp('cannot delete a paused process'));
  assert.deepEqual(refusal('paused', 'start'), fp('cannot start a paused process'));
  assert.deepEqual(refusal('paused', 'exec'), fp('cannot exec in a paused state'));
  assert.deepEqual(refusal('stopped', 'resize', 'exec'), fp('cannot resize a stopped container'));
});

test('what each state allows', () => {
  assert.equal(refusal('created', 'start'), 'ok');
  assert.equal(refusal('created', 'delete'), 'ok');
  assert.equal(refusal('created', 'kill'), 'ok');
  assert.equal(refusal('created', 'update'), 'ok');
  assert.equal(refusal('running', 'pause'), 'ok');
  assert.equal(refusal('running', 'exec'), 'ok');
  assert.equal(refusal('running', 'kill'), 'ok');
  assert.equal(refusal('paused', 'resume'), 'ok');
  assert.equal(refusal('paused', 'kill'), 'ok');
  assert.equal(refusal('stopped', 'delete'), 'ok');
  assert.equal(refusal('stopped', 'delete', 'exec'), 'ok');
  // runc resizes an init's console whatever its state.
  assert.equal(refusal('stopped', 'resize'), 'ok');
});

test('a kill of a process that has finished is NotFound "process already finished"', () => {
  assert.deepEqual(refusal('stopped', 'kill'), ['not_found', 'process already finished']);
  assert.deepEqual(refusal('stopped', 'kill', 'exec'), ['not_found', 'process already finished']);
  assert.deepEqual(refusal('deleted', 'kill'), ['not_found', 'process already finished']);
});

test('task requests are refused for an exec', () => {
  for (const op of ['pause', 'resume', 'update', 'exec'] as const) assert.equal(refusal('running', op, 'exec')[0], 'invalid_argument');
});

test('a signal ends a never-started process as it would a running one; one ignored by default does not', () => {
  assert.equal(createdKillStatus(9), 137);
  assert.equal(createdKillStatus(15), 143);
  assert.equal(createdKillStatus(0), undefined);
  assert.equal(createdKillStatus(28), undefined); // SIGWINCH
  assert.equal(createdKillStatus(17), undefined); // SIGCHLD
});
