/**
 * qemu-args — the QEMU command line for one VM, built by pure functions (no I/O) so tests can read
 * it without running QEMU.
 *
 * The machine is microvm: no PCI, no firmware, virtio-mmio devices, the kernel loaded directly.
 * Microvm has no hotplug, so every device a sandbox will ever need is on the command line from the
 * start; `devices()` lists them as data (backend options + frontend), which is where virtio-net and
 * later devices go. Guest RAM is anonymous memory of QEMU (memory-backend-ram) for a cold boot,
 * the pod's alone and gone with it; a memory-backend-file only for templating: the template's RAM
 * file with share=on for a template source (the guest writes reach the file), the same file with
 * share=off for a clone (a private copy-on-write mapping: the file is never written; it lies on a
 * disk file system, where a clone's fault on a hole reads zeroes into reclaimable page cache
 * instead of allocating the page in the file as tmpfs would: see src/factory/template.ts). A template and its clones have the same devices in the same order (microvm has no
 * hotplug and the device state is restored into them), including a NIC that goes nowhere (an
 * isolated hub port) when there is no pod network; only host-side backends differ per clone.
 *
 * Every file the VM uses on the host side is in `spec.stateDir`, except the guest image files
 * (kernel, initrd, root disk), the 9p export (`spec.sharedDir`) and a template's RAM and state.
 */

import { isAbsolute, join } from 'node:path';
import { AGENT_PORT_NAME, SHARE_TAG } from '../common/names.js';
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
  /** migrateSocket carries a template's device state to or from QEMU (saveTemplate, clone start). */
  migrateSocket: string;
}

export function qemuPaths(stateDir: string): QemuPaths {
  return {
    qmpSocket: join(stateDir, 'qmp.sock'),
    agentSocket: join(stateDir, 'agent.sock'),
    consoleSocket: join(stateDir, 'console.sock'),
    consoleLog: join(stateDir, 'console.log'),
    pidFile: join(stateDir, 'qemu.pid'),
    migrateSocket: join(stateDir, 'migrate.sock'),
  };
}

/**
 * TEMPLATE_MAC is the NIC address of every template, and so of every clone: the MAC is part of the
 * restored device state, whatever the clone's command line says. Locally administered, unicast.
 */
export const TEMPLATE_MAC = '02:68:75:6c:6c:00';
/** NET_ID is the netdev id of the one NIC; a clone may back it differently from its template. */
const NET_ID = 'net0';

/** isTemplated is true for template sources and clones: VMs whose device list must match. */
export function isTemplated(spec: VmSpec): boolean {
  return spec.templateRamFile !== undefined || spec.template !== undefined;
}

/**
 * ramBacking is the guest RAM file of `spec` and whether QEMU maps it shared (writes reach it);
 * undefined for a cold boot, whose RAM is anonymous.
 */
export function ramBacking(spec: VmSpec): { path: string; share: boolean } | undefined {
  if (spec.templateRamFile !== undefined) return { path: spec.templateRamFile, share: true };
  if (spec.template !== undefined) return { path: spec.template.ramFile, share: false };
  return undefined;
}

/** memoryBackend is the `-object` value of the guest RAM (id "ram", which -machine names). */
export function memoryBackend(spec: VmSpec, options: QemuArgsOptions): string {
  const memory = `${spec.memoryMiB}M`;
  const ram = ramBacking(spec);
  if (ram === undefined) return `memory-backend-ram,id=ram,size=${memory},${memoryMergeOption(options)}`;
  return `memory-backend-file,id=ram,size=${memory},mem-path=${opt(ram.path)},share=${ram.share ? 'on' : 'off'},${memoryMergeOption(options)}`;
}

/** AGENT_PORT_ID is the port's QEMU device id, named in its VSERPORT_CHANGE events. */
export const AGENT_PORT_ID = 'agent-port';

/**
 * BASE_KERNEL_ARGS is the guest kernel command line measured to boot fast under TCG: a serial
 * console, no self-tests, no PCI probing (microvm has none), and panic=-1 so a panicking guest
 * reboots at once, which -no-reboot turns into QEMU exiting.
 *
 * tsc=reliable keeps the guest on the TSC clocksource. Without it the clocksource watchdog, timing
 * the TSC against jiffies on a busy TCG host, sometimes marks it unstable; the guest then falls back
 * to refined-jiffies, which cannot run tickless: 250 timer interrupts a second in an idle VM, ~3 % of
 * a host core per VM (measured: 250/s before, ~10/s after). nowatchdog: the soft-lockup detector's
 * timer (and its false alarms when the host is busy) is of no use in a sandbox VM.
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
  'tsc=reliable',
  'nowatchdog',
];

/**
 * TCG_TB_SIZE_MIB caps TCG's translated-code buffer, host memory of the pod that only grows:
 * QEMU's default is 1 GiB. A clone has ~48 MiB of it resident when idle after its first container
 * started, ~76 MiB after a few execs. When the buffer is full QEMU flushes it and translates the
 * guest's code again, so a cap below a pod's working set thrashes (`exec true` in a clone: ~1.7x
 * the time at 48 MiB, ~2.4x at 32; `ctr run` cold: 2.4 s at 64 MiB, 3.6 s at 32, 5.7 s at 16);
 * 256 MiB leaves room for guests that run JITs while still bounding the pod. Config: tcg_tb_size_mib.
 */
