/**
 * PodVm is the pod's VM as the Task service holds it: booted by the first Create (others that
 * race it wait for that boot, task-lock.ts's SandboxGate), ended with the container that booted
 * it, served on the debug socket while it runs.
 */
import { HullError } from '../errors/index.js';
import type { HullConfig } from '../config/index.js';
import { currentGuestImage } from '../guest/index.js';
import { Sandbox, type OciSpec } from '../sandbox/index.js';
import { serveDebugSocket, type DebugSocket } from './debug-socket.js';
import { podVmSize } from './sizing.js';
import { SandboxGate } from './task-lock.js';

/** AGENT_LOST_SHUTDOWN_MS bounds QMP quit of a VM whose agent exited before SIGKILL. */
const AGENT_LOST_SHUTDOWN_MS = 2_000;

export class PodVm {
  readonly #log: (line: string) => void;
  readonly #gate = new SandboxGate();
  #sandbox: Sandbox | undefined;
  // The container that booted the VM; deleting it ends the VM.
  #containerId: string | undefined;
  #debugSocket: DebugSocket | undefined;
  // The destroy of the sandbox, once begun: the shim must not exit before it has finished.
  #destroying: Promise<void> | undefined;

  constructor(log: (line: string) => void) {
    this.#log = log;
  }

  get sandbox(): Sandbox | undefined {
    return this.#sandbox;
  }

  /** pid is the VMM's: every task's pid, as Kata does (CRI builds the pod's namespace paths from it). */
  get pid(): number {
    return this.#sandbox?.vm.pid ?? 0;
  }

  require(): Sandbox {
    if (!this.#sandbox) throw new HullError('failed_precondition', 'The pod VM is not running');
    return this.#sandbox;
  }

  /** endsWith tells whether deleting container `id` ends the VM (it booted it). */
  endsWith(id: string): boolean {
    return id === this.#containerId;
  }

  /**
   * claim is called synchronously by every Create: undefined when the VM is up (join it), else
   * whether this Create boots it or must wait for the boot under way (SandboxGate).
   */
  claim(id: string): ReturnType<SandboxGate['claim']> | undefined {
    return this.#sandbox ? undefined : this.#gate.claim(id);
  }

  async boot(config: HullConfig, id: string, spec: OciSpec): Promise<Sandbox> {
    const sandbox = await bootSandbox(config, id, spec, this.#log);
    this.#sandbox = sandbox;
    this.#containerId = id;
    // An agent that exited took the pod's process records and pending answers with it; the one the
    // guest's init starts next knows none of them. The pod has failed: its VM ends, so every task
    // reports its exit (as when QEMU dies) instead of waiting forever on the lost answers.
    void sandbox.vm.agentPortClosed.then(() => {
      if (this.#sandbox !== sandbox) return; // the port closes as the VM is destroyed, too
      this.#log(`sandbox ${id}: the guest's agent exited: ending the pod's VM`);
      return sandbox.vm.shutdown({ deadlineMs: AGENT_LOST_SHUTDOWN_MS });
    }).catch((e: Error) => this.#log(`end VM of ${id}: ${e.message}`));
    this.#debugSocket = await serveDebugSocket(sandbox.stateDir, sandbox.agent, sandbox.vm, this.#log).catch((e: Error) => {
      this.#log(`debug socket of ${id}: ${e.message}`);
      return undefined;
    });
    return sandbox;
  }

  async destroy(): Promise<void> {
    const sandbox = this.#sandbox;
    const debugSocket = this.#debugSocket;
    this.#sandbox = undefined;
    this.#containerId = undefined;
    this.#debugSocket = undefined;
    await debugSocket?.close().catch((e: Error) => this.#log(`close debug socket: ${e.message}`));
    // A Delete that containerd gave up waiting for is followed by Shutdown: wait for the same destroy.
    if (sandbox) this.#destroying = sandbox.destroy().catch((e: Error) => this.#log(`destroy sandbox: ${e.message}`));
    await this.#destroying;
  }
}

async function bootSandbox(config: HullConfig, id: string, spec: OciSpec, log: (line: string) => void): Promise<Sandbox> {
  const image = await currentGuestImage(config.guestImagesDir);
  if (!image) throw new HullError('failed_precondition', `No hull guest image in ${config.guestImagesDir}: run "hull image build"`);
  const size = podVmSize(spec, { vcpus: config.defaultVcpus, memoryMiB: config.defaultMemoryMiB });
  const sandbox = await Sandbox.create({
    id,
    image,
    ...size,
    hostname: typeof spec.hostname === 'string' ? spec.hostname : undefined,
    runRoot: config.runRoot,
    accel: config.accel,
    bootTimeoutMs: config.bootTimeoutMs,
    // CRI's pod netns, plumbed by CNI before Create; a container run alone (ctr) has none.
    netns: spec.linux?.namespaces?.find((ns) => ns.type === 'network' && ns.path)?.path,
    templates: config.templates ? { templatesRoot: config.templatesDir, ramRoot: config.templateRamDir, maxCount: config.templateMaxCount, maxRamMiB: config.templateMaxRamMiB, log } : undefined,
    // No volume may lie in or contain one of hull's own directories.
    protectedRoots: [config.guestImagesDir, config.templatesDir, config.templateRamDir],
    log,
    jail: config.jail ? { base: config.jailUidBase, count: config.jailUidCount } : false,
    // The pod's cgroup (kubelet's parent carries the pod's limits and the RuntimeClass overhead).
    ...(typeof spec.linux?.cgroupsPath === 'string' && spec.linux.cgroupsPath !== '' ? { cgroupsPath: spec.linux.cgroupsPath } : {}),
  });
  const phases = sandbox.startup.map((p) => `${p.name} ${p.ms}`).join(', ');
  log(`sandbox ${id} booted: ${size.vcpus} vCPU, ${size.memoryMiB} MiB, VMM pid ${sandbox.vm.pid} (ms: ${phases})`);
  return sandbox;
}
