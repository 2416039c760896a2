/**
 * Reading what CNI configured in a pod's network namespace: the pod's
 * interface (the veth, its MAC, MTU and addresses) and its routes. The guest
 * takes exactly these, so the pod keeps the identity CNI and the cluster know.
 */
import { HullError } from '../errors/index.js';
import { inNetns } from './exec.js';

export interface PodAddress {
  /** cidr is "10.0.0.5/24" or "fd00::5/64". */
  cidr: string;
  family: 4 | 6;
}

export interface PodRoute {
  /** destination is "default" or a CIDR. */
  destination: string;
  gateway?: string;
  family: 4 | 6;
  /** scopeLink routes have no gateway (on-link). */
  scopeLink: boolean;
}

export interface PodInterface {
  name: string;
  mac: string;
  mtu: number;
  addresses: PodAddress[];
}

export interface PodNetwork {
  netns: string;
  iface: PodInterface;
  routes: PodRoute[];
}

interface IpAddrJson {
  ifname: string;
  address?: string;
  mtu?: number;
  link_type?: string;
  addr_info?: Array<{ family: string; local: string; prefixlen: number; scope?: string }>;
}

interface IpRouteJson {
  dst: string;
  gateway?: string;
  dev?: string;
  scope?: string;
  protocol?: string;
}

/** readPodNetwork finds the pod's interface: the one non-loopback ethernet link CNI made. */
export async function readPodNetwork(netns: string): Promise<PodNetwork> {
  const links = JSON.parse(await inNetns(netns, 'ip', ['-json', 'address', 'show'])) as IpAddrJson[];
  const candidates = links.filter((l) => l.link_type === 'ether' && !l.ifname.startsWith('tap') && (l.addr_info ?? []).some((a) => a.scope !== 'link'));
  if (candidates.length !== 1) {
    throw new HullError('failed_precondition', `Pod network namespace ${netns} has ${candidates.length} configured ethernet interfaces; hull supports exactly one`);
  }
  const link = candidates[0]!;
  const addresses: PodAddress[] = (link.addr_info ?? [])
    .filter((a) => a.scope !== 'link')
    .map((a) => ({ cidr: `${a.local}/${a.prefixlen}`, family: a.family === 'inet6' ? 6 : 4 }));
  const routes: PodRoute[] = [];
  for (const family of [4, 6] as const) {
    const table = JSON.parse(await inNetns(netns, 'ip', [`-${family}`, '-json', 'route', 'show', 'dev', link.ifname])) as IpRouteJson[];
    for (const r of table) {
      // The kernel's own prefix routes come back by themselves when the guest adds the address.
      if (r.protocol === 'kernel') continue;
      if (family === 6 && r.dst.startsWith('fe80:')) continue;
      routes.push({ destination: r.dst, gateway: r.gateway, family, scopeLink: r.scope === 'link' });
    }
  }
  return { netns, iface: { name: link.ifname, mac: link.address ?? '', mtu: link.mtu ?? 1500, addresses }, routes };
}
