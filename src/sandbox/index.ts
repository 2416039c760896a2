/**
 * sandbox — a pod's VM seen from the host: boot it, run containers in it,
 * carry their stdio, tear everything down.
 */
export { Sandbox, DEFAULT_RUN_ROOT, DEFAULT_VCPUS, DEFAULT_MEMORY_MIB, type SandboxOptions, type ContainerOptions, type GuestAssets, type GuestDetails, type ProcessExit, type StdioRequest, type StartupPhase, type SandboxFailpoints, type VmFactory } from './sandbox.js';
export { readBundleSpec, parseSpec, guestContainerSpec, withPodSysctls, type OciSpec, type OciProcess } from './spec.js';
export type { HostStdio } from './stdio.js';
export type { AgentClient } from './agent-client.js';
export { Ledger, readLedger, replayLedger, type LedgerLog } from './ledger.js';
export { joinPodCgroup, memoryUsage, podMemoryLimit, setMemoryLimit } from './host-cgroup.js';
export { AgentRpcStats, AGENT_RPC_BUCKETS, type AgentRpcHistogram } from './agent-rpc-stats.js';
export { readGuestStats, parseGuestStats, MEMINFO_ITEMS, CPU_MODES, type GuestStats } from './guest-stats.js';
export { POOL_VM_DIR } from './ledger.js';
export type { PoolShape, PooledVm, VmPool } from './pool-adopt.js';