export const TCG_TB_SIZE_MIB = 256;

/**
 * TCG_CPU is the guest CPU model under TCG: everything TCG emulates, except the "fast string"
 * features. With ERMS/FSRM the guest kernel copies and clears memory with `rep movsb`/`rep stosb`,
 * which TCG runs one byte per loop iteration; without them it uses `rep movsq`, eight bytes each.
 * Measured in a clone: `dd` of 256 MiB to /dev/null 0.37 s -> 0.07 s, into the 9p rootfs 0.61 s ->
 * 0.28 s; `ctr run --rm IMAGE true` ~1.55 s -> ~1.40 s.
 */
export const TCG_CPU = 'max,erms=off,fsrm=off';

export interface QemuArgsOptions {
  /** tscKhz adds `tsc_early_khz=` (see accel.ts hostTscKhz for when the driver passes it). */
  tscKhz?: number | undefined;
  /** paused adds -S: the vCPUs wait for QMP `cont` (the driver attaches the console first). */
  paused?: boolean;
  /** pidFile: QEMU writes paths.pidFile (default). A jailed QEMU would write its PID-namespace pid, 1: the driver writes it. */
  pidFile?: boolean;
  /** tcgTbSizeMiB sizes TCG's translated-code buffer (default TCG_TB_SIZE_MIB); unused under kvm. */
  tcgTbSizeMiB?: number;
  /** memoryMerge marks guest RAM mergeable by the host's KSM (default false: see memoryMergeOption). */
  memoryMerge?: boolean;
}

/**
 * memoryMergeOption is the RAM backend's `merge=`. QEMU's default (on) lets KSM, where the node runs
 * it, share equal pages between VMs: ~5 MiB per idle pod measured here, but a page shared across
 * pods leaks through write timing what another pod's memory holds, and flips through Rowhammer: an
 * isolation boundary should not offer that unless the operator asks (config memory_merge).
 */
export function memoryMergeOption(options: QemuArgsOptions): string {
  return `merge=${options.memoryMerge === true ? 'on' : 'off'}`;
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
    '-accel', accel === 'kvm' ? 'kvm' : `tcg,thread=multi,tb-size=${options.tcgTbSizeMiB ?? TCG_TB_SIZE_MIB}`,
    '-cpu', accel === 'kvm' ? 'host' : TCG_CPU,
    '-smp', String(spec.vcpus),
    '-m', memory,
    '-object', memoryBackend(spec, options),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    ...(options.pidFile === false ? [] : ['-pidfile', paths.pidFile]),
    // The same as `-qmp unix:<path>,server=on,wait=off`, in a form where the path can be escaped.
    '-chardev', `socket,id=qmp,path=${opt(paths.qmpSocket)},server=on,wait=off`,
    '-mon', 'chardev=qmp,mode=control',
    '-kernel', spec.kernel,
    '-initrd', spec.initrd,
    '-append', kernelCommandLine(spec, options.tscKhz),
  ];
  for (const device of devices(spec, paths)) args.push(...device);
  // A clone waits for its state (QMP migrate-incoming) instead of booting.
  if (spec.template !== undefined) args.push('-incoming', 'defer');
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
      '-device', `virtio-9p-device,fsdev=shared,mount_tag=${SHARE_TAG}`,
    ],
  ];
  const net = spec.net;
  if (net !== undefined || isTemplated(spec)) {
    // A template or clone without a pod network gets a NIC on a hub of its own, which no other
    // port joins: frames go nowhere (never `-netdev user`, which would reach the host's network).
    const backend = net !== undefined ? `tap,id=${NET_ID},ifname=${net.tapName},script=no,downscript=no` : `hubport,id=${NET_ID},hubid=0`;
    const mac = net === undefined || isTemplated(spec) ? TEMPLATE_MAC : net.mac;
    list.push(['-netdev', backend, '-device', `virtio-net-device,netdev=${NET_ID},mac=${mac}`]);
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
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,75}$/.test(spec.id)) fail('id must be 1-76 letters, digits, ".", "_" or "-" (a containerd id)');
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1 || spec.vcpus > 255) fail(`vcpus ${spec.vcpus} is not an integer in 1..255`);
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 64) fail(`memoryMiB ${spec.memoryMiB} is not an integer ≥ 64`);
  const files: Record<string, string> = { stateDir: spec.stateDir, kernel: spec.kernel, initrd: spec.initrd, rootDisk: spec.rootDisk, sharedDir: spec.sharedDir };
  if (spec.templateRamFile !== undefined) files.templateRamFile = spec.templateRamFile;
  if (spec.template !== undefined) Object.assign(files, { 'template.stateFile': spec.template.stateFile, 'template.ramFile': spec.template.ramFile });
  for (const [name, path] of Object.entries(files)) {
    if (!isAbsolute(path)) fail(`${name} "${path}" is not an absolute path`);
  }
  if (spec.templateRamFile !== undefined && spec.template !== undefined) fail('a VM cannot be a template source and a clone at once');
  const paths = qemuPaths(spec.stateDir);
  for (const socket of [paths.qmpSocket, paths.agentSocket, paths.consoleSocket, paths.migrateSocket]) {
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
