/**
 * qemu-args — the QEMU command line for one VM, built by pure functions (no I/O) so tests can read
 * it without running QEMU.
 *
 * The machine is microvm: no PCI, no firmware, virtio-mmio devices, the kernel loaded directly.
 * Microvm has no hotplug, so every device a sandbox will ever need is on the command line from the
 * start; `devices()` lists them as data (backend options + frontend), which is where virtio-net and
 * later devices go. Guest RAM is a memory-backend-file in the state directory, so that VM templating
 * (share=on for a template, a restored clone with share=off) fits without a redesign.
 *
 * Every file the VM uses on the host side is in `spec.stateDir`, except the guest image files
 * (kernel, initrd, root disk) and the 9p export (`spec.sharedDir`).
 */

import { isAbsolute, join } from 'node:path';
import { HullError } from '../errors/index.js';
import type { Accel, VmSpec } from './driver.js';

/** QemuPaths are the files the driver and QEMU create in the state directory. */
export interface QemuPaths {
  qmpSocket: string;
  agentSocket: string;
  consoleSocket: string;
  /** consoleLog is written by the driver (console.ts), not QEMU; it outlives the VM. */
  consoleLog: string;
  pidFile: string;
  /** ram is the guest RAM backing file (sparse; MAP_PRIVATE with share=off). */
  ram: string;
}

export function qemuPaths(stateDir: string): QemuPaths {
  return {
    qmpSocket: join(stateDir, 'qmp.sock'),
    agentSocket: join(stateDir, 'agent.sock'),
    consoleSocket: join(stateDir, 'console.sock'),
    consoleLog: join(stateDir, 'console.log'),
    pidFile: join(stateDir, 'qemu.pid'),
    ram: join(stateDir, 'ram'),
  };
}

/** AGENT_PORT_NAME is the virtio-serial port name the guest agent opens (/dev/virtio-ports/hull.agent). */
export const AGENT_PORT_NAME = 'hull.agent';
/** AGENT_PORT_ID is the port's QEMU device id, named in its VSERPORT_CHANGE events. */
export const AGENT_PORT_ID = 'agent-port';
/** SHARE_MOUNT_TAG is the 9p mount tag of spec.sharedDir in the guest. */
export const SHARE_MOUNT_TAG = 'hull';

/**
 * BASE_KERNEL_ARGS is the guest kernel command line measured to boot fast under TCG: a serial
 * console, no self-tests, no PCI probing (microvm has none), and panic=-1 so a panicking guest
 * reboots at once, which -no-reboot turns into QEMU exiting.
 *
 * reboot=t makes that reboot a triple fault, which QEMU always sees. Without it the kernel tries
 * ACPI and the keyboard controller first (microvm has neither), then sometimes (about 1 boot in 10
 * here) jumps back into the firmware (BOOT_BIOS), which reloads the kernel without QEMU noticing a
 * reset: the guest then hangs in the decompressor instead of exiting.
 */
export const BASE_KERNEL_ARGS: readonly string[] = [
  'console=ttyS0',
  'quiet',
  'cryptomgr.notests',
  'mitigations=off',
  'audit=0',
  'i8042.noaux',
  'no_timer_check',
  '8250.nr_uarts=1',
  'random.trust_cpu=on',
  'panic=-1',
  'reboot=t',
  'pci=off',
];

export interface QemuArgsOptions {
  /** tscKhz adds `tsc_early_khz=` (see accel.ts hostTscKhz for when the driver passes it). */
  tscKhz?: number | undefined;
  /** paused adds -S: the vCPUs wait for QMP `cont` (the driver attaches the console first). */
  paused?: boolean;
}

/** kernelCommandLine is BASE_KERNEL_ARGS, then tsc_early_khz when known, then spec.kernelArgs. */
export function kernelCommandLine(spec: VmSpec, tscKhz: number | undefined): string {
  const args = [...BASE_KERNEL_ARGS];
  if (tscKhz !== undefined) args.push(`tsc_early_khz=${tscKhz}`);
  args.push(...(spec.kernelArgs ?? []));
  return args.join(' ');
}

