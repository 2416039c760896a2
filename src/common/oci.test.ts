import assert from 'node:assert/strict';
import { test } from 'node:test';
import { guestBindOptions, isBindMount, isReadOnly } from './oci.js';
import { isInside } from './paths.js';

test('isReadOnly() and guestBindOptions() keep ro and drop shared propagation', () => {
  assert.equal(isReadOnly(['rbind', 'rprivate', 'ro']), true);
  assert.equal(isReadOnly(['rbind', 'rro']), true);
  assert.equal(isReadOnly(['rbind', 'rw']), false);
  assert.equal(isReadOnly(undefined), false);
  assert.deepEqual(guestBindOptions(['rbind', 'rprivate', 'ro']), ['rbind', 'ro', 'rprivate']);
  assert.deepEqual(guestBindOptions(['bind', 'rshared', 'rw', 'Z', 'nosuid', 'nosuid']), ['rbind', 'nosuid']);
  assert.deepEqual(guestBindOptions(['rbind', 'rslave', 'rro']), ['rbind', 'ro', 'rslave']);
});

test('isBindMount() knows a bind by its type or its options', () => {
  assert.equal(isBindMount({ type: 'bind' }), true);
  assert.equal(isBindMount({ type: 'none', options: ['rbind', 'ro'] }), true);
  assert.equal(isBindMount({ type: 'tmpfs', options: ['nosuid'] }), false);
});

test('isInside() normalises the path and never matches a sibling prefix', () => {
  assert.equal(isInside('/run/hull/shared', '/run/hull/shared/a/../b'), true);
  assert.equal(isInside('/run/hull/shared', '/run/hull/shared/../../etc'), false);
  assert.equal(isInside('/run/hull/shared', '/run/hull/sharedx'), false);
  assert.equal(isInside('/run/hull/shared', '/run/hull/shared'), true);
  assert.equal(isInside('/', '/etc'), true);
});
