/**
 * containerd-shim-hull-v2 behind a real, private containerd 1.6: ctr and
 * CRI drive it exactly as they drive runc or Kata. The shim is found on
 * containerd's PATH through a symlink, as `hull install` will place it.
 */
import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import { release } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { startContainerd, findShims, type PrivateContainerd } from '../harness/containerd.js';
import { HULL_RUNTIME, podQemuPids, prepareHullRuntime, stopPoolOwner } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig } from '../harness/cri.js';
import { entriesIn, mountsUnder, qemuPidsUnder } from '../helpers/leaks.js';

// Small VMs keep the suite light on a 2-core machine; the defaults are tested by the sandbox suite.
const hullRuntime = prepareHullRuntime({ name: 'shim' });
const { work, runRoot, configPath } = hullRuntime;
// HULL_TEST_GUEST_IMAGES_DIR: a guest images directory of its own (where other work rebuilds the shared one).
const imagesDir = process.env['HULL_TEST_GUEST_IMAGES_DIR'];
if (imagesDir) appendFileSync(configPath, `guest_images_dir = "${imagesDir}"\n`);

let ctrd: PrivateContainerd;
let cri: CriClient;
let guestKernel = '';


before(async () => {
  const image = await currentGuestImage(imagesDir);
  assert.ok(image, 'no guest image: run `make image` first');
  guestKernel = image.kernelRelease;
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address);
});

after(async () => {
  cri?.close();
  const tasks = ctrd ? await ctrd.ctr(['tasks', 'ls', '-q']) : undefined;
  const shims = ctrd ? findShims(ctrd.address).filter((s) => s.cmdline.includes('hull')) : [];
  const report = await ctrd?.stop();
  const poolStop = stopPoolOwner(hullRuntime);
  const leftVms = [...qemuPidsUnder(runRoot), ...qemuPidsUnder(hullRuntime.poolDir)];
  const leftMounts = [...mountsUnder(work), ...mountsUnder(hullRuntime.poolDir)];
  const leftState = [...entriesIn(runRoot), ...entriesIn(hullRuntime.poolDir).filter((e) => !e.startsWith('pool.log'))];
  hullRuntime.remove();
  assert.equal(poolStop, 0, 'hull pool stop failed');
  assert.equal(tasks?.stdout.trim() ?? '', '', 'ctr tasks ls is not empty');
  assert.deepEqual(shims, [], 'hull shims still running');
  assert.deepEqual(report?.leakedShims ?? [], [], 'containerd had to kill leaked shims');
  assert.deepEqual(leftVms, [], 'QEMU processes left');
  assert.deepEqual(leftMounts, [], 'mounts left');
  assert.deepEqual(leftState, [], 'sandbox state left under the run root');
});

function ctrRun(id: string, args: string[], extra: string[] = []) {
  return ctrd.ctr(['run', '--rm', '--runtime', HULL_RUNTIME, '--runtime-config-path', configPath, ...extra, BUSYBOX_REF, id, ...args], { timeoutMs: 120_000 });
}

describe('ctr with the hull runtime', () => {
  it('prints the guest kernel release', async () => {
    const r = await ctrRun('uname', ['uname', '-r']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), guestKernel);
    assert.notEqual(guestKernel, release());
  });

  it('returns exact exit codes and output streams', async () => {
    const r = await ctrRun('exit7', ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.equal(r.code, 7, `stderr: ${r.stderr}\n${ctrd.logTail(40)}`);
    assert.equal(r.stdout, 'out\n', ctrd.logTail(40));
    assert.equal(r.stderr, 'err\n');
  });

  it('runs task exec, ps, metrics and kill on a running task', async () => {
    const start = await ctrd.ctr(['run', '-d', '--runtime', HULL_RUNTIME, '--runtime-config-path', configPath, BUSYBOX_REF, 'long', 'sleep', '1000'], { timeoutMs: 120_000 });
    assert.equal(start.code, 0, start.stderr);
    try {
      const exec = await ctrd.ctr(['task', 'exec', '--exec-id', 'e1', 'long', 'sh', '-c', 'echo from-exec; exit 4'], { timeoutMs: 60_000 });
      assert.equal(exec.stdout, 'from-exec\n', `code ${exec.code} stderr ${exec.stderr}\n${ctrd.logTail(30)}`);
      assert.equal(exec.code, 4);
      const ps = await ctrd.ctr(['task', 'ps', 'long']);
      assert.equal(ps.code, 0, ps.stderr);
      assert.match(ps.stdout, /^\d+/m);
      const metrics = await ctrd.ctr(['task', 'metrics', 'long']);
      assert.equal(metrics.code, 0, metrics.stderr);
      assert.match(metrics.stdout, /memory\.usage_in_bytes\s+[1-9]\d*/);
      const pause = await ctrd.ctr(['task', 'pause', 'long']);
      assert.equal(pause.code, 0, pause.stderr);
      assert.match((await ctrd.ctr(['task', 'ls'])).stdout, /long\s+\d+\s+PAUSED/);
      const resume = await ctrd.ctr(['task', 'resume', 'long']);
      assert.equal(resume.code, 0, resume.stderr);

      // containerd restarts; the shim keeps the VM and containerd finds it again through the address file.
      await ctrd.restart();
      assert.match((await ctrd.ctr(['task', 'ls'])).stdout, /long\s+\d+\s+RUNNING/);
      const after = await ctrd.ctr(['task', 'exec', '--exec-id', 'e2', 'long', 'echo', 'still-here'], { timeoutMs: 60_000 });
      assert.equal(after.stdout, 'still-here\n', after.stderr);

      const kill = await ctrd.ctr(['task', 'kill', '-s', 'SIGKILL', 'long']);
      assert.equal(kill.code, 0, kill.stderr);
    } finally {
      await ctrd.ctr(['task', 'delete', '--force', 'long'], { timeoutMs: 60_000 });
      await ctrd.ctr(['container', 'delete', 'long']);
    }
  });
});

