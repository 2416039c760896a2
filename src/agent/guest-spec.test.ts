import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkId, checkProcess, guestSpec, parseJson } from './guest-spec.js';
import { crunErrorMessages, shellQuote } from './process.js';

const base = {
  ociVersion: '1.0.2',
  process: { args: ['sh'], apparmorProfile: 'x' },
  hooks: { prestart: [{ path: '/usr/bin/evil' }] },
  mounts: [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strict', 'mode=755'] },
    { destination: '/etc/hosts', type: 'bind', source: '/var/lib/host/hosts', options: ['rbind'] },
    { destination: '/data', type: 'bind', source: '/run/hull/shared/c1/volumes/data', options: ['rbind'] },
  ],
  linux: {
    cgroupsPath: '/kubepods/x',
    namespaces: [{ type: 'pid' }, { type: 'network', path: '/var/run/netns/x' }, { type: 'ipc', path: '/proc/1/ns/ipc' }, { type: 'mount' }],
  },
};

test("guestSpec() puts a container that joins the sandbox's PID namespace into the pod's one", () => {
  const shared = { ...base, linux: { ...base.linux, namespaces: [{ type: 'pid', path: '/proc/4242/ns/pid' }, { type: 'mount' }] } };
  const spec = guestSpec('c1', shared, '/run/hull/shared/c1/rootfs', false, '/proc/17/ns/pid');
  assert.deepEqual(spec.linux?.namespaces, [{ type: 'pid', path: '/proc/17/ns/pid' }, { type: 'mount' }]);
  // A container with its own PID namespace keeps it, whatever the pod has.
  assert.deepEqual(guestSpec('c2', base, '/run/hull/shared/c2/rootfs', false, '/proc/17/ns/pid').linux?.namespaces, [{ type: 'pid' }, { type: 'mount' }]);
});

test('guestSpec() confines the container to what the guest owns', () => {
  const spec = guestSpec('c1', base, '/run/hull/shared/c1/rootfs', true);
  assert.equal(spec.root?.path, '/run/hull/shared/c1/rootfs');
  assert.equal(spec.linux?.cgroupsPath, '/hull/c1/ctr');
  assert.equal(spec.hooks, undefined);
  assert.equal(spec.process?.apparmorProfile, undefined);
  assert.equal(spec.process?.terminal, true);
  assert.deepEqual(spec.linux?.namespaces, [{ type: 'pid' }, { type: 'mount' }]);
  assert.deepEqual(spec.mounts?.map((m) => m.destination), ['/proc', '/dev', '/data']);
  assert.deepEqual(spec.mounts?.[1]?.options, ['nosuid', 'mode=755']);
});

test("guestSpec() names the pod's namespaces as PID 1's when the container has sysctls, so crun applies them", () => {
  const withSysctls = { ...base, linux: { ...base.linux, sysctl: { 'kernel.shm_rmid_forced': '1', 'net.ipv4.ip_forward': '1' } } };
  const spec = guestSpec('c1', withSysctls, '/run/hull/shared/c1/rootfs', false);
  assert.deepEqual(spec.linux?.namespaces, [
    { type: 'pid' },
    { type: 'mount' },
    { type: 'ipc', path: '/proc/1/ns/ipc' },
    { type: 'network', path: '/proc/1/ns/net' },
  ]);
  assert.deepEqual(spec.linux?.sysctl, withSysctls.linux.sysctl);
  // A new IPC namespace of its own stays its own; the network is the VM's whatever the spec says.
  const own = { ...withSysctls, linux: { ...withSysctls.linux, namespaces: [{ type: 'network' }, { type: 'ipc' }] } };
  assert.deepEqual(guestSpec('c2', own, '/r', false).linux?.namespaces, [
    { type: 'ipc' },
    { type: 'network', path: '/proc/1/ns/net' },
  ]);
  assert.deepEqual(guestSpec('c3', base, '/r', false).linux?.namespaces, [{ type: 'pid' }, { type: 'mount' }], 'no sysctls, no joins');
});

test('guestSpec() shows a container that may load modules the guest kernel\'s, read-only', () => {
  const caps = ['CAP_SYS_ADMIN', 'CAP_SYS_MODULE', 'CAP_NET_ADMIN'];
  const privileged = { ...base, process: { ...base.process, capabilities: { bounding: caps, effective: caps, permitted: caps } } };
  const spec = guestSpec('c1', privileged, '/run/hull/shared/c1/rootfs', false);
  assert.deepEqual(spec.mounts?.at(-1), { destination: '/lib/modules', type: 'bind', source: '/lib/modules', options: ['rbind', 'ro', 'nosuid', 'nodev'] });
  assert.equal(guestSpec('c2', base, '/r', false).mounts?.some((m) => m.destination === '/lib/modules'), false, 'an unprivileged container does not get them');
  const own = { ...privileged, mounts: [...base.mounts, { destination: '/lib/modules/', type: 'bind', source: '/run/hull/shared/c3/volumes/0', options: ['rbind'] }] };
  const mine = guestSpec('c3', own, '/r', false).mounts?.filter((m) => m.destination.startsWith('/lib/modules'));
  assert.deepEqual(mine?.map((m) => m.source), ['/run/hull/shared/c3/volumes/0'], "the container's own mount wins");
});

