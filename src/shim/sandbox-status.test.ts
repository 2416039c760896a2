import assert from 'node:assert/strict';
import { test } from 'node:test';
import { podLabels } from './sandbox-status.js';

test('podLabels() reads the pod from CRI sandbox annotations and carries nothing unprintable or too long', () => {
  const annotations = { 'io.kubernetes.cri.sandbox-name': 'web', 'io.kubernetes.cri.sandbox-namespace': 'shop', 'io.kubernetes.cri.sandbox-uid': '0a1b-2c' };
  assert.deepEqual(podLabels(annotations), { namespace: 'shop', name: 'web', uid: '0a1b-2c' });
  assert.deepEqual(podLabels(undefined), { namespace: '', name: '', uid: '' });
  assert.deepEqual(podLabels({ 'io.kubernetes.cri.sandbox-name': 'a\nb', 'io.kubernetes.cri.sandbox-namespace': 'x'.repeat(254) }), { namespace: '', name: '', uid: '' });
});
