/**
 * No spoofing from the VM, through a real containerd, CRI and Debian's CNI
 * bridge: a hull pod whose privileged container plays hostile root in the
 * guest, and a runc pod (the victim) on the same bridge. The guest claims an
 * address and a MAC that are not its own (ARP, UDP, IPv6); the victim must
 * never see any of it. A control sends the same traffic from the pod's own
 * address and MAC, which must arrive: so the test can fail.
 *
 * The victim is watched from the host, in its netns (this test's own): an
 * nftables counter table on its eth0 sees every frame that reaches it, a UDP
 * listener (host node under nsenter) records datagram sources, and its
 * neighbour table shows what ARP taught it. All traffic stays between the
 * two pods this test made.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig, type PodSandboxConfig } from '../harness/cri.js';
import { entriesIn, mountsUnder, processAlive, qemuPidsUnder } from '../helpers/leaks.js';

const hullRuntime = prepareHullRuntime({ name: 'spoof' });
const { work, runRoot } = hullRuntime;

let ctrd: PrivateContainerd;
let cri: CriClient;
let listener: ChildProcess | undefined;

before(async () => {
  assert.ok(await currentGuestImage(), 'no guest image: run `make image` first');
  ctrd = await startContainerd({ runtimes: hullRuntime.runtimes, extraPath: hullRuntime.shimDir, ipv6: true });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address);
});

after(async () => {
  if (listener?.pid && processAlive(listener.pid)) process.kill(listener.pid, 'SIGKILL');
  cri?.close();
  const report = await ctrd?.stop();
  const left = { vms: qemuPidsUnder(runRoot), mounts: mountsUnder(work), state: entriesIn(runRoot), listener: listener?.pid && processAlive(listener.pid) ? [listener.pid] : [] };
  hullRuntime.remove();
  assert.deepEqual(report?.leakedShims ?? [], [], 'leaked shims');
  assert.deepEqual(left, { vms: [], mounts: [], state: [], listener: [] });
});

interface Pod {
  podId: string;
  ip: string;
  ip6: string;
  netns: string;
}

/** A privileged pod sandbox (CRI allows privileged containers only in one), as kubelet sends for such a pod. */
function privilegedPod(name: string): PodSandboxConfig {
  const config = podConfig({ name, namespace: 'hull-spoof' });
  config.linux!.securityContext!.privileged = true;
  return config;
}

async function startPod(name: string, handler: string): Promise<Pod> {
  const podId = await cri.runPodSandbox(privilegedPod(name), handler);
  const status = await cri.podSandboxStatus(podId, true);
  const info = JSON.parse((status.info as Record<string, string> | undefined)?.['info'] ?? '{}') as {
    runtimeSpec?: { linux?: { namespaces?: Array<{ type: string; path?: string }> } };
  };
  return {
    podId,
    ip: status.status.network?.ip ?? '',
    ip6: status.status.network?.additionalIps?.find((a) => a.ip?.includes(':'))?.ip ?? '',
    netns: info.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path ?? '',
  };
}

const inNetns = (netns: string, args: string[], input?: string): string =>
  execFileSync('nsenter', [`--net=${netns}`, '--', ...args], { encoding: 'utf8', ...(input !== undefined ? { input } : {}) });

/** Another host address on the pod's subnet, not the pod's or the victim's (the CNI range is a /24 or /64). */
function otherAddress(address: string, taken: string[]): string {
  const v6 = address.includes(':');
  for (const last of [250, 251, 252]) {
    const candidate = v6 ? `${address.split('::')[0]}::${last.toString(16)}` : address.replace(/\.\d+$/, `.${last}`);
    if (!taken.includes(candidate)) return candidate;
  }
  throw new Error(`no free address near ${address}`);
}

const UDP_PORT = 5301;
const SPOOF_MAC = '0a:58:de:ad:be:ef';

/** watchVictim installs counters on what reaches the victim's eth0: frames by claimed sender. */
function watchVictim(netns: string, hull: { ip: string; ip6: string; mac: string }, spoof: { ip: string; ip6: string }): void {
  inNetns(netns, ['nft', '-f', '-'], `
table netdev spoof_watch {
  counter spoof_arp {}
  counter spoof_ip4 {}
  counter spoof_ip6 {}
  counter spoof_mac {}
  counter own_arp {}
  counter own_ip4 {}
  counter own_ip6 {}
  chain seen {
    type filter hook ingress device "eth0" priority 0;
    arp saddr ip ${spoof.ip} counter name spoof_arp
    ip saddr ${spoof.ip} counter name spoof_ip4
    ip6 saddr ${spoof.ip6} counter name spoof_ip6
    ether saddr ${SPOOF_MAC} counter name spoof_mac
    ether saddr ${hull.mac} arp saddr ip ${hull.ip} counter name own_arp
    ether saddr ${hull.mac} ip saddr ${hull.ip} udp dport ${UDP_PORT} counter name own_ip4
    ether saddr ${hull.mac} ip6 saddr ${hull.ip6} udp dport ${UDP_PORT} counter name own_ip6
  }
}
`);
}

