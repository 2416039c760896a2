/**
 * AgentService implements the hull agent API (src/proto/agent.proto) on top
 * of the guest's containers.
 */
import { run } from '../common/run.js';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { cpus, release } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Agent } from '../proto/gen/agent_pb.js';
import { OutputStream, type Stdio } from '../proto/gen/agent_pb.js';
import type { ServiceImpl } from '../proto/rpc.js';
import { HullError } from '../errors/index.js';
import { containerCgroup, readCgroupStats } from './cgroup.js';
import { GuestConsole } from './console.js';
import { Container } from './container.js';
import { agentRandomBytes, seedRandomness } from './entropy.js';
import { GUEST_SHARED_DIR } from '../common/names.js';
import type { OciProcess, OciSpec } from '../common/oci.js';
import { guestStats } from './guest-stats.js';
import { parseJson } from './guest-spec.js';
import type { GuestProcess, StdioRequest } from './process.js';
import { runInOrder } from './shell.js';
import { setupNetwork, type GuestInterface, type GuestNeighbor, type GuestRoute } from './network.js';

export const AGENT_VERSION = '0.1.0';
/** AGENT_INSTANCE names this agent process to the host: one the guest's init restarts has another. */
const AGENT_INSTANCE = randomBytes(16);

// RandomBytes is a check, not a source of randomness for the host.
const MAX_RANDOM_BYTES_ASKED = 64;

// ReadOutput never returns more than this, whatever the host asks (frames are 4 MiB at most).
const MAX_READ_BYTES = 1 << 20;

type AgentImpl = ServiceImpl<(typeof Agent)['method']>;

export class AgentService implements AgentImpl {
  // container id -> container; changed only by createContainer/removeContainer.
  readonly #containers = new Map<string, Container>();
  // Console processes: the requests whose container id is empty.
  readonly #console = new GuestConsole();
  // The share's mount, once begun (SetupSandbox may come twice).
  #shareMount: Promise<void> | undefined;

  async check() {
    return { agentVersion: AGENT_VERSION, instance: AGENT_INSTANCE };
  }

  async guestDetails() {
    return {
      kernelRelease: release(),
      onlineCpus: cpus().length,
      memTotalBytes: await memTotalBytes(),
      agentVersion: AGENT_VERSION,
    };
  }

  async setupSandbox(req: { sandboxId: string; hostname: string; entropy: Uint8Array; timeUnixNano: bigint; shareTag: string; resolvConf: string; debugConsole: boolean }) {
    // Entropy and the clock first: nothing else may run with a stale RNG or time. In a clone of a
    // VM template both RNGs (the kernel's, the agent's) are the template's until reseeded here.
    seedRandomness(req.entropy);
    if (req.hostname && !/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(req.hostname)) throw new HullError('invalid_argument', `Invalid hostname "${req.hostname}"`);
    const clock = req.timeUnixNano > 0n ? [['/bin/date', '-u', '-s', `@${req.timeUnixNano / 1_000_000_000n}`]] : [];
    if (req.shareTag !== '' && this.#shareMount === undefined) {
      mkdirSync(GUEST_SHARED_DIR, { recursive: true });
      // The clock and the share's mount in one shell (two spawns from node cost twice as much under
      // TCG). cache=mmap is 9p's mode that allows shared writable mmap (cache=none refuses it); reads
      // stay uncached, so host updates (configMaps) show at once.
      const mount = ['/bin/mount', '-t', '9p', '-o', 'trans=virtio,version=9p2000.L,msize=524288,cache=mmap,access=client', req.shareTag, GUEST_SHARED_DIR];
      this.#shareMount = runInOrder([...clock, mount]);
      this.#shareMount.catch(() => (this.#shareMount = undefined));
      await this.#shareMount;
    } else {
      await runInOrder(clock);
      // The host sends SetupSandbox again when its answer was lost: that one waits for the first's mount.
      await this.#shareMount;
    }
    if (req.hostname) writeFileSync('/proc/sys/kernel/hostname', req.hostname);
    if (req.resolvConf) await writeFile('/etc/resolv.conf', req.resolvConf).catch(() => {});
    if (req.debugConsole) this.#console.enable();
    return {};
  }

