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
 *
 * Each process walks containerd's states (process-state.ts), refusing what
 * runc's shim refuses; the requests that change a task run one at a time on
 * it (task-lock.ts); every exit goes through endProcess, once (process-end.ts).
 */
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { create } from '@bufbuild/protobuf';
import { HullError } from '../errors/index.js';
import { DEFAULT_CONFIG_PATH, loadConfig, type HullConfig } from '../config/index.js';
import type { Task } from '../proto/gen/task_pb.js';
import * as ev from '../proto/gen/events_pb.js';
import { StatsContainerResponseSchema } from '../proto/gen/agent_pb.js';
import type { ServiceImpl } from '../proto/rpc.js';
import type { CallContext } from '../ttrpc/index.js';
import { withPodSysctls, type Sandbox } from '../sandbox/index.js';
import type { Logger } from './log.js';
import { PodVm } from './pod-vm.js';
import type { EventPublisher } from './events.js';
import { openFifos } from './fifo-io.js';
import { METRICS_TYPE_URL, metricsV1 } from './metrics.js';
import { mountRootfs } from './rootfs.js';
import { checkPodNamespaces, holderExit, isPodHolder, podSysctls } from './pod-holder.js';
import { checkVmSize, sizeOfPod } from './sizing.js';
import { KILL_EXIT_DEADLINE_MS, bounded } from './process-end.js';
import { signalInGuest } from './signal.js';
import { createdKillStatus } from './process-state.js';
import { runtimeConfigPath } from './runtime-options.js';
import { TaskLocks } from './task-lock.js';
import { newContainer, newProcess, stateResponse, stdioFlags, type ContainerRecord, type ProcessRecord } from './task-records.js';
import { callerGone, parseExecSpec, parseResources, processInfo, readTaskSpec, type CloseIORequest, type CreateRequest, type ExecRequest, type IdRequest, type KillRequest, type ResizeRequest } from './task-requests.js';
import { monitorProcess } from './process-monitor.js';
import { unmountQuietly, writeCleanupRecord } from './cleanup.js';

export const SHIM_VERSION = 'hull 0.1.0';
/**
 * GUEST_REMOVE_TIMEOUT_MS bounds how long Delete waits for the guest to remove a container. The guest
 * may never answer (a killed process whose exit was forced); what the host shared for the container
 * goes with the sandbox then. containerd deletes the task while handling its exit event, which it
 * gives up (and retries) after 10 s: stay well under that.
 */
const GUEST_REMOVE_TIMEOUT_MS = 5_000;
/**
 * EXEC_REMOVE_TIMEOUT_MS bounds the RemoveExec call an exec's Delete sends. A live agent answers at
 * once; one that does not keeps the exec's few records until the VM ends. The Delete does not wait
 * for the answer (every exec probe ends with one, and the guest has nothing left to tell about an
 * exec that ended): calls on the agent's channel are handled in the order sent, so an Exec of the
 * same id that follows finds the old one gone.
 */
const EXEC_REMOVE_TIMEOUT_MS = 2_000;

type TaskImpl = ServiceImpl<(typeof Task)['method']>;

export interface TaskServiceOptions {
  config: HullConfig;
  events: EventPublisher;
  log: (line: string) => void;
  /** logger is the same log with levels and fields (the pod's labels are added at boot). */
  logger?: Logger;
  /** onIdle runs once Shutdown finds no container left. */
  onIdle: () => void;
}

export class TaskService implements TaskImpl {
  // config may be replaced by the pod's ConfigPath at the first Create.
  readonly #options: TaskServiceOptions;
  // container id -> container; changed by create() and delete().
  readonly #containers = new Map<string, ContainerRecord>();
  readonly #vm: PodVm;
  // Where the config came from: the pod's ConfigPath, $HULL_CONFIG or the default.
  #configPath = process.env['HULL_CONFIG'] || DEFAULT_CONFIG_PATH;
  readonly #locks = new TaskLocks();
  // The pod's sysctls (the sandbox spec's), given to every app container (withPodSysctls).
  #podSysctls: Record<string, string> = {};

