/**
 * The host stays safe from its tenants, through a real, private containerd and CRI: pods that ask for
 * the host's namespaces are refused and leave nothing, and a guest that never reports an exit (its VM
 * frozen whole, as a hostile or wedged guest could be) cannot keep its pod from stopping and going.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { isInvalidArgument } from '../../src/errors/index.js';
import { findShims, startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig, type NamespaceMode, type PodSandboxConfig } from '../harness/cri.js';
import { entriesIn, mountsUnder, processAlive, qemuPidsUnder } from '../helpers/leaks.js';

const hullRuntime = prepareHullRuntime({ name: 'tenant' });
const { work, runRoot } = hullRuntime;

let ctrd: PrivateContainerd;
let cri: CriClient;

before(async () => {
  assert.ok(await currentGuestImage(), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  // Generous per-call deadlines: a frozen guest makes the shim wait out its own bounds.
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 180_000 });
});

after(async () => {
  cri?.close();
  const shims = ctrd ? hullShims() : [];
  const report = await ctrd?.stop();
  const left = { vms: qemuPidsUnder(runRoot), mounts: [...mountsUnder(work), ...mountsUnder(runRoot)], state: entriesIn(runRoot) };
  hullRuntime.remove();
  assert.deepEqual(shims, [], 'hull shims still running');
  assert.deepEqual(report?.leakedShims ?? [], [], 'containerd had to kill leaked shims');
  assert.deepEqual(left, { vms: [], mounts: [], state: [] });
});

function hullShims(): number[] {
  return findShims(ctrd.address)
    .filter((s) => s.cmdline.includes('hull'))
    .map((s) => s.pid);
}

/** sharing is a pod that asks for the host's PID and/or IPC namespace (hostPID / hostIPC: true). */
function sharing(name: string, host: { pid?: boolean; ipc?: boolean }): PodSandboxConfig {
  const pod = podConfig({ name, namespace: 'hull-tenant' });
  const namespaceOptions: { network: NamespaceMode; pid: NamespaceMode; ipc: NamespaceMode } = { network: 'POD', pid: host.pid ? 'NODE' : 'CONTAINER', ipc: host.ipc ? 'NODE' : 'POD' };
  pod.linux!.securityContext = { namespaceOptions };
  return pod;
}

function specNamespaces(info: Record<string, string> | undefined): Array<{ type: string; path?: string }> {
  const parsed = JSON.parse(info?.['info'] ?? '{}') as { runtimeSpec?: { linux?: { namespaces?: Array<{ type: string; path?: string }> } } };
  return parsed.runtimeSpec?.linux?.namespaces ?? [];
}

async function waitUntil(what: string, done: () => boolean, timeoutMs = 60_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !done(); ) {
    assert.ok(Date.now() < deadline, `${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('tenant input', () => {
  it('refuses hostPID and hostIPC pods clearly and leaves nothing behind', async () => {
    // What the refusal rests on: CRI leaves the shared namespace out of the sandbox spec (runc pod).
    const runcPod = await cri.runPodSandbox(sharing('runc-host-ns', { pid: true, ipc: true }));
    let netnsDir = '';
    try {
      const namespaces = specNamespaces((await cri.podSandboxStatus(runcPod, true)).info);
      const types = namespaces.map((ns) => ns.type);
      assert.ok(types.includes('network') && types.includes('uts'), `namespaces: ${types.join(', ')}`);
      assert.equal(types.includes('pid'), false, 'hostPID pod has a pid namespace in its spec');
      assert.equal(types.includes('ipc'), false, 'hostIPC pod has an ipc namespace in its spec');
      const netns = namespaces.find((ns) => ns.type === 'network')?.path ?? '';
      assert.match(netns, /^\/run\/hull-test\//, 'the runc pod has no netns under the test directory');
      netnsDir = dirname(netns);
    } finally {
      await cri.stopPodSandbox(runcPod);
      await cri.removePodSandbox(runcPod);
    }

    for (const [field, host] of [['hostPID', { pid: true }], ['hostIPC', { ipc: true }]] as const) {
      await assert.rejects(cri.runPodSandbox(sharing(`host-${field.toLowerCase()}`, host), 'hull'), (e: Error) => {
        assert.ok(isInvalidArgument(e), `${field}: not InvalidArgument: ${e.message}`);
        assert.match(e.message, new RegExp(`hull pods cannot use the host's ${field === 'hostPID' ? 'PID' : 'IPC'} namespace \\(${field}: true\\)`));
        return true;
      });
      assert.deepEqual(qemuPidsUnder(runRoot), [], `${field}: QEMU left`);
      assert.deepEqual(entriesIn(runRoot), [], `${field}: sandbox state left`);
      assert.deepEqual([...mountsUnder(work), ...mountsUnder(runRoot)], [], `${field}: mounts left`);
      assert.deepEqual(await cri.listPodSandbox(), [], `${field}: pod left`);
      // CNI plumbed a netns for the pod before the shim refused it: CRI removed it, with anything in it.
      assert.deepEqual(entriesIn(netnsDir), [], `${field}: netns left`);
    }
    await waitUntil('the shims of refused pods exit', () => hullShims().length === 0);
  });
});

