/**
 * TaskService implements containerd's Task API (containerd.task.v2.Task) for
 * one pod: the first container created (the CRI sandbox, or a container run
 * alone by ctr) boots the pod's VM; the others join it. Processes are the
 * agent's; this side keeps what containerd asks about (status, exit, stdio).
 * Every task's pid is the VMM's, as Kata does: CRI builds the namespace
 * paths of the pod's containers from it.
 *
 * A CRI pod's sandbox container (pause) runs nothing in the guest: the VM is
 * what holds the pod's namespaces, so its task is the VM itself (see
 * pod-holder.ts). Containers run alone (ctr) run in the guest as any other.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { create } from '@bufbuild/protobuf';
import { HullError, isDeadlineExceeded, isUnavailable } from '../errors/index.js';
import { loadConfig, type HullConfig } from '../config/index.js';
import { currentGuestImage } from '../guest/index.js';
import type { Task } from '../proto/gen/task_pb.js';
import { Status } from '../proto/gen/task_status_pb.js';
import * as ev from '../proto/gen/events_pb.js';
import { StatsContainerResponseSchema } from '../proto/gen/agent_pb.js';
import type { ServiceImpl } from '../proto/rpc.js';
import { Sandbox, parseSpec, type OciProcess, type OciSpec } from '../sandbox/index.js';
import type { EventPublisher } from './events.js';
import { openFifos } from './fifo-io.js';
import { METRICS_TYPE_URL, metricsV1 } from './metrics.js';
import { mountRootfs, type RootfsMount } from './rootfs.js';
import { podVmSize } from './sizing.js';
import { checkPodNamespaces, holderExit, isPodHolder } from './pod-holder.js';
import { KILLED_STATUS, KILL_EXIT_DEADLINE_MS, SIGKILL, SIGNAL_CALL_TIMEOUT_MS, bounded } from './process-end.js';
import { runtimeConfigPath } from './runtime-options.js';
import { newProcess, stdioFlags, type ContainerRecord, type ProcessRecord } from './task-records.js';
import { unmountQuietly, writeCleanupRecord } from './cleanup.js';

export const SHIM_VERSION = 'hull 0.1.0';
const PROCESS_SPEC_TYPE = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
/**
 * GUEST_REMOVE_TIMEOUT_MS bounds how long Delete waits for the guest to remove a container. The guest
 * may never answer (a killed process whose exit was forced); what the host shared for the container
 * goes with the sandbox then. containerd deletes the task while handling its exit event, which it
 * gives up (and retries) after 10 s: stay well under that.
 */
const GUEST_REMOVE_TIMEOUT_MS = 5_000;

type TaskImpl = ServiceImpl<(typeof Task)['method']>;

export interface TaskServiceOptions {
  config: HullConfig;
  events: EventPublisher;
  log: (line: string) => void;
  /** onIdle runs once Shutdown finds no container left. */
  onIdle: () => void;
}

export class TaskService implements TaskImpl {
  // config may be replaced by the pod's ConfigPath at the first Create.
  readonly #options: TaskServiceOptions;
  // container id -> container; changed by create() and delete().
  readonly #containers = new Map<string, ContainerRecord>();
  #sandbox: Sandbox | undefined;
  // The destroy of the sandbox, once begun: the shim must not exit before it has finished.
  #destroying: Promise<void> | undefined;
  // The container that booted the VM; deleting it ends the VM.
  #sandboxContainerId: string | undefined;

  constructor(options: TaskServiceOptions) {
    this.#options = options;
  }

  get vmPid(): number {
    return this.#sandbox?.vm.pid ?? 0;
  }

