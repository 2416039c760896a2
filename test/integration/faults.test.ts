/**
 * Faults around a running CRI pod, through a real, private containerd, as kubelet would meet them:
 * QEMU killed with SIGKILL, the shim killed with SIGKILL, the guest kernel panicking, the agent
 * killed in the guest, containerd killed (SIGKILL) and started again on the same paths during
 * RunPodSandbox and during an ExecSync, and the VM's vCPUs stopped (QMP `stop`) during
 * StopPodSandbox. Each ends as containerd and kubelet expect: a pod that lost its VM shows its
 * containers EXITED with a non-zero code and its sandbox NOTREADY; StopPodSandbox and
 * RemovePodSandbox succeed; and then nothing of the pod is left on the host (shim, QEMU, shim
 * socket, mounts, state dir, netns and tap, the cgroups hull made, the jail uid lease).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, readdirSync, rmdirSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { hostHierarchies } from '../../src/sandbox/host-cgroup.js';
import { DEBUG_SOCKET } from '../../src/shim/debug-socket.js';
import { findShims, startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig, type PodSandboxConfig } from '../harness/cri.js';
import { entriesIn, mountsUnder, processAlive, qemuPidsUnder } from '../helpers/leaks.js';
import { leasesOf, tapIn, tracePod, waitPodGone, type PodTraces } from '../helpers/pod-traces.js';

const hullRuntime = prepareHullRuntime({ name: 'faults' });
const { work, runRoot, statusDir } = hullRuntime;
// Every pod's cgroup parent, made by nobody: hull makes it with the pod's cgroup, and must remove both.
const cgroupParent = `/hull-faults-${randomBytes(4).toString('hex')}`;
const TEST_TIMEOUT_MS = 240_000;
const CRI_OPTIONS = { deadlineMs: 120_000 };

let ctrd: PrivateContainerd;
let cri: CriClient;
let netnsDir = '';

before(async () => {
  assert.ok(await currentGuestImage(), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: { hull: { ...hullRuntime.runtimes['hull']!, privilegedWithoutHostDevices: true } }, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, CRI_OPTIONS);
  // One pod first: it makes the VM template (so later pods start alike) and shows where netns go.
  const { podId, traces } = await startPod('warm-up');
  netnsDir = dirname(traces.netns);
  await cri.stopPodSandbox(podId);
  await cri.removePodSandbox(podId);
  assert.deepEqual(await waitPodGone(traces), [], 'the warm-up pod left something');
});

after(async () => {
  // A failed test may leave pods: remove them as kubelet would, then let stop() kill what is left.
  for (const pod of (await cri?.listPodSandbox().catch(() => [])) ?? []) {
    await cri.stopPodSandbox(pod.id).catch(() => {});
    await cri.removePodSandbox(pod.id).catch(() => {});
  }
  cri?.close();
  for (let i = 0; i < 100 && ctrd && findShims(ctrd.address).some((s) => s.cmdline.endsWith(' delete')); i++) await sleep(100);
  const shims = ctrd ? findShims(ctrd.address).map((s) => s.cmdline) : [];
  const netns = netnsDir ? entriesIn(netnsDir) : [];
  if (process.env['HULL_TEST_KEEP_LOG'] && ctrd) copyFileSync(ctrd.logPath, process.env['HULL_TEST_KEEP_LOG']);
  const report = await ctrd?.stop();
  const left = { vms: qemuPidsUnder(runRoot), mounts: [...mountsUnder(work), ...mountsUnder(runRoot)], state: [...entriesIn(runRoot), ...entriesIn(statusDir)], leases: leasesOf(runRoot, true), cgroups: await cgroupsLeft(), netns };
  await removeCgroupParent();
  hullRuntime.remove();
  assert.deepEqual(shims, [], 'shims still running');
  assert.deepEqual(report?.leakedShims ?? [], [], 'containerd had to kill leaked shims');
  assert.deepEqual(left, { vms: [], mounts: [], state: [], leases: [], cgroups: [], netns: [] });
});

/** cgroupsLeft lists the directories of the pods' cgroup parent, in every hierarchy. */
async function cgroupsLeft(): Promise<string[]> {
  return (await hostHierarchies()).map((h) => join(h.mount, cgroupParent)).filter((d) => existsSync(d));
}