function counters(netns: string): Record<string, number> {
  const out = JSON.parse(inNetns(netns, ['nft', '-j', 'list', 'counters', 'table', 'netdev', 'spoof_watch'])) as {
    nftables: Array<{ counter?: { name: string; packets: number } }>;
  };
  return Object.fromEntries(out.nftables.flatMap((o) => (o.counter ? [[o.counter.name, o.counter.packets]] : [])));
}

/** startListener runs a UDP listener (dual stack) in the victim's netns; it prints each datagram's source. */
async function startListener(netns: string): Promise<{ sources: () => string[] }> {
  const script = `const s = require('node:dgram').createSocket({ type: 'udp6', ipv6Only: false });
s.on('message', (_m, r) => process.stdout.write(r.address.replace(/^::ffff:/, '') + '\\n'));
s.bind(${UDP_PORT}, '::', () => process.stdout.write('ready\\n'));`;
  listener = spawn('nsenter', [`--net=${netns}`, '--', process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  listener.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.startsWith('ready\n'), 10_000);
  assert.ok(out.startsWith('ready\n'), 'the UDP listener did not start');
  return { sources: () => out.split('\n').filter((l) => l && l !== 'ready') };
}

/** The shell a hostile guest root runs: traceroute is busybox's UDP sender with a chosen source (port = -p + 1). */
const udpFrom = (source: string, to: string, v6: boolean): string =>
  `${v6 ? 'traceroute6' : 'traceroute'} -n -m 1 -q 1 -w 1 -s ${source} -p ${UDP_PORT - 1} ${to}`;

describe('anti-spoofing on the tap', () => {
  it('lets only the pod\'s own MAC and addresses out of the VM', async () => {
    const victim = await startPod('victim', '');
    const hull = await startPod('attacker', 'hull');
    try {
      assert.match(hull.ip6, /^fd89:/, 'the harness gave no IPv6 address');
      const containerId = await cri.createContainer(hull.podId, containerConfig({ name: 'root', image: BUSYBOX_REF, command: ['sleep', 'inf'], privileged: true }), privilegedPod('attacker'));
      await cri.startContainer(containerId);
      const sh = async (script: string): Promise<string> => {
        const r = await cri.execSync(containerId, ['sh', '-c', script], 120);
        return r.stdout.toString() + r.stderr.toString();
      };
      const mac = (await sh('cat /sys/class/net/eth0/address')).trim();
      assert.match(mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      // The guard is in place in the hull pod's netns while it runs.
      assert.match(inNetns(hull.netns, ['nft', 'list', 'table', 'netdev', 'hull_guard']), /hook ingress device "tap0_hull".*policy drop/);

      const spoof = { ip: otherAddress(hull.ip, [hull.ip, victim.ip]), ip6: otherAddress(hull.ip6, [hull.ip6, victim.ip6]) };
      watchVictim(victim.netns, { ...hull, mac }, spoof);
      // Gratuitous ARP makes new neighbour entries only with arp_accept: let it, so the claim could land.
      inNetns(victim.netns, ['sysctl', '-q', '-w', 'net.ipv4.conf.eth0.arp_accept=1']);
      inNetns(victim.netns, ['ip', 'neigh', 'flush', 'dev', 'eth0']);
      const udp = await startListener(victim.netns);
      const victimLinkLocal = /inet6 (fe80::[0-9a-f:]+)\//.exec(inNetns(victim.netns, ['ip', '-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'link']))?.[1] ?? '';
      assert.ok(victimLinkLocal, 'the victim has no link-local address');

      // The attack: another address on the subnet (ARP announcement, ARP request, UDP, IPv6 UDP) and another MAC.
      const attack = await sh([
        'set -x',
        // Legitimate first, so the guest knows the victim's MAC and the spoofed packets go straight out.
        `ping -c 1 -W 5 ${victim.ip}`,
        `ping6 -c 1 -W 5 ${victim.ip6}`,
        `ip addr add ${spoof.ip}/32 dev eth0`,
        `arping -U -c 2 -s ${spoof.ip} -I eth0 ${spoof.ip}`,
        `arping -c 2 -w 2 -s ${spoof.ip} -I eth0 ${victim.ip}`,
        udpFrom(spoof.ip, victim.ip, false),
        `ip -6 addr add ${spoof.ip6}/128 dev eth0`,
        'sleep 3', // DAD (its NS from :: for a foreign target is dropped too), then the address is usable
        udpFrom(spoof.ip6, victim.ip6, true),
        `ip link set dev eth0 address ${SPOOF_MAC} && { arping -c 2 -w 2 -I eth0 ${victim.ip}; ${udpFrom(hull.ip, victim.ip, false)}; ip link set dev eth0 address ${mac}; }`,
        'ip link show eth0',
        'true',
      ].join('\n'));
      assert.match(attack, new RegExp(`link/ether ${mac}`), `the guest's MAC is back:\n${attack}`);
      assert.doesNotMatch(attack, /ip: .*(Operation not permitted|RTNETLINK answers)/, `the guest could not act as root:\n${attack}`);

      const seen = counters(victim.netns);
      assert.deepEqual(
        { arp: seen['spoof_arp'], ip4: seen['spoof_ip4'], ip6: seen['spoof_ip6'], mac: seen['spoof_mac'] },
        { arp: 0, ip4: 0, ip6: 0, mac: 0 },
        `spoofed frames reached the victim; the guest did:\n${attack}`,
      );
      const neigh = inNetns(victim.netns, ['ip', 'neigh', 'show', 'dev', 'eth0']);
      assert.doesNotMatch(neigh, new RegExp(`^${spoof.ip.replace(/\./g, '\\.')} `, 'm'), `the victim learned the spoofed address:\n${neigh}`);
      assert.doesNotMatch(neigh, new RegExp(SPOOF_MAC), `the victim learned the spoofed MAC:\n${neigh}`);
      assert.deepEqual(udp.sources(), [], 'the victim received spoofed UDP');

      // The control: the same traffic from the pod's own address and MAC arrives.
      const control = await sh([
        'set -x',
        `ip addr del ${spoof.ip}/32 dev eth0`,
        `ip -6 addr del ${spoof.ip6}/128 dev eth0`,
        `arping -U -c 2 -s ${hull.ip} -I eth0 ${hull.ip}`,
        udpFrom(hull.ip, victim.ip, false),
        udpFrom(hull.ip6, victim.ip6, true),
        // Link-local too: the guest's own fe80:: address (EUI-64 of the pod MAC) passes the guard.
        'ip -6 addr show dev eth0 scope link',
        `ping6 -c 1 -W 5 -I eth0 ${victimLinkLocal}`,
        'true',
      ].join('\n'));
      await waitFor(() => udp.sources().length >= 2, 5000);
      const own = counters(victim.netns);
      const grew = (name: string): boolean => (own[name] ?? 0) > (seen[name] ?? 0);
      assert.ok(grew('own_arp') && grew('own_ip4') && grew('own_ip6'), `own traffic did not arrive (${JSON.stringify(own)}); the guest did:\n${control}`);
      assert.match(inNetns(victim.netns, ['ip', 'neigh', 'show', 'dev', 'eth0']), new RegExp(`^${hull.ip.replace(/\./g, '\\.')} lladdr ${mac}`, 'm'));
      assert.deepEqual([...new Set(udp.sources())].sort(), [hull.ip, hull.ip6].sort());
      assert.match(control, /1 packets received/, `no link-local answer from the victim:\n${control}`);
      // Nothing spoofed slipped in meanwhile.
      assert.deepEqual([own['spoof_arp'], own['spoof_ip4'], own['spoof_ip6'], own['spoof_mac']], [0, 0, 0, 0]);
    } finally {
      if (listener?.pid && processAlive(listener.pid)) process.kill(listener.pid, 'SIGKILL');
      for (const pod of [hull, victim]) {
        await cri.stopPodSandbox(pod.podId);
        // If CRI still keeps the hull pod's netns, nothing of hull's may be left in it.
        if (pod === hull && pod.netns && existsSync(pod.netns)) {
          assert.doesNotMatch(inNetns(pod.netns, ['ip', '-o', 'link']), /tap0_hull/, `tap left in ${pod.netns}`);
          assert.doesNotMatch(inNetns(pod.netns, ['nft', 'list', 'tables']), /hull_guard/, `guard left in ${pod.netns}`);
        }
        await cri.removePodSandbox(pod.podId);
      }
    }
    for (const pod of [hull, victim]) assert.equal(existsSync(pod.netns), false, `netns ${pod.netns} left`);
  });
});

async function waitFor(ok: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
}
