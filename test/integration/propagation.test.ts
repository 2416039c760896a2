/**
 * Mount propagation of hostPath volumes through CRI: a tmpfs mounted on the host below the volume's
 * source after the container started is listed inside the container when the volume asks for
 * HostToContainer or Bidirectional, and not when it is private (the default). Container-to-host
 * propagation cannot cross a VM: Bidirectional gets a warning in the shim's log.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig } from '../harness/cri.js';

const hullRuntime = prepareHullRuntime({ name: 'prop' });
const { work } = hullRuntime;
// How long the test waits for a host mount to show in the container (the README states the bound).
const APPEAR_WITHIN_MS = 10_000;
let ctrd: PrivateContainerd;
let cri: CriClient;
const source = join(work, 'host-volume');
const testMounts: string[] = [];

before(async () => {
  assert.ok(await currentGuestImage(), 'no guest image: run `make image` first');
  mkdirSync(join(source, 'later'), { recursive: true });
  // kubelet (and containerd) require a propagated hostPath to be on a shared mount.
  execFileSync('mount', ['--bind', source, source]);
  testMounts.push(source);
  execFileSync('mount', ['--make-shared', source]);
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address);
});

after(async () => {
  cri?.close();
  for (const point of testMounts.reverse()) execFileSync('umount', ['-l', point]);
  await stopAndAssertClean(ctrd, hullRuntime);
});

describe('hostPath mount propagation', () => {
  it('shows host mounts made later under HostToContainer and Bidirectional volumes, not under private ones', async () => {
    const pod = podConfig({ name: 'propagation', namespace: 'hull-test' });
    const podId = await cri.runPodSandbox(pod, 'hull');
    try {
      const mounts = [
        { containerPath: '/h2c', hostPath: source, propagation: 'PROPAGATION_HOST_TO_CONTAINER' as const },
        { containerPath: '/bidi', hostPath: source, propagation: 'PROPAGATION_BIDIRECTIONAL' as const },
        { containerPath: '/private', hostPath: source },
      ];
      const id = await cri.createContainer(podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', '1000'], mounts }), pod);
      await cri.startContainer(id);
      // After the container started, the host mounts a file system below the volume's source.
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'hull-later', join(source, 'later')]);
      testMounts.push(join(source, 'later'));
      writeFileSync(join(source, 'later', 'f'), 'mounted later\n');
      const started = Date.now();
      let seen = '';
      while (Date.now() - started < APPEAR_WITHIN_MS) {
        const r = await cri.execSync(id, ['sh', '-c', 'cat /h2c/later/f /bidi/later/f 2>/dev/null']);
        seen = r.stdout.toString();
        if (seen === 'mounted later\nmounted later\n') break;
        await sleep(200);
      }
      console.log(`# host mount visible in the container after ${Date.now() - started} ms`);
      assert.equal(seen, 'mounted later\nmounted later\n', 'the host mount did not reach HostToContainer and Bidirectional volumes');
      const privateView = await cri.execSync(id, ['ls', '-A', '/private/later']);
      assert.equal(privateView.stdout.toString(), '', 'a private volume shows a mount made later on the host');
      await cri.stopContainer(id, 0);
      await cri.removeContainer(id);
    } finally {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
  });
});
