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
import { inNetns, inNetnsBatch } from './exec.js';
import { LINK_ADDRESS, TAP_NAME } from './names.js';

export { TAP_NAME };

/**
 * connectTap creates the tap, the guard on what the guest sends, and the
 * veth→tap redirect; on failure it removes what it made. identity is the
 * pod's MAC and addresses as CNI gave them (the guest takes the same).
 */
export async function connectTap(netns: string, veth: string, mtu: number, identity: PodIdentity, owner?: { uid: number; gid: number }): Promise<string> {
  try {
    await createTap(netns, TAP_NAME, owner);
    await plumbTap(netns, veth, mtu, identity);
    return TAP_NAME;
  } catch (e) {
    await disconnectTap(netns, veth);
    throw e;
  }
}

/** createTap makes a tap named `name` in `netns`, down, owned by `owner` (a jailed QEMU opens it without CAP_NET_ADMIN). */
export async function createTap(netns: string, name: string, owner?: { uid: number; gid: number }): Promise<void> {
  const user = owner ? ['user', String(owner.uid), 'group', String(owner.gid)] : [];
  await inNetns(netns, 'ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap', ...user]);
}

/** removeTap deletes the tap `name` in `netns` when both are there; never throws. */
export async function removeTap(netns: string, name: string): Promise<void> {
  if (!existsSync(netns)) return;
  await inNetns(netns, 'ip', ['link', 'del', 'dev', name]).catch(() => {});
}

/**
 * takeOverTap moves tap `name` (down, held by a running VM: the move keeps QEMU's fd working) from
 * `fromNetns` into the pod's `netns` as the pod's tap, and connects it as connectTap does; on failure
 * it removes what it made there (the tap with it: the VM then has no network, and is ended).
 */
export async function takeOverTap(fromNetns: string, name: string, netns: string, veth: string, mtu: number, identity: PodIdentity): Promise<string> {
  try {
    await inNetns(fromNetns, 'ip', ['link', 'set', 'dev', name, 'netns', netns]);
    await inNetns(netns, 'ip', ['link', 'set', 'dev', name, 'name', TAP_NAME]);
    await plumbTap(netns, veth, mtu, identity);
    return TAP_NAME;
  } catch (e) {
    await disconnectTap(netns, veth);
    throw e;
  }
}

/** plumbTap guards the pod's tap, brings it up and redirects the veth's frames to it. */
async function plumbTap(netns: string, veth: string, mtu: number, identity: PodIdentity): Promise<void> {
  // The guard exists before the tap is up: no frame passes unfiltered.
  await installGuard(netns, { ...identity, tap: TAP_NAME, veth, localAddress: LINK_ADDRESS });
  await inNetns(netns, 'ip', ['link', 'set', 'dev', TAP_NAME, 'mtu', String(mtu), 'up']);
  await inNetnsBatch(netns, 'tc', [
    ['qdisc', 'add', 'dev', veth, 'ingress'],
    ['filter', 'add', 'dev', veth, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u8', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', TAP_NAME],
  ]);
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
