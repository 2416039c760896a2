/**
 * The tap that carries the pod's traffic into the VM (Kata's "tcfilter"
 * model): a tap device in the pod netns; a tc ingress filter redirects
 * every frame arriving on the veth to the tap, and the anti-spoofing guard
 * (anti-spoof.ts, nftables on the tap's ingress) forwards to the veth only
 * what the VM may send as this pod. The veth keeps its addresses (CNI's view
 * is unchanged); the netns stack no longer sees the pod's traffic.
 */
import { existsSync } from 'node:fs';
import { installGuard, removeGuard, type PodIdentity } from './anti-spoof.js';
import { inNetns } from './exec.js';
import { LINK_ADDRESS, TAP_NAME } from './names.js';

export { TAP_NAME };

/**
 * connectTap creates the tap, the guard on what the guest sends, and the
 * veth→tap redirect; on failure it removes what it made. identity is the
 * pod's MAC and addresses as CNI gave them (the guest takes the same).
 */
export async function connectTap(netns: string, veth: string, mtu: number, identity: PodIdentity, owner?: { uid: number; gid: number }): Promise<string> {
  try {
    // Owned by the VM's uid: a jailed QEMU opens it without CAP_NET_ADMIN.
    const user = owner ? ['user', String(owner.uid), 'group', String(owner.gid)] : [];
    await inNetns(netns, 'ip', ['tuntap', 'add', 'dev', TAP_NAME, 'mode', 'tap', ...user]);
    // The guard exists before the tap is up and before QEMU holds it: no frame passes unfiltered.
    await installGuard(netns, { ...identity, tap: TAP_NAME, veth, localAddress: LINK_ADDRESS });
    await inNetns(netns, 'ip', ['link', 'set', 'dev', TAP_NAME, 'mtu', String(mtu), 'up']);
    await inNetns(netns, 'tc', ['qdisc', 'add', 'dev', veth, 'ingress']);
    await inNetns(netns, 'tc', ['filter', 'add', 'dev', veth, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u8', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', TAP_NAME]);
    return TAP_NAME;
  } catch (e) {
    await disconnectTap(netns, veth);
    throw e;
  }
}

/**
 * disconnectTap removes the veth's ingress qdisc (with its redirect), the
 * guard table and the tap; idempotent, never throws (teardown goes on), and
 * a netns that is gone has nothing left in it. A guard left behind is inert
 * without its tap, and connectTap replaces it atomically.
 */
export async function disconnectTap(netns: string, veth: string): Promise<void> {
  if (!existsSync(netns)) return;
  await inNetns(netns, 'tc', ['qdisc', 'del', 'dev', veth, 'ingress']).catch(() => {});
  await removeGuard(netns).catch(() => {});
  await inNetns(netns, 'ip', ['link', 'del', 'dev', TAP_NAME]).catch(() => {});
}
