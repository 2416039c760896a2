/**
 * The Prometheus families `hull monitor` serves, made from the shims' checked statuses with
 * prom-client (its registry writes the text format: escaping, HELP and TYPE lines). Every series of
 * a sandbox carries `sandbox_id`, `pod_namespace`, `pod_name` and `pod_uid`. A fresh registry per
 * scrape: a deleted sandbox's series are gone from the next scrape. The README lists the families.
 */
import { Counter, Gauge, Registry, type Metric } from 'prom-client';
import { AGENT_RPC_BUCKETS } from '../sandbox/index.js';
import type { SandboxStatus } from '../shim/sandbox-status.js';

const POD_LABELS = ['sandbox_id', 'pod_namespace', 'pod_name', 'pod_uid'] as const;
type Labels = Record<string, string>;

/** sandboxRegistry returns the registry of one scrape's sandbox families. */
export function sandboxRegistry(statuses: readonly SandboxStatus[]): Registry {
  const registry = new Registry();
  const gauge = (name: string, help: string, extra: string[] = []) => new Gauge({ name, help, labelNames: [...POD_LABELS, ...extra], registers: [registry] });
  const counter = (name: string, help: string, extra: string[] = []) => new Counter({ name, help, labelNames: [...POD_LABELS, ...extra], registers: [registry] });

  const vcpus = gauge('hull_sandbox_vcpus', 'vCPUs of the sandbox VM');
  const memory = gauge('hull_sandbox_memory_bytes', 'Memory size of the sandbox VM');
  const containers = gauge('hull_sandbox_containers', 'Containers the shim holds for the pod (the CRI sandbox container included)');
  const started = gauge('hull_sandbox_start_time_seconds', 'When the sandbox VM was up, seconds since the Unix epoch');
  const phase = gauge('hull_sandbox_start_phase_seconds', 'Time each phase of the sandbox start took', ['phase']);
  const procCpu = counter('hull_process_cpu_seconds_total', 'CPU time (user and system) of the sandbox QEMU and shim processes on the host', ['process']);
  const procRss = gauge('hull_process_resident_memory_bytes', 'Resident set size of the sandbox QEMU and shim processes', ['process']);
  const procPss = gauge('hull_process_pss_bytes', 'Proportional set size (shared pages divided among their users) of the sandbox QEMU and shim processes', ['process']);
  const procThreads = gauge('hull_process_threads', 'Threads of the sandbox QEMU and shim processes', ['process']);
  const procFds = gauge('hull_process_open_fds', 'Open file descriptors of the sandbox QEMU and shim processes', ['process']);
  const guestUp = gauge('hull_guest_up', '1 when the guest agent answered for its statistics in this scrape, else 0');
  const meminfo = gauge('hull_guest_meminfo_bytes', 'Guest memory as its kernel counts it (/proc/meminfo)', ['item']);
  const guestCpu = counter('hull_guest_cpu_seconds_total', 'Guest CPU time by mode, all vCPUs together (/proc/stat)', ['mode']);
  const load = gauge('hull_guest_load_average', 'Guest load average (/proc/loadavg)', ['period']);
  const tasks = gauge('hull_guest_tasks', 'Guest tasks: all of them, running, blocked on I/O', ['state']);
  const forks = counter('hull_guest_forks_total', 'Processes and threads created in the guest since it booted');
  const ctxt = counter('hull_guest_context_switches_total', 'Context switches in the guest since it booted');
  const netBytes = counter('hull_guest_network_bytes_total', 'Bytes through the guest network interfaces', ['interface', 'direction']);
  const netPackets = counter('hull_guest_network_packets_total', 'Packets through the guest network interfaces', ['interface', 'direction']);
  const netErrors = counter('hull_guest_network_errors_total', 'Errors on the guest network interfaces', ['interface', 'direction']);
  const netDrops = counter('hull_guest_network_drops_total', 'Packets dropped by the guest network interfaces', ['interface', 'direction']);
  const diskOps = counter('hull_guest_disk_operations_total', 'Completed reads and writes of the guest block devices', ['device', 'operation']);
  const diskBytes = counter('hull_guest_disk_bytes_total', 'Bytes read from and written to the guest block devices', ['device', 'operation']);
  const diskTime = counter('hull_guest_disk_io_seconds_total', 'Time the guest block devices were busy', ['device']);
  const rpcErrors = counter('hull_agent_rpc_errors_total', 'Agent calls from the shim that failed', ['method']);
  const rpcValues: Array<{ metricName: string; labels: Labels; value: number }> = [];

  for (const s of statuses) {
    const base: Labels = { sandbox_id: s.sandboxId, pod_namespace: s.pod.namespace, pod_name: s.pod.name, pod_uid: s.pod.uid };
    vcpus.set(base, s.vcpus);
    memory.set(base, s.memoryMiB * 1024 * 1024);
    containers.set(base, s.containers.length);
    started.set(base, s.createdAt / 1000);
    for (const p of s.startup) phase.set({ ...base, phase: p.name }, p.ms / 1000);
    for (const [process, p] of [['qemu', s.host.qemu], ['shim', s.host.shim]] as const) {
      if (!p) continue;
      const l = { ...base, process };
      procCpu.inc(l, p.cpuSeconds);
      procRss.set(l, p.rssBytes);
      procPss.set(l, p.pssBytes);
      procThreads.set(l, p.threads);
      procFds.set(l, p.openFds);
    }
    guestUp.set(base, s.guest ? 1 : 0);
    const g = s.guest;
    if (g) {
      for (const [item, bytes] of Object.entries(g.meminfoBytes)) meminfo.set({ ...base, item }, bytes);
      for (const [mode, seconds] of Object.entries(g.cpuSeconds)) guestCpu.inc({ ...base, mode }, seconds);
      for (const [period, value] of Object.entries(g.load)) load.set({ ...base, period }, value);
      tasks.set({ ...base, state: 'all' }, g.tasks);
      tasks.set({ ...base, state: 'running' }, g.procsRunning);
      tasks.set({ ...base, state: 'blocked' }, g.procsBlocked);
      forks.inc(base, g.forks);
      ctxt.inc(base, g.contextSwitches);
      for (const n of g.network) {
        for (const [direction, bytes, packets, errors, drops] of [['receive', n.rxBytes, n.rxPackets, n.rxErrors, n.rxDropped], ['transmit', n.txBytes, n.txPackets, n.txErrors, n.txDropped]] as const) {
          const l = { ...base, interface: n.interface, direction };
          netBytes.inc(l, bytes);
          netPackets.inc(l, packets);
          netErrors.inc(l, errors);
          netDrops.inc(l, drops);
        }
      }
      for (const d of g.disks) {
        diskOps.inc({ ...base, device: d.device, operation: 'read' }, d.reads);
        diskOps.inc({ ...base, device: d.device, operation: 'write' }, d.writes);
        diskBytes.inc({ ...base, device: d.device, operation: 'read' }, d.readBytes);
        diskBytes.inc({ ...base, device: d.device, operation: 'write' }, d.writtenBytes);
        diskTime.inc({ ...base, device: d.device }, d.ioSeconds);
      }
    }
    for (const h of s.agentRpc ?? []) {
      const l = { ...base, method: h.method };
      rpcErrors.inc(l, h.errors);
      AGENT_RPC_BUCKETS.forEach((le, i) => rpcValues.push({ metricName: 'hull_agent_rpc_duration_seconds_bucket', labels: { ...l, le: String(le) }, value: h.counts[i]! }));
      rpcValues.push({ metricName: 'hull_agent_rpc_duration_seconds_bucket', labels: { ...l, le: '+Inf' }, value: h.count });
      rpcValues.push({ metricName: 'hull_agent_rpc_duration_seconds_sum', labels: l, value: h.sumSeconds });
      rpcValues.push({ metricName: 'hull_agent_rpc_duration_seconds_count', labels: l, value: h.count });
    }
  }
  registry.registerMetric(preAggregatedHistogram('hull_agent_rpc_duration_seconds', 'Latency of the agent calls the shim makes (not the ones that wait for guest processes)', rpcValues));
  return registry;
}

/**
 * preAggregatedHistogram: a histogram whose buckets the shims counted. prom-client's Histogram
 * only counts observations itself; its registry prints any metric that answers get() the same way.
 */
function preAggregatedHistogram(name: string, help: string, values: Array<{ metricName: string; labels: Labels; value: number }>): Metric {
  const metric = { name, help, type: 'histogram', aggregator: 'sum', get: async () => ({ name, help, type: 'histogram', aggregator: 'sum', values }) };
  return metric as unknown as Metric;
}
