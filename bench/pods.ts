/**
 * CRI pods for the benchmark: one busybox `sleep inf` container per pod, started the way kubelet does
 * (RunPodSandbox, CreateContainer, StartContainer, then ContainerStatus until Running), torn down
 * again, and the host processes a runtime keeps for them.
 */
import { readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { findShims } from '../test/harness/containerd.js';
import { containerConfig, podConfig, type CriClient, type PodSandboxConfig } from '../test/harness/cri.js';
import { BUSYBOX_REF } from '../test/harness/oci-image.js';
import { qemuPidsUnder } from '../test/helpers/leaks.js';
import { processStartTime } from '../src/common/process.js';
import { killTree, withDescendants } from './procs.js';
import type { RuntimeName } from './runtimes.js';
import { inParallel, sleep } from './stats.js';

export interface Pod {
  runtime: RuntimeName;
  config: PodSandboxConfig;
  podId?: string;
  containerId?: string;
}

/** PodContext is what pod handling needs from the bench: CRI, our containerd's address, hull's run root. */
export interface PodContext {
  cri: CriClient;
  address: string;
  hullRunRoot: string;
  handler(name: RuntimeName): string;
  /** pods holds every pod started and not yet removed, for the final cleanup. */
  pods: Pod[];
  /** ids collects every sandbox and container id CRI gave us (the final cgroup check looks for them). */
  ids: Set<string>;
  /** gvisorStateRoot is runsc's --root for CRI pods (its state files, per containerd namespace). */
  gvisorStateRoot?: string;
}

const RUNNING_TIMEOUT_MS = 300_000;

/** startPod returns once the pod's container is Running; the pod is in `ctx.pods` from the start. */
export async function startPod(ctx: PodContext, runtime: RuntimeName, name: string): Promise<Pod> {
  const pod: Pod = { runtime, config: podConfig({ name, namespace: 'bench' }) };
  ctx.pods.push(pod);
  pod.podId = await ctx.cri.runPodSandbox(pod.config, ctx.handler(runtime));
  ctx.ids.add(pod.podId);
  pod.containerId = await ctx.cri.createContainer(pod.podId, containerConfig({ name: 'app', image: BUSYBOX_REF, command: ['sleep', 'inf'] }), pod.config);
  ctx.ids.add(pod.containerId);
  await ctx.cri.startContainer(pod.containerId);
  const deadline = Date.now() + RUNNING_TIMEOUT_MS;
  for (;;) {
    const st = await ctx.cri.containerStatus(pod.containerId);
    if (st.status.state === 'CONTAINER_RUNNING') return pod;
    if (st.status.state !== 'CONTAINER_CREATED' || Date.now() > deadline) throw new Error(`Container of ${runtime} pod "${name}" is ${st.status.state}: ${st.status.reason} ${st.status.message}`);
    await sleep(50);
  }
}

/** startPods starts `count` pods of one runtime, at most `parallel` at once, and returns the wall time until all are Running. */
export async function startPods(ctx: PodContext, runtime: RuntimeName, prefix: string, count: number, parallel = count): Promise<{ pods: Pod[]; ms: number }> {
  const started = performance.now();
  const pods = await inParallel(Array.from({ length: count }, (_, i) => i), parallel, (i) => startPod(ctx, runtime, `${prefix}-${i}`));
  return { pods, ms: performance.now() - started };
}

/** shimId is the `-id` of a shim: the pod's sandbox id for a pod's shim, a container id for a `delete`. */
function shimId(cmdline: string): string | undefined {
  const argv = cmdline.split(' ');
  const at = argv.indexOf('-id');
  return at >= 0 ? argv[at + 1] : undefined;
}

/**
 * stopGvisorShims ends gVisor pods the only way the runc shim allows: it reports a container's exit
 * when the container's pid exits, and every container of a gVisor pod has the sandbox's pid, so after
 * a kill only one of them would be seen to exit and CRI would wait for the other. Killing the shim
 * and its processes (ours: found by our containerd's address and the pod's id) makes containerd mark
 * every container of that shim exited and run `shim delete` for each, which removes runsc's state.
 */
async function stopGvisorShims(ctx: PodContext, pods: Pod[]): Promise<void> {
  const ids = new Set(pods.flatMap((p) => [p.podId, p.containerId]).filter((id): id is string => id !== undefined));
  const podIds = new Set(pods.map((p) => p.podId));
  for (const shim of findShims(ctx.address)) if (podIds.has(shimId(shim.cmdline))) killTree(shim.pid);
  const deadline = Date.now() + 60_000;
  for (const pod of pods) {
    while (pod.containerId && Date.now() < deadline) {
      const st = await ctx.cri.containerStatus(pod.containerId).catch(() => undefined);
      if (st?.status.state !== 'CONTAINER_RUNNING') break;
      await sleep(50);
    }
  }
  while (findShims(ctx.address).some((s) => ids.has(shimId(s.cmdline) ?? '')) && Date.now() < deadline) await sleep(50);
}

/**
 * removeGvisorCgroups removes the cgroups CRI named after these pods (`k8s.io/<id>` in every
 * hierarchy), empty once their processes are gone: a killed gVisor sandbox leaves its own behind.
 */
function removeGvisorCgroups(pods: Pod[]): void {
  for (const hierarchy of readdirSync('/sys/fs/cgroup')) {
    for (const id of pods.flatMap((p) => [p.containerId, p.podId])) {
      if (!id) continue;
      try {
        rmdirSync(join('/sys/fs/cgroup', hierarchy, 'k8s.io', id));
      } catch {
        // Not there (removed by runsc), or still busy: the final check reports it.
      }
    }
  }
}

/**
 * removeRunscState removes runsc's state and lock files of these pods (`<root>/k8s.io/<id>…`): the
 * `runsc delete` that removes them is the killed shim's to run (stopGvisorShims), and containerd's
 * cleanup after a dead shim does not always get to it.
 */
function removeRunscState(root: string, pods: Pod[]): void {
  const ids = pods.flatMap((p) => [p.containerId, p.podId]).filter((id): id is string => id !== undefined);
  const dir = join(root, 'k8s.io');
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const entry of entries) if (ids.some((id) => entry.startsWith(id))) rmSync(join(dir, entry), { recursive: true, force: true });
}

