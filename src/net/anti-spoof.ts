/**
 * Anti-spoofing on the tap: the guest is hostile root, and everything it
 * sends enters the pod network with the pod's identity unless the host
 * checks it. An nftables netdev table in the pod netns, on the tap's ingress
 * hook, lets through only frames from the pod's MAC carrying the pod's own
 * addresses, and forwards them (`fwd to`) to the veth; the rest is dropped.
 *
 * Why nftables and not tc: this host kernel has no tc drop action
 * (act_gact) and no flower. tc ingress runs before the netfilter ingress
 * hook, so the tap must carry no tc redirect of its own: nft does the
 * forwarding itself. The veth→tap direction stays a tc redirect (tap.ts).
 *
 * What passes (everything else is dropped):
 *   - Ethernet source = the pod's MAC, ether type ARP, IPv4 or IPv6 only
 *     (a VLAN tag or any other protocol is dropped);
 *   - ARP request/reply for Ethernet/IPv4 whose sender MAC and IP are the pod's;
 *   - IPv4 from one of the pod's IPv4 addresses; to the port-forward link
 *     address it is accepted into the netns stack, otherwise forwarded;
 *   - IPv6 from one of the pod's IPv6 addresses or its EUI-64 link-local,
 *     or from :: for duplicate address detection of its own addresses and
 *     MLD reports. Neighbour discovery is held to the pod's identity too:
 *     an advertisement must be for one of its own addresses, and the one
 *     link-layer address option a solicitation or advertisement may carry
 *     must be the pod's MAC (the length check leaves room for at most one
 *     option); router advertisements and redirects are dropped.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { HullError } from '../errors/index.js';
import { inNetns } from './exec.js';
import { GUARD_TABLE } from './names.js';

export interface PodIdentity {
  /** mac is the pod's MAC ("02:42:0a:59:00:05"), the guest NIC's. */
  mac: string;
  /** addresses are the pod's addresses, bare or as CIDRs ("10.89.0.5/24", "fd89::5/64"). */
  addresses: string[];
}