test('guestSpec() adds a tmpfs /dev when the spec has none', () => {
  const spec = guestSpec('c1', { ...base, mounts: [] }, '/run/hull/shared/c1/rootfs', false);
  assert.equal(spec.mounts?.[0]?.destination, '/dev');
  assert.equal(spec.mounts?.[0]?.type, 'tmpfs');
});

test('guestSpec() rejects a spec without process args', () => {
  assert.throws(() => guestSpec('c1', { ...base, process: { args: [] } }, '/r', false), /process.args/);
  assert.throws(() => guestSpec('c1', { ...base, process: undefined }, '/r', false), /no process/);
});

test('checkId() accepts container-style ids and rejects paths', () => {
  assert.equal(checkId('id', 'abc-1.2_3'), 'abc-1.2_3');
  assert.throws(() => checkId('id', '../x'), /Invalid id/);
  assert.throws(() => checkId('id', ''), /Invalid id/);
  assert.throws(() => checkId('id', 'a'.repeat(129)), /Invalid id/);
});

test('parseJson() gives a clear error for bad JSON', () => {
  assert.throws(() => parseJson('spec', Buffer.from('{')), /Cannot parse spec/);
  assert.throws(() => parseJson('spec', Buffer.from('[1]')), /not a JSON object/);
});

test('crunErrorMessages() picks error lines out of crun JSON logs', () => {
  const log = '{"msg":"warn","level":"warning"}\n{"msg":"executable file `x` not found","level":"error"}\nplain\n';
  assert.deepEqual(crunErrorMessages(log), ['executable file `x` not found', 'plain']);
});

test('shellQuote() keeps words intact', () => {
  assert.equal(shellQuote(['a b', "it's"]), `'a b' 'it'\\''s'`);
});

test('checkProcess() refuses ids and rlimits outside their kernel range instead of wrapping them', () => {
  const p = (over: Record<string, unknown>) => ({ args: ['sh'], ...over });
  // (uid_t)-1 means "unchanged" to setresuid; 2^32 would be cut to 0 (root).
  for (const uid of [2 ** 32 - 1, 2 ** 32, -1, 1.5, '0']) {
    assert.throws(() => checkProcess(p({ user: { uid, gid: 0 } }), 'x'), /user\.uid .* is not an id from 0 to 4294967294/);
    assert.throws(() => checkProcess(p({ user: { uid: 0, gid: uid } }), 'x'), /user\.gid .* is not an id/);
    assert.throws(() => checkProcess(p({ user: { uid: 0, gid: 0, additionalGids: [1, uid] } }), 'x'), /additionalGids holds .* not an id/);
  }
  assert.equal(checkProcess(p({ user: { uid: 2 ** 32 - 2, gid: 0, additionalGids: [0, 2 ** 32 - 2] } }), 'x').user!.uid, 2 ** 32 - 2);
  assert.throws(() => checkProcess(p({ user: { uid: 0, gid: 0, umask: 0o1000 } }), 'x'), /umask/);
  const limit = (soft: unknown, hard: unknown, type = 'RLIMIT_NOFILE') => p({ rlimits: [{ type, soft, hard }] });
  // JSON's 18446744073709551615 (RLIM_INFINITY) reads as 2^64: allowed; anything beyond is not.
  assert.doesNotThrow(() => checkProcess(JSON.parse('{"args":["sh"],"rlimits":[{"type":"RLIMIT_CORE","soft":18446744073709551615,"hard":18446744073709551615}]}'), 'x'));
  assert.throws(() => checkProcess(limit(1, 2 ** 65), 'x'), /RLIMIT_NOFILE hard .* is not a limit from 0 to 18446744073709551615/);
  assert.throws(() => checkProcess(limit(-1, 1), 'x'), /RLIMIT_NOFILE soft -1 is not a limit/);
  assert.throws(() => checkProcess(limit(10, 5), 'x'), /soft limit 10 is above its hard limit 5/);
  assert.throws(() => checkProcess(limit(1, 1, 'RLIMIT_NOPE'), 'x'), /unknown rlimit "RLIMIT_NOPE"/);
});
