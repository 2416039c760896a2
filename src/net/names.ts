/** Names hull makes in a pod netns (one place, so tap.ts and port-forward.ts need not import each other). */

export const TAP_NAME = 'tap0_hull';

/** The netns's link-local address on the tap: the port-forward path to the guest (see port-forward.ts). */
export const LINK_ADDRESS = '169.254.100.1';

/** The nftables netdev table that filters what the guest sends (see anti-spoof.ts). */
export const GUARD_TABLE = 'hull_guard';
