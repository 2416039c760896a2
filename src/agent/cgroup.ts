/**
 * Reading a container's guest cgroup (v2, mounted at /sys/fs/cgroup). crun
 * puts every container in /hull/<id>; these counters become the host's
 * container stats.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * A container's processes live in /hull/<id>/ctr, which crun makes and
 * removes; /hull/<id> is the agent's and outlives it, so its (hierarchical)
 * memory.events still tells after the exit whether the container was OOM-killed.
 */
export function containerCgroup(containerId: string): string {
  return join(containerCgroupParent(containerId), 'ctr');
}

export function containerCgroupParent(containerId: string): string {
  return join(CGROUP_ROOT, 'hull', containerId);
}

/** oomKills reads how many processes of the container the kernel OOM-killed. */
export async function oomKills(containerId: string): Promise<number> {
  const text = await readFile(join(containerCgroupParent(containerId), 'memory.events'), 'utf8').catch(() => '');
  return Number(/^oom_kill (\d+)$/m.exec(text)?.[1] ?? 0);
}

export interface CgroupStats {
  cpu: { usageUsec: bigint; userUsec: bigint; systemUsec: bigint; nrPeriods: bigint; nrThrottled: bigint; throttledUsec: bigint };
  memory: {
    usageBytes: bigint; limitBytes: bigint; maxUsageBytes: bigint; anon: bigint; file: bigint; inactiveFile: bigint;
    activeFile: bigint; inactiveAnon: bigint; activeAnon: bigint; pgfault: bigint; pgmajfault: bigint; oomKill: bigint;
    oom: bigint; fileMapped: bigint; fileDirty: bigint; fileWriteback: bigint; shmem: bigint;
  };
  pids: { current: bigint; limit: bigint };
  io: { readBytes: bigint; writeBytes: bigint; readIos: bigint; writeIos: bigint };
}

/** readCgroupStats reads the counters; `unlimited` stands in for "max" limits. */
export async function readCgroupStats(dir: string, unlimited: { memoryBytes: bigint }): Promise<CgroupStats> {
  const [cpuStat, memStat, memEvents, memCurrent, memMax, memPeak, pidsCurrent, pidsMax, ioStat] = await Promise.all(
    ['cpu.stat', 'memory.stat', 'memory.events', 'memory.current', 'memory.max', 'memory.peak', 'pids.current', 'pids.max', 'io.stat'].map(
      (file) => readFile(join(dir, file), 'utf8').catch(() => ''),
    ),
  ) as string[];
  const cpu = keyed(cpuStat!);
  const mem = keyed(memStat!);
  const events = keyed(memEvents!);
  const io = sumIoStat(ioStat!);
  return {
    cpu: {
      usageUsec: cpu.get('usage_usec') ?? 0n, userUsec: cpu.get('user_usec') ?? 0n, systemUsec: cpu.get('system_usec') ?? 0n,
      nrPeriods: cpu.get('nr_periods') ?? 0n, nrThrottled: cpu.get('nr_throttled') ?? 0n, throttledUsec: cpu.get('throttled_usec') ?? 0n,
    },
    memory: {
      usageBytes: single(memCurrent!) ?? 0n,
      limitBytes: single(memMax!) ?? unlimited.memoryBytes,
      maxUsageBytes: single(memPeak!) ?? 0n,
      anon: mem.get('anon') ?? 0n, file: mem.get('file') ?? 0n,
      inactiveFile: mem.get('inactive_file') ?? 0n, activeFile: mem.get('active_file') ?? 0n,
      inactiveAnon: mem.get('inactive_anon') ?? 0n, activeAnon: mem.get('active_anon') ?? 0n,
      pgfault: mem.get('pgfault') ?? 0n, pgmajfault: mem.get('pgmajfault') ?? 0n,
      oomKill: events.get('oom_kill') ?? 0n, oom: events.get('oom') ?? 0n,
      fileMapped: mem.get('file_mapped') ?? 0n, fileDirty: mem.get('file_dirty') ?? 0n,
      fileWriteback: mem.get('file_writeback') ?? 0n, shmem: mem.get('shmem') ?? 0n,
    },
    pids: { current: single(pidsCurrent!) ?? 0n, limit: single(pidsMax!) ?? 0n },
    io,
  };
}

/** cgroupPids lists the pids in a cgroup (empty if it is gone). */
export async function cgroupPids(dir: string): Promise<number[]> {
  const text = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map(Number).filter((pid) => Number.isSafeInteger(pid) && pid > 0);
}

function keyed(text: string): Map<string, bigint> {
  const values = new Map<string, bigint>();
  for (const line of text.split('\n')) {
    const [key, value] = line.split(' ');
    if (key && value && /^\d+$/.test(value)) values.set(key, BigInt(value));
  }
  return values;
}

function single(text: string): bigint | undefined {
  const value = text.trim();
  return /^\d+$/.test(value) ? BigInt(value) : undefined;
}

// io.stat lines look like "254:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0".
function sumIoStat(text: string): CgroupStats['io'] {
  const total = { readBytes: 0n, writeBytes: 0n, readIos: 0n, writeIos: 0n };
  for (const line of text.split('\n')) {
    for (const field of line.split(' ').slice(1)) {
      const [key, value] = field.split('=');
      if (!value || !/^\d+$/.test(value)) continue;
      const n = BigInt(value);
      if (key === 'rbytes') total.readBytes += n;
      else if (key === 'wbytes') total.writeBytes += n;
      else if (key === 'rios') total.readIos += n;
      else if (key === 'wios') total.writeIos += n;
    }
  }
  return total;
}
