/**
 * A hull pod's host processes live in the pod's cgroup, as kubelet's accounting expects: the
 * sandbox spec's cgroupsPath (below the pod's cgroup parent, made here as kubelet would, with the
 * pod's memory limit) holds the shim and QEMU. A pod whose container uses its full limit runs on
 * under a parent limit of limits + overhead; a guest that fills its RAM past a parent limit is
 * stopped by the host's OOM killer, and the pod is reported failed and cleaned up.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { hostHierarchies } from '../../src/sandbox/host-cgroup.js';
import { startContainerd, findShims, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig } from '../harness/cri.js';
import { entriesIn, mountsUnder, processAlive, qemuPidsUnder } from '../helpers/leaks.js';

const MIB = 1024 * 1024;
const hullRuntime = prepareHullRuntime({ name: 'cgroup' });
const { runRoot } = hullRuntime;
const MEMORY_MOUNT = '/sys/fs/cgroup/memory';
let ctrd: PrivateContainerd;
let cri: CriClient;
const parents: string[] = [];

before(async () => {
  assert.ok(await currentGuestImage(), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address);
});

after(async () => {
  cri?.close();
  await ctrd?.stop();
  const left = { vms: qemuPidsUnder(runRoot), mounts: mountsUnder(runRoot), state: entriesIn(runRoot) };
  hullRuntime.remove();
  for (const parent of parents) {
    const hierarchies = await hostHierarchies();
    for (const h of hierarchies) {
      const dir = join(h.mount, parent);
      if (!existsSync(dir)) continue;
      assert.deepEqual(readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name), [], `cgroups left below ${dir}`);
      rmdirSync(dir);
    }
  }
  assert.deepEqual(left, { vms: [], mounts: [], state: [] });
});

/** podParent makes a pod cgroup parent in the memory hierarchy with `limitBytes`, as kubelet does. */
function podParent(limitBytes: number): string {
  const parent = `/hull-test-${randomBytes(4).toString('hex')}`;
  mkdirSync(join(MEMORY_MOUNT, parent));
  writeFileSync(join(MEMORY_MOUNT, parent, 'memory.limit_in_bytes'), String(limitBytes));
  parents.push(parent);
  return parent;
}

function memoryCgroupOf(pid: number): string {
  return readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => /^\d+:memory:/.test(l))?.split(':')[2] ?? '';
}

function outerVm(): number {
  const [qemu] = qemuPidsUnder(runRoot);
  assert.ok(qemu, 'no VM process under the run root');
  return qemu;
}

