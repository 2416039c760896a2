/**
 * Sandbox is one pod's VM seen from the host: the VM process, its agent and
 * its containers. Every host resource it makes is recorded in its ledger
 * (`<runRoot>/<id>/ledger`, ledger.ts) before it is made, and released by
 * replaying the ledger: on destroy(), when create() fails half-way, when a
 * container's create fails or the container is removed (its scope only).
 */
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { closeSync } from 'node:fs';
import { mkdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { SHARE_TAG } from '../common/names.js';
import { HullError } from '../errors/index.js';
import { DEFAULT_MAX_IN_FLIGHT, type TtrpcClient } from '../ttrpc/index.js';
import { OutputStream } from '../proto/gen/agent_pb.js';
import type { RunningVm, VmDriver, VmHandle, VmSpec } from '../vmm/index.js';
import { AGENT_CALL_TIMEOUT_MS, LIMITS, checkAgent, checkString, connectAgent, resendUnanswered, waitForAdoptedAgent, waitForAgent, type AgentClient, type AgentIdentity } from './agent-client.js';
import type { AgentRpcStats } from './agent-rpc-stats.js';
import { guestNetwork, type AttachedNetwork } from './pod-attach.js';
import { adoptPooledVm, type VmPool } from './pool-adopt.js';
import { startSandboxVm } from './vm-start.js';
import { DEFAULT_JAIL_UIDS, type UidRange } from './jail-uid.js';
import { Ledger, replayLedger, type LedgerLog } from './ledger.js';
import { shareContainer, shareLayout, type ShareLayout } from './share.js';
import { pumpOutput, pumpStdin, type HostStdio } from './stdio.js';
import { readBundleSpec, guestContainerSpec, type OciProcess, type OciSpec } from './spec.js';
import { guestMounts, planVolumes, type ProtectedPaths } from './volumes.js';

export const DEFAULT_RUN_ROOT = '/run/hull';
export const DEFAULT_VCPUS = 1;
export const DEFAULT_MEMORY_MIB = 2048;
// containerd's identifier rules: ids name directories, so they are checked before anything is made.
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,75}$/;
// destroy() asks the agent to stop the containers and flush their writes; a guest that does not
// answer by then is ended anyway.
const DESTROY_AGENT_TIMEOUT_MS = 3000;
const SHUTDOWN_DEADLINE_MS = 3000;
export { DEFAULT_JAIL_UIDS };

export interface GuestAssets {
  /** id of the guest image (templates are keyed by it). */
  id?: string;
  kernel: string;
  initrd: string;
  rootDisk: string;
}

/**
 * VmFactory starts a sandbox's VM faster than a cold boot: src/factory's TemplateFactory restores it
 * as a clone of a saved template of the same machine (Kata's factory plays this part).
 */
export interface VmFactory {
  /** dirs are the factory's own directories: no volume may lie in or contain one. */
  readonly dirs: readonly string[];
  /** cloneOf is the spec that starts the VM `cold` describes (guest image `imageId`) as a clone; undefined: boot it cold. */
  cloneOf(cold: VmSpec, imageId: string): Promise<VmSpec | undefined>;
}

export interface SandboxOptions {
  id: string;
  image: GuestAssets;
  vcpus?: number;
  memoryMiB?: number;
  hostname?: string;
  runRoot?: string;
  /** driver runs the VM (src/vmm: QemuDriver here). */
  driver: VmDriver;
  accel?: 'auto' | 'kvm' | 'tcg';
  /** bootTimeoutMs bounds VM start to agent ready (default 60 s: TCG boots are slow on a busy host). */
  bootTimeoutMs?: number;
  /** netns is the pod's network namespace, already plumbed by CNI; the VM takes over its interface. */
  netns?: string;
  /** factory, when given, may start the VM faster than a cold boot (needs `image.id`). */
  factory?: VmFactory;
  /** pool, when given, may lend a warm VM of this shape (needs `image.id`); else the VM is started. */
  pool?: VmPool;
  /**
   * pooled makes this a pool's warm VM (src/pool): it runs on a lifeline (`<stateDir>/lifeline`)
   * so that a pod's sandbox can adopt it, with a tap of its own in the pool's netns.
   */
  pooled?: { tapNetns: string; tapName: string };
  /**
   * protectedRoots are hull's own directories on this host (guest images, templates, template RAM,
   * …): no volume may lie in or contain one. The run root and the factory's directories are added here.
   */
  protectedRoots?: readonly string[];
  /**
   * jail confines the VM's QEMU (src/vmm/jail.ts) as a uid leased from this range for the
   * sandbox's lifetime (default DEFAULT_JAIL_UIDS). false runs QEMU as root in the host's namespaces.
   */
  jail?: UidRange | false;
  /**
   * cgroupsPath is the sandbox spec's linux.cgroupsPath: the calling process (the shim) moves into
   * it before anything is started, so the VMM and every helper count against the pod.
   */
  cgroupsPath?: string;
  /** debugConsole lets the agent run console processes (container id "": `hull console`). */
  debugConsole?: boolean;
  /** log receives what teardown could not release (each step logs and goes on). */
  log?: LedgerLog;
  /** agentRpcStats, when given, times every agent call (agent-rpc-stats.ts). */
  agentRpcStats?: AgentRpcStats;
  /** failpoints let tests widen the windows a hostile guest might race (never set in production). */
  failpoints?: SandboxFailpoints;
}

