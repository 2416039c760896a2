import assert from 'node:assert/strict';
import { test } from 'node:test';
import { guestContainerSpec, parseSpec } from './spec.js';

test('parseSpec() says what is malformed', () => {
  assert.throws(() => parseSpec('{', 'x'), /Malformed OCI spec "x"/);
  assert.throws(() => parseSpec('{}', 'x'), /ociVersion is missing/);
  assert.throws(() => parseSpec('{"ociVersion":"1","process":{"args":[1]}}', 'x'), /process.args/);
  assert.throws(() => parseSpec('{"ociVersion":"1","mounts":{}}', 'x'), /mounts must be a list/);
});

test('guestContainerSpec() replaces args and drops host bind mounts', () => {
  const spec = parseSpec(JSON.stringify({
    ociVersion: '1.0.2',
    process: { args: ['sh'] },
    root: { path: '/host/rootfs', readonly: true },
    mounts: [{ destination: '/proc', type: 'proc' }, { destination: '/etc/hosts', type: 'bind', source: '/x' }, { destination: '/y', source: '/y', options: ['rbind'] }],
  }), 'x');
  const guest = guestContainerSpec(spec, ['echo', 'hi']);
  assert.deepEqual(guest.process?.args, ['echo', 'hi']);
  assert.deepEqual(guest.mounts?.map((m) => m.destination), ['/proc']);
  assert.deepEqual(guest.root, { readonly: true });
});

test('guestContainerSpec() needs a command from somewhere', () => {
  assert.throws(() => guestContainerSpec(parseSpec('{"ociVersion":"1"}', 'x')), /no process.args/);
});
