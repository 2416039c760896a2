/**
 * vmm — hypervisor drivers behind one small interface (driver.ts). QEMU's microvm machine is the
 * driver that runs here (qemu.ts); its command line is built by pure functions (qemu-args.ts), it is
 * controlled over QMP (qmp.ts), and the accelerator is chosen per host (accel.ts). VM templates
 * (template*.ts) let a clone restore a saved guest instead of booting one.
 */

export type { Accel, VmDriver, VmExit, VmHandle, VmJail, VmNetSpec, VmSpec, VmTemplateRef } from './driver.js';
export { JAIL_CAPABILITIES, JAIL_RLIMITS } from './jail.js';
export { findExecutable } from './qemu-process.js';
export { chooseAccel, decideAccel, hostTscKhz, readHostFacts, type AccelChoice, type AccelRequest, type HostFacts } from './accel.js';
export { QemuDriver, type QemuDriverOptions } from './qemu.js';
export { TEMPLATE_MAC, TEMPLATE_STATE_FILE, qemuArgs, qemuPaths, type QemuPaths } from './qemu-args.js';
export { QmpClient, type QmpEvent } from './qmp.js';
export {
  DEFAULT_TEMPLATES_ROOT,
  DEFAULT_TEMPLATE_RAM_ROOT,
  TEMPLATE_FORMAT,
  cloneSpec,
  findTemplate,
  openTemplate,
  templateInputs,
  templateKey,
  type CloneTarget,
  type TemplateImage,
  type TemplateInputs,
  type TemplateListing,
  type TemplateManifest,
  type TemplateRequest,
  type TemplateRoots,
  type VmTemplate,
} from './template.js';
export { createTemplate } from './template-create.js';
export { listTemplates, pruneTemplates, removeTemplate } from './template-store.js';
