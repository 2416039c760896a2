import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HullError } from '../errors/index.js';
import { checkPodNamespaces, holderExit, isPodHolder, podSysctls } from './pod-holder.js';

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

// The sandbox spec containerd 1.6 writes: every namespace, less the ones the pod shares with the host.
function sandboxSpec(omit: string[] = [], annotations: Record<string, string> = { 'io.kubernetes.cri.container-type': 'sandbox' }) {
  const namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: '/var/run/netns/cni-1' }];
  return { annotations, linux: { namespaces: namespaces.filter((ns) => !omit.includes(ns.type)) } };
}

function refusal(message: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof HullError);
    assert.equal(e.code, 'invalid_argument');
    assert.match(e.message, message);
    return true;
  };
}

test('checkPodNamespaces lets an ordinary pod through', () => {
  checkPodNamespaces(sandboxSpec());
});

test('checkPodNamespaces refuses hostNetwork, hostPID and hostIPC pods, naming the field', () => {
  assert.throws(() => checkPodNamespaces(sandboxSpec(['network', 'uts'])), refusal(/^hull pods cannot use the host network \(hostNetwork: true\)/));
  assert.throws(() => checkPodNamespaces(sandboxSpec(['pid'])), refusal(/^hull pods cannot use the host's PID namespace \(hostPID: true\)/));
  assert.throws(() => checkPodNamespaces(sandboxSpec(['ipc'])), refusal(/^hull pods cannot use the host's IPC namespace \(hostIPC: true\)/));
  assert.throws(() => checkPodNamespaces(sandboxSpec(['pid', 'ipc'])), refusal(/\(hostPID: true\).*; .*\(hostIPC: true\)/));
  assert.throws(() => checkPodNamespaces({ annotations: { 'io.kubernetes.cri.container-type': 'sandbox' } }), refusal(/hostNetwork: true.*hostPID: true.*hostIPC: true/));
});

test('checkPodNamespaces leaves containers that are not a pod sandbox alone', () => {
  // An app container joins the pod's namespaces by path; a ctr container may share the host's.
  checkPodNamespaces(sandboxSpec(['pid', 'ipc', 'network'], { 'io.kubernetes.cri.container-type': 'container' }));
  checkPodNamespaces({});
});

test('podSysctls are the sandbox spec\'s; checkPodNamespaces refuses a pod sysctl that is not namespaced', () => {
  const pod = (sysctl: Record<string, string>) => ({ ...sandboxSpec(), linux: { ...sandboxSpec().linux, sysctl } });
  const safe = { 'kernel.shm_rmid_forced': '1', 'fs.mqueue.msg_max': '100', 'net.ipv4.ip_local_port_range': '1024 65000' };
  checkPodNamespaces(pod(safe));
  assert.deepEqual(podSysctls(pod(safe)), safe);
  assert.deepEqual(podSysctls(sandboxSpec()), {});
  assert.deepEqual(podSysctls({ linux: { sysctl: { 'kernel.panic': '1' } } }), {}, 'only a pod holder carries pod sysctls');
  assert.throws(
    () => checkPodNamespaces(pod({ 'kernel.shm_rmid_forced': '1', 'kernel.panic': '1' })),
    refusal(/^The pod sets sysctl "kernel.panic", which is not namespaced: a hull pod may set only the sysctls of its own namespaces \(kernel.shm\*, kernel.msg\*, kernel.sem, fs.mqueue.\*, net.\*\)$/),
  );
  assert.throws(() => checkPodNamespaces(pod({ 'vm.swappiness': '10', 'fs.file-max': '1' })), refusal(/sysctls "vm.swappiness", "fs.file-max", which are not namespaced/));
});