export interface SandboxFailpoints {
  /** beforeGuestCreate runs after a container's rootfs and volumes are shared, before the agent creates it. */
  beforeGuestCreate?: (containerId: string) => Promise<void>;
}

export interface ContainerOptions {
  /** bundle is an OCI bundle directory (config.json, rootfs). */
  bundle: string;
  /** spec overrides the bundle's config.json. */
  spec?: OciSpec;
  /** args replaces the spec's process.args. */
  args?: string[];
  stdio: StdioRequest;
  /**
   * readOnlyRootfs binds the rootfs read-only on the host, so the guest cannot change it at all
   * (not only inside the container): for a rootfs the host later walks, as the pool's warm-up
   * bundle. Every mount point the spec needs must exist in it.
   */
  readOnlyRootfs?: boolean;
}

/** StdioRequest says which streams the host attaches to a process, and the terminal's first size. */
export interface StdioRequest {
  stdin?: boolean;
  stdout?: boolean;
  stderr?: boolean;
  terminal?: boolean;
  rows?: number;
  cols?: number;
}

export interface ProcessExit {
  exitStatus: number;
  exitedAt: Date;
  oomKilled: boolean;
}

/** HANDOFF_PORT_CLOSE_MS bounds the wait for a pooled VM's agent to close its port (QEMU may hold the event up to 1 s). */
const HANDOFF_PORT_CLOSE_MS = 3_000;

/** StartupPhase is one step of Sandbox.create and how long it took, in ms (for logs and benchmarks). */
export interface StartupPhase {
  name: 'network' | 'pool' | 'template' | 'vmm' | 'agent' | 'setup' | 'guest-network';
  ms: number;
}

export interface GuestDetails {
  kernelRelease: string;
  onlineCpus: number;
  memTotalBytes: bigint;
}

export class Sandbox {
  readonly id: string;
  readonly stateDir: string;
  /** sharedDir is the read-only view of mountsDir that QEMU exports to the guest (share.ts). */
  readonly sharedDir: string;
  /** mountsDir is host-private: where containers' rootfs and volumes are bound. */
  readonly mountsDir: string;
  readonly vm: VmHandle;
  /** vmSpec is what the VM was started from (a pooled VM's adopter needs it). */
  readonly vmSpec: VmSpec;
  readonly agent: AgentClient;
  /** startup says where create() spent its time. */
  readonly startup: readonly StartupPhase[];
  readonly #client: TtrpcClient;
  readonly #ledger: Ledger;
  // The ledger and directory of the VM's share: the sandbox's own, or an adopted pooled VM's.
  readonly #shareLedger: Ledger;
  readonly #shareDir: string;
  // The VM's lifeline held open (a pooled VM's, or one adopted from a pool): closing it ends the VM.
  #lifelineFd: number | undefined;
  readonly #layout: ShareLayout;
  readonly #protected: ProtectedPaths;
  readonly #log: LedgerLog;
  readonly #failpoints: SandboxFailpoints;
  // Containers with a share made for them; changed by createContainer/removeContainer.
  readonly #containers = new Set<string>();
  // Aborts blocking agent calls (waits, output reads) when the sandbox is destroyed.
  readonly #lifetime = new AbortController();
  // The agent process that answered at boot (Check's instance); another one knows nothing of this pod.
  readonly #agentInstance: string;
  #destroyed: Promise<void> | undefined;

