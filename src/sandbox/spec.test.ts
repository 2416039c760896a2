import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkSysctls, guestContainerSpec, isNamespacedSysctl, parseSpec, withPodSysctls } from './spec.js';

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

test('isNamespacedSysctl() knows the IPC and network sysctls, in either spelling', () => {
  for (const name of ['kernel.shm_rmid_forced', 'kernel.shmmax', 'kernel.msgmnb', 'kernel.sem', 'fs.mqueue.msg_max', 'net.ipv4.ip_forward', 'net/ipv4/conf/eth0.100/rp_filter']) {
    assert.equal(isNamespacedSysctl(name), true, name);
  }
  for (const name of ['kernel.panic', 'kernel.shm', 'kernel.core_pattern', 'vm.swappiness', 'fs.file-max', 'fs.mqueue', 'net', 'user.max_user_namespaces', 'net..x', '../net/x', 'net.ipv4.x\n']) {
    assert.equal(isNamespacedSysctl(name), false, name);
  }
});

test('checkSysctls() refuses what is not a namespaced sysctl with a line of text', () => {
  assert.deepEqual(checkSysctls(undefined, 'The pod'), {});
  assert.deepEqual(checkSysctls({ 'net.ipv4.ip_forward': '1' }, 'The pod'), { 'net.ipv4.ip_forward': '1' });
  assert.throws(() => checkSysctls(['x'], 'The pod'), /The pod has a malformed linux.sysctl/);
  assert.throws(() => checkSysctls({ 'net.ipv4.ip_forward': 1 }, 'The pod'), /sets sysctl "net.ipv4.ip_forward" to a value that is not a line of text/);
  assert.throws(() => checkSysctls({ 'net.ipv4.ip_forward': '1\n2' }, 'The pod'), /not a line of text/);
  assert.throws(() => checkSysctls({ 'kernel.panic': '1' }, 'The container'), /The container sets sysctl "kernel.panic", which is not namespaced/);
});

test('guestContainerSpec() refuses a container sysctl that is not namespaced', () => {
  const spec = parseSpec(JSON.stringify({ ociVersion: '1.0.2', process: { args: ['sh'] }, linux: { sysctl: { 'vm.swappiness': '10' } } }), 'x');
  assert.throws(() => guestContainerSpec(spec), /"vm.swappiness", which is not namespaced/);
});

test("withPodSysctls() gives a container the pod's sysctls; its own win", () => {
  const spec = parseSpec(JSON.stringify({ ociVersion: '1.0.2', process: { args: ['sh'] }, linux: { sysctl: { 'kernel.sem': '1 2 3 4' } } }), 'x');
  const pod = { 'kernel.sem': '9 9 9 9', 'fs.mqueue.msg_max': '100' };
  assert.deepEqual(withPodSysctls(spec, pod).linux?.sysctl, { 'kernel.sem': '1 2 3 4', 'fs.mqueue.msg_max': '100' });
  assert.deepEqual(spec.linux?.sysctl, { 'kernel.sem': '1 2 3 4' }, 'the spec given is not changed');
  assert.equal(withPodSysctls(spec, {}), spec);
  const bare = parseSpec('{"ociVersion":"1","process":{"args":["sh"]}}', 'x');
  assert.deepEqual(withPodSysctls(bare, pod).linux?.sysctl, pod);
});
