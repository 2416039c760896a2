/**
 * vmm — hypervisor drivers behind one small interface (driver.ts). QEMU's microvm machine is the
 * driver that runs here (qemu.ts); its command line is built by pure functions (qemu-args.ts), it is
 * controlled over QMP (qmp.ts), and the accelerator is chosen per host (accel.ts). A driver can save a
 * VM and restore clones of it (qemu-template.ts); making and keeping templates is src/factory's.
 */

export type { Accel, RunningVm, VmDriver, VmExit, VmHandle, VmIdentity, VmJail, VmMachine, VmNetSpec, VmSpec, VmTemplateRef, VmTemplating } from './driver.js';
export { JAIL_CAPABILITIES, JAIL_RLIMITS } from './jail.js';
export { findExecutable } from './qemu-process.js';
export { jailSystemDir } from './qemu-jail.js';
export { chooseAccel, decideAccel, hostTscKhz, readHostFacts, type AccelChoice, type AccelRequest, type HostFacts } from './accel.js';
export { QemuDriver, type QemuDriverOptions } from './qemu.js';
export { TEMPLATE_MAC, qemuArgs, qemuPaths, type QemuPaths } from './qemu-args.js';
export { QmpClient, type QmpEvent } from './qmp.js';
