/**
 * Container stats for containerd: the guest's cgroup v2 counters expressed as
 * io.containerd.cgroups.v1.Metrics, which CRI decodes on any host (it picks
 * the decoder by type URL). Fields follow what CRI and `ctr task metrics` read.
 */
import { create, toBinary } from '@bufbuild/protobuf';
import type { StatsContainerResponse } from '../proto/gen/agent_pb.js';
import { MetricsSchema } from '../proto/gen/metrics_v1_pb.js';

export const METRICS_TYPE_URL = 'io.containerd.cgroups.v1.Metrics';

export function metricsV1(stats: StatsContainerResponse): Uint8Array {
  const cpu = stats.cpu;
  const mem = stats.memory;
  const io = stats.io;
  const metrics = create(MetricsSchema, {
    pids: { current: stats.pids?.current ?? 0n, limit: stats.pids?.limit ?? 0n },
    cpu: {
      usage: { total: (cpu?.usageUsec ?? 0n) * 1000n, user: (cpu?.userUsec ?? 0n) * 1000n, kernel: (cpu?.systemUsec ?? 0n) * 1000n },
      throttling: { periods: cpu?.nrPeriods ?? 0n, throttledPeriods: cpu?.nrThrottled ?? 0n, throttledTime: (cpu?.throttledUsec ?? 0n) * 1000n },
    },
    memory: {
      cache: mem?.file ?? 0n,
      rss: mem?.anon ?? 0n,
      mappedFile: mem?.fileMapped ?? 0n,
      dirty: mem?.fileDirty ?? 0n,
      writeback: mem?.fileWriteback ?? 0n,
      pgFault: mem?.pgfault ?? 0n,
      pgMajFault: mem?.pgmajfault ?? 0n,
      inactiveAnon: mem?.inactiveAnon ?? 0n,
      activeAnon: mem?.activeAnon ?? 0n,
      inactiveFile: mem?.inactiveFile ?? 0n,
      activeFile: mem?.activeFile ?? 0n,
      hierarchicalMemoryLimit: mem?.limitBytes ?? 0n,
      totalCache: mem?.file ?? 0n,
      totalRss: mem?.anon ?? 0n,
      totalMappedFile: mem?.fileMapped ?? 0n,
      totalDirty: mem?.fileDirty ?? 0n,
      totalWriteback: mem?.fileWriteback ?? 0n,
      totalPgFault: mem?.pgfault ?? 0n,
      totalPgMajFault: mem?.pgmajfault ?? 0n,
      totalInactiveAnon: mem?.inactiveAnon ?? 0n,
      totalActiveAnon: mem?.activeAnon ?? 0n,
      totalInactiveFile: mem?.inactiveFile ?? 0n,
      totalActiveFile: mem?.activeFile ?? 0n,
      usage: { usage: mem?.usageBytes ?? 0n, limit: mem?.limitBytes ?? 0n, max: mem?.maxUsageBytes ?? 0n, failcnt: mem?.oom ?? 0n },
    },
    blkio: {
      ioServiceBytesRecursive: [
        { op: 'Read', value: io?.readBytes ?? 0n },
        { op: 'Write', value: io?.writeBytes ?? 0n },
      ],
      ioServicedRecursive: [
        { op: 'Read', value: io?.readIos ?? 0n },
        { op: 'Write', value: io?.writeIos ?? 0n },
      ],
    },
    memoryOomControl: { oomKill: mem?.oomKill ?? 0n },
  });
  return toBinary(MetricsSchema, metrics);
}
