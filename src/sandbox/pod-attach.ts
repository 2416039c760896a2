/**
 * Handing the pod's network to its VM, host side and guest side: the tap (with the anti-spoofing
 * guard) and the port-forward plumbing in the pod netns, each recorded in the sandbox's ledger
 * before it is made; and the SetupNetwork request that gives the guest the pod's interface, routes
 * and the port-forward neighbour.
 */
import { LINK_ADDRESS, connectTap, enablePortForward, takeOverTap, readPodNetwork, type PodNetwork, type PortForwardPlumbing } from '../net/index.js';
import type { VmJail, VmNetSpec } from '../vmm/index.js';
import type { Ledger } from './ledger.js';

/** AttachedNetwork is the pod network a VM took over. */
export interface AttachedNetwork {
  pod: PodNetwork;
  portForward?: PortForwardPlumbing;
  /** vm is the VM's NIC backend: the tap, in the pod netns. */
  vm: VmNetSpec;
}

/**
 * attachPodNetwork takes over the interface CNI made in `netns` for the VM: with a new tap owned by
 * the VM's uid, or with `pooledTap`, the tap of a running pooled VM, moved here from the pool's netns.
 */
export async function attachPodNetwork(ledger: Ledger, netns: string, jail: VmJail | undefined, pooledTap?: { netns: string; name: string }): Promise<AttachedNetwork> {
  const pod = await readPodNetwork(netns);
  ledger.record('', { kind: 'network', netns, veth: pod.iface.name });
  // The guard on the tap lets through only what the guest may send as this pod (src/net/anti-spoof.ts).
  const identity = { mac: pod.iface.mac, addresses: pod.iface.addresses.map((a) => a.cidr) };
  const tapName = pooledTap
    ? await takeOverTap(pooledTap.netns, pooledTap.name, netns, pod.iface.name, pod.iface.mtu, identity)
    : await connectTap(netns, pod.iface.name, pod.iface.mtu, identity, jail);
  const v4 = pod.iface.addresses.find((a) => a.family === 4);
  if (v4) ledger.record('', { kind: 'port-forward', netns, veth: pod.iface.name, guestIp: v4.cidr.split('/')[0]!, vethAddress: v4.cidr });
  const portForward = await enablePortForward(pod);
  return { pod, portForward, vm: { tapName, mac: pod.iface.mac, netns } };
}

/** guestNetwork is the SetupNetwork request giving the guest the pod's interface and routes. */
export function guestNetwork(network: AttachedNetwork) {
  const { mac, mtu, addresses } = network.pod.iface;
  const routes = network.pod.routes.map((r) => ({ destination: r.destination, gateway: r.gateway ?? '', mac, family: r.family }));
  const neighbors = [];
  if (network.portForward) {
    // Port-forwarded connections come from the netns's link-local address, behind the tap.
    routes.push({ destination: `${LINK_ADDRESS}/32`, gateway: '', mac, family: 4 });
    neighbors.push({ ip: LINK_ADDRESS, lladdr: network.portForward.tapMac, mac });
  }
  return { interfaces: [{ mac, mtu, addresses: addresses.map((a) => a.cidr) }], routes, neighbors };
}