describe('CRI with runtime handler hull', () => {
  it('gives a shareProcessNamespace pod one PID namespace of its own, without the agent in it', async () => {
    const pod = podConfig({ name: 'shared-pid', namespace: 'hull-test', sharePid: true });
    const podId = await cri.runPodSandbox(pod, 'hull');
    try {
      const ids: string[] = [];
      for (const seconds of ['1001', '1002']) {
        const id = await cri.createContainer(podId, containerConfig({ name: `c${seconds}`, image: BUSYBOX_REF, command: ['sleep', seconds], sharePid: true }), pod);
        await cri.startContainer(id);
        ids.push(id);
      }
      const ps = await cri.execSync(ids[0]!, ['ps', '-o', 'pid,args']);
      assert.equal(ps.exitCode, 0, ps.stderr.toString());
      const text = ps.stdout.toString();
      assert.match(text, /sleep 1001/);
      assert.match(text, /sleep 1002/, "the pod's containers see each other");
      assert.match(text, /^\s*1\s+(\{\S+\} )?hull-pod-pid-holder\s*$/m, 'PID 1 is the namespace holder (src/agent/pod-pid-namespace.ts), as pause would be');
      assert.doesNotMatch(text, /agent\.js|hull-init/, 'the agent and init are not in the pod namespace');
      for (const id of ids) {
        await cri.stopContainer(id, 0);
        await cri.removeContainer(id);
      }
    } finally {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
    assert.deepEqual(podQemuPids(hullRuntime), []);
  });

  it('runs a pod of two containers in one VM, next to a runc pod', async () => {
    const pod = podConfig({ name: 'hull-pod', namespace: 'hull-test' });
    const podId = await cri.runPodSandbox(pod, 'hull');
    const runcPod = podConfig({ name: 'runc-pod', namespace: 'hull-test' });
    const runcPodId = await cri.runPodSandbox(runcPod, '');
    try {
      const ids: string[] = [];
      for (const name of ['app', 'sidecar']) {
        const id = await cri.createContainer(podId, containerConfig({ name, image: BUSYBOX_REF, command: ['sh', '-c', 'trap "echo bye; exit 0" TERM; while :; do sleep 1; done'] }), pod);
        await cri.startContainer(id);
        ids.push(id);
      }
      const [app, sidecar] = ids as [string, string];
      assert.equal(podQemuPids(hullRuntime).length, 1, 'one QEMU process for the pod');

      const uname = await cri.execSync(app, ['uname', '-r']);
      assert.equal(uname.exitCode, 0);
      assert.equal(uname.stdout.toString().trim(), guestKernel);
      assert.equal((await cri.execSync(sidecar, ['sh', '-c', 'echo err >&2; exit 5'])).exitCode, 5);

      const runcId = await cri.createContainer(runcPodId, containerConfig({ name: 'runc', image: BUSYBOX_REF, command: ['sleep', 'inf'] }), runcPod);
      await cri.startContainer(runcId);
      assert.equal((await cri.execSync(runcId, ['uname', '-r'])).stdout.toString().trim(), release());

      const tty = await cri.execStreaming(app, ['sh', '-c', 'tty; stty size'], { tty: true, resize: { width: 101, height: 33 } });
      assert.match(tty.stdout.toString(), /\/dev\/pts\/\d+/);

      assert.equal((await cri.containerStatus(app)).status.state, 'CONTAINER_RUNNING');
      const listed = await cri.listContainers({ podSandboxId: podId });
      assert.deepEqual(listed.map((c) => c.id).sort(), [...ids].sort());
      const stats = await cri.containerStats(app);
      assert.ok(Number(stats.memory?.workingSetBytes?.value ?? 0) > 0, JSON.stringify(stats.memory));

      // The trap answers SIGTERM: the container exits 0 within the grace period.
      await cri.stopContainer(app, 10);
      const stopped = (await cri.containerStatus(app)).status;
      assert.equal(stopped.state, 'CONTAINER_EXITED');
      assert.equal(stopped.exitCode, 0);
      // A process that ignores SIGTERM is killed when the grace period ends.
      const stubborn = await cri.createContainer(podId, containerConfig({ name: 'stubborn', image: BUSYBOX_REF, command: ['sh', '-c', 'trap "" TERM; while :; do sleep 1; done'] }), pod);
      await cri.startContainer(stubborn);
      await cri.stopContainer(stubborn, 1);
      assert.equal((await cri.containerStatus(stubborn)).status.exitCode, 137);
      for (const id of [app, sidecar, stubborn]) {
        await cri.stopContainer(id, 0);
        await cri.removeContainer(id);
      }
      await cri.stopContainer(runcId, 0);
      await cri.removeContainer(runcId);

      // The pod's sandbox container runs nothing in the guest (src/shim/pod-holder.ts): it is ready
      // while the VM runs, and StopPodSandbox sees it exit when it kills it.
      assert.equal((await cri.podSandboxStatus(podId)).status?.state, 'SANDBOX_READY');
      assert.equal(podQemuPids(hullRuntime).length, 1);
      await cri.stopPodSandbox(podId);
      assert.equal((await cri.podSandboxStatus(podId)).status?.state, 'SANDBOX_NOTREADY');
    } finally {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
      await cri.stopPodSandbox(runcPodId);
      await cri.removePodSandbox(runcPodId);
    }
    assert.deepEqual(podQemuPids(hullRuntime), []);
    assert.deepEqual(entriesIn(runRoot), []);
  });

  it('sizes the VM from the pod limits, updates limits, and reports OOM kills', async () => {
    // 1 CPU and 256 MiB of limits on top of the configured 1 vCPU / 512 MiB.
    const pod = podConfig({ name: 'sized', namespace: 'hull-test', cpuQuota: 100_000, cpuPeriod: 100_000, memoryLimitBytes: 256 * 1024 * 1024 });
    const podId = await cri.runPodSandbox(pod, 'hull');
    try {
      const app = await cri.createContainer(podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', 'inf'], memoryLimitBytes: 200 * 1024 * 1024 }), pod);
      await cri.startContainer(app);
      const size = await cri.execSync(app, ['sh', '-c', 'nproc; grep MemTotal /proc/meminfo']);
      const [nproc, memLine] = size.stdout.toString().trim().split('\n');
      assert.equal(nproc, '2');
      const memKiB = Number(/(\d+) kB/.exec(memLine ?? '')?.[1]);
      assert.ok(memKiB > 600 * 1024 && memKiB <= 768 * 1024, `MemTotal ${memKiB} kB for a 768 MiB VM`);

      // CRI reports available = limit - working set: the guest cgroup's new limit shows through.
      await cri.updateContainerResources(app, { memoryLimitInBytes: 100 * 1024 * 1024 });
      const mem = (await cri.containerStats(app)).memory;
      assert.equal(Number(mem?.availableBytes?.value ?? 0) + Number(mem?.workingSetBytes?.value ?? 0), 100 * 1024 * 1024, JSON.stringify(mem));

      const hog = await cri.createContainer(podId, containerConfig({ name: 'hog', image: BUSYBOX_REF, command: ['sh', '-c', 'x=0123456789; while :; do x="$x$x"; done'], memoryLimitBytes: 32 * 1024 * 1024 }), pod);
      await cri.startContainer(hog);
      let status = (await cri.containerStatus(hog)).status;
      for (let i = 0; i < 100 && status.state !== 'CONTAINER_EXITED'; i++) {
        await new Promise((r) => setTimeout(r, 200));
        status = (await cri.containerStatus(hog)).status;
      }
      assert.equal(status.state, 'CONTAINER_EXITED');
      assert.equal(status.exitCode, 137);
      assert.equal(status.reason, 'OOMKilled');
      for (const id of [app, hog]) {
        await cri.stopContainer(id, 0);
        await cri.removeContainer(id);
      }
    } finally {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
  });

  it('refuses a hostNetwork pod clearly and leaves nothing behind', async () => {
    const pod = podConfig({ name: 'host-net', namespace: 'hull-test', hostNetwork: true });
    await assert.rejects(cri.runPodSandbox(pod, 'hull'), /hull pods cannot use the host network/);
    assert.deepEqual(podQemuPids(hullRuntime), []);
    assert.deepEqual(entriesIn(runRoot), []);
    assert.deepEqual(await cri.listPodSandbox(), []);
  });
});