/** removeCgroupParent removes what a failed test left of the pods' cgroups (empty ones only). */
async function removeCgroupParent(): Promise<void> {
  const remove = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) remove(join(dir, e.name));
    try {
      rmdirSync(dir);
    } catch {
      // still busy: the leak assertion reports it
    }
  };
  for (const dir of await cgroupsLeft()) remove(dir);
}

interface RunningPod {
  pod: PodSandboxConfig;
  podId: string;
  containerId: string;
  traces: PodTraces;
}

function faultPod(name: string, privileged = false): PodSandboxConfig {
  const pod = podConfig({ name, namespace: 'hull-faults' });
  pod.linux!.cgroupParent = cgroupParent;
  if (privileged) pod.linux!.securityContext!.privileged = true;
  return pod;
}

/** startPod runs a pod with one container that sleeps, and records what it holds on the host. */
async function startPod(name: string, privileged = false): Promise<RunningPod> {
  const pod = faultPod(name, privileged);
  const podId = await cri.runPodSandbox(pod, 'hull');
  const containerId = await cri.createContainer(podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', '100000'], privileged }), pod);
  await cri.startContainer(containerId);
  const traces = await tracePod(ctrd, cri, runRoot, podId, cgroupParent, statusDir);
  assert.equal(traces.shims.length, 1, `shims of the pod: ${traces.shims.join(', ')}`);
  assert.equal(traces.qemu.length, 1, `QEMU processes of the pod: ${traces.qemu.join(', ')}`);
  assert.ok(traces.netns, 'the pod has no netns');
  assert.ok(traces.cgroupDirs.length > 0, 'hull made no cgroup for the pod');
  assert.equal(traces.leases.length, 1, 'the pod\'s VM holds no jail uid lease');
  assert.ok(traces.statusSocket, 'the pod\'s shim serves no status socket');
  return { pod, podId, containerId, traces };
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    assert.ok(Date.now() < deadline, `${what} within ${timeoutMs} ms`);
    await sleep(200);
  }
}

/** assertPodFailed: the container is EXITED with a non-zero code and the sandbox NOTREADY, as after a node-level crash. */
async function assertPodFailed(p: RunningPod): Promise<void> {
  const status = await waitFor('the container is reported exited', async () => {
    const s = (await cri.containerStatus(p.containerId)).status;
    return s.state === 'CONTAINER_EXITED' ? s : undefined;
  });
  assert.notEqual(status.exitCode, 0, `the container of a pod whose VM is gone exited with ${status.exitCode}`);
  await waitFor('the sandbox is reported not ready', async () => ((await cri.podSandboxStatus(p.podId)).status.state === 'SANDBOX_NOTREADY' ? true : undefined));
}

/** endPod does what kubelet does with a pod it is done with; both calls must succeed; then nothing may be left. */
async function endPod(p: { podId: string; traces: PodTraces }): Promise<void> {
  await cri.stopPodSandbox(p.podId);
  assert.deepEqual(tapIn(p.traces.netns), [], 'hull\'s tap outlived StopPodSandbox');
  await cri.removePodSandbox(p.podId);
  assert.equal((await cri.listPodSandbox({ id: p.podId })).length, 0, 'the pod is still listed');
  assert.deepEqual(await waitPodGone(p.traces), [], 'left on the host after the pod was removed');
}

/** withPod runs `body` on a fresh pod; if it throws, the pod is still removed (the error stands). */
async function withPod(name: string, privileged: boolean, body: (p: RunningPod) => Promise<void>): Promise<void> {
  const p = await startPod(name, privileged);
  try {
    await body(p);
  } catch (e) {
    await cri.stopPodSandbox(p.podId).catch(() => {});
    await cri.removePodSandbox(p.podId).catch(() => {});
    throw e;
  }
}

