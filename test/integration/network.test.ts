/**
 * Pod networking through a real containerd, CRI and Debian's CNI bridge:
 * two hull pods and one runc pod on one bridge the harness made. All traffic
 * stays between these pods (namespaces this test created).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { podQemuPids, prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig, portForwardOnce } from '../harness/cri.js';

const hullRuntime = prepareHullRuntime({ name: 'net' });

let ctrd: PrivateContainerd;
let cri: CriClient;


before(async () => {
  assert.ok(await currentGuestImage(), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir, ipv6: true });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address);
});

after(async () => {
  cri?.close();
  await stopAndAssertClean(ctrd, hullRuntime);
});

interface RunningPod {
  name: string;
  podId: string;
  containerId: string;
  ip: string;
  ip6: string;
  netns: string;
}

async function startWebPod(name: string, handler: string): Promise<RunningPod> {
  const pod = podConfig({ name, namespace: 'hull-net', hostname: `${name}-host`, dnsServers: ['10.89.255.53'] });
  const podId = await cri.runPodSandbox(pod, handler);
  const serve = `mkdir -p /tmp/www && echo ${name} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www`;
  const containerId = await cri.createContainer(podId, containerConfig({ name: 'web', image: BUSYBOX_REF, command: ['sh', '-c', serve] }), pod);
  await cri.startContainer(containerId);
  const status = await cri.podSandboxStatus(podId, true);
  const ip = status.status.network?.ip ?? '';
  const ip6 = status.status.network?.additionalIps?.find((a) => a.ip?.includes(':'))?.ip ?? '';
  const info = JSON.parse((status.info as Record<string, string> | undefined)?.['info'] ?? '{}') as {
    runtimeSpec?: { linux?: { namespaces?: Array<{ type: string; path?: string }> } };
  };
  const netns = info.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path ?? '';
  return { name, podId, containerId, ip, ip6, netns };
}

// An HTTP GET with nc: a plain TCP client, answered by busybox httpd in the other pod.
async function fetchFrom(from: RunningPod, to: RunningPod, address = to.ip): Promise<string> {
  const get = `printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 10 ${address} 8080`;
  const r = await cri.execSync(from.containerId, ['sh', '-c', get]);
  return r.stdout.toString().trim().split('\n').pop()?.trim() ?? '';
}

describe('pod networking', () => {
  it('connects hull and runc pods on one bridge, with the pod IPs CRI reports', async () => {
    const pods = [await startWebPod('hull-a', 'hull'), await startWebPod('hull-b', 'hull'), await startWebPod('runc-c', '')];
    const [hullA, hullB] = pods as [RunningPod, RunningPod, RunningPod];
    try {
      for (const pod of [hullA, hullB]) {
        assert.match(pod.ip, /^\d+\.\d+\.\d+\.\d+$/);
        const addr = await cri.execSync(pod.containerId, ['ip', '-4', 'addr', 'show', 'eth0']);
        assert.match(addr.stdout.toString(), new RegExp(`inet ${pod.ip.replace(/\./g, '\\.')}/`));
        // Dual stack: the IPv6 address CNI gave the pod is on the guest's eth0 too.
        assert.match(pod.ip6, /^fd89:/);
        const addr6 = await cri.execSync(pod.containerId, ['ip', '-6', 'addr', 'show', 'eth0']);
        assert.match(addr6.stdout.toString(), new RegExp(`inet6 ${pod.ip6}/`));
        assert.equal((await cri.execSync(pod.containerId, ['hostname'])).stdout.toString().trim(), `${pod.name}-host`);
        assert.match((await cri.execSync(pod.containerId, ['cat', '/etc/resolv.conf'])).stdout.toString(), /^nameserver 10\.89\.255\.53$/m);
        // The tap and its redirect exist in the pod netns while the pod runs.
        assert.ok(pod.netns, 'no netns path in the sandbox status');
        execFileSync('nsenter', [`--net=${pod.netns}`, 'ip', 'link', 'show', 'tap0_hull']);
      }
      for (const from of pods) {
        for (const to of pods) {
          if (from !== to) assert.equal(await fetchFrom(from, to), to.name, `${from.name} -> ${to.name}`);
        }
      }
      for (const [from, to] of [[pods[2]!, hullA], [hullA, hullB]] as const) {
        assert.equal(await fetchFrom(from, to, to.ip6), to.name, `${from.name} -> ${to.name} over IPv6`);
      }
      // kubectl port-forward: CRI dials localhost:8080 inside the pod netns, which must reach the VM.
      const url = await cri.portForward(hullA.podId, [8080]);
      const answer = (await portForwardOnce(url, 8080, 'GET /index.html HTTP/1.0\r\n\r\n')).toString();
      assert.match(answer, /^HTTP\/1\.[01] 200/);
      assert.equal(answer.trim().split('\n').pop()?.trim(), 'hull-a');
    } finally {
      for (const pod of pods) {
        await cri.stopPodSandbox(pod.podId);
        // If CRI still keeps the netns, nothing of hull's may be left in it.
        if (pod.netns && existsSync(pod.netns)) {
          const links = execFileSync('nsenter', [`--net=${pod.netns}`, 'ip', '-o', 'link'], { encoding: 'utf8' });
          assert.doesNotMatch(links, /tap0_hull/, `tap left in ${pod.netns}`);
        }
        await cri.removePodSandbox(pod.podId);
      }
    }
    for (const pod of pods) assert.equal(existsSync(pod.netns), false, `netns ${pod.netns} left`);
    // Nothing of hull's is left in the netns either (checked while it still existed would need it alive;
    // CRI removed it, and with it any tap: the shim's teardown ran first, see the sandbox log).
    assert.deepEqual(podQemuPids(hullRuntime), []);
  });
});
