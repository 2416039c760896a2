/**
 * `hull ps`: the sandboxes of this node (the run root's directories), from their shims' GET /status
 * on the read-only status sockets (src/monitor/shims.ts), as a
 * table or as JSON. The JSON is stable (PS_JSON_VERSION; documented in the README): every key is
 * always present, null when the shim did not say.
 */
import { listSandboxDirs, NO_STATUS_SOCKET, readAll, type ShimAnswer } from '../monitor/index.js';

export const PS_JSON_VERSION = 1;

export interface PsSandbox {
  id: string;
  pod: { namespace: string; name: string; uid: string };
  /** running, stopped (VM exited, shim tearing down), starting (no status socket yet), unresponsive (no valid answer). */
  state: 'running' | 'stopped' | 'starting' | 'unresponsive';
  createdAt: string | null;
  ageSeconds: number | null;
  vcpus: number | null;
  memoryMiB: number | null;
  qemuPid: number | null;
  /** hostPssBytes: the proportional set size of the sandbox's QEMU and shim together. */
  hostPssBytes: number | null;
  containers: string[];
  error: string | null;
}

export async function listSandboxes(runRoot: string, statusDir: string, timeoutMs?: number, now = Date.now()): Promise<PsSandbox[]> {
  const answers = await readAll(await listSandboxDirs(runRoot, statusDir), false, timeoutMs ? { timeoutMs } : {});
  return answers.map((a) => psEntry(a, now));
}

function psEntry(a: ShimAnswer, now: number): PsSandbox {
  if ('error' in a) {
    const starting = a.error === NO_STATUS_SOCKET;
    return { id: a.id, pod: { namespace: '', name: '', uid: '' }, state: starting ? 'starting' : 'unresponsive', createdAt: null, ageSeconds: null, vcpus: null, memoryMiB: null, qemuPid: null, hostPssBytes: null, containers: [], error: starting ? null : a.error };
  }
  const s = a.status;
  const pss = s.host.qemu || s.host.shim ? (s.host.qemu?.pssBytes ?? 0) + (s.host.shim?.pssBytes ?? 0) : null;
  return {
    id: s.sandboxId,
    pod: s.pod,
    state: s.state,
    createdAt: new Date(s.createdAt).toISOString(),
    ageSeconds: Math.max(0, Math.floor((now - s.createdAt) / 1000)),
    vcpus: s.vcpus,
    memoryMiB: s.memoryMiB,
    qemuPid: s.host.qemu?.pid ?? null,
    hostPssBytes: pss,
    containers: s.containers,
    error: null,
  };
}

/** PsNode: what hull holds on the node outside the pods (cli/node-memory.ts), in bytes. */
export interface PsNode {
  templateAllocatedBytes: number | null;
  poolMemoryBytes: number | null;
}

export function psJson(sandboxes: PsSandbox[], node?: PsNode): string {
  return JSON.stringify({ version: PS_JSON_VERSION, sandboxes, ...(node ? { node } : {}) }, null, 2);
}

/** psNodeLine is the line under the table: the template store's and the pool's memory. */
export function psNodeLine(node: PsNode): string {
  const mib = (b: number) => `${Math.round(b / (1024 * 1024))}Mi`;
  return `templates: ${node.templateAllocatedBytes === null ? '-' : mib(node.templateAllocatedBytes)} allocated; pool: ${node.poolMemoryBytes === null ? '-' : mib(node.poolMemoryBytes)}`;
}

export function psTable(sandboxes: PsSandbox[]): string {
  const rows = [['SANDBOX', 'POD', 'AGE', 'STATE', 'VCPUS', 'MEMORY', 'QEMU PID', 'HOST PSS', 'CONTAINERS']];
  for (const s of sandboxes) {
    rows.push([
      s.id.slice(0, 13),
      s.pod.name ? `${s.pod.namespace}/${s.pod.name}` : '-',
      s.ageSeconds === null ? '-' : age(s.ageSeconds),
      s.state,
      s.vcpus === null ? '-' : String(s.vcpus),
      s.memoryMiB === null ? '-' : `${s.memoryMiB}Mi`,
      s.qemuPid === null ? '-' : String(s.qemuPid),
      s.hostPssBytes === null ? '-' : `${Math.round(s.hostPssBytes / (1024 * 1024))}Mi`,
      String(s.containers.length),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n');
}

// age as kubectl prints it: 45s, 12m, 3h, 2d.
function age(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}
