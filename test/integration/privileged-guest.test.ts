/**
 * A guest kernel for privileged workloads, through a real containerd and CRI. One privileged hull pod
 * holds a privileged container and an unprivileged one. The unprivileged one is refused a bridge, an
 * overlay mount and a module load (insmod of a real module file: it lacks CAP_SYS_MODULE), and loads
 * nothing by trying. The privileged one makes a bridge and a veth pair (the kernel loads bridge and
 * veth itself, through the guest's /sbin/modprobe), mounts an overlayfs, sets up NAT with nftables
 * (the host's nft, run from a read-only hostPath: busybox has no iptables or nft; the kernel loads
 * nf_tables, nft_chain_nat, nf_nat and nft_masq) and lists the nat table, then modprobes every module
 * of the on-demand set. The runtime is configured as Kata recommends for privileged pods
 * (privileged_without_host_devices).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, copyFileSync, mkdirSync, realpathSync } from 'node:fs';
import { basename, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { currentGuestImage } from '../../src/guest/index.js';
import { startContainerd, type PrivateContainerd } from '../harness/containerd.js';
import { prepareHullRuntime, stopAndAssertClean } from '../harness/hull-runtime.js';
import { BUSYBOX_REF, ensureTestImages } from '../harness/oci-image.js';
import { CriClient, containerConfig, podConfig, type PodSandboxConfig } from '../harness/cri.js';

const hullRuntime = prepareHullRuntime({ name: 'priv' });
const { work } = hullRuntime;
// HULL_TEST_GUEST_IMAGES_DIR: a guest images directory of its own (where other work rebuilds the shared one).
const imagesDir = process.env['HULL_TEST_GUEST_IMAGES_DIR'];
if (imagesDir) appendFileSync(hullRuntime.configPath, `guest_images_dir = "${imagesDir}"\n`);
const shareDir = join(work, 'share');
const nftDir = join(work, 'nft');
// CAP_SYS_MODULE is capability 16.
const CAP_SYS_MODULE = 1n << 16n;

let ctrd: PrivateContainerd;
let cri: CriClient;
let pod: PodSandboxConfig;
let podId = '';
let root = '';
let plain = '';

/** copyNft puts the host's nft and the libraries ldd names for it into `dir`, to run with its loader. */
function copyNft(dir: string): void {
  mkdirSync(dir);
  const nft = execFileSync('sh', ['-c', 'command -v nft'], { encoding: 'utf8' }).trim();
  copyFileSync(nft, join(dir, 'nft'));
  const ldd = execFileSync('ldd', [nft], { encoding: 'utf8' });
  for (const m of ldd.matchAll(/(\/\S+)\s+\(0x/g)) copyFileSync(realpathSync(m[1]!), join(dir, basename(m[1]!)));
}

async function sh(containerId: string, script: string): Promise<{ out: string; err: string; code: number }> {
  const r = await cri.execSync(containerId, ['sh', '-c', script], 180);
  return { out: r.stdout.toString(), err: r.stderr.toString(), code: r.exitCode };
}

before(async () => {
  assert.ok(await currentGuestImage(imagesDir), 'no guest image: run `hull image build` first');
  mkdirSync(shareDir);
  copyNft(nftDir);
  ctrd = await startContainerd({ runtimes: { hull: { ...hullRuntime.runtimes['hull']!, privilegedWithoutHostDevices: true } }, extraPath: hullRuntime.shimDir });
  await ensureTestImages(ctrd);
  cri = await CriClient.connect(ctrd.address, { deadlineMs: 240_000 });
  // CRI allows privileged containers only in a privileged pod sandbox.
  pod = podConfig({ name: 'node-like', namespace: 'hull-priv' });
  pod.linux!.securityContext!.privileged = true;
  podId = await cri.runPodSandbox(pod, 'hull');
  const mounts = [
    { containerPath: '/share', hostPath: shareDir },
    { containerPath: '/nft', hostPath: nftDir, readonly: true },
  ];
  root = await cri.createContainer(podId, containerConfig({ name: 'root', image: BUSYBOX_REF, command: ['sleep', '100000'], privileged: true, mounts }), pod);
  plain = await cri.createContainer(podId, containerConfig({ name: 'plain', image: BUSYBOX_REF, command: ['sleep', '100000'], mounts }), pod);
  await cri.startContainer(root);
  await cri.startContainer(plain);
});

after(async () => {
  if (podId) {
    await cri.stopPodSandbox(podId).catch(() => {});
    await cri.removePodSandbox(podId).catch(() => {});
  }
  cri?.close();
  await stopAndAssertClean(ctrd, hullRuntime);
});

describe('a privileged workload in a hull pod', () => {
  it('an unprivileged container cannot make a bridge, mount an overlay or load a module, and loads nothing by trying', async () => {
    // The privileged container hands over a real module file (veth, not loaded yet).
    const copy = await sh(root, 'cp /lib/modules/$(uname -r)/kernel/drivers/net/veth.ko /share/veth.ko && cat /proc/modules');
    assert.equal(copy.code, 0, copy.err);
    assert.doesNotMatch(copy.out, /^(bridge|veth) /m, 'bridge or veth is loaded before the test');

    const status = await sh(plain, "grep '^CapBnd:' /proc/self/status");
    const bounding = BigInt(`0x${status.out.split(/\s+/)[1]}`);
    assert.equal(bounding & CAP_SYS_MODULE, 0n, `unprivileged container has CAP_SYS_MODULE: ${status.out}`);

    const bridge = await sh(plain, 'ip link add br0 type bridge');
    assert.notEqual(bridge.code, 0, 'an unprivileged container made a bridge');
    const insmod = await sh(plain, 'insmod /share/veth.ko');
    assert.notEqual(insmod.code, 0, 'an unprivileged container loaded a module');
    assert.match(insmod.err, /not permitted/i);
    const modprobe = await sh(plain, 'modprobe veth; cat /proc/modules');
    assert.doesNotMatch(modprobe.out, /^veth /m, 'modprobe in an unprivileged container loaded veth');
    const overlay = await sh(plain, 'mkdir -p /tmp/o/l /tmp/o/u /tmp/o/w /tmp/o/m && mount -t overlay overlay -o lowerdir=/tmp/o/l,upperdir=/tmp/o/u,workdir=/tmp/o/w /tmp/o/m');
    assert.notEqual(overlay.code, 0, 'an unprivileged container mounted an overlay');

    const after = await sh(root, 'cat /proc/modules');
    assert.doesNotMatch(after.out, /^(bridge|veth) /m, "the unprivileged container's attempts loaded a module");
  });

  it('a privileged container makes a bridge and a veth pair: the kernel loads the modules itself', async () => {
    // busybox ip names the veth's peer itself (it takes no "peer name").
    const r = await sh(root, 'ip link add hbr0 type bridge && ip link add hv0 type veth && ip link set hv0 master hbr0 && ip link set hbr0 up && ip -o link show');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /: hbr0: <[^>]*UP/);
    const peer = /: hv0@(\w+): .* master hbr0 /.exec(r.out)?.[1];
    assert.ok(peer, `no veth hv0 on the bridge: ${r.out}`);
    assert.match(r.out, new RegExp(`: ${peer}@hv0: `));
    const modules = await sh(root, 'cat /proc/modules');
    assert.match(modules.out, /^bridge /m);
    assert.match(modules.out, /^veth /m);
  });

  it('a privileged container mounts an overlayfs', async () => {
    const r = await sh(
      root,
      'modprobe overlay && mkdir -p /tmp/ov && mount -t tmpfs tmpfs /tmp/ov && mkdir /tmp/ov/l /tmp/ov/u /tmp/ov/w /tmp/ov/m && echo lower > /tmp/ov/l/f && ' +
        'mount -t overlay overlay -o lowerdir=/tmp/ov/l,upperdir=/tmp/ov/u,workdir=/tmp/ov/w /tmp/ov/m && echo upper > /tmp/ov/m/g && ' +
        'cat /tmp/ov/m/f /tmp/ov/u/g && grep " /tmp/ov/m overlay " /proc/mounts && umount /tmp/ov/m && umount /tmp/ov',
    );
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^lower\nupper\noverlay \/tmp\/ov\/m overlay /);
  });

  it('a privileged container sets up NAT with nftables and lists the nat table', async () => {
    const nft = '/nft/ld-linux-x86-64.so.2 --library-path /nft /nft/nft';
    const r = await sh(
      root,
      `${nft} add table ip hullnat && ${nft} add chain ip hullnat post '{ type nat hook postrouting priority 100; }' && ` +
        `${nft} add rule ip hullnat post oifname hbr0 masquerade && ${nft} add chain ip hullnat pre '{ type nat hook prerouting priority -100; }' && ` +
        `${nft} add rule ip hullnat pre tcp dport 8080 dnat to 10.0.0.2:80 && ${nft} list table ip hullnat && cat /proc/modules`,
    );
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /type nat hook postrouting priority srcnat; policy accept;/);
    assert.match(r.out, /oifname "hbr0" masquerade/);
    assert.match(r.out, /tcp dport 8080 dnat to 10\.0\.0\.2:80/);
    for (const m of ['nf_tables', 'nft_chain_nat', 'nf_nat', 'nf_conntrack', 'nft_masq']) assert.match(r.out, new RegExp(`^${m} `, 'm'), `${m} not loaded`);
  });

  it('a privileged container can modprobe every module of the on-demand set', async () => {
    const names = ['bridge', 'br_netfilter', 'veth', 'vxlan', 'tun', 'macvlan', 'ipvlan', 'dummy', 'loop', 'fuse', 'squashfs', 'overlay',
      'nf_tables', 'nf_conntrack', 'nf_nat', 'ip_tables', 'iptable_nat', 'iptable_filter', 'ip6table_nat', 'xt_MASQUERADE', 'xt_conntrack', 'nft_compat', 'ip_vs'];
    const r = await sh(root, `for m in ${names.join(' ')}; do modprobe $m; done; cat /proc/modules; ip link add hvx0 type vxlan id 42 dstport 4789 dev eth0 && ip link add hmv0 link eth0 type macvlan mode bridge && ip -o link show`);
    assert.equal(r.code, 0, r.err);
    const loaded = new Set(r.out.split('\n').map((l) => l.split(' ')[0]));
    assert.deepEqual(names.filter((n) => !loaded.has(n)), [], `not loaded: ${r.err}`);
    assert.match(r.out, /: hvx0: /);
    assert.match(r.out, /: hmv0@eth0: /);
  });
});