export interface GuardOptions extends PodIdentity {
  tap: string;
  veth: string;
  /** localAddress is the IPv4 address of the netns stack the guest may reach (port-forward). */
  localAddress: string;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const DEVICE = /^[A-Za-z0-9_.-]{1,15}$/;

/** ipv6Hex gives an IPv6 address as 32 hex digits (nft compares raw ICMPv6 fields to these). */
export function ipv6Hex(address: string): string {
  if (!isIPv6(address) || address.includes('%')) throw new HullError('invalid_argument', `Invalid IPv6 address "${address}"`);
  let text = address.toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const bytes = v4[1]!.split('.').map(Number);
    text = text.slice(0, -v4[1]!.length) + `${((bytes[0]! << 8) | bytes[1]!).toString(16)}:${((bytes[2]! << 8) | bytes[3]!).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const groups = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const middle = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...middle, ...right].map((g) => g.padStart(4, '0')).join('');
}

/** hexToIpv6 writes 32 hex digits as a full, uncompressed IPv6 address (valid nft syntax). */
function hexToIpv6(hex: string): string {
  return hex.match(/.{4}/g)!.join(':');
}

/** linkLocalOf is the EUI-64 link-local address a Linux NIC with this MAC gives itself. */
export function linkLocalOf(mac: string): string {
  const b = mac.split(':').map((x) => parseInt(x, 16));
  const eui = [b[0]! ^ 0x02, b[1]!, b[2]!, 0xff, 0xfe, b[3]!, b[4]!, b[5]!];
  const hex = 'fe800000000000000000000000000000'.slice(0, 16) + eui.map((x) => x.toString(16).padStart(2, '0')).join('');
  return hexToIpv6(hex);
}

function checkIdentity(options: GuardOptions): { mac: string; v4: string[]; v6: string[] } {
  const mac = options.mac.toLowerCase();
  if (!MAC.test(mac)) throw new HullError('invalid_argument', `Invalid pod MAC "${options.mac}"`);
  for (const device of [options.tap, options.veth]) {
    if (!DEVICE.test(device)) throw new HullError('invalid_argument', `Invalid network device name "${device}"`);
  }
  if (!isIPv4(options.localAddress)) throw new HullError('invalid_argument', `Invalid local address "${options.localAddress}"`);
  const v4: string[] = [];
  const v6: string[] = [];
  for (const cidr of options.addresses) {
    const address = cidr.split('/')[0]!;
    if (isIPv4(address)) v4.push(address);
    else v6.push(hexToIpv6(ipv6Hex(address)));
    // (ipv6Hex threw for anything that is neither.)
  }
  return { mac, v4: [...new Set(v4)], v6: [...new Set([...v6, linkLocalOf(mac)])] };
}

const set = (items: string[]): string => `{ ${items.join(', ')} }`;

/**
 * guardRuleset is the nft script that (re)creates the guard table in one
 * transaction: the empty "table" line makes the "delete" valid when the
 * table does not exist yet, so applying it twice is harmless.
 */
export function guardRuleset(options: GuardOptions): string {
  const { mac, v4, v6 } = checkIdentity(options);
  const fwd = `fwd to "${options.veth}"`;
  const macHex = mac.replace(/:/g, '');
  const own6Raw = set(v6.map((a) => `0x${ipv6Hex(a)}`));
  const arp = v4.length === 0
    ? []
    : [`arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp operation { request, reply } arp saddr ether ${mac} arp saddr ip ${set(v4)} ${fwd}`];
  const ip = v4.length === 0
    ? ['drop']
    : [`ip saddr != ${set(v4)} drop`, `ip daddr ${options.localAddress} accept`, fwd];
  const ip6 = [
    // Duplicate address detection (of its own addresses only) and early MLD reports come from ::.
    `ip6 saddr :: icmpv6 type nd-neighbor-solicit @th,64,128 ${own6Raw} ${fwd}`,
    `ip6 saddr :: icmpv6 type { mld-listener-report, mld2-listener-report } ${fwd}`,
    `ip6 saddr != ${set(v6)} drop`,
    'icmpv6 type { nd-router-advert, nd-redirect } drop',
    `icmpv6 type nd-neighbor-advert @th,64,128 != ${own6Raw} drop`,
    // Room for at most one 8-byte option, which must then be the pod's link-layer address.
    'icmpv6 type nd-router-solicit ip6 length != { 8, 16 } drop',
    'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 length != { 24, 32 } drop',
    `icmpv6 type nd-router-solicit ip6 length 16 @th,64,64 != 0x0101${macHex} drop`,
    `icmpv6 type nd-neighbor-solicit ip6 length 32 @th,192,64 != 0x0101${macHex} drop`,
    `icmpv6 type nd-neighbor-advert ip6 length 32 @th,192,64 != 0x0201${macHex} drop`,
    fwd,
  ];
  const chain = (name: string, rules: string[]): string => [`  chain ${name} {`, ...rules.map((r) => `    ${r}`), '  }'].join('\n');
  return [
    `table netdev ${GUARD_TABLE}`,
    `delete table netdev ${GUARD_TABLE}`,
    `table netdev ${GUARD_TABLE} {`,
    chain('from_guest', [
      `type filter hook ingress device "${options.tap}" priority 0; policy drop;`,
      `ether saddr != ${mac} drop`,
      'ether type arp jump guest_arp',
      'ether type ip jump guest_ip',
      'ether type ip6 jump guest_ip6',
    ]),
    chain('guest_arp', arp),
    chain('guest_ip', ip),
    chain('guest_ip6', ip6),
    '}',
    '',
  ].join('\n');
}

/** installGuard applies the guard table in the pod netns, replacing any earlier one atomically. */
export async function installGuard(netns: string, options: GuardOptions): Promise<void> {
  const script = guardRuleset(options);
  try {
    await inNetns(netns, 'nft', ['-f', '-'], script);
  } catch (e) {
    if (/failed to execute nft/.test((e as Error).message)) {
      throw new HullError('failed_precondition', 'nft is not installed (Debian package nftables): hull needs it to keep a VM from spoofing other pods (see hull check)', { cause: e });
    }
    throw e;
  }
}

/** removeGuard deletes the guard table; tolerant of "already gone". */
export async function removeGuard(netns: string): Promise<void> {
  try {
    await inNetns(netns, 'nft', ['delete', 'table', 'netdev', GUARD_TABLE]);
  } catch (e) {
    // nft's answer for a missing table (not nsenter's for a missing nft or netns).
    if (!/Could not process rule: No such file or directory/.test((e as Error).message)) throw e;
  }
}
