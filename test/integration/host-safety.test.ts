/**
 * Host safety through CRI, as kubelet drives it: hostPath volumes in hull's own directories or on
 * the kernel's interface file systems are refused with a clear message and leave nothing; and a
 * pod whose shim is killed (kill -9, so nothing in memory is released) is still cleaned up
 * completely by StopPodSandbox/RemovePodSandbox, through `shim delete` replaying the ledger.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { DEFAULT_CONFIG } from '../../src/config/index.js';
import { readMountinfoSync } from '../../src/common/mountinfo.js';
import { startContainerd, findShims, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig, type Mount } from '../harness/cri.js';
import { entriesIn, mountsUnder, processAlive, qemuPidsUnder } from '../helpers/leaks.js';

const hullRuntime = prepareHullRuntime({ name: 'safety' });
const { work, runRoot } = hullRuntime;
let ctrd: PrivateContainerd;
let cri: CriClient;

before(async () => {
  assert.ok(await currentGuestImage(), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address);
});

after(async () => {
  cri?.close();
  // containerd runs `shim delete` for a dead shim's tasks in the background: let those finish.
  for (let i = 0; i < 200 && ctrd && findShims(ctrd.address).some((s) => s.cmdline.endsWith(' delete')); i++) await sleep(50);
  const shims = ctrd ? findShims(ctrd.address).filter((s) => s.cmdline.includes('hull')) : [];
  if (process.env['HULL_TEST_KEEP_LOG']) (await import('node:fs')).copyFileSync(ctrd.logPath, process.env['HULL_TEST_KEEP_LOG']);
  const report = await ctrd?.stop();
  const left = { vms: qemuPidsUnder(runRoot), mounts: mountsUnder(work).concat(mountsUnder(runRoot)), state: entriesIn(runRoot) };
  hullRuntime.remove();
  assert.deepEqual(shims, [], 'hull shims still running');
  assert.deepEqual(report?.leakedShims ?? [], [], 'containerd had to kill leaked shims');
  assert.deepEqual(left, { vms: [], mounts: [], state: [] });
});

describe('host safety through CRI', () => {
  it('refuses hostPath volumes in hull\'s directories and on kernel file systems, and the pod runs on', async () => {
    const pod = podConfig({ name: 'hostpaths', namespace: 'hull-test' });
    const podId = await cri.runPodSandbox(pod, 'hull');
    try {
      const cgroup = readMountinfoSync().find((m) => m.fsType === 'cgroup' || m.fsType === 'cgroup2');
      const cases: Array<[string, RegExp]> = [
        [runRoot, /it lies in the sandbox's own state directory|it lies in hull's own directory/],
        [join(runRoot, podId), /it lies in the sandbox's own state directory/],
        [DEFAULT_CONFIG.guestImagesDir, /it lies in hull's own directory "\/var\/lib\/hull\/guest"/],
        [DEFAULT_CONFIG.templatesDir, /it lies in hull's own directory "\/var\/lib\/hull\/templates"/],
        ['/var/lib/hull', /it contains hull's own directory/],
        ['/', /it contains hull's own directory/],
        ['/proc/1', /it is on proc, a kernel interface/],
        ['/sys/kernel', /it is on sysfs, a kernel interface/],
        ['/dev', /it is on devtmpfs, a kernel interface/],
        ...(cgroup ? [[cgroup.mountPoint, new RegExp(`it is on ${cgroup.fsType}, a kernel interface`)] as [string, RegExp]] : []),
      ];
      // The template RAM root exists once a template was made (the pod above made one, if templates are on).
      if (existsSync(DEFAULT_CONFIG.templateRamDir)) cases.push([DEFAULT_CONFIG.templateRamDir, /it lies in hull's own directory "\/var\/lib\/hull\/template-ram"/]);
      for (const [i, [hostPath, message]] of cases.entries()) {
        if (!existsSync(hostPath)) continue;
        const mounts: Mount[] = [{ containerPath: '/host', hostPath, readonly: true }];
        const config = containerConfig({ name: `refused-${i}`, image: BUSYBOX_REF, command: ['true'], mounts });
        // CRI's CreateContainer only records the container; the shim's Create runs at StartContainer.
        const id = await cri.createContainer(podId, config, pod);
        await assert.rejects(cri.startContainer(id), message, `hostPath ${hostPath}`);
        await cri.removeContainer(id);
      }
      assert.deepEqual(await cri.listContainers({ podSandboxId: podId }), [], 'a refused container was left');
      // Nothing of the refused containers is left in the share.
      assert.deepEqual(readdirSync(join(runRoot, podId, 'mounts')), []);
      // The pod is unharmed: an allowed hostPath still works.
      const allowed = join(work, 'allowed');
      mkdirSync(allowed);
      writeFileSync(join(allowed, 'f'), 'allowed\n');
      const id = await cri.createContainer(podId, containerConfig({ name: 'ok', image: BUSYBOX_REF, command: ['sleep', '1000'], mounts: [{ containerPath: '/data', hostPath: allowed, readonly: true }] }), pod);
      await cri.startContainer(id);
      const r = await cri.execSync(id, ['cat', '/data/f']);
      assert.equal(r.stdout.toString(), 'allowed\n');
      await cri.stopContainer(id, 0);
      await cri.removeContainer(id);
    } finally {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
    assert.deepEqual(entriesIn(runRoot), []);
  });

  it('cleans up everything of a pod whose shim was killed with SIGKILL', async () => {
    const pod = podConfig({ name: 'crashed', namespace: 'hull-test' });
    const podId = await cri.runPodSandbox(pod, 'hull');
    const data = join(work, 'crash-data');
    mkdirSync(data);
    writeFileSync(join(data, 'keep'), 'keep\n');
    const id = await cri.createContainer(podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', '1000'], mounts: [{ containerPath: '/data', hostPath: data }] }), pod);
    await cri.startContainer(id);
    const vms = qemuPidsUnder(runRoot);
    assert.equal(vms.length, 1);
    assert.ok(mountsUnder(join(runRoot, podId)).length > 0, 'the pod has no share mounts');
    const shims = findShims(ctrd.address).filter((s) => s.cmdline.includes('hull') && s.cmdline.includes(podId));
    assert.equal(shims.length, 1, JSON.stringify(shims));
    process.kill(shims[0]!.pid, 'SIGKILL');
    for (let i = 0; i < 200 && processAlive(shims[0]!.pid); i++) await sleep(50);
    // The VM dies with its shim; its mounts, state and tap stay until the pod is removed.
    for (let i = 0; i < 200 && qemuPidsUnder(runRoot).length > 0; i++) await sleep(50);
    assert.deepEqual(qemuPidsUnder(runRoot), [], 'QEMU outlived its shim');
    assert.ok(existsSync(join(runRoot, podId, 'ledger')));
    await cri.stopContainer(id, 0).catch(() => {});
    await cri.removeContainer(id).catch(() => {});
    await cri.stopPodSandbox(podId);
    await cri.removePodSandbox(podId);
    // containerd runs `shim delete` for each task of a dead shim in the background: wait for it.
    for (let i = 0; i < 300 && (entriesIn(runRoot).length > 0 || mountsUnder(runRoot).length > 0); i++) await sleep(100);
    assert.deepEqual(mountsUnder(runRoot), [], 'mounts left after the pod was removed');
    assert.deepEqual(entriesIn(runRoot), [], 'state left after the pod was removed');
    assert.equal(readFileSync(join(data, 'keep'), 'utf8'), 'keep\n');
  });
});
