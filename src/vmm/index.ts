/**
 * vmm — hypervisor drivers behind one small interface (driver.ts). QEMU's microvm machine is the
 * driver that runs here (qemu.ts); its command line is built by pure functions (qemu-args.ts), it is
 * controlled over QMP (qmp.ts), and the accelerator is chosen per host (accel.ts).
 */

export type { Accel, VmDriver, VmExit, VmHandle, VmNetSpec, VmSpec } from './driver.js';
export { chooseAccel, decideAccel, hostTscKhz, readHostFacts, type AccelChoice, type AccelRequest, type HostFacts } from './accel.js';
export { QemuDriver, type QemuDriverOptions } from './qemu.js';
export { AGENT_PORT_NAME, SHARE_MOUNT_TAG, qemuArgs, qemuPaths, type QemuPaths } from './qemu-args.js';
export { QmpClient, type QmpEvent } from './qmp.js';