describe('the pod cgroup on the host', { skip: !existsSync(join(MEMORY_MOUNT, 'memory.limit_in_bytes')) && 'no cgroup v1 memory hierarchy here' }, () => {
  it('holds the shim and QEMU, and a container using its full limit runs on under limits + overhead', async () => {
    // 512 MiB of VM (the test config's default memory) + a 64 MiB limit; the parent gets the
    // limit plus an overhead that covers the whole VM, QEMU's own memory and the shim.
    const parent = podParent((64 + 512 + 384) * MIB);
    const pod = podConfig({ name: 'cgroups', namespace: 'hull-test', memoryLimitBytes: 64 * MIB });
    pod.linux!.cgroupParent = parent;
    const podId = await cri.runPodSandbox(pod, 'hull');
    try {
      const qemu = outerVm();
      assert.equal(memoryCgroupOf(qemu), `${parent}/${podId}`, 'QEMU is not in the sandbox cgroup');
      const shim = findShims(ctrd.address).find((s) => s.cmdline.includes(podId));
      assert.ok(shim);
      assert.equal(memoryCgroupOf(shim.pid), `${parent}/${podId}`, 'the shim is not in the sandbox cgroup');
      const id = await cri.createContainer(podId, containerConfig({ name: 'full', image: BUSYBOX_REF, command: ['sleep', '1000'], memoryLimitBytes: 64 * MIB }), pod);
      await cri.startContainer(id);
      // Right up to the limit: 60 MiB in the container's tmpfs, counted against its 64 MiB.
      const r = await cri.execSync(id, ['sh', '-c', 'dd if=/dev/zero of=/dev/shm/fill bs=1M count=60 2>/dev/null && echo filled'], 120);
      assert.equal(r.stdout.toString(), 'filled\n');
      const usage = Number(readFileSync(join(MEMORY_MOUNT, parent, podId, 'memory.usage_in_bytes'), 'utf8'));
      console.log(`# pod cgroup usage with the container at its limit: ${Math.round(usage / MIB)} MiB (QEMU and shim)`);
      assert.ok(usage > 60 * MIB, `the pod cgroup does not count the VM's memory (${usage} bytes)`);
      assert.ok(processAlive(qemu), 'QEMU was killed');
      assert.equal((await cri.execSync(id, ['echo', 'alive'])).stdout.toString(), 'alive\n');
      // A spinning guest shows in the pod's host cgroup too: its CPU time grows by what the vCPU ran.
      const cpuacct = join('/sys/fs/cgroup/cpuacct', parent, podId, 'cpuacct.usage');
      if (existsSync(cpuacct)) {
        const before = BigInt(readFileSync(cpuacct, 'utf8').trim());
        await cri.execSync(id, ['timeout', '3', 'sh', '-c', 'while :; do :; done'], 60);
        const spent = Number(BigInt(readFileSync(cpuacct, 'utf8').trim()) - before) / 1e9;
        console.log(`# pod cgroup CPU while the guest spun 3 s: ${spent.toFixed(2)} s`);
        assert.ok(spent > 1, `the pod cgroup did not count the guest's CPU (${spent} s)`);
      }
      await cri.stopContainer(id, 0);
      await cri.removeContainer(id);
    } finally {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
    assert.equal(existsSync(join(MEMORY_MOUNT, parent, podId)), false, 'the sandbox cgroup was left');
  });

  it('stops a guest that fills its RAM past the pod\'s limit: QEMU is OOM-killed on the host, the pod fails, nothing is left', async () => {
    // The template of this VM size is made first, outside any tight limit: a template VM boots in
    // the cgroup of the pod that needs it, and this one's limit is meant for the clone only. The
    // warm pod has a pod limit too (a roomy one), so that its VM is sized as the tight pod's is
    // (limits + guest_slack_memory when kubelet limits the pod cgroup: src/shim/sizing.ts).
    const warm = podConfig({ name: 'warm', namespace: 'hull-test' });
    warm.linux!.cgroupParent = podParent(4096 * MIB);
    const warmId = await cri.runPodSandbox(warm, 'hull');
    await cri.stopPodSandbox(warmId);
    await cri.removePodSandbox(warmId);
    // A parent limit well below the VM's 512 MiB: a guest touching all of its RAM must hit it.
    const parent = podParent(320 * MIB);
    const pod = podConfig({ name: 'oom', namespace: 'hull-test' });
    pod.linux!.cgroupParent = parent;
    const podId = await cri.runPodSandbox(pod, 'hull');
    try {
      const qemu = outerVm();
      const id = await cri.createContainer(podId, containerConfig({ name: 'hog', image: BUSYBOX_REF, command: ['sh', '-c', 'dd if=/dev/zero of=/dev/shm/fill bs=1M count=480; sleep 1000'] }), pod);
      await cri.startContainer(id);
      for (let i = 0; i < 600 && processAlive(qemu); i++) await sleep(100);
      assert.equal(processAlive(qemu), false, 'QEMU outgrew the pod\'s limit and was not stopped');
      // The pod's limit is what stopped it: the parent cgroup hit its limit (the kernel logs the OOM kill).
      const failcnt = Number(readFileSync(join(MEMORY_MOUNT, parent, 'memory.failcnt'), 'utf8'));
      assert.ok(failcnt > 0, 'the pod cgroup never hit its limit');
      const peak = Number(readFileSync(join(MEMORY_MOUNT, parent, 'memory.max_usage_in_bytes'), 'utf8'));
      console.log(`# pod cgroup peak ${Math.round(peak / MIB)} MiB of its 320 MiB limit, ${failcnt} failed charges`);
      assert.ok(peak <= 320 * MIB, 'the pod used more host memory than its limit');
      // The pod is reported failed: its container exited, its sandbox is not ready.
      let state = '';
      for (let i = 0; i < 100; i++) {
        state = (await cri.listContainers({ id }))[0]?.state ?? '';
        if (state === 'CONTAINER_EXITED') break;
        await sleep(200);
      }
      assert.equal(state, 'CONTAINER_EXITED');
      await cri.removeContainer(id);
    } finally {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
    assert.deepEqual(entriesIn(runRoot), [], 'state left');
    assert.equal(existsSync(join(MEMORY_MOUNT, parent, podId)), false, 'the sandbox cgroup was left');
  });
});
