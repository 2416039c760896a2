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

import { decideAccel, hostTscKhz, readHostFacts } from './accel.js';
import type { VmDriver, VmHandle, VmSpec } from './driver.js';
import { qemuArgs, qemuPaths, validateSpec } from './qemu-args.js';
import { refuseIfRunning, removeFiles } from './qemu-process.js';
import { checkTemplateFiles } from './qemu-template.js';
import { QemuVm, type QemuDriverOptions } from './qemu-vm.js';

export type { QemuDriverOptions };

export class QemuDriver implements VmDriver {
  readonly name = 'qemu';

  constructor(private readonly options: QemuDriverOptions = {}) {}

  async start(spec: VmSpec): Promise<VmHandle> {
    validateSpec(spec);
    const facts = await readHostFacts();
    const { accel } = decideAccel(facts, spec.accel ?? 'auto');
    // Only TCG guests get tsc_early_khz: see hostTscKhz.
    const tscKhz = accel === 'tcg' ? hostTscKhz(facts.cpuinfo) : undefined;
    const paths = qemuPaths(spec.stateDir);
    if (spec.template !== undefined) await checkTemplateFiles(spec, spec.template);
    await refuseIfRunning(spec, paths);
    await removeFiles(paths);
    const args = qemuArgs(spec, accel, paths, { tscKhz, paused: true });
    return QemuVm.launch(spec, accel, paths, args, this.options);
  }
}