  async randomBytes(req: { size: number }) {
    if (req.size > MAX_RANDOM_BYTES_ASKED) throw new HullError('invalid_argument', `RandomBytes serves at most ${MAX_RANDOM_BYTES_ASKED} bytes, not ${req.size}`);
    return { data: agentRandomBytes(req.size) };
  }

  async setupNetwork(req: { interfaces: GuestInterface[]; routes: GuestRoute[]; neighbors: GuestNeighbor[] }) {
    await setupNetwork(req.interfaces, req.routes, req.neighbors);
    return {};
  }

  async destroySandbox() {
    // The VM stops next: end the containers' processes and flush what they wrote through the share;
    // crun's state and the bundles go with the VM.
    await Promise.allSettled([...this.#containers.values()].map((c) => c.kill()));
    await this.#console.removeAll();
    this.#containers.clear();
    await run('/bin/sync', []).catch(() => {});
    return {};
  }

  async createContainer(req: { containerId: string; specJson: Uint8Array; rootfs: string; stdio?: Stdio }) {
    if (this.#containers.has(req.containerId)) throw new HullError('already_exists', `Container "${req.containerId}" already exists`);
    const spec = parseJson<OciSpec>(`spec of container "${req.containerId}"`, req.specJson);
    const container = await Container.create(req.containerId, spec, req.rootfs, stdioRequest(req.stdio));
    this.#containers.set(req.containerId, container);
    return {};
  }

  async startContainer(req: { containerId: string }) {
    return { pid: await this.#container(req.containerId).start() };
  }

  async removeContainer(req: { containerId: string }) {
    const container = this.#container(req.containerId);
    this.#containers.delete(req.containerId);
    await container.remove();
    return {};
  }

  async execProcess(req: { containerId: string; execId: string; processJson: Uint8Array; stdio?: Stdio }) {
    const processSpec = parseJson<OciProcess>(`process of exec "${req.execId}"`, req.processJson);
    if (req.containerId === '') return { pid: await this.#console.start(req.execId, processSpec, stdioRequest(req.stdio)) };
    return { pid: await this.#container(req.containerId).exec(req.execId, processSpec, stdioRequest(req.stdio)) };
  }

  async removeExec(req: { containerId: string; execId: string }) {
    if (req.containerId === '') await this.#console.remove(req.execId);
    else await this.#container(req.containerId).removeExec(req.execId);
    return {};
  }

  async signalProcess(req: { containerId: string; execId: string; signal: number; all: boolean }) {
    if (req.signal < 1 || req.signal > 64) throw new HullError('invalid_argument', `Invalid signal ${req.signal}`);
    if (req.containerId === '') this.#console.process(req.execId).signal(req.signal);
    else await this.#container(req.containerId).signal(req.execId, req.signal, req.all);
    return {};
  }

  async waitProcess(req: { containerId: string; execId: string }) {
    if (req.containerId === '') {
      const exit = await this.#console.process(req.execId).exited;
      return { exitStatus: exit.exitStatus, exitedAtUnixNano: BigInt(exit.exitedAtMs) * 1_000_000n, oomKilled: false };
    }
    const container = this.#container(req.containerId);
    const exit = await container.process(req.execId).exited;
    return {
      exitStatus: exit.exitStatus,
      exitedAtUnixNano: BigInt(exit.exitedAtMs) * 1_000_000n,
      oomKilled: req.execId === '' && (await container.oomKilled()),
    };
  }

  async listProcesses(req: { containerId: string }) {
    const container = this.#container(req.containerId);
    const execIdByPid = new Map([...container.execs].map(([execId, proc]) => [proc.pid, execId]));
    const pids = await container.pids();
    const processes = await Promise.all(
      pids.map(async (pid) => ({
        pid,
        execId: execIdByPid.get(pid) ?? '',
        command: (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim(),
      })),
    );
    return { processes };
  }

  async statsContainer(req: { containerId: string }) {
    this.#container(req.containerId);
    const unlimited = { memoryBytes: await memTotalBytes() };
    return readCgroupStats(containerCgroup(req.containerId), unlimited);
  }

  async updateContainer(req: { containerId: string; resourcesJson: Uint8Array }) {
    const resources = parseJson<Record<string, unknown>>('resources', req.resourcesJson);
    await this.#container(req.containerId).update(resources);
    return {};
  }

  async pauseContainer(req: { containerId: string }) {
    await this.#container(req.containerId).pause();
    return {};
  }

  async resumeContainer(req: { containerId: string }) {
    await this.#container(req.containerId).resume();
    return {};
  }

  async writeStdin(req: { containerId: string; execId: string; data: Uint8Array }) {
    return { written: await this.#process(req.containerId, req.execId).writeStdin(req.data) };
  }

  async closeStdin(req: { containerId: string; execId: string }) {
    this.#process(req.containerId, req.execId).closeStdin();
    return {};
  }

  async readOutput(req: { containerId: string; execId: string; stream: OutputStream; maxBytes: number }, ctx: { signal: AbortSignal }) {
    const proc = this.#process(req.containerId, req.execId);
    const buffer = req.stream === OutputStream.STDERR ? proc.stderr : req.stream === OutputStream.STDOUT ? proc.stdout : undefined;
    if (!buffer) throw new HullError('invalid_argument', `Invalid output stream ${req.stream}`);
    const { data, eof } = await buffer.read(Math.min(req.maxBytes || MAX_READ_BYTES, MAX_READ_BYTES), ctx.signal);
    return { data, eof };
  }

  async resizeTerminal(req: { containerId: string; execId: string; rows: number; cols: number }) {
    if (req.rows < 1 || req.cols < 1 || req.rows > 0xffff || req.cols > 0xffff) {
      throw new HullError('invalid_argument', `Invalid terminal size ${req.rows}x${req.cols}`);
    }
    await this.#process(req.containerId, req.execId).resize(req.rows, req.cols);
    return {};
  }

  async debugState(req: { collectGarbage: boolean }) {
    if (req.collectGarbage) collectGarbage();
    const containers = await Promise.all(
      [...this.#containers.values()].map(async (c) => ({ containerId: c.id, execs: c.execs.size, bundleFiles: await c.bundleFiles() })),
    );
    const memory = process.memoryUsage();
    return {
      rssBytes: BigInt(memory.rss),
      heapUsedBytes: BigInt(memory.heapUsed),
      heapTotalBytes: BigInt(memory.heapTotal),
      externalBytes: BigInt(memory.external),
      containers,
      consoles: this.#console.count,
    };
  }

  async guestStats() {
    return guestStats();
  }

  /** #process finds an exec (or a container's init, exec id "") or, for container id "", a console process. */
  #process(containerId: string, execId: string): GuestProcess {
    return containerId === '' ? this.#console.process(execId) : this.#container(containerId).process(execId);
  }

  #container(id: string): Container {
    const container = this.#containers.get(id);
    if (!container) throw new HullError('not_found', `Container "${id}" not found`);
    return container;
  }
}

function stdioRequest(stdio: Stdio | undefined): StdioRequest {
  return {
    stdin: stdio?.stdin ?? false,
    stdout: stdio?.stdout ?? false,
    stderr: stdio?.stderr ?? false,
    terminal: stdio?.terminal ?? false,
    rows: stdio?.rows ?? 0,
    cols: stdio?.cols ?? 0,
  };
}

async function memTotalBytes(): Promise<bigint> {
  const meminfo = await readFile('/proc/meminfo', 'utf8');
  const kib = /^MemTotal:\s+(\d+) kB$/m.exec(meminfo)?.[1];
  return kib ? BigInt(kib) * 1024n : 0n;
}

let gc: (() => void) | undefined;

/** collectGarbage runs a full collection (DebugState), exposing V8's gc() on first use. */
function collectGarbage(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}
