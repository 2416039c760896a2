/**
 * Guest networking: the pod's addresses and routes, as the host read them
 * from the CNI-made netns, put on the guest NIC with the same MAC. Every
 * value is checked before it reaches `ip`: the host is trusted, but a
 * malformed value must fail here, clearly, not half-configure the guest.
 */
import { runInOrder } from './shell.js';
import { readdir, readFile } from 'node:fs/promises';
import { HullError } from '../errors/index.js';

export interface GuestInterface {
  mac: string;
  mtu: number;
  addresses: string[];
}

export interface GuestRoute {
  destination: string;
  gateway: string;
  mac: string;
  family: number;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IPV4 = /^(\d{1,3}\.){3}\d{1,3}$/;
const IPV6 = /^[0-9a-f:]+$/i;

function checkAddress(value: string, what: string): string {
  if (!IPV4.test(value) && !(value.includes(':') && IPV6.test(value))) throw new HullError('invalid_argument', `Invalid ${what} "${value}"`);
  return value;
}

function checkCidr(value: string, what: string): string {
  const [address, prefix, extra] = value.split('/');
  if (extra !== undefined || address === undefined || prefix === undefined || !/^\d{1,3}$/.test(prefix)) throw new HullError('invalid_argument', `Invalid ${what} "${value}"`);
  checkAddress(address, what);
  return value;
}

async function deviceByMac(): Promise<Map<string, string>> {
  const byMac = new Map<string, string>();
  for (const name of await readdir('/sys/class/net')) {
    const mac = (await readFile(`/sys/class/net/${name}/address`, 'utf8').catch(() => '')).trim().toLowerCase();
    if (mac) byMac.set(mac, name);
  }
  return byMac;
}

export interface GuestNeighbor {
  ip: string;
  lladdr: string;
  mac: string;
}

/**
 * setupNetwork gives the guest the pod's network. Idempotent (addresses and routes are replaced):
 * the host sends it again when an adopted VM's agent may have dropped it while reopening its port.
 */
export async function setupNetwork(interfaces: GuestInterface[], routes: GuestRoute[], neighbors: GuestNeighbor[] = []): Promise<void> {
  const devices = await deviceByMac();
  // Every value is checked while the commands are made; they run together at the end.
  const commands: string[][] = [];
  const ip = (args: string[]): void => void commands.push(['/bin/ip', ...args]);
  // A VM cloned from a template has the template's MAC on its one NIC: give it the pod's.
  for (const iface of interfaces) {
    const normal = iface.mac.toLowerCase();
    if (!MAC.test(normal)) throw new HullError('invalid_argument', `Invalid MAC "${iface.mac}"`);
    if (devices.has(normal)) continue;
    const nics = [...devices.entries()].filter(([mac, name]) => name !== 'lo' && mac !== '00:00:00:00:00:00');
    if (nics.length !== 1) throw new HullError('not_found', `No guest interface with MAC ${iface.mac}`);
    const [oldMac, name] = nics[0]!;
    ip(['link', 'set', 'dev', name, 'address', normal]);
    devices.delete(oldMac);
    devices.set(normal, name);
  }
  const deviceOf = (mac: string): string => {
    const normal = mac.toLowerCase();
    if (!MAC.test(normal)) throw new HullError('invalid_argument', `Invalid MAC "${mac}"`);
    const device = devices.get(normal);
    if (!device) throw new HullError('not_found', `No guest interface with MAC ${mac}`);
    return device;
  };
  for (const iface of interfaces) {
    const device = deviceOf(iface.mac);
    if (!Number.isInteger(iface.mtu) || iface.mtu < 68 || iface.mtu > 65535) throw new HullError('invalid_argument', `Invalid MTU ${iface.mtu}`);
    ip(['link', 'set', 'dev', device, 'mtu', String(iface.mtu), 'up']);
    for (const cidr of iface.addresses) {
      checkCidr(cidr, 'address');
      ip([cidr.includes(':') ? '-6' : '-4', 'addr', 'replace', cidr, 'dev', device]);
    }
  }
  // On-link routes first: a gateway must be reachable before a route can use it.
  const ordered = [...routes].sort((a, b) => Number(a.gateway !== '') - Number(b.gateway !== ''));
  for (const route of ordered) {
    const device = deviceOf(route.mac);
    const family = route.family === 6 ? '-6' : '-4';
    const destination = route.destination === 'default' ? 'default' : checkCidr(route.destination, 'route destination');
    const via = route.gateway ? ['via', checkAddress(route.gateway, 'gateway')] : [];
    ip([family, 'route', 'replace', destination, ...via, 'dev', device]);
  }
  for (const n of neighbors) {
    if (!MAC.test(n.lladdr.toLowerCase())) throw new HullError('invalid_argument', `Invalid MAC "${n.lladdr}"`);
    // busybox ip cannot add neighbours; its arp can (IPv4 only, permanent unless "temp").
    if (!IPV4.test(n.ip)) throw new HullError('invalid_argument', `Invalid IPv4 neighbour "${n.ip}"`);
    commands.push(['/bin/arp', '-i', deviceOf(n.mac), '-s', n.ip, n.lladdr.toLowerCase()]);
  }
  await runInOrder(commands);
}