  // The requests that change a task, one at a time per task (task-lock.ts). Pause, Resume, Update
  // and Create take the lock themselves; State, Wait, Pids and Stats only read.
  readonly start = this.#serialized(this.#start);
  readonly delete = this.#serialized(this.#delete);
  readonly exec = this.#serialized(this.#exec);
  readonly resizePty = this.#serialized(this.#resizePty);
  readonly kill = this.#serialized(this.#kill);
  readonly closeIO = this.#serialized(this.#closeIO);

  constructor(options: TaskServiceOptions) {
    this.#options = options;
    this.#vm = new PodVm(options.log, { logger: options.logger, containers: () => [...this.#containers.keys()] });
  }

  get vmPid(): number {
    return this.#vm.pid;
  }

  create(req: CreateRequest, ctx?: CallContext) {
    // Decided before the first await: of two Creates racing before the VM is up, one boots it.
    const claim = this.#vm.claim(req.id);
    if (!claim?.boot) return this.#locks.run(req.id, async () => (await claim?.wait(), this.#create(req, false, ctx)));
    return this.#locks.run(req.id, () => this.#create(req, true, ctx)).then(
      (r) => (claim.settle(), r),
      (e: Error) => {
        claim.settle(e);
        throw e;
      },
    );
  }

  async #create(req: CreateRequest, isSandbox: boolean, ctx: CallContext | undefined) {
    if (this.#containers.has(req.id)) throw new HullError('already_exists', `Task "${req.id}" already exists`);
    if (!isSandbox) this.#vm.require();
    const spec = await readTaskSpec(req.bundle);
    const holder = isSandbox && isPodHolder(spec);
    if (isSandbox) {
      checkPodNamespaces(spec);
      this.#podSysctls = podSysctls(spec);
      const configPath = runtimeConfigPath(req.options);
      if (configPath) this.#options.config = await loadConfig(configPath);
      this.#configPath = configPath ?? (process.env['HULL_CONFIG'] || DEFAULT_CONFIG_PATH);
      this.#options.logger?.setLevel(this.#options.config.logLevel);
      const { config } = this.#options;
      checkVmSize(await sizeOfPod(spec, config), { vcpus: config.maxVcpus, memoryMiB: config.maxMemoryMiB });
    }
    const rootfsTarget = join(req.bundle, 'rootfs');
    const record: ContainerRecord = newContainer(req, holder, (proc, status, forced) => this.#endProcess(record, proc, status, forced));
    // Written before anything is made: after a crash, `shim delete` replays the ledger it points to.
    await writeCleanupRecord(req.bundle, {
      stateDir: isSandbox ? join(this.#options.config.runRoot, req.id) : this.#vm.require().stateDir,
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
      const sandbox = isSandbox ? await this.#vm.boot(this.#options.config, req.id, spec, this.#configPath) : this.#vm.require();
      if (!holder) {
        await sandbox.createContainer(req.id, {
          bundle: req.bundle,
          spec: withPodSysctls({ ...spec, root: { ...spec.root, path: rootfsPath } }, this.#podSysctls),
          stdio: stdioFlags(record.init.paths, req.terminal),
        });
      }
      // containerd died while this Create ran: it never learns of the task, and nothing would ever
      // delete it (a restarted containerd finds no task and removes the pod without it). Undone.
      if (callerGone(ctx)) {
        if (!isSandbox && !holder) await sandbox.removeContainer(req.id).catch((e: Error) => this.#options.log(`remove ${req.id} in guest: ${e.message}`));
        throw new HullError('unavailable', `containerd went away before Create of "${req.id}" answered: undone`);
      }
    } catch (e) {
      await record.init.io?.close();
      if (record.rootfsMounted) await unmountQuietly(rootfsTarget);
      if (isSandbox) await this.#vm.destroy();
      // With nothing left the shim goes too, as no Shutdown will come (containerd's `shim delete` follows).
      if (callerGone(ctx) && this.#containers.size === 0) {
        this.#options.log(`${req.id}: ${(e as Error).message}`);
        setImmediate(this.#options.onIdle);
      }
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

  async #start(req: IdRequest) {
    const container = this.#container(req.id);
    const proc = this.#process(container, req.execId);
    proc.state.check('start');
    const sandbox = this.#vm.require();
    if (container.holder) return this.#startHolder(container, sandbox);
    try {
      proc.guestPid = req.execId
        ? await sandbox.exec(req.id, req.execId, proc.spec ?? {}, stdioFlags(proc.paths, proc.terminal))
        : await sandbox.startContainer(req.id);
    } catch (e) {
      await proc.io?.close();
      throw e;
    }
    proc.state.to('running');
    const pid = this.vmPid;
    if (req.execId) this.#options.events.publish('/tasks/exec-started', ev.TaskExecStartedSchema, { containerId: req.id, execId: req.execId, pid });
    else this.#options.events.publish('/tasks/start', ev.TaskStartSchema, { containerId: req.id, pid });
    const onOom = () => this.#options.events.publish('/tasks/oom', ev.TaskOOMSchema, { containerId: container.id });
    void monitorProcess(sandbox, container.id, proc, { log: this.#options.log, onOom });
    return { pid };
  }

  // The holder "runs" while the VM does: it ends by a kill (holderExit) or when the VM exits.
  #startHolder(container: ContainerRecord, sandbox: Sandbox) {
    container.init.state.to('running');
    const pid = this.vmPid;
    this.#options.events.publish('/tasks/start', ev.TaskStartSchema, { containerId: container.id, pid });
    void sandbox.vm.exited.then(() => container.init.ending.end(255));
    return { pid };
  }

  /**
   * endProcess records a process's exit and tells containerd: the one exit path, run once per process
   * by its ProcessEnd (the guest's report, the VM's end, a holder's kill, or the deadline after SIGKILL).
   */
  async #endProcess(container: ContainerRecord, proc: ProcessRecord, status: number, forced: boolean): Promise<void> {
    if (proc.state.ended) return;
    if (forced) {
      this.#options.log(`${container.id}/${proc.execId}: the guest did not report the exit within ${KILL_EXIT_DEADLINE_MS} ms of SIGKILL: recorded as killed`);
    }
    proc.state.to('stopped');
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

  async #delete(req: IdRequest) {
    const container = this.#container(req.id);
    const proc = this.#process(container, req.execId);
    proc.state.check('delete');
    const started = proc.state.state !== 'created';
    proc.state.to('deleted');
    await proc.io?.close(); // a process that never started still holds its FIFOs
    proc.ending.dispose();
    proc.markExited(); // a Wait on a process deleted before it started returns
    const pid = this.vmPid;
    const exitStatus = proc.exit?.status ?? 0;
    const exitedAt = timestampFromDate(proc.exit?.at ?? new Date());
    if (req.execId) {
      container.execs.delete(req.execId);
      // An exec that never started has nothing in the guest; one that did leaves its record there until told.
      if (started && this.#vm.sandbox) {
        void this.#vm.sandbox.removeExec(req.id, req.execId, EXEC_REMOVE_TIMEOUT_MS).catch((e: Error) => this.#options.log(`remove exec ${req.id}/${req.execId} in guest: ${e.message}`));
      }
      return { pid, exitStatus, exitedAt };
    }
    const endsSandbox = this.#vm.endsWith(req.id);
    const sandbox = this.#vm.sandbox;
    // The VM ends with the container that booted it: tidying the guest first would only delay that
    // (destroy unmounts what the host shared with it).
    if (!endsSandbox && sandbox) {
      await bounded(sandbox.removeContainer(req.id), GUEST_REMOVE_TIMEOUT_MS, `Removing ${req.id} in the guest`).catch((e: Error) =>
        this.#options.log(`remove ${req.id} in guest: ${e.message}`),
      );
    }
    if (container.rootfsMounted) await unmountQuietly(join(container.bundle, 'rootfs'));
    this.#containers.delete(req.id);
    this.#options.events.publish('/tasks/delete', ev.TaskDeleteSchema, { containerId: req.id, pid, exitStatus, exitedAt, id: req.id });
    if (endsSandbox) await this.#vm.destroy();
    return { pid, exitStatus, exitedAt };
  }

  async #exec(req: ExecRequest) {
    const container = this.#container(req.id);
    if (!req.execId) throw new HullError('invalid_argument', 'Exec needs an exec id');
    if (container.execs.has(req.execId)) throw new HullError('already_exists', `Exec "${req.execId}" already exists in task "${req.id}"`);
    container.init.state.check('exec');
    if (container.holder) throw new HullError('failed_precondition', `Task "${req.id}" is a hull pod's sandbox: the pod VM has no process of it to exec in`);
    const spec = parseExecSpec(req.spec);
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

  async #resizePty(req: ResizeRequest) {
    const container = this.#container(req.id);
    const proc = this.#process(container, req.execId);
    proc.state.check('resize');
    if (proc.state.state !== 'running' || container.holder) return {};
    await this.#vm.require().resize(req.id, req.execId, req.height, req.width);
    return {};
  }

  async state(req: IdRequest) {
    const container = this.#container(req.id);
    return stateResponse(container, this.#process(container, req.execId), this.vmPid);
  }

  async pids(req: { id: string }) {
    if (this.#container(req.id).holder) return { processes: [] };
    const processes = await this.#vm.require().processes(req.id);
    return { processes: processes.map(processInfo) };
  }

  pause(req: { id: string }) {
    return this.#locks.run(req.id, async () => {
      const { init, holder } = this.#container(req.id);
      init.state.check('pause');
      if (!holder) await this.#vm.require().pauseContainer(req.id);
      // The process may have exited meanwhile: its exit stands.
      if (init.state.state === 'running') init.state.to('paused');
      this.#options.events.publish('/tasks/paused', ev.TaskPausedSchema, { containerId: req.id });
      return {};
    });
  }

  resume(req: { id: string }) {
    return this.#locks.run(req.id, async () => {
      const { init, holder } = this.#container(req.id);
      init.state.check('resume');
      if (!holder) await this.#vm.require().resumeContainer(req.id);
      if (init.state.state === 'paused') init.state.to('running');
      this.#options.events.publish('/tasks/resumed', ev.TaskResumedSchema, { containerId: req.id });
      return {};
    });
  }

  async checkpoint(): Promise<never> {
    throw new HullError('unimplemented', 'hull does not checkpoint tasks');
  }

  async #kill(req: KillRequest) {
    const container = this.#container(req.id);
    const proc = this.#process(container, req.execId);
    proc.state.check('kill');
    if (proc.state.state === 'created') {
      // Never started: nothing in the guest to signal. It ends as any process does (exit event, FIFOs closed).
      const status = createdKillStatus(req.signal);
      if (status !== undefined) await proc.ending.end(status);
      return {};
    }
    if (container.holder) {
      const status = holderExit(req.signal);
      if (status !== undefined) await proc.ending.end(status);
      return {};
    }
    await signalInGuest(this.#vm.require(), container, proc, req, this.#options.log);
    return {};
  }

  async #closeIO(req: CloseIORequest) {
    const container = this.#container(req.id);
    const proc = this.#process(container, req.execId);
    // The stdin pump closes the process's stdin once it has carried everything the client wrote.
    if (req.stdin && !container.holder) proc.io?.closeStdin();
    return {};
  }

  update(req: { id: string; resources?: { typeUrl: string; value: Uint8Array } }) {
    return this.#locks.run(req.id, async () => {
      const { init, holder } = this.#container(req.id);
      init.state.check('update');
      // The holder has no cgroup of its own in the guest; the pod's limits sized the VM.
      if (holder) return {};
      await this.#vm.require().update(req.id, parseResources(req.resources));
      return {};
    });
  }

  async wait(req: { id: string; execId: string }) {
    const proc = this.#process(this.#container(req.id), req.execId);
    await proc.exited;
    return { exitStatus: proc.exit?.status ?? 0, exitedAt: timestampFromDate(proc.exit?.at ?? new Date()) };
  }

  async stats(req: { id: string }) {
    const stats = this.#container(req.id).holder ? create(StatsContainerResponseSchema) : await this.#vm.require().stats(req.id);
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
    await this.#vm.destroy();
  }

  #serialized<R extends { id: string }, T>(handler: (this: TaskService, req: R) => Promise<T>): (req: R) => Promise<T> {
    return (req) => this.#locks.run(req.id, () => handler.call(this, req));
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
