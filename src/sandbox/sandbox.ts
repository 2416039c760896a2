/**
 * Sandbox is one pod's VM seen from the host: the VM process, its agent and
 * its containers. Everything the host makes for it lives under
 * `<runRoot>/<id>/` and is gone after destroy(), also when create() fails
 * half-way.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { HullError } from '../errors/index.js';
import type { TtrpcClient } from '../ttrpc/index.js';
import { OutputStream } from '../proto/gen/agent_pb.js';
import type { VmDriver, VmHandle, VmNetSpec } from '../vmm/index.js';
import { LINK_ADDRESS, connectTap, disablePortForward, disconnectTap, enablePortForward, readPodNetwork, type PodNetwork, type PortForwardPlumbing } from '../net/index.js';
import { QemuDriver, cloneSpec, createTemplate, type TemplateRoots } from '../vmm/index.js';
import { AGENT_CALL_TIMEOUT_MS, LIMITS, checkString, connectAgent, waitForAgent, type AgentClient } from './agent-client.js';
import { bindMount, mountsUnder, unmountAllUnder, unmount } from './mounts.js';
import { pumpOutput, pumpStdin, type HostStdio } from './stdio.js';
import { readBundleSpec, guestContainerSpec, type OciProcess, type OciSpec } from './spec.js';
import { guestMounts, planVolumes, releaseVolumes, shareVolumes } from './volumes.js';

export const DEFAULT_RUN_ROOT = '/run/hull';
export const DEFAULT_VCPUS = 1;
export const DEFAULT_MEMORY_MIB = 2048;

export interface GuestAssets {
  /** id of the guest image (templates are keyed by it). */
  id?: string;
  kernel: string;
  initrd: string;
  rootDisk: string;
}

export interface SandboxOptions {
  id: string;
  image: GuestAssets;
  vcpus?: number;
  memoryMiB?: number;
  hostname?: string;
  runRoot?: string;
  driver?: VmDriver;
  accel?: 'auto' | 'kvm' | 'tcg';
  /** bootTimeoutMs bounds VM start to agent ready (default 60 s: TCG boots are slow on a busy host). */
  bootTimeoutMs?: number;
  /** netns is the pod's network namespace, already plumbed by CNI; the VM takes over its interface. */
  netns?: string;
  /**
   * templates, when given, starts the VM as a clone of a saved template of this image and size
   * (made on first use: that sandbox pays one boot) instead of booting it.
   */
  templates?: TemplateRoots;
}

export interface ContainerOptions {
  /** bundle is an OCI bundle directory (config.json, rootfs). */
  bundle: string;
  /** spec overrides the bundle's config.json. */
  spec?: OciSpec;
  /** args replaces the spec's process.args. */
  args?: string[];
  stdio: StdioRequest;
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

/** StartupPhase is one step of Sandbox.create and how long it took, in ms (for logs and benchmarks). */
export interface StartupPhase {
  name: 'network' | 'template' | 'vmm' | 'agent' | 'setup' | 'guest-network';
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
  readonly sharedDir: string;
  readonly vm: VmHandle;
  readonly agent: AgentClient;
  /** startup says where create() spent its time. */
  readonly startup: readonly StartupPhase[];
  readonly #client: TtrpcClient;
  // Containers with a rootfs mounted in the shared dir; changed by createContainer/removeContainer.
  readonly #containers = new Set<string>();
  // Aborts blocking agent calls (waits, output reads) when the sandbox is destroyed.
  readonly #lifetime = new AbortController();
  #destroyed: Promise<void> | undefined;
  // The pod network the VM took over (its tap and port-forward plumbing are removed on destroy).
  readonly #network: AttachedNetwork | undefined;

  private constructor(id: string, stateDir: string, vm: VmHandle, client: TtrpcClient, agent: AgentClient, network: AttachedNetwork | undefined, startup: StartupPhase[]) {
    this.#network = network;
    this.startup = startup;
    this.id = id;
    this.stateDir = stateDir;
    this.sharedDir = join(stateDir, 'shared');
    this.vm = vm;
    this.#client = client;
    this.agent = agent;
  }