/** qemuArgs returns QEMU's argv (without the binary) for `spec`; call validateSpec first. */
export function qemuArgs(spec: VmSpec, accel: Accel, paths: QemuPaths, options: QemuArgsOptions = {}): string[] {
  const memory = `${spec.memoryMiB}M`;
  const args = [
    '-name', `hull-${spec.id}`,
    '-machine', 'microvm,acpi=on,pic=off,pit=off,rtc=on,memory-backend=ram',
    '-accel', accel === 'kvm' ? 'kvm' : 'tcg,thread=multi',
    '-cpu', accel === 'kvm' ? 'host' : 'max',
    '-smp', String(spec.vcpus),
    '-m', memory,
    '-object', `memory-backend-file,id=ram,size=${memory},mem-path=${opt(paths.ram)},share=off`,
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    '-pidfile', paths.pidFile,
    // The same as `-qmp unix:<path>,server=on,wait=off`, in a form where the path can be escaped.
    '-chardev', `socket,id=qmp,path=${opt(paths.qmpSocket)},server=on,wait=off`,
    '-mon', 'chardev=qmp,mode=control',
    '-kernel', spec.kernel,
    '-initrd', spec.initrd,
    '-append', kernelCommandLine(spec, options.tscKhz),
  ];
  for (const device of devices(spec, paths)) args.push(...device);
  if (options.paused) args.push('-S');
  return args;
}

/** devices lists the guest's devices, each as the argv words of its backend(s) and frontend. */
function devices(spec: VmSpec, paths: QemuPaths): string[][] {
  const list = [
    // serial console (ttyS0) on a socket the driver reads
    ['-chardev', `socket,id=console,path=${opt(paths.consoleSocket)},server=on,wait=off`, '-serial', 'chardev:console'],
    // the agent's byte stream: a virtio-serial port backed by a unix socket (no vsock here)
    [
      '-device', 'virtio-serial-device',
      '-chardev', `socket,id=agent,path=${opt(paths.agentSocket)},server=on,wait=off`,
      '-device', `virtserialport,id=${AGENT_PORT_ID},chardev=agent,name=${AGENT_PORT_NAME}`,
    ],
    ['-device', 'virtio-rng-device'],
    [
      '-drive', `id=root,file=${opt(spec.rootDisk)},format=raw,if=none,readonly=on`,
      '-device', 'virtio-blk-device,drive=root',
    ],
    [
      '-fsdev', `local,id=shared,path=${opt(spec.sharedDir)},security_model=none,multidevs=remap`,
      '-device', `virtio-9p-device,fsdev=shared,mount_tag=${SHARE_MOUNT_TAG}`,
    ],
  ];
  if (spec.net !== undefined) {
    list.push([
      '-netdev', `tap,id=net0,ifname=${spec.net.tapName},script=no,downscript=no`,
      '-device', `virtio-net-device,netdev=net0,mac=${spec.net.mac}`,
    ]);
  }
  return list;
}

/** opt escapes a value for QEMU's "key=value,..." option syntax, where a literal comma is ",,". */
function opt(value: string): string {
  return value.replaceAll(',', ',,');
}

/** UNIX_PATH_MAX is the longest unix socket path the kernel accepts (sun_path is 108 bytes with NUL). */
const UNIX_PATH_MAX = 107;

/** validateSpec throws HullError('invalid_argument') for a spec QEMU must not be started with. */
export function validateSpec(spec: VmSpec): void {
  const fail = (what: string) => {
    throw new HullError('invalid_argument', `Cannot start VM "${spec.id}": ${what}`);
  };
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(spec.id)) fail('id must be 1-64 letters, digits, ".", "_" or "-"');
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1 || spec.vcpus > 255) fail(`vcpus ${spec.vcpus} is not an integer in 1..255`);
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 64) fail(`memoryMiB ${spec.memoryMiB} is not an integer ≥ 64`);
  for (const [name, path] of Object.entries({ stateDir: spec.stateDir, kernel: spec.kernel, initrd: spec.initrd, rootDisk: spec.rootDisk, sharedDir: spec.sharedDir })) {
    if (!isAbsolute(path)) fail(`${name} "${path}" is not an absolute path`);
  }
  const paths = qemuPaths(spec.stateDir);
  for (const socket of [paths.qmpSocket, paths.agentSocket, paths.consoleSocket]) {
    if (Buffer.byteLength(socket) > UNIX_PATH_MAX) fail(`socket path "${socket}" is longer than ${UNIX_PATH_MAX} bytes`);
  }
  // eslint-disable-next-line no-control-regex
  const badKernelArg = (spec.kernelArgs ?? []).find((arg) => arg === '' || /[\u0000-\u001f\u007f]/.test(arg));
  if (badKernelArg !== undefined) fail(`kernel argument ${JSON.stringify(badKernelArg)} is empty or has control characters`);
  if (spec.net !== undefined) {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(spec.net.tapName)) fail(`tap name "${spec.net.tapName}" is not a valid interface name`);
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(spec.net.mac)) fail(`MAC "${spec.net.mac}" is not six hex octets`);
  }
}
