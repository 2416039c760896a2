/**
 * What a hull pod leaves on the host, found from the outside: its shim, its QEMU, its state
 * directory and mounts under the run root, its netns (and the tap in it), the cgroup directories
 * hull made for it, its jail uid lease. `tracePod` records them while the pod runs; `podLeftovers`
 * says which of them are still there. Processes are matched by the pids recorded, never by name.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { LEASES_DIR } from '../../src/sandbox/jail-uid.js';
import { hostHierarchies } from '../../src/sandbox/host-cgroup.js';
import { TAP_NAME } from '../../src/net/names.js';
import { findShims, type PrivateContainerd } from '../harness/containerd.js';
import type { CriClient } from '../harness/cri.js';
import { mountsUnder, processAlive, qemuPidsUnder } from './leaks.js';

export interface PodTraces {
  podId: string;
  stateDir: string;
  shims: number[];
  /** shimSocket is the pod shim's ttrpc socket (the bundle's address file). */
  shimSocket: string;
  qemu: number[];
  netns: string;
  /** cgroupDirs are the pod's cgroup in every hierarchy (hull makes them: kubelet makes only the parent). */
  cgroupDirs: string[];
  leases: string[];
  /** statusSocket is the shim's read-only status socket in status_dir, when it served one. */
  statusSocket?: string;
}

/** sandboxNetns reads the pod's network namespace path from CRI's verbose sandbox status. */
export async function sandboxNetns(cri: CriClient, podId: string): Promise<string> {
  const info = (await cri.podSandboxStatus(podId, true)).info;
  const parsed = JSON.parse(info?.['info'] ?? '{}') as { runtimeSpec?: { linux?: { namespaces?: Array<{ type: string; path?: string }> } } };
  return parsed.runtimeSpec?.linux?.namespaces?.find((ns) => ns.type === 'network')?.path ?? '';
}

/** leasesOf lists the jail uid leases whose holder is `stateDir` (or lies under it, with `prefix`). */
export function leasesOf(stateDir: string, prefix = false): string[] {
  const out: string[] = [];
  for (const uid of existsSync(LEASES_DIR) ? readdirSync(LEASES_DIR) : []) {
    const holder = readText(join(LEASES_DIR, uid));
    if (holder === stateDir || (prefix && holder.startsWith(`${stateDir}/`))) out.push(join(LEASES_DIR, uid));
  }
  return out;
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** tracePod records what the running pod `podId` holds on the host. */
export async function tracePod(ctrd: PrivateContainerd, cri: CriClient, runRoot: string, podId: string, cgroupParent: string, statusDir?: string): Promise<PodTraces> {
  const stateDir = join(runRoot, podId);
  const statusSocket = statusDir ? join(statusDir, `${podId}.sock`) : undefined;
  const bundle = join(ctrd.state, 'io.containerd.runtime.v2.task', 'k8s.io', podId);
  return {
    podId,
    stateDir,
    shims: findShims(ctrd.address).filter((s) => s.cmdline.includes(podId)).map((s) => s.pid),
    shimSocket: readText(join(bundle, 'address')).trim().replace(/^unix:\/\//, ''),
    qemu: qemuPidsUnder(stateDir),
    netns: await sandboxNetns(cri, podId),
    cgroupDirs: (await hostHierarchies()).map((h) => join(h.mount, cgroupParent, podId)).filter((d) => existsSync(d)),
    leases: leasesOf(stateDir),
    ...(statusSocket && existsSync(statusSocket) ? { statusSocket } : {}),
  };
}

/** tapIn lists hull's tap in `netns`, if the namespace is still there. */
export function tapIn(netns: string): string[] {
  if (!netns || !existsSync(netns)) return [];
  try {
    const links = execFileSync('nsenter', [`--net=${netns}`, 'ip', '-o', 'link'], { encoding: 'utf8' });
    return links.includes(TAP_NAME) ? [`${TAP_NAME} in ${netns}`] : [];
  } catch {
    return [];
  }
}

/** podLeftovers lists what of `t` is still on the host ([] when the pod is wholly gone). */
export function podLeftovers(t: PodTraces): string[] {
  return [
    ...t.shims.filter(processAlive).map((pid) => `shim ${pid}`),
    ...[...t.qemu, ...qemuPidsUnder(t.stateDir)].filter(processAlive).map((pid) => `QEMU ${pid}`),
    ...(t.shimSocket && existsSync(t.shimSocket) ? [`shim socket ${t.shimSocket}`] : []),
    ...mountsUnder(t.stateDir).map((m) => `mount ${m}`),
    ...(existsSync(t.stateDir) ? [`state dir ${t.stateDir}`] : []),
    ...(t.statusSocket && existsSync(t.statusSocket) ? [`status socket ${t.statusSocket}`] : []),
    ...(t.netns && existsSync(t.netns) ? [`netns ${t.netns}`] : []),
    ...t.cgroupDirs.filter((d) => existsSync(d)).map((d) => `cgroup ${d}`),
    ...[...new Set([...t.leases, ...leasesOf(t.stateDir)])].filter((l) => existsSync(l)).map((l) => `lease ${l}`),
  ];
}

/**
 * waitPodGone waits (containerd runs a dead shim's `shim delete` in the background) until nothing
 * of the pod is left, and returns what is still there after `timeoutMs`.
 */
export async function waitPodGone(t: PodTraces, timeoutMs = 30_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  let left = podLeftovers(t);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(200);
    left = podLeftovers(t);
  }
  return left;
}
