import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { guardRuleset, ipv6Hex, linkLocalOf, type GuardOptions } from './anti-spoof.js';

const pod: GuardOptions = {
  mac: '0A:58:0A:59:00:05',
  addresses: ['10.89.0.5/24', 'fd89::5/64'],
  tap: 'tap0_hull',
  veth: 'eth0',
  localAddress: '169.254.100.1',
};

describe('guardRuleset', () => {
  it('replaces the table in one script: declare, delete, define', () => {
    const lines = guardRuleset(pod).split('\n');
    assert.deepEqual(lines.slice(0, 3), ['table netdev hull_guard', 'delete table netdev hull_guard', 'table netdev hull_guard {']);
  });

  it('hooks the tap with policy drop and drops any other source MAC first', () => {
    const text = guardRuleset(pod);
    assert.match(text, /chain from_guest \{\n    type filter hook ingress device "tap0_hull" priority 0; policy drop;\n    ether saddr != 0a:58:0a:59:00:05 drop\n/);
    // Only ARP, IPv4 and IPv6 get a chain; everything else (VLAN tags, other protocols) meets the policy.
    assert.deepEqual(text.match(/ether type \S+/g), ['ether type arp', 'ether type ip', 'ether type ip6']);
  });

  it('forwards ARP only with the pod as sender, MAC and IP', () => {
    assert.match(guardRuleset(pod), /arp saddr ether 0a:58:0a:59:00:05 arp saddr ip \{ 10\.89\.0\.5 \} fwd to "eth0"/);
  });

  it('drops IPv4 from other sources, accepts the port-forward address, forwards the rest', () => {
    const text = guardRuleset(pod);
    const ip = text.slice(text.indexOf('chain guest_ip {'), text.indexOf('chain guest_ip6 {'));
    assert.match(ip, /ip saddr != \{ 10\.89\.0\.5 \} drop\n\s+ip daddr 169\.254\.100\.1 accept\n\s+fwd to "eth0"/);
  });

  it('drops IPv6 from anything but the pod addresses and its link-local, and holds neighbour discovery to them', () => {
    const text = guardRuleset(pod);
    const ll = linkLocalOf(pod.mac.toLowerCase());
    assert.equal(ll, 'fe80:0000:0000:0000:0858:0aff:fe59:0005');
    assert.match(text, new RegExp(`ip6 saddr != \\{ fd89:0000:0000:0000:0000:0000:0000:0005, ${ll} \\} drop`));
    assert.match(text, /icmpv6 type nd-neighbor-advert @th,64,128 != \{ 0xfd890000000000000000000000000005, 0xfe8000000000000008580afffe590005 \} drop/);
    assert.match(text, /icmpv6 type nd-neighbor-advert ip6 length 32 @th,192,64 != 0x02010a580a590005 drop/);
    assert.match(text, /icmpv6 type \{ nd-router-advert, nd-redirect \} drop/);
  });

  it('drops all IPv4 and ARP of a pod without an IPv4 address', () => {
    const text = guardRuleset({ ...pod, addresses: ['fd89::5/64'] });
    assert.match(text, /chain guest_arp \{\n  \}/);
    assert.match(text, /chain guest_ip \{\n    drop\n  \}/);
  });

  it('refuses values that are not what they claim (they are written into nft syntax)', () => {
    assert.throws(() => guardRuleset({ ...pod, mac: '0a:58:0a:59:00:05" accept' }), /Invalid pod MAC/);
    assert.throws(() => guardRuleset({ ...pod, addresses: ['10.89.0.5; flush ruleset'] }), /Invalid IPv6 address/);
    assert.throws(() => guardRuleset({ ...pod, veth: 'eth0" accept' }), /Invalid network device name/);
  });
});

describe('ipv6Hex', () => {
  it('expands compressed and IPv4-embedded forms', () => {
    assert.equal(ipv6Hex('::'), '0'.repeat(32));
    assert.equal(ipv6Hex('fe80::1'), 'fe800000000000000000000000000001');
    assert.equal(ipv6Hex('1:2:3:4:5:6:7:8'), '00010002000300040005000600070008');
    assert.equal(ipv6Hex('::ffff:10.1.2.3'), '00000000000000000000ffff0a010203');
  });
});
