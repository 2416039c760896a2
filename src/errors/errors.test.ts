import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { fromStatus, fromStatusCode, toStatus, toStatusCode } from './grpc-status.js';
import { ERROR_CODES, HullError, errorCode, isAlreadyExists, isNotFound, isUnknown } from './index.js';

test('toStatusCode() gives containerd errdefs status codes', () => {
  const expected = {
    cancelled: 1,
    unknown: 2,
    invalid_argument: 3,
    deadline_exceeded: 4,
    not_found: 5,
    already_exists: 6,
    resource_exhausted: 8,
    failed_precondition: 9,
    unimplemented: 12,
    internal: 13,
    unavailable: 14,
  };
  for (const code of ERROR_CODES) assert.equal(toStatusCode(code), expected[code], code);
});

test('fromStatus() inverts toStatusCode() and maps other status codes to unknown', () => {
  for (const code of ERROR_CODES) assert.equal(fromStatusCode(toStatusCode(code)), code);
  for (const status of [0, 7, 10, 11, 15, 16, 17, -1]) assert.equal(fromStatusCode(status), 'unknown');
  const error = fromStatus(5, 'task p9 not found');
  assert.ok(error instanceof HullError);
  assert.equal(error.code, 'not_found');
  assert.equal(error.message, 'task p9 not found');
});

test('helpers look at .code, so errors that crossed a process boundary still match', () => {
  const revived: unknown = JSON.parse(JSON.stringify({ code: 'not_found', message: 'gone' }));
  assert.equal(isNotFound(revived), true);
  assert.equal(isNotFound(new HullError('not_found', 'x')), true);
  assert.equal(isAlreadyExists(new HullError('not_found', 'x')), false);
  assert.equal(errorCode(Object.assign(new Error('x'), { code: 'ENOENT' })), 'unknown');
  assert.equal(isUnknown(null), true);
  assert.equal(isUnknown('not_found'), true);
});

test('toStatus() uses the table for coded errors and UNKNOWN for the rest', () => {
  assert.deepEqual(toStatus(new HullError('failed_precondition', 'running')), { code: 9, message: 'running' });
  assert.deepEqual(toStatus(new RangeError('bad')), { code: 2, message: 'bad' });
  assert.deepEqual(toStatus('a string'), { code: 2, message: 'a string' });
});

test('HullError keeps its cause', () => {
  const cause = new Error('root');
  const error = new HullError('internal', 'wrapped', { cause });
  assert.equal(error.cause, cause);
  assert.equal(error.name, 'HullError');
});