  async create(req: { id: string; bundle: string; rootfs: RootfsMount[]; terminal: boolean; stdin: string; stdout: string; stderr: string; options?: { typeUrl: string; value: Uint8Array } }) {
    if (this.#containers.has(req.id)) throw new HullError('already_exists', `Task "${req.id}" already exists`);
    const specPath = join(req.bundle, 'config.json');
    const spec = parseSpec(await readFile(specPath, 'utf8').catch((e: Error) => {
      throw new HullError('invalid_argument', `Cannot read OCI spec "${specPath}": ${e.message}`);
    }), specPath);
    const isSandbox = !this.#sandbox;
    const holder = isSandbox && isPodHolder(spec);
    if (isSandbox) {
      checkPodNamespaces(spec);
      const configPath = runtimeConfigPath(req.options);
      if (configPath) this.#options.config = await loadConfig(configPath);
    }
    const rootfsTarget = join(req.bundle, 'rootfs');
    const record: ContainerRecord = {
      id: req.id,
      bundle: req.bundle,
      rootfsMounted: false,
      holder,
      init: newProcess({
        execId: '',
        paths: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr },
        terminal: req.terminal,
        onEnd: (proc, status, forced) => this.#endProcess(record, proc, status, forced),
      }),
      execs: new Map(),
    };
    // Written before anything is made: after a crash, `shim delete` replays the ledger it points to.
    await writeCleanupRecord(req.bundle, {
      stateDir: isSandbox ? join(this.#options.config.runRoot, req.id) : this.#sandbox!.stateDir,
      containerId: req.id,
      endsSandbox: isSandbox,
    });
    try {
      record.init.io = await openFifos(record.init.paths);
      if (req.rootfs.length > 0 && !holder) {
        await mkdir(rootfsTarget, { recursive: true });
        await mountRootfs(req.rootfs, rootfsTarget);
        record.rootfsMounted = true;
      }
      // Without snapshot mounts the client prepared the rootfs itself (e.g. ctr run --rootfs).
      const rootfsPath = record.rootfsMounted ? rootfsTarget : resolve(req.bundle, spec.root?.path ?? 'rootfs');
      if (isSandbox) await this.#bootSandbox(req.id, spec);
      if (!holder) {
        await this.#sandbox!.createContainer(req.id, {
          bundle: req.bundle,
          spec: { ...spec, root: { ...spec.root, path: rootfsPath } },
          stdio: stdioFlags(record.init.paths, req.terminal),
        });
      }
    } catch (e) {
      await record.init.io?.close();
      if (record.rootfsMounted) await unmountQuietly(rootfsTarget);
      if (isSandbox) await this.#destroySandbox();
      throw e;
    }
    this.#containers.set(req.id, record);
    const pid = this.vmPid;
    this.#options.events.publish('/tasks/create', ev.TaskCreateSchema, {
      containerId: req.id,
      bundle: req.bundle,
      rootfs: req.rootfs,
      io: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal },
      pid,
    });
    return { pid };
  }

  async #bootSandbox(id: string, spec: OciSpec): Promise<void> {
    const { config } = this.#options;
    const image = await currentGuestImage(config.guestImagesDir);
    if (!image) throw new HullError('failed_precondition', `No hull guest image in ${config.guestImagesDir}: run "hull image build"`);
    const size = podVmSize(spec, { vcpus: config.defaultVcpus, memoryMiB: config.defaultMemoryMiB });
    this.#sandbox = await Sandbox.create({
      id,
      image,
      ...size,
      hostname: typeof spec.hostname === 'string' ? spec.hostname : undefined,
      runRoot: config.runRoot,
      accel: config.accel,
      bootTimeoutMs: config.bootTimeoutMs,
      // CRI's pod netns, plumbed by CNI before Create; a container run alone (ctr) has none.
      netns: spec.linux?.namespaces?.find((ns) => ns.type === 'network' && ns.path)?.path,
      templates: config.templates ? { templatesRoot: config.templatesDir, ramRoot: config.templateRamDir, maxCount: config.templateMaxCount, maxRamMiB: config.templateMaxRamMiB, log: this.#options.log } : undefined,
      // No volume may lie in or contain one of hull's own directories.
      protectedRoots: [config.guestImagesDir, config.templatesDir, config.templateRamDir],
      log: this.#options.log,
    });
    this.#sandboxContainerId = id;
    const phases = this.#sandbox.startup.map((p) => `${p.name} ${p.ms}`).join(', ');
    this.#options.log(`sandbox ${id} booted: ${size.vcpus} vCPU, ${size.memoryMiB} MiB, VMM pid ${this.#sandbox.vm.pid} (ms: ${phases})`);
  }

  async start(req: { id: string; execId: string }) {
    const container = this.#container(req.id);
    const proc = this.#process(container, req.execId);
    if (proc.status !== Status.CREATED) throw new HullError('failed_precondition', `Process "${req.execId || req.id}" was already started`);
    const sandbox = this.#requireSandbox();
    if (container.holder) return this.#startHolder(container, sandbox);
    try {
      proc.guestPid = req.execId
        ? await sandbox.exec(req.id, req.execId, proc.spec ?? {}, stdioFlags(proc.paths, proc.terminal))
        : await sandbox.startContainer(req.id);
    } catch (e) {
      await proc.io?.close();
      throw e;
    }
    proc.status = Status.RUNNING;
    const pid = this.vmPid;
    if (req.execId) this.#options.events.publish('/tasks/exec-started', ev.TaskExecStartedSchema, { containerId: req.id, execId: req.execId, pid });
    else this.#options.events.publish('/tasks/start', ev.TaskStartSchema, { containerId: req.id, pid });
    void this.#monitor(container, proc);
    return { pid };
  }

  // The holder "runs" while the VM does: it ends by a kill (holderExit) or when the VM exits.
  #startHolder(container: ContainerRecord, sandbox: Sandbox) {
    container.init.status = Status.RUNNING;
    const pid = this.vmPid;
    this.#options.events.publish('/tasks/start', ev.TaskStartSchema, { containerId: container.id, pid });
    void sandbox.vm.exited.then(() => container.init.ending.end(255));
    return { pid };
  }

  // monitor carries the process's stdio and records its exit once its output has drained.
  async #monitor(container: ContainerRecord, proc: ProcessRecord): Promise<void> {
    const sandbox = this.#requireSandbox();
    const io = proc.io!;
    const output = sandbox.attach(container.id, proc.execId, io).catch((e: Error) => this.#options.log(`stdio of ${container.id}/${proc.execId}: ${e.message}`));
    // A SIGKILLed process whose guest went away before reporting it was killed, as far as anyone can tell.
    let status = 255;
    let oom = false;
    try {
      const [exit] = await Promise.all([sandbox.wait(container.id, proc.execId), output]);
      status = exit.exitStatus;
      oom = exit.oomKilled;
    } catch (e) {
      if (proc.ending.killed) status = KILLED_STATUS;
      this.#options.log(`wait for ${container.id}/${proc.execId}: ${(e as Error).message}`);
    }
    if (oom && !proc.ending.ended) this.#options.events.publish('/tasks/oom', ev.TaskOOMSchema, { containerId: container.id });
    await proc.ending.end(status);
  }

  /**
   * endProcess records a process's exit and tells containerd: the one exit path, run once per process
   * by its ProcessEnd (the guest's report, the VM's end, a holder's kill, or the deadline after SIGKILL).
   */
  async #endProcess(container: ContainerRecord, proc: ProcessRecord, status: number, forced: boolean): Promise<void> {
    if (proc.status === Status.STOPPED) return;
    if (forced) {
      this.#options.log(`${container.id}/${proc.execId}: the guest did not report the exit within ${KILL_EXIT_DEADLINE_MS} ms of SIGKILL: recorded as killed`);
    }
    proc.status = Status.STOPPED;
    proc.exit = { status, at: new Date() };
    await proc.io?.close();
    this.#options.events.publish('/tasks/exit', ev.TaskExitSchema, {
      containerId: container.id,
      id: proc.execId || container.id,
      pid: this.vmPid,
      exitStatus: status,
      exitedAt: timestampFromDate(proc.exit.at),
    });
    proc.markExited();
  }

  async delete(req: { id: string; execId: string }) {
    const container = this.#container(req.id);
    const proc = this.#process(container, req.execId);
    if (proc.status === Status.RUNNING || proc.status === Status.PAUSED) {
      throw new HullError('failed_precondition', `Process "${req.execId || req.id}" is running: kill it first`);
    }
    await proc.io?.close(); // a process that never started still holds its FIFOs
    proc.ending.dispose();
    const pid = this.vmPid;
    const exitStatus = proc.exit?.status ?? 0;
    const exitedAt = timestampFromDate(proc.exit?.at ?? new Date());
    if (req.execId) {
      container.execs.delete(req.execId);
      return { pid, exitStatus, exitedAt };
    }
    const endsSandbox = req.id === this.#sandboxContainerId;
    // The VM ends with the container that booted it: tidying the guest first would only delay that
    // (destroy unmounts what the host shared with it).
    if (!endsSandbox && this.#sandbox) {
      await bounded(this.#sandbox.removeContainer(req.id), GUEST_REMOVE_TIMEOUT_MS, `Removing ${req.id} in the guest`).catch((e: Error) =>
        this.#options.log(`remove ${req.id} in guest: ${e.message}`),
      );
    }
    if (container.rootfsMounted) await unmountQuietly(join(container.bundle, 'rootfs'));
    this.#containers.delete(req.id);
    this.#options.events.publish('/tasks/delete', ev.TaskDeleteSchema, { containerId: req.id, pid, exitStatus, exitedAt, id: req.id });
    if (endsSandbox) await this.#destroySandbox();
    return { pid, exitStatus, exitedAt };
  }

  async exec(req: { id: string; execId: string; terminal: boolean; stdin: string; stdout: string; stderr: string; spec?: { typeUrl: string; value: Uint8Array } }) {
    const container = this.#container(req.id);
    if (!req.execId) throw new HullError('invalid_argument', 'Exec needs an exec id');
    if (container.execs.has(req.execId)) throw new HullError('already_exists', `Exec "${req.execId}" already exists in task "${req.id}"`);
    if (container.init.status !== Status.RUNNING) throw new HullError('failed_precondition', `Task "${req.id}" is not running`);
    if (container.holder) throw new HullError('failed_precondition', `Task "${req.id}" is a hull pod's sandbox: the pod VM has no process of it to exec in`);
    if (req.spec && req.spec.typeUrl !== PROCESS_SPEC_TYPE && !req.spec.typeUrl.endsWith('/Process')) {
      throw new HullError('invalid_argument', `Exec spec of type "${req.spec.typeUrl}" is not an OCI Process`);
    }
    let spec: OciProcess;
    try {
      spec = JSON.parse(Buffer.from(req.spec?.value ?? new Uint8Array()).toString('utf8')) as OciProcess;
    } catch (e) {
      throw new HullError('invalid_argument', `Malformed exec process spec: ${(e as Error).message}`);
    }
    const proc = newProcess({
      execId: req.execId,
      paths: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr },
      terminal: req.terminal,
      spec,
      onEnd: (p, status, forced) => this.#endProcess(container, p, status, forced),
    });
    proc.io = await openFifos(proc.paths);
    container.execs.set(req.execId, proc);
    this.#options.events.publish('/tasks/exec-added', ev.TaskExecAddedSchema, { containerId: req.id, execId: req.execId });
    return {};
  }

  async resizePty(req: { id: string; execId: string; width: number; height: number }) {
    const container = this.#container(req.id);
    const proc = this.#process(container, req.execId);
    if (proc.status !== Status.RUNNING || container.holder) return {};
    await this.#requireSandbox().resize(req.id, req.execId, req.height, req.width);
    return {};
  }

  async state(req: { id: string; execId: string }) {
    const container = this.#container(req.id);
    const proc = this.#process(container, req.execId);
    return {
      id: req.execId || req.id,
      bundle: container.bundle,
      pid: this.vmPid,
      status: proc.status,
      stdin: proc.paths.stdin,
      stdout: proc.paths.stdout,
      stderr: proc.paths.stderr,
      terminal: proc.terminal,
      exitStatus: proc.exit?.status ?? 0,
      exitedAt: proc.exit ? timestampFromDate(proc.exit.at) : undefined,
      execId: req.execId,
    };
  }

  async pids(req: { id: string }) {
    if (this.#container(req.id).holder) return { processes: [] };
    const processes = await this.#requireSandbox().processes(req.id);
    return {
      processes: processes.map((p) => ({
        pid: p.pid,
        info: p.execId ? { typeUrl: 'containerd.runc.v1.ProcessDetails', value: new BinaryWriter().uint32((1 << 3) | 2).string(p.execId).finish() } : undefined,
      })),
    };
  }

  async pause(req: { id: string }) {
    const container = this.#container(req.id);
    if (!container.holder) await this.#requireSandbox().pauseContainer(req.id);
    container.init.status = Status.PAUSED;
    this.#options.events.publish('/tasks/paused', ev.TaskPausedSchema, { containerId: req.id });
    return {};
  }

  async resume(req: { id: string }) {
    const container = this.#container(req.id);
    if (!container.holder) await this.#requireSandbox().resumeContainer(req.id);
    container.init.status = Status.RUNNING;
    this.#options.events.publish('/tasks/resumed', ev.TaskResumedSchema, { containerId: req.id });
    return {};
  }

  async checkpoint(): Promise<never> {
    throw new HullError('unimplemented', 'hull does not checkpoint tasks');
  }

  async kill(req: { id: string; execId: string; signal: number; all: boolean }) {
    const container = this.#container(req.id);
    const proc = this.#process(container, req.execId);
    if (proc.status === Status.STOPPED || (proc.status === Status.CREATED && req.execId)) {
      throw new HullError('not_found', 'process already finished');
    }
    if (proc.status === Status.CREATED) {
      // Never started: there is nothing in the guest to signal; it just ends.
      proc.status = Status.STOPPED;
      proc.exit = { status: 128 + req.signal, at: new Date() };
      proc.markExited();
      return {};
    }
    if (container.holder) {
      const status = holderExit(req.signal);
      if (status !== undefined) await proc.ending.end(status);
      return {};
    }
    const sandbox = this.#requireSandbox();
    const name = req.execId ? `${req.id}/${req.execId}` : req.id;
    // Armed before the call: the guest may answer neither it nor with the exit.
    if (req.signal === SIGKILL) for (const killed of this.#killedBy(container, proc, req.all)) killed.ending.armKillDeadline();
    try {
      await bounded(sandbox.signal(req.id, req.execId, req.signal, req.all), SIGNAL_CALL_TIMEOUT_MS, `Signal ${req.signal} to ${name} in the guest`);
    } catch (e) {
      // A Kill that fails because the guest did not answer fails StopContainer and StopPodSandbox, which
      // kubelet retries for ever. After SIGKILL the deadline ends the process whatever the guest says;
      // another signal it did not confirm is one the process ignored (callers escalate to SIGKILL).
      if (req.signal !== SIGKILL && !isDeadlineExceeded(e) && !isUnavailable(e)) throw e;
      this.#options.log(`signal ${req.signal} to ${name}: ${(e as Error).message}`);
    }
    return {};
  }

  /** killedBy lists the processes a SIGKILL ends: with `all` on the init, its container's too. */
  #killedBy(container: ContainerRecord, proc: ProcessRecord, all: boolean): ProcessRecord[] {
    const procs = all && proc === container.init ? [container.init, ...container.execs.values()] : [proc];
    return procs.filter((p) => p.status === Status.RUNNING || p.status === Status.PAUSED);
  }

  async closeIO(req: { id: string; execId: string; stdin: boolean }) {
    const container = this.#container(req.id);
    const proc = this.#process(container, req.execId);
    if (req.stdin && proc.status === Status.RUNNING && !container.holder) {
      proc.io?.stdin?.destroy();
      await this.#requireSandbox().closeStdin(req.id, req.execId).catch(() => {});
    }
    return {};
  }

  async update(req: { id: string; resources?: { typeUrl: string; value: Uint8Array } }) {
    // The holder has no cgroup of its own in the guest; the pod's limits sized the VM.
    if (this.#container(req.id).holder) return {};
    let resources: Record<string, unknown>;
    try {
      resources = JSON.parse(Buffer.from(req.resources?.value ?? new Uint8Array()).toString('utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new HullError('invalid_argument', `Malformed resources: ${(e as Error).message}`);
    }
    await this.#requireSandbox().update(req.id, resources);
    return {};
  }

  async wait(req: { id: string; execId: string }) {
    const proc = this.#process(this.#container(req.id), req.execId);
    await proc.exited;
    return { exitStatus: proc.exit?.status ?? 0, exitedAt: timestampFromDate(proc.exit?.at ?? new Date()) };
  }

  async stats(req: { id: string }) {
    const stats = this.#container(req.id).holder ? create(StatsContainerResponseSchema) : await this.#requireSandbox().stats(req.id);
    return { stats: { typeUrl: METRICS_TYPE_URL, value: metricsV1(stats) } };
  }

  async connect(req: { id: string }) {
    return { shimPid: process.pid, taskPid: this.#containers.has(req.id) ? this.vmPid : 0, version: SHIM_VERSION };
  }

  async shutdown() {
    if (this.#containers.size === 0) setImmediate(this.#options.onIdle);
    return {};
  }

  /** destroyAll ends everything (the shim is going away). */
  async destroyAll(): Promise<void> {
    for (const container of this.#containers.values()) {
      if (container.rootfsMounted) await unmountQuietly(join(container.bundle, 'rootfs'));
    }
    this.#containers.clear();
    await this.#destroySandbox();
  }

  async #destroySandbox(): Promise<void> {
    const sandbox = this.#sandbox;
    this.#sandbox = undefined;
    this.#sandboxContainerId = undefined;
    // A Delete that containerd gave up waiting for is followed by Shutdown: wait for the same destroy.
    if (sandbox) this.#destroying = sandbox.destroy().catch((e: Error) => this.#options.log(`destroy sandbox: ${e.message}`));
    await this.#destroying;
  }

  #requireSandbox(): Sandbox {
    if (!this.#sandbox) throw new HullError('failed_precondition', 'The pod VM is not running');
    return this.#sandbox;
  }

  #container(id: string): ContainerRecord {
    const container = this.#containers.get(id);
    if (!container) throw new HullError('not_found', `Task "${id}" not found`);
    return container;
  }

  #process(container: ContainerRecord, execId: string): ProcessRecord {
    if (!execId) return container.init;
    const proc = container.execs.get(execId);
    if (!proc) throw new HullError('not_found', `Exec "${execId}" not found in task "${container.id}"`);
    return proc;
  }
}
