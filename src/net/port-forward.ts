/**
 * Port-forward into a VM pod. CRI serves `kubectl port-forward` by entering
 * the pod netns and dialling localhost:PORT there, but in a hull pod nothing
 * listens in that netns: the pod lives in the VM. So the netns hands its
 * loopback traffic to the guest:
 *   - the veth gives up the pod address (the VM owns it; CNI's result keeps it),
 *     so the netns can route to the guest instead of to itself;
 *   - the tap gets a link-local address (LINK_ADDRESS), a /32 route and a
 *     permanent neighbour entry lead to the guest's IP and MAC;
 *   - nat OUTPUT DNATs TCP to 127.0.0.1 to the guest IP, POSTROUTING SNATs it
 *     to the link-local address (route_localnet lets 127/8 leave loopback);
 *   - the anti-spoofing guard on the tap (anti-spoof.ts) accepts the
 *     guest's frames for the link-local address into the netns stack, so
 *     its answers come back here (after the same source checks as the rest).
 * The guest learns the link-local address's MAC (the tap's) from SetupNetwork.
 * Kata does not support port-forward at all.
 */
import { HullError } from '../errors/index.js';
import { inNetns, inNetnsBatch } from './exec.js';
import type { PodNetwork } from './pod-network.js';
import { LINK_ADDRESS, TAP_NAME } from './names.js';

export { LINK_ADDRESS };

export interface PortForwardPlumbing {
  guestIp: string;
  /** tapMac is the MAC of the tap, the guest's neighbour for LINK_ADDRESS. */
  tapMac: string;
  vethAddress: string;
}

function natRules(guestIp: string): string[][] {
  return [
    ['-t', 'nat', 'OUTPUT', '-d', '127.0.0.1/32', '-p', 'tcp', '-j', 'DNAT', '--to-destination', guestIp],
    ['-t', 'nat', 'POSTROUTING', '-o', TAP_NAME, '-j', 'SNAT', '--to-source', LINK_ADDRESS],
  ];
}

function iptables(netns: string, op: '-A' | '-D', rule: string[]): Promise<string> {
  const [tableFlag, table, chain, ...match] = rule;
  return inNetns(netns, 'iptables', [tableFlag!, table!, op, chain!, ...match]);
}

/** enablePortForward plumbs the netns's loopback to the guest; undone by disablePortForward. */
export async function enablePortForward(pod: PodNetwork): Promise<PortForwardPlumbing> {
  const v4 = pod.iface.addresses.find((a) => a.family === 4);
  if (!v4) throw new HullError('failed_precondition', `Pod network in ${pod.netns} has no IPv4 address to forward ports to`);
  const guestIp = v4.cidr.split('/')[0]!;
  const { netns } = pod;
  // (/sys shows the host's netns under nsenter: ask ip instead.)
  const [tap] = JSON.parse(await inNetns(netns, 'ip', ['-json', 'link', 'show', 'dev', TAP_NAME])) as Array<{ address?: string }>;
  const tapMac = tap?.address ?? '';
  const plumbing = { guestIp, tapMac, vethAddress: v4.cidr };
  try {
    await inNetnsBatch(netns, 'ip', [
      ['addr', 'del', v4.cidr, 'dev', pod.iface.name],
      ['addr', 'add', `${LINK_ADDRESS}/32`, 'dev', TAP_NAME],
      ['route', 'add', `${guestIp}/32`, 'dev', TAP_NAME, 'src', LINK_ADDRESS],
      ['neigh', 'replace', guestIp, 'lladdr', pod.iface.mac, 'dev', TAP_NAME, 'nud', 'permanent'],
    ]);
    await inNetns(netns, 'sysctl', ['-q', '-w', 'net.ipv4.conf.all.route_localnet=1']);
    for (const rule of natRules(guestIp)) await iptables(netns, '-A', rule);
    return plumbing;
  } catch (e) {
    await disablePortForward(pod, plumbing);
    throw e;
  }
}

/** disablePortForward removes what enablePortForward added and gives the veth its address back. */
export async function disablePortForward(pod: PodNetwork, plumbing: PortForwardPlumbing): Promise<void> {
  const { netns } = pod;
  for (const rule of natRules(plumbing.guestIp)) await iptables(netns, '-D', rule).catch(() => {});
  await inNetns(netns, 'sysctl', ['-q', '-w', 'net.ipv4.conf.all.route_localnet=0']).catch(() => {});
  await inNetns(netns, 'ip', ['addr', 'add', plumbing.vethAddress, 'dev', pod.iface.name]).catch(() => {});
}

