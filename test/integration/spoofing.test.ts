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
 *
 * A second part drives the same guard with crafted frames (forged neighbour
 * discovery, VLAN tags, other protocols) in namespaces of its own, no VM.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { installGuard, ipv6Hex, removeGuard } from '../../src/net/anti-spoof.js';
import { LINK_ADDRESS, TAP_NAME } from '../../src/net/names.js';
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

describe('anti-spoofing on the tap of a VM pod', () => {
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
      // Bulk TCP (large offloaded frames from virtio-net) passes the guard intact.
      const served = await sh('mkdir -p /tmp/www && dd if=/dev/urandom of=/tmp/www/big bs=64k count=16 2>/dev/null && httpd -p 8080 -h /tmp/www && sha256sum /tmp/www/big');
      const get = `const h = require('node:crypto').createHash('sha256');
require('node:http').get('http://${hull.ip}:8080/big', (r) => r.on('data', (d) => h.update(d)).on('end', () => console.log(h.digest('hex'))));`;
      const fetched = inNetns(victim.netns, [process.execPath, '-e', get]);
      assert.equal(fetched.trim(), served.trim().split(' ')[0], 'a 1 MiB download from the hull pod');
      // Nothing spoofed slipped in meanwhile.
      const last = counters(victim.netns);
      assert.deepEqual([last['spoof_arp'], last['spoof_ip4'], last['spoof_ip6'], last['spoof_mac']], [0, 0, 0, 0]);
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

/*
 * The same guard on frames a VM's kernel would never send by itself but a
 * hostile one can (forged neighbour discovery, VLAN tags, other protocols).
 * No VM: three network namespaces of this test's own stand in for the pod
 * netns (guard on a veth named like the tap), the guest and the pod network,
 * and python3 writes raw frames (AF_PACKET) on the guest side.
 */
const POD_MAC = '0a:58:0a:63:00:05';
const OTHER_MAC = '0a:58:0a:63:00:77';
const POD4 = '10.99.0.5';
const PEER4 = '10.99.0.2';
const POD6 = 'fd99::5';
const PEER6 = 'fd99::2';
const POD_LL = 'fe80::858:aff:fe63:5';

const mac = (m: string): number[] => m.split(':').map((x) => parseInt(x, 16));
const ip4 = (a: string): number[] => a.split('.').map(Number);
const ip6 = (a: string): number[] => [...Buffer.from(ipv6Hex(a), 'hex')];
const u16 = (n: number): number[] => [n >> 8, n & 0xff];
const eth = (src: string, type: number, payload: number[], dst = 'ff:ff:ff:ff:ff:ff'): number[] => [...mac(dst), ...mac(src), ...u16(type), ...payload];
const arp = (op: number, sha: string, spa: string, tpa: string): number[] => [0, 1, 8, 0, 6, 4, ...u16(op), ...mac(sha), ...ip4(spa), 0, 0, 0, 0, 0, 0, ...ip4(tpa)];
/** The IPv4 header checksum (the netns stack drops a header without it); other checksums stay zero. */
function ipv4Header(src: string, dst: string, length: number, proto: number): number[] {
  const h = [0x45, 0, ...u16(length), 0, 0, 0, 0, 64, proto, 0, 0, ...ip4(src), ...ip4(dst)];
  let sum = 0;
  for (let i = 0; i < h.length; i += 2) sum += (h[i]! << 8) | h[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  h.splice(10, 2, ...u16(~sum & 0xffff));
  return h;
}
const udp4 = (src: string, dst: string): number[] => [...ipv4Header(src, dst, 28, 17), ...u16(5000), ...u16(5001), ...u16(8), 0, 0];
const ipv6 = (src: string, dst: string, next: number, payload: number[]): number[] => [0x60, 0, 0, 0, ...u16(payload.length), next, 255, ...ip6(src), ...ip6(dst), ...payload];
const udp6 = (src: string, dst: string): number[] => ipv6(src, dst, 17, [...u16(5000), ...u16(5001), ...u16(8), 0, 0]);
const icmp6 = (src: string, dst: string, type: number, body: number[]): number[] => ipv6(src, dst, 58, [type, 0, 0, 0, ...body]);
const lladdr = (type: 1 | 2, m: string): number[] => [type, 1, ...mac(m)];
const ns = (src: string, target: string, options: number[] = []): number[] => icmp6(src, 'ff02::1:ff00:2', 135, [0, 0, 0, 0, ...ip6(target), ...options]);
const na = (src: string, target: string, options: number[] = []): number[] => icmp6(src, 'ff02::1', 136, [0x20, 0, 0, 0, ...ip6(target), ...options]);

/** Each case: a frame the "guest" writes, and whether the pod network may see it. */
const CASES: Array<{ what: string; frame: number[]; passes: boolean }> = [
  { what: 'ARP request as the pod', frame: eth(POD_MAC, 0x0806, arp(1, POD_MAC, POD4, PEER4)), passes: true },
  { what: 'UDP from the pod IPv4', frame: eth(POD_MAC, 0x0800, udp4(POD4, PEER4)), passes: true },
  { what: 'UDP from the pod IPv6', frame: eth(POD_MAC, 0x86dd, udp6(POD6, PEER6)), passes: true },
  { what: 'neighbour advertisement of its own address, its own MAC', frame: eth(POD_MAC, 0x86dd, na(POD6, POD6, lladdr(2, POD_MAC))), passes: true },
  { what: 'neighbour advertisement from its link-local, no option', frame: eth(POD_MAC, 0x86dd, na(POD_LL, POD_LL)), passes: true },
  { what: 'neighbour solicitation with its own MAC', frame: eth(POD_MAC, 0x86dd, ns(POD6, PEER6, lladdr(1, POD_MAC))), passes: true },
  { what: 'duplicate address detection of its own address', frame: eth(POD_MAC, 0x86dd, ns('::', POD6, [14, 1, 1, 2, 3, 4, 5, 6])), passes: true },
  { what: 'another source MAC', frame: eth(OTHER_MAC, 0x0800, udp4(POD4, PEER4)), passes: false },
  { what: 'ARP with another sender MAC', frame: eth(POD_MAC, 0x0806, arp(2, OTHER_MAC, POD4, PEER4)), passes: false },
  { what: 'ARP with another sender IP', frame: eth(POD_MAC, 0x0806, arp(2, POD_MAC, '10.99.0.77', PEER4)), passes: false },
  { what: 'ARP with an odd opcode', frame: eth(POD_MAC, 0x0806, arp(3, POD_MAC, POD4, PEER4)), passes: false },
  { what: 'UDP from another IPv4', frame: eth(POD_MAC, 0x0800, udp4('10.99.0.77', PEER4)), passes: false },
  { what: 'UDP from another IPv6', frame: eth(POD_MAC, 0x86dd, udp6('fd99::77', PEER6)), passes: false },
  { what: 'UDP from another link-local', frame: eth(POD_MAC, 0x86dd, udp6('fe80::1', PEER6)), passes: false },
  { what: 'neighbour advertisement of another address', frame: eth(POD_MAC, 0x86dd, na(POD6, 'fd99::77', lladdr(2, POD_MAC))), passes: false },
  { what: 'neighbour advertisement with another MAC', frame: eth(POD_MAC, 0x86dd, na(POD6, POD6, lladdr(2, OTHER_MAC))), passes: false },
  { what: 'neighbour advertisement with a second option', frame: eth(POD_MAC, 0x86dd, na(POD6, POD6, [...lladdr(2, POD_MAC), ...lladdr(2, OTHER_MAC)])), passes: false },
  { what: 'neighbour solicitation with another MAC', frame: eth(POD_MAC, 0x86dd, ns(POD6, PEER6, lladdr(1, OTHER_MAC))), passes: false },
  { what: 'duplicate address detection of another address', frame: eth(POD_MAC, 0x86dd, ns('::', 'fd99::77')), passes: false },
  { what: 'router advertisement', frame: eth(POD_MAC, 0x86dd, icmp6(POD_LL, 'ff02::1', 134, Array<number>(12).fill(0))), passes: false },
  { what: 'router solicitation with another MAC', frame: eth(POD_MAC, 0x86dd, icmp6(POD_LL, 'ff02::2', 133, [0, 0, 0, 0, ...lladdr(1, OTHER_MAC)])), passes: false },
  { what: 'VLAN-tagged IPv4 from the pod', frame: eth(POD_MAC, 0x8100, [0, 5, 8, 0, ...udp4(POD4, PEER4)]), passes: false },
  { what: 'another protocol (LLDP)', frame: eth(POD_MAC, 0x88cc, Array<number>(46).fill(0), '01:80:c2:00:00:0e'), passes: false },
];

// One python3 for all frames: a hex frame per line in, "sent" per line out.
const SENDER = `import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for line in sys.stdin:
    s.send(bytes.fromhex(line.strip()))
    print('sent', flush=True)`;

/** frameSender writes raw frames on a device of a netns; send() resolves once the frame is out. */
function frameSender(netns: string, device: string): { send: (frame: number[]) => Promise<void>; child: ChildProcess } {
  const child = spawn('nsenter', [`--net=${netns}`, '--', 'python3', '-c', SENDER, device], { stdio: ['pipe', 'pipe', 'inherit'] });
  let acks = 0;
  const waiting: Array<() => void> = [];
  child.stdout!.on('data', (d: Buffer) => {
    acks += (d.toString().match(/sent/g) ?? []).length;
    while (waiting.length > 0 && acks > 0) {
      acks--;
      waiting.shift()!();
    }
  });
  const send = (frame: number[]): Promise<void> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the frame sender did not answer')), 10_000);
      waiting.push(() => (clearTimeout(timer), resolve()));
      child.stdin!.write(`${Buffer.from(frame).toString('hex')}\n`);
    });
  return { send, child };
}

function hasPython(): boolean {
  try {
    execFileSync('python3', ['-c', 'import socket; socket.AF_PACKET'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('the guard on crafted frames (no VM)', { skip: hasPython() ? false : 'python3 is not installed (it writes the raw frames)' }, () => {
  const prefix = `hullspoof-${process.pid}`;
  const [podNs, guestNs, netNs] = ['pod', 'guest', 'net'].map((n) => `${prefix}-${n}`) as [string, string, string];
  const path = (n: string): string => `/run/netns/${n}`;
  let sender: ReturnType<typeof frameSender> | undefined;
  const ip = (args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });

  before(async () => {
    for (const n of [podNs, guestNs, netNs]) ip(['netns', 'add', n]);
    // The kernels of these namespaces stay quiet (no IPv6 of their own) so that only our frames are counted.
    for (const n of [podNs, guestNs, netNs]) inNetns(path(n), ['sysctl', '-q', '-w', 'net.ipv6.conf.default.disable_ipv6=1', 'net.ipv6.conf.all.disable_ipv6=1']);
    ip(['-n', podNs, 'link', 'add', TAP_NAME, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', guestNs]);
    ip(['-n', podNs, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netNs]);
    for (const [n, dev] of [[podNs, TAP_NAME], [podNs, 'eth0'], [guestNs, 'eth0'], [netNs, 'eth0']] as const) ip(['-n', n, 'link', 'set', dev, 'up']);
    await installGuard(path(podNs), { mac: POD_MAC, addresses: [`${POD4}/24`, `${POD6}/64`], tap: TAP_NAME, veth: 'eth0', localAddress: LINK_ADDRESS });
    sender = frameSender(path(guestNs), 'eth0');
    inNetns(path(netNs), ['nft', '-f', '-'], `table netdev watch {
  chain seen {
    type filter hook ingress device "eth0" priority 0;
    ether saddr { ${POD_MAC}, ${OTHER_MAC} } counter
  }
}
`);
  });

  after(async () => {
    const child = sender?.child;
    const pid = child?.pid;
    if (child && pid && child.exitCode === null && child.signalCode === null) {
      // Killed, it stays a zombie until node reaps it: wait for that (bounded) before checking.
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
    }
    for (const n of [podNs, guestNs, netNs]) {
      try {
        ip(['netns', 'del', n]);
      } catch {
        // not made
      }
    }
    assert.deepEqual(ip(['netns', 'list']).split('\n').filter((l) => l.startsWith(prefix)), []);
    assert.equal(pid && processAlive(pid), false, 'the frame sender is still running');
  });

  const seen = (): number => Number(/counter packets (\d+)/.exec(inNetns(path(netNs), ['nft', 'list', 'chain', 'netdev', 'watch', 'seen']))?.[1] ?? NaN);

  it('forwards exactly the frames that carry the pod\'s own identity', async () => {
    const wrong: string[] = [];
    for (const c of CASES) {
      const before = seen();
      await sender!.send(c.frame);
      await new Promise((r) => setTimeout(r, 20));
      const passed = seen() > before;
      if (passed !== c.passes) wrong.push(`${c.what}: ${passed ? 'passed' : 'dropped'}`);
    }
    assert.deepEqual(wrong, []);
  });

  it('accepts IPv4 for the port-forward address into the netns stack, from the pod only', async () => {
    inNetns(path(podNs), ['nft', '-f', '-'], `table ip watch {
  chain pre {
    type filter hook prerouting priority -300;
    ip daddr ${LINK_ADDRESS} ip saddr ${POD4} counter
    ip daddr ${LINK_ADDRESS} ip saddr 10.99.0.77 counter
  }
}
`);
    const before = seen();
    for (const source of [POD4, '10.99.0.77']) {
      await sender!.send(eth(POD_MAC, 0x0800, udp4(source, LINK_ADDRESS)));
    }
    await new Promise((r) => setTimeout(r, 50));
    const counts = [...inNetns(path(podNs), ['nft', 'list', 'chain', 'ip', 'watch', 'pre']).matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
    assert.deepEqual(counts, [1, 0], 'the pod\'s frame reaches the netns stack, the spoofed one nothing');
    assert.equal(seen(), before, 'neither goes to the pod network');
  });

  it('is removed by removeGuard, twice without complaint', async () => {
    await removeGuard(path(podNs));
    await removeGuard(path(podNs));
    assert.doesNotMatch(inNetns(path(podNs), ['nft', 'list', 'tables']), /hull_guard/);
  });
});
