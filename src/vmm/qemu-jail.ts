/**
 * How a jailed QEMU sees its files (jail.ts builds the jail). The driver works with host paths; the
 * QEMU command line names the same files by their paths in the jail:
 *
 *   /run              <stateDir>/vm: the VM's sockets, pid file and cold-boot RAM (owned by its uid)
 *   /image/kernel, /image/initrd, /image/root     the guest image, read-only
 *   /shared           the share's read-only view, with the rootfs and volumes mounted below it
 *   /ram              a template's RAM file (template source, or clone: QEMU opens it read-write)
 *   /usr (or hull's own runtime, at its path: jailSystemDir), /dev/{null,zero,random,urandom,net/tun,kvm}
 */
import { chown, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { hostRuntimeOf } from '../common/host-runtime.js';
import { HullError } from '../errors/index.js';
import type { Accel, VmSpec } from './driver.js';
import { type JailMount } from './jail.js';
import { qemuPaths, type QemuPaths } from './qemu-args.js';

/** JAIL_VM_DIR is the VM's directory in its state dir, bound at /run in the jail. */
export const JAIL_VM_DIR = 'vm';
/** JAIL_ROOT_DIR is the host directory the jail's root is mounted on (in the jail's namespace only). */
export const JAIL_ROOT_DIR = 'jail';
const IN_JAIL = { run: '/run', kernel: '/image/kernel', initrd: '/image/initrd', rootDisk: '/image/root', shared: '/shared', ram: '/ram' };

export interface JailLayout {
  /** hostPaths are the VM's files as the driver reaches them. */
  hostPaths: QemuPaths;
  /** qemuSpec is `spec` with every path as QEMU sees it in the jail (for qemuArgs). */
  qemuSpec: VmSpec;
  /** qemuPaths are the VM's files as QEMU sees them. */
  qemuPaths: QemuPaths;
  mounts: JailMount[];
  devices: string[];
  /** rootDir is where the jail's root is mounted (host path). */
  rootDir: string;
}

/** jailHostPaths are a jailed VM's files as the host sees them. */
export function jailHostPaths(spec: VmSpec): QemuPaths {
  // The console log is the driver's, not QEMU's: it stays where an unjailed VM keeps it.
  return { ...qemuPaths(join(spec.stateDir, JAIL_VM_DIR)), consoleLog: join(spec.stateDir, 'console.log') };
}

/** jailLayout maps a VM's files into its jail; pure. */
export function jailLayout(spec: VmSpec, accel: Accel, systemDir: string): JailLayout {
  const vmDir = join(spec.stateDir, JAIL_VM_DIR);
  const hostPaths = jailHostPaths(spec);
  const inJail = qemuPaths(IN_JAIL.run);
  const mounts: JailMount[] = [
    { source: vmDir, target: IN_JAIL.run, kind: 'dir', readOnly: false },
    { source: spec.kernel, target: IN_JAIL.kernel, kind: 'file', readOnly: true },
    { source: spec.initrd, target: IN_JAIL.initrd, kind: 'file', readOnly: true },
    { source: spec.rootDisk, target: IN_JAIL.rootDisk, kind: 'file', readOnly: true },
    // Recursive: the containers' rootfs and volumes are mounts below the view; later ones arrive
    // through propagation (the jail's mounts are slaves of the host's).
    { source: spec.sharedDir, target: IN_JAIL.shared, kind: 'dir', readOnly: true, recursive: true },
    { source: systemDir, target: systemDir, kind: 'dir', readOnly: true },
  ];
  const qemuSpec: VmSpec = { ...spec, stateDir: IN_JAIL.run, kernel: IN_JAIL.kernel, initrd: IN_JAIL.initrd, rootDisk: IN_JAIL.rootDisk, sharedDir: IN_JAIL.shared };
  const ramFile = spec.templateRamFile ?? spec.template?.ramFile;
  if (ramFile !== undefined) {
    // Read-write even for a clone: QEMU 7.2 opens a private file backend O_RDWR (it never writes it).
    mounts.push({ source: ramFile, target: IN_JAIL.ram, kind: 'file', readOnly: false });
    if (spec.templateRamFile !== undefined) qemuSpec.templateRamFile = IN_JAIL.ram;
    if (spec.template !== undefined) qemuSpec.template = { ...spec.template, ramFile: IN_JAIL.ram };
  }
  const devices = ['/dev/null', '/dev/zero', '/dev/random', '/dev/urandom'];
  if (spec.net !== undefined) devices.push('/dev/net/tun');
  if (accel === 'kvm') devices.push('/dev/kvm');
  return { hostPaths, qemuSpec, qemuPaths: inJail, mounts, devices, rootDir: join(spec.stateDir, JAIL_ROOT_DIR) };
}

/** prepareJailDirs makes the jail's mount point and the VM's directory, owned by the VM's uid. */
export async function prepareJailDirs(spec: VmSpec, layout: JailLayout): Promise<void> {
  if (spec.jail === undefined) return;
  await mkdir(layout.rootDir, { recursive: true, mode: 0o700 });
  const vmDir = join(spec.stateDir, JAIL_VM_DIR);
  await mkdir(vmDir, { recursive: true, mode: 0o700 });
  await chown(vmDir, spec.jail.uid, spec.jail.gid);
}

/**
 * jailSystemDir is the one directory of the host's programs the jail holds, read-only at its own
 * path: the host runtime QEMU is part of (its own loader, libraries and data: common/host-runtime.ts),
 * or /usr (QEMU, its libraries and firmware as Debian installs them). The jail's busybox and setpriv
 * must be there too. A QEMU elsewhere is refused.
 */
export function jailSystemDir(qemuRealPath: string): string {
  const runtime = hostRuntimeOf(qemuRealPath);
  if (runtime !== undefined) return runtime;
  if (qemuRealPath.startsWith('/usr/')) return '/usr';
  throw new HullError('failed_precondition', `Cannot jail QEMU "${qemuRealPath}": the jail holds only /usr of the host or hull's own runtime; install QEMU under /usr or set jail = false (hull check reports it)`);
}