async function sh(containerId: string, script: string, timeoutSeconds = 60): Promise<string> {
  const r = await cri.execSync(containerId, ['sh', '-c', script], timeoutSeconds);
  assert.equal(r.exitCode, 0, `${script}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** debugSocket calls the pod shim's debug socket (src/shim/debug-socket.ts). */
function debugSocket(podId: string, method: 'GET' | 'POST', path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: join(runRoot, podId, DEBUG_SOCKET), method, path, timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error('the debug socket did not answer')));
    req.on('error', reject);
    req.end();
  });
}

/** reconnect drops the CRI client of a containerd that was killed and connects to its successor. */
async function reconnect(): Promise<void> {
  cri.close();
  cri = await CriClient.connect(ctrd.address, CRI_OPTIONS);
}

describe('faults around a running pod', () => {
  it('QEMU killed with SIGKILL: the pod fails, and goes without a trace', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPod('qemu-killed', false, async (p) => {
      process.kill(p.traces.qemu[0]!, 'SIGKILL');
      await assertPodFailed(p);
      await endPod(p);
    });
  });

  it('the shim killed with SIGKILL: its VM dies with it, the pod fails, and goes without a trace', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPod('shim-killed', false, async (p) => {
      process.kill(p.traces.shims[0]!, 'SIGKILL');
      await waitFor('QEMU dies with its shim', () => (p.traces.qemu.some(processAlive) ? undefined : true));
      await assertPodFailed(p);
      await endPod(p);
    });
  });

  it('the guest kernel panics: QEMU exits, the pod fails, and goes without a trace', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPod('guest-panic', true, async (p) => {
      // A privileged container is guest root; sysrq-trigger is open to it (the VM's kernel, not the host's).
      const crash = cri.execSync(p.containerId, ['sh', '-c', 'echo c > /proc/sysrq-trigger'], 30).catch(() => undefined);
      await waitFor('QEMU exits after the panic', () => (p.traces.qemu.some(processAlive) ? undefined : true));
      await crash;
      await assertPodFailed(p);
      await endPod(p);
    });
  });

  it('the agent killed in the guest: the pod fails, and goes without a trace', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPod('agent-killed', true, async (p) => {
      // core_pattern runs its helper as root in the guest's own namespaces, where the agent is.
      const root = `/run/hull/shared/${p.containerId}/rootfs`;
      const helper = [
        `#!${root}/bin/sh`,
        `B=${root}/bin/busybox`,
        `for d in /proc/[0-9]*; do if $B grep -q hull/agent.js $d/cmdline; then $B kill -9 \${d#/proc/}; fi; done`,
      ].join('\n');
      await sh(p.containerId, `cat >/core-helper <<'EOF'\n${helper}\nEOF\nchmod 755 /core-helper && echo '|${root}/core-helper' >/proc/sys/kernel/core_pattern`);
      // The crash that runs the helper; the exec's own answer may be lost with the agent.
      await cri.execSync(p.containerId, ['sh', '-c', 'sh -c "kill -SEGV \\$\\$"'], 30).catch(() => undefined);
      await assertPodFailed(p);
      // What failed the pod was the agent's end (the helper kills it; it writes nothing else).
      assert.match(readFileSync(ctrd.logPath, 'utf8'), new RegExp(`sandbox ${p.podId}: the guest's agent exited: ending the pod's VM`));
      await endPod(p);
    });
  });

  it('the VM stopped (QMP stop) during StopPodSandbox: the pod still stops and goes without a trace', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPod('vm-stopped', false, async (p) => {
      const stopping = cri.stopPodSandbox(p.podId);
      // Sent as StopPodSandbox starts: its Kill and Delete meet a guest that runs no more.
      const stopped = await debugSocket(p.podId, 'POST', '/vm/stop');
      assert.equal(stopped.status, 200, stopped.body);
      await stopping;
      const status = (await cri.containerStatus(p.containerId)).status;
      assert.equal(status.state, 'CONTAINER_EXITED');
      assert.notEqual(status.exitCode, 0);
      assert.equal((await cri.podSandboxStatus(p.podId)).status.state, 'SANDBOX_NOTREADY');
      await endPod(p);
    });
  });
});

