/**
 * SandboxStatus: what a shim tells `hull ps` and `hull monitor` about its sandbox over the debug
 * socket (GET /status, GET /metrics): the pod it belongs to (from CRI's annotations), its size,
 * containers and start phases, what its QEMU and the shim cost the host, and, for /metrics, the
 * guest's own accounting and the agent calls' latency. JSON; `version` changes with any
 * incompatible change. The monitor checks every field again (src/monitor/status-check.ts).
 */
import type { AgentRpcHistogram, GuestStats, Sandbox, StartupPhase } from '../sandbox/index.js';
import { procStats, type ProcessStats } from './proc-stats.js';

export type { ProcessStats };

export const STATUS_VERSION = 1;
// The guest has this long to answer GuestStats; `hull monitor`'s per-shim timeout must be longer.
export const GUEST_STATS_TIMEOUT_MS = 1500;

/** PodLabels are the CRI pod's; empty strings for a sandbox started without CRI (ctr, hull run). */
export interface PodLabels {
  namespace: string;
  name: string;
  uid: string;
}

export interface SandboxStatus {
  version: typeof STATUS_VERSION;
  sandboxId: string;
  pod: PodLabels;
  /** state: "running", or "stopped" once the VM has exited (the shim is tearing it down). */
  state: 'running' | 'stopped';
  /** createdAt: when the sandbox's VM was up, milliseconds since the Unix epoch. */
  createdAt: number;
  vcpus: number;
  memoryMiB: number;
  containers: string[];
  startup: StartupPhase[];
  host: { shim: ProcessStats | null; qemu: ProcessStats | null };
  /** guest, agentRpc: only on GET /metrics; guestError says why guest is missing. */
  guest?: GuestStats;
  guestError?: string;
  agentRpc?: AgentRpcHistogram[];
}

const CRI_SANDBOX_NAME = 'io.kubernetes.cri.sandbox-name';
const CRI_SANDBOX_NAMESPACE = 'io.kubernetes.cri.sandbox-namespace';
const CRI_SANDBOX_UID = 'io.kubernetes.cri.sandbox-uid';

/** podLabels reads the pod's namespace, name and uid from the sandbox spec's CRI annotations. */
export function podLabels(annotations: Record<string, string> | undefined): PodLabels {
  const get = (key: string): string => {
    const v = annotations?.[key];
    // Kubernetes names and uids are short and printable: anything else is not carried.
    return typeof v === 'string' && v.length <= 253 && /^[\x21-\x7e]*$/.test(v) ? v : '';
  };
  return { namespace: get(CRI_SANDBOX_NAMESPACE), name: get(CRI_SANDBOX_NAME), uid: get(CRI_SANDBOX_UID) };
}

export interface StatusSource {
  sandbox: Sandbox;
  pod: PodLabels;
  createdAt: number;
  size: { vcpus: number; memoryMiB: number };
  containers: () => string[];
  exited: () => boolean;
  agentRpc: { snapshot(): AgentRpcHistogram[] };
  readGuest: () => Promise<GuestStats>;
}

/** sandboxStatus gathers the status; with `metrics`, the guest's stats and the agent's latencies too. */
export async function sandboxStatus(source: StatusSource, metrics: boolean): Promise<SandboxStatus> {
  const { sandbox } = source;
  const [shim, qemu, guest] = await Promise.all([
    procStats(process.pid),
    procStats(sandbox.vm.pid),
    metrics && !source.exited() ? source.readGuest().then((stats) => ({ stats }), (e: Error) => ({ error: e.message.slice(0, 1000) })) : undefined,
  ]);
  return {
    version: STATUS_VERSION,
    sandboxId: sandbox.id,
    pod: source.pod,
    state: source.exited() ? 'stopped' : 'running',
    createdAt: source.createdAt,
    vcpus: source.size.vcpus,
    memoryMiB: source.size.memoryMiB,
    containers: source.containers(),
    startup: [...sandbox.startup],
    host: { shim: shim ?? null, qemu: qemu ?? null },
    ...(guest && 'stats' in guest ? { guest: guest.stats } : {}),
    ...(guest && 'error' in guest ? { guestError: guest.error } : {}),
    ...(metrics ? { agentRpc: source.agentRpc.snapshot() } : {}),
  };
}
