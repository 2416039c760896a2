/**
 * PodVm is the pod's VM as the Task service holds it: booted by the first Create (others that
 * race it wait for that boot, task-lock.ts's SandboxGate), ended with the container that booted
 * it, served on the debug socket while it runs (root's: the console, stopping the VM), its status
 * also on the read-only status socket (what `hull ps` and `hull monitor` read).
 * A VM that exits on its own gets its console tail into the log.
 */
import { HullError } from '../errors/index.js';
import type { HullConfig } from '../config/index.js';
import { currentGuestImage } from '../guest/index.js';
import { AgentRpcStats, Sandbox, readGuestStats, type OciSpec } from '../sandbox/index.js';
import { TemplateFactory } from '../factory/index.js';
import { PoolClient } from '../pool/index.js';
import { QemuDriver } from '../vmm/index.js';
import { ConsoleServer } from './console.js';
import { serveDebugSocket, type DebugSocket } from './debug-socket.js';
import { prepareStatusDir, serveStatusSocket, statusSocketPath, type StatusSocket } from './status-socket.js';
import type { Logger } from './log.js';
import { GUEST_STATS_TIMEOUT_MS, podLabels, sandboxStatus, type SandboxStatus, type StatusSource } from './sandbox-status.js';
import { podLimitShortfall, sizeOfPod } from './sizing.js';
import { latestOnly } from './latest-only.js';
import { SandboxGate } from './task-lock.js';

// The console tail a VM that died on its own leaves in the log.
const DEATH_CONSOLE_TAIL_BYTES = 4096;

export interface PodVmOptions {
  logger?: Logger;
  /** containers lists the pod's containers the shim holds (for the sandbox's status). */
  containers?: () => string[];
}

/** AGENT_CHECK_TIMEOUT_MS: an agent that does not answer Check within it after its port changed is gone. */
const AGENT_CHECK_TIMEOUT_MS = 10_000;
/** AGENT_LOST_SHUTDOWN_MS bounds QMP quit of a VM whose agent exited before SIGKILL. */
const AGENT_LOST_SHUTDOWN_MS = 2_000;

export class PodVm {
  readonly #log: (line: string) => void;
  readonly #options: PodVmOptions;
  readonly #gate = new SandboxGate();
  #sandbox: Sandbox | undefined;
  // The container that booted the VM; deleting it ends the VM.
  #containerId: string | undefined;
  #debugSocket: DebugSocket | undefined;
  #statusSocket: StatusSocket | undefined;
  // The destroy of the sandbox, once begun: the shim must not exit before it has finished.
  #destroying: Promise<void> | undefined;