  /** create boots the VM and prepares the guest; on failure nothing is left behind. */
  static async create(options: SandboxOptions): Promise<Sandbox> {
    // The id names a directory: check it before anything is made (containerd's identifier rules).
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,75}$/.test(options.id)) throw new HullError('invalid_argument', `Invalid sandbox id "${options.id}"`);
    const runRoot = options.runRoot ?? DEFAULT_RUN_ROOT;
    const stateDir = join(runRoot, options.id);
    const vcpus = options.vcpus ?? DEFAULT_VCPUS;
    const memoryMiB = options.memoryMiB ?? DEFAULT_MEMORY_MIB;
    if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 255) throw new HullError('invalid_argument', `Invalid vCPU count ${vcpus}`);
    if (!Number.isInteger(memoryMiB) || memoryMiB < 128) throw new HullError('invalid_argument', `Invalid memory size ${memoryMiB} MiB: at least 128`);
    await mkdir(runRoot, { recursive: true, mode: 0o711 });
    try {
      await mkdir(stateDir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new HullError('already_exists', `Sandbox "${options.id}" already exists`);
      throw e;
    }
    let vm: VmHandle | undefined;
    let client: TtrpcClient | undefined;
    let network: AttachedNetwork | undefined;
    const startup: StartupPhase[] = [];
    let lapStart = performance.now();
    const lap = (name: StartupPhase['name']): void => {
      const now = performance.now();
      startup.push({ name, ms: Math.round(now - lapStart) });
      lapStart = now;
    };
    try {
      await mkdir(join(stateDir, 'shared'), { mode: 0o700 });
      let net: VmNetSpec | undefined;
      if (options.netns) {
        const pod = await readPodNetwork(options.netns);
        const tapName = await connectTap(options.netns, pod.iface.name, pod.iface.mtu);
        network = { pod };
        network.portForward = await enablePortForward(pod);
        net = { tapName, mac: pod.iface.mac, netns: options.netns };
        lap('network');
      }
      const driver = options.driver ?? new QemuDriver();
      const bootTimeoutMs = options.bootTimeoutMs ?? 60_000;
      const deadline = Date.now() + bootTimeoutMs;
      const { image } = options;
      const template = options.templates && image.id
        ? await createTemplate({ ...options.templates, image: { ...image, id: image.id }, vcpus, memoryMiB, accel: options.accel ?? 'auto', bootTimeoutMs })
        : undefined;
      if (template) lap('template');
      const target = { id: options.id, stateDir, sharedDir: join(stateDir, 'shared'), net, startTimeoutMs: bootTimeoutMs };
      vm = await driver.start(
        template
          ? cloneSpec(template, target)
          : { ...target, vcpus, memoryMiB, kernel: image.kernel, initrd: image.initrd, rootDisk: image.rootDisk, accel: options.accel ?? 'auto' },
      );
      lap('vmm');
      const connection = await connectAgent(vm.agentSocketPath);
      client = connection.client;
      const bootedVm = vm;
      try {
        await waitForAgent(connection.agent, deadline, vm.agentPortOpened, vm.exited);
      } catch (e) {
        const tail = bootedVm.consoleTail(4096).trim();
        throw new HullError((e as HullError).code ?? 'unavailable', `Sandbox "${options.id}" failed to boot: ${(e as Error).message}${tail ? `\n--- console tail ---\n${tail}` : ''}`, { cause: e });
      }
      lap('agent');
      await connection.agent.setupSandbox(
        {
          sandboxId: options.id,
          hostname: options.hostname ?? '',
          entropy: randomBytes(64),
          timeUnixNano: BigInt(Date.now()) * 1_000_000n,
          shareTag: 'hull',
        },
        { timeoutMs: AGENT_CALL_TIMEOUT_MS },
      );
      lap('setup');
      if (network) {
        await connection.agent.setupNetwork(guestNetwork(network), { timeoutMs: AGENT_CALL_TIMEOUT_MS });
        lap('guest-network');
      }
      return new Sandbox(options.id, stateDir, vm, connection.client, connection.agent, network, startup);
    } catch (e) {
      client?.close();
      await vm?.shutdown({ deadlineMs: 2000 }).catch(() => {});
      if (network) await detachNetwork(network);
      await removeStateDir(stateDir);
      throw e;
    }
  }

  async guestDetails(): Promise<GuestDetails> {
    const d = await this.agent.guestDetails({}, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
    return { kernelRelease: checkString('kernel release', d.kernelRelease), onlineCpus: d.onlineCpus, memTotalBytes: d.memTotalBytes };
  }

  /** createContainer shares the bundle's rootfs with the guest and creates (not starts) the container. */
  async createContainer(containerId: string, options: ContainerOptions): Promise<void> {
    const spec = options.spec ?? (await readBundleSpec(options.bundle));
    // Volumes are checked before anything is made: a bad source leaves nothing behind.
    const volumes = await planVolumes(containerId, spec.mounts ?? [], this.stateDir);
    const guestSpec = guestContainerSpec(spec, options.args, guestMounts(volumes));
    const containerDir = join(this.sharedDir, containerId);
    const rootfsTarget = join(containerDir, 'rootfs');
    const rootfsSource = spec.root?.path?.startsWith('/') ? spec.root.path : join(options.bundle, spec.root?.path ?? 'rootfs');
    try {
      await mkdir(containerDir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new HullError('already_exists', `Container "${containerId}" already exists`);
      throw e;
    }
    this.#containers.add(containerId);
    try {
      await mkdir(rootfsTarget);
      await bindMount(rootfsSource, rootfsTarget).catch((e: Error) => {
        throw new HullError('invalid_argument', `Cannot share rootfs "${rootfsSource}": ${e.message}`);
      });
      await shareVolumes(containerDir, volumes);
      await this.agent.createContainer(
        { containerId, specJson: Buffer.from(JSON.stringify(guestSpec)), rootfs: `${containerId}/rootfs`, stdio: options.stdio },
        { timeoutMs: AGENT_CALL_TIMEOUT_MS },
      );
    } catch (e) {
      await this.#releaseContainerDir(containerId);
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

  async closeStdin(containerId: string, execId = ''): Promise<void> {
    await this.agent.closeStdin({ containerId, execId }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
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

  /** removeContainer kills what still runs in it and releases its rootfs. */
  async removeContainer(containerId: string): Promise<void> {
    await this.agent.removeContainer({ containerId }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
    await this.#releaseContainerDir(containerId);
  }

  /** destroy ends the VM and removes everything the host made for it. Idempotent. */
  destroy(): Promise<void> {
    this.#destroyed ??= this.#destroy();
    return this.#destroyed;
  }

  async #destroy(): Promise<void> {
    await this.agent.destroySandbox({}, { timeoutMs: 5000 }).catch(() => {});
    this.#lifetime.abort(new HullError('cancelled', `Sandbox "${this.id}" was destroyed`));
    this.#client.close();
    await this.vm.shutdown({ deadlineMs: 3000 });
    if (this.#network) await detachNetwork(this.#network);
    await removeStateDir(this.stateDir);
  }

  async #releaseContainerDir(containerId: string): Promise<void> {
    const containerDir = join(this.sharedDir, containerId);
    // The volumes a container shares are the mounts under its volumes/ folder (volumes.ts).
    await releaseVolumes(containerDir);
    await unmount(join(containerDir, 'rootfs')).catch(() => {});
    await rmdir(join(containerDir, 'rootfs')).catch(() => {});
    await rmdir(containerDir).catch(() => {});
    this.#containers.delete(containerId);
  }
}

/**
 * removeStateDir unmounts what is left under a sandbox's directory and removes
 * it. It refuses to delete while anything is still mounted there: a recursive
 * delete through a bind mount would destroy the host directory behind it.
 */
export async function removeStateDir(stateDir: string): Promise<void> {
  await unmountAllUnder(stateDir).catch(() => {});
  const left = await mountsUnder(stateDir);
  if (left.length > 0) throw new HullError('internal', `Cannot remove ${stateDir}: still mounted: ${left.join(', ')}`);
  await rm(stateDir, { recursive: true, force: true });
}

interface AttachedNetwork {
  pod: PodNetwork;
  portForward?: PortForwardPlumbing;
}

async function detachNetwork(network: AttachedNetwork): Promise<void> {
  if (network.portForward) await disablePortForward(network.pod, network.portForward);
  await disconnectTap(network.pod.netns, network.pod.iface.name);
}

/** guestNetwork is the SetupNetwork request giving the guest the pod's interface and routes. */
function guestNetwork(network: AttachedNetwork) {
  const { mac, mtu, addresses } = network.pod.iface;
  const routes = network.pod.routes.map((r) => ({ destination: r.destination, gateway: r.gateway ?? '', mac, family: r.family }));
  const neighbors = [];
  if (network.portForward) {
    // Port-forwarded connections come from the netns's link-local address, behind the tap.
    routes.push({ destination: `${LINK_ADDRESS}/32`, gateway: '', mac, family: 4 });
    neighbors.push({ ip: LINK_ADDRESS, lladdr: network.portForward.tapMac, mac });
  }
  return { interfaces: [{ mac, mtu, addresses: addresses.map((a) => a.cidr) }], routes, neighbors };
}