describe('containerd restarted', () => {
  it('during RunPodSandbox: the pod is usable or cleanly gone after Stop/Remove, and nothing leaks', { timeout: TEST_TIMEOUT_MS }, async () => {
    const pod = faultPod('ctrd-restart-run');
    const run = cri.runPodSandbox(pod, 'hull').then((id) => ({ id, error: undefined }), (error: Error) => ({ id: '', error }));
    // The pod's VM is being made: the shim is inside Create (a clone answers ~1 s after QEMU starts).
    for (let i = 0; i < 3000 && qemuPidsUnder(runRoot).length === 0; i++) await sleep(20);
    assert.ok(qemuPidsUnder(runRoot).length > 0, 'the pod\'s VM did not start');
    await ctrd.restart({ kill: true });
    const outcome = await run;
    assert.ok(outcome.error, 'RunPodSandbox had finished before containerd was killed');
    await reconnect();
    const listed = (await cri.listPodSandbox()).filter((s) => s.metadata.name === pod.metadata.name);
    assert.ok(listed.length <= 1, `pods: ${JSON.stringify(listed)}`);
    const podId = outcome.id || listed[0]?.id || '';
    const traces = podId ? await tracePod(ctrd, cri, runRoot, podId, cgroupParent, statusDir) : undefined;
    try {
      if (listed[0]?.state === 'SANDBOX_READY') {
        const id = await cri.createContainer(podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', '100000'] }), pod);
        await cri.startContainer(id);
        assert.equal(await sh(id, 'echo usable'), 'usable\n');
      }
      if (podId) {
        await cri.stopPodSandbox(podId);
        await cri.removePodSandbox(podId);
      }
    } finally {
      if (traces) assert.deepEqual(await waitPodGone(traces), [], 'left on the host after the pod was removed');
    }
    assert.deepEqual(await cri.listPodSandbox(), []);
    await waitFor('the VM of the interrupted RunPodSandbox goes', () => (qemuPidsUnder(runRoot).length === 0 ? true : undefined), 30_000);
    await waitFor('its shim goes', () => (findShims(ctrd.address).length === 0 ? true : undefined), 30_000);
    assert.deepEqual({ state: [...entriesIn(runRoot), ...entriesIn(statusDir)], mounts: mountsUnder(runRoot), leases: leasesOf(runRoot, true), netns: entriesIn(netnsDir) }, { state: [], mounts: [], leases: [], netns: [] });
    assert.deepEqual(await cgroupsLeft(), []);
  });

  it('during an ExecSync: the pod runs on and is usable, then goes without a trace', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPod('ctrd-restart-exec', false, async (p) => {
      const exec = cri.execSync(p.containerId, ['sh', '-c', 'sleep 5; echo late'], 60).then(() => 'answered', (e: Error) => e.message);
      // The exec is in flight once the agent holds it.
      await waitFor('the exec runs in the guest', async () => {
        const r = await debugSocket(p.podId, 'GET', '/agent');
        if (r.status !== 200) return undefined;
        const state = JSON.parse(r.body) as { containers: Array<{ containerId: string; execs: number }> };
        return state.containers.find((c) => c.containerId === p.containerId)?.execs ? true : undefined;
      });
      await ctrd.restart({ kill: true });
      assert.notEqual(await exec, 'answered', 'the ExecSync of a killed containerd answered');
      await reconnect();
      assert.equal((await cri.podSandboxStatus(p.podId)).status.state, 'SANDBOX_READY');
      assert.equal((await cri.containerStatus(p.containerId)).status.state, 'CONTAINER_RUNNING');
      assert.equal(await sh(p.containerId, 'echo usable'), 'usable\n');
      // The interrupted exec (5 s) ends in the guest meanwhile; its exit has no containerd to go to.
      await sleep(6_000);
      assert.equal(await sh(p.containerId, 'echo still usable'), 'still usable\n');
      await endPod(p);
    });
  });
});
