/**
 * The tap that carries the pod's traffic into the VM (Kata's "tcfilter"
 * model): a tap device in the pod netns, and tc ingress filters that
 * redirect every frame arriving on the veth to the tap and every frame the
 * VM sends to the veth. The veth keeps its addresses (CNI's view is
 * unchanged); the netns stack no longer sees the pod's traffic.
 */
import { inNetns } from './exec.js';

export const TAP_NAME = 'tap0_hull';

/** connectTap creates the tap and the two redirects; on failure it removes what it made. */
export async function connectTap(netns: string, veth: string, mtu: number): Promise<string> {
  try {
    await inNetns(netns, 'ip', ['tuntap', 'add', 'dev', TAP_NAME, 'mode', 'tap']);
    await inNetns(netns, 'ip', ['link', 'set', 'dev', TAP_NAME, 'mtu', String(mtu), 'up']);
    for (const [from, to] of [[veth, TAP_NAME], [TAP_NAME, veth]] as const) {
      await inNetns(netns, 'tc', ['qdisc', 'add', 'dev', from, 'ingress']);
      await inNetns(netns, 'tc', ['filter', 'add', 'dev', from, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u8', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', to]);
    }
    return TAP_NAME;
  } catch (e) {
    await disconnectTap(netns, veth);
    throw e;
  }
}

/** disconnectTap removes the tap and the veth's ingress qdisc (with its filter); tolerant of "already gone". */
export async function disconnectTap(netns: string, veth: string): Promise<void> {
  await inNetns(netns, 'tc', ['qdisc', 'del', 'dev', veth, 'ingress']).catch(() => {});
  await inNetns(netns, 'ip', ['link', 'del', 'dev', TAP_NAME]).catch(() => {});
}