describe('a guest that never reports an exit', () => {
  it('cannot keep its container or its pod from stopping and going', async () => {
    const pod = podConfig({ name: 'frozen', namespace: 'hull-tenant' });
    const podId = await cri.runPodSandbox(pod, 'hull');
    const vms = qemuPidsUnder(runRoot);
    const shims = hullShims();
    assert.equal(vms.length, 1, `QEMU processes: ${vms.join(', ')}`);
    assert.equal(shims.length, 1, `hull shims: ${shims.join(', ')}`);
    const [qemu, shim] = [vms[0]!, shims[0]!];
    // The task pid the shim reports for the pod is its VM's: the process this test will freeze.
    const tasks = await ctrd.ctr(['tasks', 'ls'], { namespace: 'k8s.io' });
    assert.match(tasks.stdout, new RegExp(`^${podId}\\s+${qemu}\\s`, 'm'), tasks.stdout);
    const netns = specNamespaces((await cri.podSandboxStatus(podId, true)).info).find((ns) => ns.type === 'network')?.path ?? '';
    assert.ok(netns, 'no netns in the sandbox status');
    let frozen = false;
    try {
      const id = await cri.createContainer(podId, containerConfig({ name: 'sleeper', image: BUSYBOX_REF, command: ['sleep', '100000'] }), pod);
      await cri.startContainer(id);
      // The whole VM stops: the agent answers nothing, reports nothing, ever.
      process.kill(qemu, 'SIGSTOP');
      frozen = true;

      await cri.stopContainer(id, 2); // SIGTERM, then SIGKILL after 2 s
      const status = (await cri.containerStatus(id)).status;
      assert.equal(status.state, 'CONTAINER_EXITED');
      assert.equal(status.exitCode, 137);
      assert.match(readFileSync(ctrd.logPath, 'utf8'), /did not report the exit within \d+ ms of SIGKILL: recorded as killed/);
      await cri.removeContainer(id);
    } finally {
      await cri.stopPodSandbox(podId);
      if (existsSync(netns)) {
        const links = execFileSync('nsenter', [`--net=${netns}`, 'ip', '-o', 'link'], { encoding: 'utf8' });
        assert.doesNotMatch(links, /tap0_hull/, `tap left in ${netns}`);
      }
      await cri.removePodSandbox(podId);
      // Only if the shim failed to end it: never leave a stopped QEMU of ours behind.
      if (frozen && processAlive(qemu)) {
        process.kill(qemu, 'SIGKILL');
        assert.fail(`QEMU ${qemu} outlived its pod`);
      }
    }
    await waitUntil('the pod\'s shim exits', () => !processAlive(shim));
    assert.equal(processAlive(qemu), false);
    assert.deepEqual(qemuPidsUnder(runRoot), []);
    assert.deepEqual(entriesIn(runRoot), [], 'sandbox state left');
    assert.deepEqual([...mountsUnder(work), ...mountsUnder(runRoot)], [], 'mounts left');
    assert.equal(existsSync(netns), false, `netns ${netns} left`);
    assert.deepEqual(await cri.listPodSandbox(), []);
  });
});