/** removePods stops and removes `pods` (all at once) and drops them from `ctx.pods`; returns the errors. */
export async function removePods(ctx: PodContext, pods: Pod[]): Promise<string[]> {
  const errors: string[] = [];
  const gvisor = pods.filter((p) => p.runtime === 'gvisor');
  if (gvisor.length > 0) await stopGvisorShims(ctx, gvisor);
  await Promise.all(
    pods.map(async (pod) => {
      try {
        if (pod.containerId) {
          await ctx.cri.stopContainer(pod.containerId, 0);
          await ctx.cri.removeContainer(pod.containerId);
        }
        if (pod.podId) {
          await ctx.cri.stopPodSandbox(pod.podId);
          await ctx.cri.removePodSandbox(pod.podId);
        }
        const at = ctx.pods.indexOf(pod);
        if (at >= 0) ctx.pods.splice(at, 1);
      } catch (e) {
        errors.push(`${pod.config.metadata.name}: ${(e as Error).message.split('\n')[0]!}`);
      }
    }),
  );
  if (gvisor.length > 0) {
    removeGvisorCgroups(gvisor);
    if (ctx.gvisorStateRoot) removeRunscState(ctx.gvisorStateRoot, gvisor);
  }
  return errors;
}

/** removePodsOrThrow is removePods for the middle of a run, where a pod that will not go is a failure. */
export async function removePodsOrThrow(ctx: PodContext, pods: Pod[]): Promise<void> {
  const errors = await removePods(ctx, pods);
  if (errors.length > 0) throw new Error(`Cannot remove pods: ${errors.join('; ')}`);
}

/**
 * podProcesses lists every host process a runtime keeps for `pods`: the shims of these pods (found by
 * our containerd's address and the pods' sandbox ids), all their descendants (runc: pause and the
 * container; gVisor: sandbox, gofers, ptrace stubs; hull: QEMU), and hull's QEMU of these sandboxes
 * should one not be below its shim.
 */
export function podProcesses(ctx: PodContext, pods: Pod[]): number[] {
  const podIds = new Set(pods.map((p) => p.podId));
  const roots = findShims(ctx.address).filter((s) => podIds.has(shimId(s.cmdline))).map((s) => s.pid);
  for (const pid of qemuPidsUnder(ctx.hullRunRoot)) {
    if (pods.some((p) => p.podId && readCmdline(pid).includes(`${ctx.hullRunRoot}/${p.podId}/`))) roots.push(pid);
  }
  // A VM adopted from hull's pool is not below the pod's shim: its sandbox's ledger records its processes.
  for (const pod of pods) if (pod.runtime === 'hull' && pod.podId) roots.push(...ledgerProcesses(join(ctx.hullRunRoot, pod.podId)));
  return [...new Set(withDescendants(roots))].sort((a, b) => a - b);
}

/** ledgerProcesses are the live processes a hull sandbox's ledger records (pid and start time). */
function ledgerProcesses(stateDir: string): number[] {
  let text = '';
  try {
    text = readFileSync(join(stateDir, 'ledger'), 'utf8');
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const line of text.split('\n')) {
    const m = /"kind":"process","pid":(\d+),"startTime":"(\d+)"/.exec(line);
    if (m && processStartTime(Number(m[1])) === m[2]) pids.push(Number(m[1]));
  }
  return pids;
}

function readCmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}
