/**
 * qemu — QemuDriver runs each VM as one `qemu-system-x86_64 -machine microvm` child process.
 *
 * start(): validate the spec, choose the accelerator, remove stale files, spawn QEMU paused (-S),
 * connect QMP (retrying the connect with a short backoff until the socket answers, the process
 * exits, or startTimeoutMs passes), attach the console capture so no boot output is lost, check the
 * agent socket, then QMP `cont`. Any failure kills QEMU and removes its files, and the HullError
 * carries QEMU's stderr and the console tail.
 *
 * The parts: qemu-args.ts builds the command line, qemu-process.ts spawns QEMU and cleans up its
 * files, qemu-vm.ts is the running VM (QMP, console, shutdown), and qemu-template.ts restores a
 * clone from a template (started with `-incoming defer`) and saves a template.
 */

import { realpath } from 'node:fs/promises';
import { HullError } from '../errors/index.js';
import { decideAccel, hostTscKhz, readHostFacts } from './accel.js';
import type { RunningVm, VmDriver, VmHandle, VmSpec, VmTemplating } from './driver.js';
import { jailCommand, type JailTools } from './jail.js';
import { TEMPLATE_MAC, qemuArgs, qemuPaths, validateSpec, type QemuArgsOptions } from './qemu-args.js';
import { jailHostPaths, jailLayout, jailSystemDir, prepareJailDirs } from './qemu-jail.js';
import { findExecutable, lifelineCommand, qemuCommand, refuseIfRunning, removeFiles } from './qemu-process.js';
import { checkTemplateFiles, qemuIdentity } from './qemu-template.js';
import { QemuVm, type QemuDriverOptions as QemuVmOptions } from './qemu-vm.js';

export interface QemuDriverOptions extends QemuVmOptions {
  /** tcgTbSizeMiB sizes TCG's translated-code buffer (qemu-args.ts TCG_TB_SIZE_MIB is the default). */
  tcgTbSizeMiB?: number;
  /** memoryMerge lets the host's KSM merge guest RAM across VMs (qemu-args.ts memoryMergeOption). */
  memoryMerge?: boolean;
}

export class QemuDriver implements VmDriver {
  readonly name = 'qemu';

  /** templating: QemuVm.saveTemplate saves, a spec with `template` restores (qemu-template.ts). */
  readonly templating: VmTemplating = {
    identity: (machine) => qemuIdentity(this.options.binary ?? 'qemu-system-x86_64', machine, this.argsOptions()),
    guestMac: TEMPLATE_MAC,
  };

  constructor(private readonly options: QemuDriverOptions = {}) {}

  async start(spec: VmSpec): Promise<VmHandle> {
    validateSpec(spec);
    const facts = await readHostFacts();
    const { accel } = decideAccel(facts, spec.accel ?? 'auto');
    // Only TCG guests get tsc_early_khz: see hostTscKhz.
    const tscKhz = accel === 'tcg' ? hostTscKhz(facts.cpuinfo) : undefined;
    const binary = this.options.binary ?? 'qemu-system-x86_64';
    if (spec.template !== undefined) await checkTemplateFiles(spec, spec.template);
    if (spec.jail === undefined) {
      const paths = qemuPaths(spec.stateDir);
      await refuseIfRunning(spec, paths);
      await removeFiles(paths);
      const args = qemuArgs(spec, accel, paths, { ...this.argsOptions(), tscKhz, paused: true });
      const argv = await this.onLifeline(spec, qemuCommand(spec, binary, args));
      return QemuVm.launch(spec, accel, { host: paths, qemu: paths }, argv, binary, this.options, spec.lifeline !== undefined ? 1 : 0);
    }
    const found = (await findExecutable(binary)) ?? binary;
    const systemDir = jailSystemDir(await realpath(found).catch(() => found));
    const layout = jailLayout(spec, accel, systemDir);
    await refuseIfRunning(spec, layout.hostPaths);
    await removeFiles(layout.hostPaths);
    await prepareJailDirs(spec, layout);
    const args = qemuArgs(layout.qemuSpec, accel, layout.qemuPaths, { ...this.argsOptions(), tscKhz, paused: true, pidFile: false });
    const jailed = jailCommand({ jail: spec.jail, dir: layout.rootDir, mounts: layout.mounts, devices: layout.devices, netns: spec.net?.netns, tools: await jailTools(systemDir), binary: found, args });
    const argv = await this.onLifeline(spec, jailed);
    return QemuVm.launch(spec, accel, { host: layout.hostPaths, qemu: layout.qemuPaths }, argv, binary, this.options, spec.lifeline !== undefined ? 2 : 1);
  }

  async adopt(spec: VmSpec, running: RunningVm): Promise<VmHandle> {
    validateSpec(spec);
    const paths = spec.jail === undefined ? qemuPaths(spec.stateDir) : jailHostPaths(spec);
    return QemuVm.adopt(spec, paths, running, this.options);
  }

  /** onLifeline wraps argv in the lifeline's holder when the VM has one. */
  private async onLifeline(spec: VmSpec, argv: string[]): Promise<string[]> {
    if (spec.lifeline === undefined) return argv;
    const tools = await jailTools(undefined);
    // An absolute path: busybox's shell would run its own applet for a bare "setpriv".
    if (argv[0] !== 'setpriv') throw new HullError('internal', `a VM on a lifeline must start with setpriv, not ${argv[0]}`);
    return lifelineCommand(tools.busybox, spec.lifeline, [tools.setpriv, ...argv.slice(1)]);
  }

  /** argsOptions are the command-line choices of this driver (the same for a template and its clones). */
  private argsOptions(): QemuArgsOptions {
    const { tcgTbSizeMiB, memoryMerge } = this.options;
    return { ...(tcgTbSizeMiB !== undefined ? { tcgTbSizeMiB } : {}), ...(memoryMerge !== undefined ? { memoryMerge } : {}) };
  }
}

/**
 * jailTools finds busybox and setpriv; in a jail they must be in its system directory (the inner
 * setpriv runs there), with no jail (a lifeline only) anywhere.
 */
async function jailTools(systemDir: string | undefined): Promise<JailTools> {
  const find = async (tool: string, pkg: string): Promise<string> => {
    const path = await findExecutable(tool);
    if (path === undefined) throw new HullError('failed_precondition', `Cannot jail QEMU: ${tool} not found (apt-get install ${pkg}; hull check reports it)`);
    const real = await realpath(path);
    if (systemDir !== undefined && !real.startsWith(`${systemDir}/`)) throw new HullError('failed_precondition', `Cannot jail QEMU: "${real}" is not under ${systemDir}, the only host directory the jail holds`);
    return real;
  };
  return { busybox: await find('busybox', 'busybox-static'), setpriv: await find('setpriv', 'util-linux') };
}
