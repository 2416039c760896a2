import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { cgroupRelPath, hostHierarchies, joinPodCgroup, podMemoryLimit } from './host-cgroup.js';
import { Ledger, replayLedger } from './ledger.js';

test('cgroupRelPath() takes cgroupfs paths as they are and expands systemd slices as runc does', () => {
  assert.equal(cgroupRelPath('/kubepods/burstable/pod1/abc'), '/kubepods/burstable/pod1/abc');
  assert.equal(cgroupRelPath('k8s.io/abc'), '/k8s.io/abc');
  assert.equal(cgroupRelPath('kubepods-burstable-pod1.slice:cri-containerd:abc'), '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope');
  assert.equal(cgroupRelPath('system.slice:docker:abc'), '/system.slice/docker-abc.scope');
  assert.equal(cgroupRelPath('-.slice:hull:abc'), '/hull-abc.scope');
  for (const bad of ['/', '/a/../../etc', 'a/../..', 'bad-.slice:x:y', 'x/y.slice:p:n']) assert.throws(() => cgroupRelPath(bad), /Invalid (cgroupsPath|systemd slice)/, bad);
});

mkdirSync('/run/hull-test', { recursive: true, mode: 0o700 });
const base = mkdtempSync('/run/hull-test/cgroup-');
after(() => rmSync(base, { recursive: true, force: true }));

test('joinPodCgroup() moves this process into the pod cgroup in every hierarchy; the ledger takes it out and removes what it made', async () => {
  const stateDir = join(base, 'state');
  mkdirSync(stateDir, { mode: 0o700 });
  const ledger = await Ledger.open(stateDir);
  ledger.record('', { kind: 'state-dir', path: stateDir });
  const before = readFileSync('/proc/self/cgroup', 'utf8');
  const path = `/hull-test-${randomBytes(4).toString('hex')}/pod/sandbox`;
  await joinPodCgroup(ledger, path);
  const inside = readFileSync('/proc/self/cgroup', 'utf8').split('\n').filter(Boolean);
  const hierarchies = await hostHierarchies();
  assert.ok(hierarchies.length > 0);
  for (const line of inside) assert.ok(line.endsWith(`:${path}`), `not in the pod cgroup: ${line}`);
  ledger.close();
  assert.equal(await replayLedger(stateDir), 0);
  assert.equal(readFileSync('/proc/self/cgroup', 'utf8'), before, 'this process did not go back where it was');
  for (const h of hierarchies) assert.equal(existsSync(join(h.mount, path.split('/')[1]!)), false, `left ${h.mount}${path}`);
});

test('podMemoryLimit() reads the limit of the sandbox cgroup\'s parent (kubelet\'s pod cgroup); none when it is unlimited or absent', async () => {
  const memory = (await hostHierarchies()).find((h) => h.key.split(',').includes('memory'));
  if (!memory) return; // cgroup v2 hosts: the same code path reads memory.max; this host is v1
  const pod = `/hull-test-${randomBytes(4).toString('hex')}`;
  mkdirSync(join(memory.mount, pod));
  try {
    assert.equal(await podMemoryLimit(`${pod}/sandbox`), undefined, 'a new cgroup is unlimited');
    writeFileSync(join(memory.mount, pod, 'memory.limit_in_bytes'), String(1088 * 1024 * 1024));
    assert.equal(await podMemoryLimit(`${pod}/sandbox`), 1088 * 1024 * 1024);
    // The sandbox's own cgroup need not exist yet; the root above a top-level sandbox is never a pod's.
    assert.equal(await podMemoryLimit(pod), undefined);
    assert.equal(await podMemoryLimit('/hull-no-such-pod/sandbox'), undefined);
  } finally {
    rmdirSync(join(memory.mount, pod));
  }
});
