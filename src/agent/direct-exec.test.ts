import assert from 'node:assert/strict';
import { test } from 'node:test';
import { executableCandidates, planDirectExec, type ExecTarget } from './direct-exec.js';

const target = (over: Partial<ExecTarget> = {}): ExecTarget => ({ initPid: 1, spec: {}, cgroupProcs: '/x/cgroup.procs', paused: false, plans: new Map(), ...over });
const proc = { args: ['true'], env: ['PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0 } };
const none = new Set<string>();

test('executableCandidates looks the program up in the last PATH, or takes a path as it is', () => {
  assert.deepEqual(executableCandidates('ls', ['PATH=/a', 'PATH=/usr/bin::/bin']), ['/usr/bin/ls', './ls', '/bin/ls']);
  assert.deepEqual(executableCandidates('./run', ['PATH=/bin']), ['./run']);
  assert.deepEqual(executableCandidates('ls', []), ['./ls']);
});

test('planDirectExec leaves to crun what it would not do exactly as crun', async () => {
  const crun = async (t: ExecTarget, p: Record<string, unknown>, terminal = false, ns = none) => assert.equal(await planDirectExec(t, p, terminal, ns), undefined);
  await crun(target(), proc, true);
  await crun(target({ paused: true }), proc);
  await crun(target({ spec: { linux: { seccomp: { defaultAction: 'SCMP_ACT_ERRNO' } } } as never }), proc);
  await crun(target({ spec: { linux: { personality: { domain: 'LINUX32' } } } as never }), proc);
  await crun(target(), { ...proc, scheduler: { policy: 'SCHED_OTHER' } });
  await crun(target(), { ...proc, ioPriority: { class: 'IOPRIO_CLASS_IDLE' } });
  await crun(target(), { ...proc, capabilities: { bounding: ['CAP_NOT_A_CAP'] } });
  await crun(target(), { ...proc, capabilities: { somethingElse: [] } });
  await crun(target(), { ...proc, rlimits: [{ type: 'RLIMIT_NOPE', soft: 1, hard: 1 }] });
  await crun(target(), { ...proc, rlimits: [{ type: 'RLIMIT_NOFILE', soft: -1, hard: 1 }] });
  await crun(target(), proc, false, new Set(['user']));
  await crun(target(), proc, false, new Set(['time']));
  await crun(target({ initPid: 0 }), proc);
  await crun(target({ initPid: process.pid }), { ...proc, env: ['HOME=/', 'PATH=/bin', `BIG=${'x'.repeat(1 << 20)}`] });
});
