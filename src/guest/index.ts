/**
 * guest — builds the guest image every hull VM boots: Debian's generic kernel, an initramfs of our
 * own (busybox, the needed modules, /init), and a read-only ext4 root disk holding node, crun, the
 * agent bundle and a small supervising /sbin/init. See README.md for what the guest expects.
 */

export { buildGuestImage, builtGuestImage, currentGuestImage, guestImageIsStale, DEFAULT_IMAGES_ROOT } from './build.js';
export type { BuildGuestImageOptions, GuestImageIsStaleOptions } from './build.js';
export { verifyImageFiles } from './manifest.js';
export type { GuestImage, GuestManifest, GuestInputs } from './manifest.js';
export { GUEST_KERNEL_MODULES } from './modules.js';
export { AGENT_PATH } from './rootfs.js';
export { hasInterpreter, sharedLibraries } from './host-files.js';

export { AGENT_PORT_NAME } from '../common/names.js';
/** ROOT_DEVICE is where the guest finds its root disk unless hull.root= says otherwise. */
export const ROOT_DEVICE = '/dev/vda';
