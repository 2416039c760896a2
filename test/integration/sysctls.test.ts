/**
 * Pod sysctls through a real containerd and CRI: CRI puts them on the sandbox's spec, and hull, which
 * runs no pause container, gives them to the pod's containers, whose crun writes them into the guest's
 * namespaces (the pod's) before each container starts. A safe sysctl and an unsafe but namespaced one
 * are seen inside the pod; a sysctl that is not namespaced is refused and leaves nothing. A
 * container's own linux.sysctl (ctr, or any OCI client) keeps working, through the Sandbox API.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { Sandbox, type OciSpec } from '../../src/sandbox/index.js';
import { QemuDriver } from '../../src/vmm/index.js';
import { defaultSpec, makeBusyboxBundle } from '../helpers/bundle.js';
import { isInvalidArgument } from '../../src/errors/index.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig } from '../harness/cri.js';
import { entriesIn, mountsUnder, qemuPidsUnder } from '../helpers/leaks.js';

const hullRuntime = prepareHullRuntime({ name: 'sysctl' });
const { work, runRoot } = hullRuntime;

let ctrd: PrivateContainerd;
let cri: CriClient;

before(async () => {
  assert.ok(await currentGuestImage(), 'no guest image: run `hull image build` first');
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 120_000 });
});

after(async () => {
  cri?.close();
  await stopAndAssertClean(ctrd, hullRuntime);
});

describe('pod sysctls', () => {
  it('are seen by the containers of the pod: a safe one and an unsafe namespaced one', async () => {
    // kernel.shm_rmid_forced is on Kubernetes' safe list; fs.mqueue.msg_max must be allowed on the node.
    const pod = podConfig({ name: 'sysctls', namespace: 'hull-sysctl', sysctls: { 'kernel.shm_rmid_forced': '1', 'fs.mqueue.msg_max': '100' } });
    const podId = await cri.runPodSandbox(pod, 'hull');
    try {
      const read = 'cat /proc/sys/kernel/shm_rmid_forced /proc/sys/fs/mqueue/msg_max';
      const first = await cri.createContainer(podId, containerConfig({ name: 'first', image: BUSYBOX_REF, command: ['sleep', '100000'] }), pod);
      await cri.startContainer(first);
      const seen = await cri.execSync(first, ['sh', '-c', read], 60);
      assert.equal(seen.exitCode, 0, seen.stderr.toString());
      assert.deepEqual(seen.stdout.toString().split('\n').filter(Boolean), ['1', '100'], 'guest defaults are 0 and 10');
      // A second container of the pod sees the same (the pod's namespaces, not the first container's).
      const second = await cri.createContainer(podId, containerConfig({ name: 'second', image: BUSYBOX_REF, command: ['sh', '-c', read] }), pod);
      await cri.startContainer(second);
      for (let i = 0; i < 300 && (await cri.containerStatus(second)).status.state !== 'CONTAINER_EXITED'; i++) await new Promise((r) => setTimeout(r, 200));
      const status = (await cri.containerStatus(second)).status;
      assert.equal(status.exitCode, 0, `second container: ${status.reason} ${status.message}`);
    } finally {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
  });

  it('refuses a pod sysctl that is not namespaced, clearly, and leaves nothing behind', async () => {
    for (const [name, value] of [['kernel.panic', '1'], ['vm.swappiness', '10']] as const) {
      const pod = podConfig({ name: `bad-${name.replace('.', '-')}`, namespace: 'hull-sysctl', sysctls: { 'kernel.shm_rmid_forced': '1', [name]: value } });
      await assert.rejects(cri.runPodSandbox(pod, 'hull'), (e: Error) => {
        assert.ok(isInvalidArgument(e), `${name}: not InvalidArgument: ${e.message}`);
        assert.match(e.message, new RegExp(`The pod sets sysctl "${name.replace('.', '\\.')}", which is not namespaced: a hull pod may set only the sysctls of its own namespaces`));
        return true;
      });
      assert.deepEqual(qemuPidsUnder(runRoot), [], `${name}: QEMU left`);
      assert.deepEqual(entriesIn(runRoot), [], `${name}: sandbox state left`);
      assert.deepEqual([...mountsUnder(work), ...mountsUnder(runRoot)], [], `${name}: mounts left`);
      assert.deepEqual(await cri.listPodSandbox(), [], `${name}: pod left`);
    }
  });
});

describe("a container's own linux.sysctl", () => {
  it('is applied in its namespaces in the guest; one that is not namespaced is refused before anything is made', async () => {
    const image = await currentGuestImage();
    assert.ok(image, 'no guest image');
    const base = mkdtempSync('/run/hull-test/sy-');
    const bundle = makeBusyboxBundle();
    const sandbox = await Sandbox.create({ driver: new QemuDriver(), id: 'sysctl-own', image, runRoot: join(base, 'run'), memoryMiB: 512 });
    try {
      // defaultSpec has an IPC namespace of its own and none for the network: the VM's is the pod's.
      const spec = defaultSpec(['sh', '-c', 'cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax /proc/sys/fs/mqueue/msg_max']) as OciSpec;
      spec.linux = { ...spec.linux, sysctl: { 'net.ipv4.ip_forward': '1', 'kernel.msgmax': '4096', 'fs.mqueue.msg_max': '50' } };
      await sandbox.createContainer('own', { bundle: bundle.dir, spec, stdio: { stdout: true, stderr: true } });
      await sandbox.startContainer('own');
      const out = new PassThrough();
      const chunks: Buffer[] = [];
      out.on('data', (c: Buffer) => chunks.push(c));
      const [exit] = await Promise.all([sandbox.wait('own'), sandbox.attach('own', '', { stdout: out, stderr: out })]);
      const text = Buffer.concat(chunks).toString();
      assert.equal(exit.exitStatus, 0, text);
      assert.deepEqual(text.split('\n').filter(Boolean), ['1', '4096', '50']);
      await sandbox.removeContainer('own');

      const bad = defaultSpec(['true']) as OciSpec;
      bad.linux = { ...bad.linux, sysctl: { 'vm.swappiness': '10' } };
      await assert.rejects(sandbox.createContainer('bad', { bundle: bundle.dir, spec: bad, stdio: {} }), (e: Error) => {
        assert.ok(isInvalidArgument(e), e.message);
        assert.match(e.message, /The container sets sysctl "vm\.swappiness", which is not namespaced/);
        return true;
      });
      assert.deepEqual(entriesIn(sandbox.sharedDir), [], 'the refused container left something in the share');
    } finally {
      await sandbox.destroy();
      bundle.remove();
      assert.deepEqual(mountsUnder(base), [], 'mounts left');
      rmSync(base, { recursive: true, force: true });
    }
  });
});