  constructor(log: (line: string) => void, options: PodVmOptions = {}) {
    this.#log = log;
    this.#options = options;
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

  /** boot starts the pod's VM; `configPath` names where `config` came from (for the console's refusal). */
  async boot(config: HullConfig, id: string, spec: OciSpec, configPath: string): Promise<Sandbox> {
    const pod = podLabels(spec.annotations);
    this.#options.logger?.setFields({ pod_namespace: pod.namespace, pod_name: pod.name, pod_uid: pod.uid });
    const agentRpc = new AgentRpcStats();
    const { sandbox, size } = await bootSandbox(config, configPath, id, spec, this.#log, agentRpc);
    this.#sandbox = sandbox;
    this.#containerId = id;
    let exited = false;
    void sandbox.vm.exited.then((exit) => {
      exited = true;
      // destroy() forgets the sandbox before it stops the VM: an exit then is no death.
      if (this.#sandbox === sandbox) this.#reportDeath(sandbox, exit);
    });
    const source: StatusSource = {
      sandbox,
      pod,
      createdAt: Date.now(),
      size,
      containers: () => this.#options.containers?.() ?? [],
      exited: () => exited,
      agentRpc,
      readGuest: () =>
        readGuestStats(sandbox.agent, GUEST_STATS_TIMEOUT_MS).catch((e: Error) => {
          this.#options.logger?.warn(`guest stats of sandbox ${id}: ${e.message}`);
          throw e;
        }),
    };
    // An agent that exited took the pod's process records and pending answers with it; the one the
    // guest's init starts next knows none of them. The pod has failed: its VM ends, so every task
    // reports its exit (as when QEMU dies) instead of waiting forever on the lost answers. The
    // agent port's changes only say when to ask (they also come when the agent reopens the port
    // after a host connection ended, late: a pooled VM's previous owner).
    const checkAgent = latestOnly(async () => {
      if (this.#sandbox !== sandbox || !(await sandbox.agentReplaced(AGENT_CHECK_TIMEOUT_MS))) return;
      if (this.#sandbox !== sandbox) return; // the port closes as the VM is destroyed, too
      this.#log(`sandbox ${id}: the guest's agent exited: ending the pod's VM`);
      await sandbox.vm.shutdown({ deadlineMs: AGENT_LOST_SHUTDOWN_MS }).catch((e: Error) => this.#log(`end VM of ${id}: ${e.message}`));
    });
    sandbox.vm.onAgentPortChange(() => checkAgent(undefined));
    const consoleServer = new ConsoleServer({ sandbox, enabled: config.debugConsole, configPath, log: this.#log });
    const status = (metrics: boolean) => sandboxStatus(source, metrics);
    this.#debugSocket = await serveDebugSocket(sandbox.stateDir, sandbox.agent, sandbox.vm, this.#log, status, consoleServer).catch((e: Error) => {
      this.#log(`debug socket of ${id}: ${e.message}`);
      return undefined;
    });
    this.#statusSocket = await openStatusSocket(config, sandbox, status, this.#log).catch((e: Error) => {
      this.#log(`status socket of ${id}: ${e.message}`);
      return undefined;
    });
    return sandbox;
  }

  #reportDeath(sandbox: Sandbox, exit: { code: number | null; signal: string | null }): void {
    const how = exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`;
    const tail = sandbox.vm.consoleTail(DEATH_CONSOLE_TAIL_BYTES).trim() || '(the guest wrote nothing to its console)';
    if (this.#options.logger) this.#options.logger.error(`VM of sandbox ${sandbox.id} exited (${how})`, { console_tail: tail });
    else this.#log(`VM of sandbox ${sandbox.id} exited (${how})\n--- console tail ---\n${tail}`);
  }

  async destroy(): Promise<void> {
    const sandbox = this.#sandbox;
    const debugSocket = this.#debugSocket;
    const statusSocket = this.#statusSocket;
    this.#sandbox = undefined;
    this.#containerId = undefined;
    this.#debugSocket = undefined;
    this.#statusSocket = undefined;
    await statusSocket?.close().catch((e: Error) => this.#log(`close status socket: ${e.message}`));
    await debugSocket?.close().catch((e: Error) => this.#log(`close debug socket: ${e.message}`));
    // A Delete that containerd gave up waiting for is followed by Shutdown: wait for the same destroy.
    if (sandbox) this.#destroying = sandbox.destroy().catch((e: Error) => this.#log(`destroy sandbox: ${e.message}`));
    await this.#destroying;
  }
}

/** openStatusSocket serves the sandbox's read-only status socket in status_dir, recorded in its ledger first. */
async function openStatusSocket(config: HullConfig, sandbox: Sandbox, status: (metrics: boolean) => Promise<SandboxStatus>, log: (line: string) => void): Promise<StatusSocket> {
  await prepareStatusDir(config.statusDir, config.monitorGid);
  const path = statusSocketPath(config.statusDir, sandbox.id);
  sandbox.recordStatusSocket(path);
  return serveStatusSocket(path, config.monitorGid, status, log);
}

async function bootSandbox(config: HullConfig, configPath: string, id: string, spec: OciSpec, log: (line: string) => void, agentRpcStats: AgentRpcStats): Promise<{ sandbox: Sandbox; size: { vcpus: number; memoryMiB: number } }> {
  const image = await currentGuestImage(config.guestImagesDir);
  if (!image) throw new HullError('failed_precondition', `No hull guest image in ${config.guestImagesDir}: run "hull image build"`);
  const { podLimitBytes, ...size } = await sizeOfPod(spec, config);
  const driver = new QemuDriver({ tcgTbSizeMiB: config.tcgTbSizeMiB, memoryMerge: config.memoryMerge });
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
    driver,
    factory: config.templates ? new TemplateFactory(driver, { templatesRoot: config.templatesDir, ramRoot: config.templateRamDir, maxCount: config.templateMaxCount, maxRamMiB: config.templateMaxRamMiB, log }) : undefined,
    // A warm VM from the node's pool when one of this shape is ready (src/pool).
    pool: config.poolSize > 0 ? new PoolClient({ dir: config.poolDir, configPath, log }) : undefined,
    // No volume may lie in or contain one of hull's own directories.
    protectedRoots: [config.guestImagesDir, config.templatesDir, config.templateRamDir, config.poolDir],
    log,
    agentRpcStats,
    jail: config.jail ? { base: config.jailUidBase, count: config.jailUidCount } : false,
    debugConsole: config.debugConsole,
    // The pod's cgroup (kubelet's parent carries the pod's limits and the RuntimeClass overhead).
    ...(typeof spec.linux?.cgroupsPath === 'string' && spec.linux.cgroupsPath !== '' ? { cgroupsPath: spec.linux.cgroupsPath } : {}),
  });
  if (podLimitBytes !== undefined) {
    const short = podLimitShortfall(podLimitBytes, size.memoryMiB, sandbox.vm.accel === 'kvm' ? 0 : config.tcgTbSizeMiB);
    if (short > 0) log(`sandbox ${id}: its pod cgroup's memory limit (${Math.floor(podLimitBytes / 1024 / 1024)} MiB) is ${short} MiB short of what its ${size.memoryMiB} MiB VM may cost the host: raise the RuntimeClass's overhead.podFixed (deploy/README.md), or the host may OOM-kill the VM before its containers reach their limits`);
  }
  const phases = sandbox.startup.map((p) => `${p.name} ${p.ms}`).join(', ');
  log(`sandbox ${id} booted: ${size.vcpus} vCPU, ${size.memoryMiB} MiB, VMM pid ${sandbox.vm.pid} (ms: ${phases})`);
  return { sandbox, size };
}
