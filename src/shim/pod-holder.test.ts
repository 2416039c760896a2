import { test } from 'node:test';
import assert from 'node:assert/strict';
import { holderExit, isPodHolder } from './pod-holder.js';

test('only a CRI sandbox container is a pod holder', () => {
  assert.equal(isPodHolder({ annotations: { 'io.kubernetes.cri.container-type': 'sandbox' } }), true);
  assert.equal(isPodHolder({ annotations: { 'io.kubernetes.cri.container-type': 'container' } }), false);
  assert.equal(isPodHolder({}), false);
});

test('holderExit reports what pause would', () => {
  assert.equal(holderExit(15), 0);
  assert.equal(holderExit(2), 0);
  assert.equal(holderExit(9), 137);
  assert.equal(holderExit(1), 129);
  assert.equal(holderExit(17), undefined);
  assert.equal(holderExit(28), undefined);
  assert.equal(holderExit(0), undefined);
});