  private constructor(id: string, parts: { ledger: Ledger; shareLedger: Ledger; layout: ShareLayout; vm: VmHandle; client: TtrpcClient; agent: AgentClient; agentInstance: string; startup: StartupPhase[]; protectedPaths: ProtectedPaths; lifelineFd: number | undefined; vmSpec: VmSpec; options: SandboxOptions }) {
    this.id = id;
    this.stateDir = parts.ledger.stateDir;
    this.#ledger = parts.ledger;
    this.#shareLedger = parts.shareLedger;
    this.#shareDir = parts.shareLedger.stateDir;
    this.#lifelineFd = parts.lifelineFd;
    this.vmSpec = parts.vmSpec;
    this.#layout = parts.layout;
    this.sharedDir = parts.layout.sharedDir;
    this.mountsDir = parts.layout.mountsDir;
    this.startup = parts.startup;
    this.vm = parts.vm;
    this.#client = parts.client;
    this.agent = parts.agent;
    this.#agentInstance = parts.agentInstance;
    // Every blocking agent call of every process listens on it (a wait and up to three stdio pumps
    // each, removed when the call ends): node's default of 10 would call a pod of three a leak. The
    // agent (a TtrpcServer with the default bound) runs at most that many calls of the connection anyway.
    setMaxListeners(DEFAULT_MAX_IN_FLIGHT, this.#lifetime.signal);
    this.#protected = parts.protectedPaths;
    this.#log = parts.options.log ?? (() => {});
    this.#failpoints = parts.options.failpoints ?? {};
  }

  /** create boots the VM and prepares the guest; on failure nothing is left behind. */
  static async create(options: SandboxOptions): Promise<Sandbox> {
    if (!ID_PATTERN.test(options.id)) throw new HullError('invalid_argument', `Invalid sandbox id "${options.id}"`);
    const runRoot = options.runRoot ?? DEFAULT_RUN_ROOT;
    const stateDir = join(runRoot, options.id);
    const vcpus = options.vcpus ?? DEFAULT_VCPUS;
    const memoryMiB = options.memoryMiB ?? DEFAULT_MEMORY_MIB;
    if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 255) throw new HullError('invalid_argument', `Invalid vCPU count ${vcpus}`);
    if (!Number.isInteger(memoryMiB) || memoryMiB < 128) throw new HullError('invalid_argument', `Invalid memory size ${memoryMiB} MiB: at least 128`);
    const log = options.log ?? (() => {});
    await mkdir(runRoot, { recursive: true, mode: 0o711 });
    try {
      await mkdir(stateDir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new HullError('already_exists', `Sandbox "${options.id}" already exists`);
      throw e;
    }
    let ledger: Ledger;
    try {
      ledger = await Ledger.open(stateDir);
      ledger.record('', { kind: 'state-dir', path: stateDir });
    } catch (e) {
      await rmdir(stateDir).catch(() => {});
      throw e;
    }
    let layout = shareLayout(stateDir);
    let shareLedger = ledger;
    let vm: VmHandle | undefined;
    let client: TtrpcClient | undefined;
    let lifelineFd: number | undefined;
    let vmSpec: VmSpec | undefined;
    const startup: StartupPhase[] = [];
    let lapStart = performance.now();
    const lap = (name: StartupPhase['name']): void => {
      const now = performance.now();
      startup.push({ name, ms: Math.round(now - lapStart) });
      lapStart = now;
    };
    try {
      const bootTimeoutMs = options.bootTimeoutMs ?? 60_000;
      const deadline = Date.now() + bootTimeoutMs;
      const { image } = options;
      const accel = options.accel ?? 'auto';
      let network: AttachedNetwork | undefined;
      const pooled = options.pool && image.id ? await options.pool.claim({ imageId: image.id, vcpus, memoryMiB, accel, jailed: options.jail !== false }, options.id).catch((e: Error) => {
        log(`sandbox ${options.id}: no VM from the pool: ${e.message}`);
        return undefined;
      }) : undefined;
      if (pooled) {
        const adopted = await adoptPooledVm(ledger, pooled, { driver: options.driver, netns: options.netns, cgroupsPath: options.cgroupsPath, log });
        ({ vm, lifelineFd, network } = adopted);
        vmSpec = pooled.spec;
        layout = shareLayout(pooled.dir);
        shareLedger = await Ledger.open(pooled.dir);
        lap('pool');
      } else {
        ({ vm, vmSpec, lifelineFd, network } = await startSandboxVm(ledger, layout, options, { vcpus, memoryMiB, accel, bootTimeoutMs }, lap));
      }
      const connection = await connectAgent(vm.agentSocketPath, options.agentRpcStats);
      client = connection.client;
      const bootedVm = vm;
      let agentIdentity: AgentIdentity;
      try {
        agentIdentity = pooled ? await waitForAdoptedAgent(connection.agent, deadline) : await waitForAgent(connection.agent, deadline, vm.agentPortOpened, vm.exited);
      } catch (e) {
        const tail = bootedVm.consoleTail(4096).trim();
        throw new HullError((e as HullError).code ?? 'unavailable', `Sandbox "${options.id}" failed to boot: ${(e as Error).message}${tail ? `\n--- console tail ---\n${tail}` : ''}`, { cause: e });
      }
      lap('agent');
      // A clone's and a pooled VM's RNGs and clock are their template's until this call reseeds them.
      const setupSandbox = (timeoutMs: number) =>
        connection.agent.setupSandbox(
          {
            sandboxId: options.id,
            hostname: options.hostname ?? '',
            entropy: randomBytes(64),
            timeUnixNano: BigInt(Date.now()) * 1_000_000n,
            shareTag: SHARE_TAG,
            debugConsole: options.debugConsole ?? false,
          },
          { timeoutMs },
        );
      // A boot step: it gets what is left of the boot budget (boot_timeout_ms), at least a call's.
      const setupDeadline = Math.max(Date.now() + AGENT_CALL_TIMEOUT_MS, deadline);
      // Both setups are idempotent: a clone's or an adopted VM's agent may drop one as it reopens its port.
      const resent = (what: string) => (e: Error) => log(`${what} unanswered (${e.message}): sent again`);
      await resendUnanswered(setupSandbox, setupDeadline, resent('SetupSandbox'));
      lap('setup');
      if (network) {
        const setupNetwork = (timeoutMs: number) => connection.agent.setupNetwork(guestNetwork(network), { timeoutMs });
        await resendUnanswered(setupNetwork, Date.now() + AGENT_CALL_TIMEOUT_MS, resent('SetupNetwork'));
        lap('guest-network');
      }
      const roots = [runRoot, ...(options.protectedRoots ?? []), ...(options.factory?.dirs ?? [])];
      return new Sandbox(options.id, { ledger, shareLedger, layout, vm, client: connection.client, agent: connection.agent, agentInstance: agentIdentity.instance, startup, protectedPaths: { stateDir, roots }, lifelineFd, vmSpec: vmSpec!, options });
    } catch (e) {
      client?.close();
      await vm?.shutdown({ deadlineMs: 2000 }).catch(() => {});
      if (lifelineFd !== undefined) closeSync(lifelineFd);
      if (shareLedger !== ledger) shareLedger.close();
      ledger.close();
      await replayLedger(stateDir, { log });
      throw e;
    }
  }

  async guestDetails(): Promise<GuestDetails> {
    const d = await this.agent.guestDetails({}, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
    return { kernelRelease: checkString('kernel release', d.kernelRelease), onlineCpus: d.onlineCpus, memTotalBytes: d.memTotalBytes };
  }

  /** createContainer shares the bundle's rootfs and volumes with the guest and creates (not starts) the container. */
  async createContainer(containerId: string, options: ContainerOptions): Promise<void> {
    if (!ID_PATTERN.test(containerId)) throw new HullError('invalid_argument', `Invalid container id "${containerId}"`);
    if (this.#containers.has(containerId)) throw new HullError('already_exists', `Container "${containerId}" already exists`);
    const spec = options.spec ?? (await readBundleSpec(options.bundle));
    // Volumes are checked before anything is made: a bad source leaves nothing behind.
    const volumes = await planVolumes(containerId, spec.mounts ?? [], this.#protected);
    for (const plan of volumes) if (plan.warning) this.#log(`container ${containerId}: ${plan.warning}`);
    const guestSpec = guestContainerSpec(spec, options.args, guestMounts(volumes));
    const rootfsSource = spec.root?.path?.startsWith('/') ? spec.root.path : join(options.bundle, spec.root?.path ?? 'rootfs');
    this.#containers.add(containerId);
    try {
      await shareContainer(this.#shareLedger, this.#layout, containerId, rootfsSource, volumes.flatMap((p) => (p.share ? [p.share] : [])), options.readOnlyRootfs ?? false);
      await this.#failpoints.beforeGuestCreate?.(containerId);
      await this.agent.createContainer(
        { containerId, specJson: Buffer.from(JSON.stringify(guestSpec)), rootfs: `${containerId}/rootfs`, stdio: options.stdio },
        { timeoutMs: AGENT_CALL_TIMEOUT_MS },
      );
    } catch (e) {
      await this.#releaseContainer(containerId);
      throw e;
    }
  }

  async startContainer(containerId: string): Promise<number> {
    const { pid } = await this.agent.startContainer({ containerId }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
    return pid;
  }

  async exec(containerId: string, execId: string, process: OciProcess, stdio: StdioRequest): Promise<number> {
    const { pid } = await this.agent.execProcess(
      { containerId, execId, processJson: Buffer.from(JSON.stringify(process)), stdio },
      { timeoutMs: AGENT_CALL_TIMEOUT_MS },
    );
    return pid;
  }

  /** removeExec has the agent forget a deleted exec: its process record, stdio buffers and files in the guest. */
  async removeExec(containerId: string, execId: string, timeoutMs = AGENT_CALL_TIMEOUT_MS): Promise<void> {
    await this.agent.removeExec({ containerId, execId }, { timeoutMs });
  }

  /**
   * agentReplaced tells whether the guest's agent is no longer the one that answered at boot: another
   * process answers Check (the guest's init restarted it), or none does within `timeoutMs`.
   */
  async agentReplaced(timeoutMs: number): Promise<boolean> {
    const now = await checkAgent(this.agent, timeoutMs).catch(() => undefined);
    return now?.instance !== this.#agentInstance;
  }

  async signal(containerId: string, execId: string, signal: number, all = false): Promise<void> {
    await this.agent.signalProcess({ containerId, execId, signal, all }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
  }

  /** wait blocks until the process exits (or the sandbox is destroyed). */
  async wait(containerId: string, execId = ''): Promise<ProcessExit> {
    const r = await this.agent.waitProcess({ containerId, execId }, { signal: this.#lifetime.signal });
    if (r.exitStatus > 255) throw new HullError('internal', `Guest sent exit status ${r.exitStatus}`);
    return { exitStatus: r.exitStatus, exitedAt: new Date(Number(r.exitedAtUnixNano / 1_000_000n)), oomKilled: r.oomKilled };
  }

  /** attach carries stdio between host streams and the process; resolves when its output has ended. */
  async attach(containerId: string, execId: string, stdio: HostStdio): Promise<void> {
    const signal = this.#lifetime.signal;
    if (stdio.stdin) void pumpStdin(this.agent, containerId, execId, stdio.stdin, signal).catch(() => {});
    const outputs: Promise<void>[] = [];
    if (stdio.stdout) outputs.push(pumpOutput(this.agent, containerId, execId, OutputStream.STDOUT, stdio.stdout, signal));
    if (stdio.stderr) outputs.push(pumpOutput(this.agent, containerId, execId, OutputStream.STDERR, stdio.stderr, signal));
    await Promise.all(outputs);
  }

  async resize(containerId: string, execId: string, rows: number, cols: number): Promise<void> {
    await this.agent.resizeTerminal({ containerId, execId, rows, cols }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
  }

  async processes(containerId: string): Promise<Array<{ pid: number; execId: string; command: string }>> {
    const { processes } = await this.agent.listProcesses({ containerId }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
    if (processes.length > LIMITS.maxProcesses) throw new HullError('internal', `Guest listed ${processes.length} processes`);
    return processes.map((p) => ({ pid: p.pid, execId: checkString('exec id', p.execId), command: checkString('command', p.command) }));
  }

  async stats(containerId: string) {
    return this.agent.statsContainer({ containerId }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
  }

  async update(containerId: string, resources: Record<string, unknown>): Promise<void> {
    await this.agent.updateContainer({ containerId, resourcesJson: Buffer.from(JSON.stringify(resources)) }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
  }

  async pauseContainer(containerId: string): Promise<void> {
    await this.agent.pauseContainer({ containerId }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
  }

  async resumeContainer(containerId: string): Promise<void> {
    await this.agent.resumeContainer({ containerId }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
  }

  /** removeContainer kills what still runs in it and releases what the host made for it. */
  async removeContainer(containerId: string): Promise<void> {
    try {
      await this.agent.removeContainer({ containerId }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
    } finally {
      // Whatever the guest answers: what the host made for the container is the host's to release.
      await this.#releaseContainer(containerId);
    }
  }

  /**
   * recordStatusSocket records the shim's status socket (outside the state dir, src/shim/status-socket.ts)
   * before it is made: destroy, and `shim delete` after a crash, remove it with the rest.
   */
  recordStatusSocket(path: string): void {
    this.#ledger.record('', { kind: 'status-socket', path });
  }

  /** destroy ends the VM and releases everything the host made for it, whatever the guest does. Idempotent. */
  destroy(): Promise<void> {
    this.#destroyed ??= this.#destroy();
    return this.#destroyed;
  }

  async #destroy(): Promise<void> {
    await this.agent.destroySandbox({}, { timeoutMs: DESTROY_AGENT_TIMEOUT_MS }).catch(() => {});
    this.#lifetime.abort(new HullError('cancelled', `Sandbox "${this.id}" was destroyed`));
    this.#client.close();
    // The ledger's process entry SIGKILLs QEMU if this fails.
    await this.vm.shutdown({ deadlineMs: SHUTDOWN_DEADLINE_MS }).catch((e: Error) => this.#log(`shutdown of VM ${this.id}: ${e.message}`));
    this.#releaseLifeline();
    if (this.#shareLedger !== this.#ledger) this.#shareLedger.close();
    this.#ledger.close();
    const failures = await replayLedger(this.stateDir, { log: this.#log });
    if (failures > 0) throw new HullError('internal', `Sandbox "${this.id}": ${failures} resources could not be released (see the shim log)`);
  }

  /**
   * handOff lets go of a pooled VM (one made with `pooled`) for a pod's sandbox to adopt: the agent
   * connection, the ledger and the VMM's sockets are closed, the VM runs on. The lifeline stays
   * held until releaseLifeline(). The sandbox is of no more use.
   */
  async handOff(): Promise<RunningVm> {
    if (this.vm.detach === undefined || this.#lifelineFd === undefined) throw new HullError('failed_precondition', `Sandbox "${this.id}" is not a pooled VM`);
    if (this.#containers.size > 0) throw new HullError('failed_precondition', `Sandbox "${this.id}" still has containers`);
    this.#lifetime.abort(new HullError('cancelled', `Sandbox "${this.id}" was handed over`));
    // The agent must have seen this connection end (it closes its port, then reopens it) before the
    // adopter connects: a hang-up the guest notices later would close the port under the adopter's
    // first calls and drop them.
    let stop = (): void => {};
    const portClosed = new Promise<boolean>((resolve) => {
      stop = this.vm.onAgentPortChange((open) => open || resolve(true));
      setTimeout(() => resolve(false), HANDOFF_PORT_CLOSE_MS).unref();
    });
    this.#client.close();
    const closed = await portClosed;
    stop();
    // Not handed off: the caller destroys the sandbox (its VM with it).
    if (!closed) throw new HullError('unavailable', `The agent of "${this.id}" did not close its port within ${HANDOFF_PORT_CLOSE_MS} ms of its host hanging up`);
    const running = await this.vm.detach();
    this.#destroyed = Promise.resolve();
    this.#ledger.close();
    return running;
  }

  /** releaseLifeline closes this process's hold on the VM's lifeline (the VM ends unless another holds it). */
  releaseLifeline(): void {
    this.#releaseLifeline();
  }

  #releaseLifeline(): void {
    if (this.#lifelineFd === undefined) return;
    closeSync(this.#lifelineFd);
    this.#lifelineFd = undefined;
  }

  /** releaseContainer replays the container's scope of the ledger: its volumes, rootfs and directories. */
  async #releaseContainer(containerId: string): Promise<void> {
    await replayLedger(this.#shareDir, { scope: containerId, log: this.#log });
    this.#containers.delete(containerId);
  }
}
