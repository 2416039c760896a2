/**
 * The guest's own accounting (GuestStats: the text of its /proc/meminfo, stat, loadavg, net/dev and
 * diskstats), parsed and checked on the host. The guest is hostile: a file over its size, a line
 * that does not parse, a number out of range or a list too long fails the whole read with an error
 * naming the file, and nothing of it is used.
 */
import { HullError } from '../errors/index.js';
import type { GuestStatsResponse } from '../proto/gen/agent_pb.js';
import type { AgentClient } from './agent-client.js';

export const GUEST_STATS_LIMITS = { fileBytes: 64 * 1024, devices: 64 } as const;

/** The /proc/meminfo items reported (bytes). */
export const MEMINFO_ITEMS = ['MemTotal', 'MemFree', 'MemAvailable', 'Buffers', 'Cached', 'Shmem', 'AnonPages', 'Mapped', 'Slab', 'Dirty', 'SwapTotal', 'SwapFree'] as const;
/** The modes of /proc/stat's cpu line, in its order. */
export const CPU_MODES = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal'] as const;
// The guest kernel's USER_HZ: /proc/stat counts in 1/100 s on every Linux architecture we run.
const USER_HZ = 100;
const SECTOR_BYTES = 512;

export interface GuestStats {
  meminfoBytes: Partial<Record<(typeof MEMINFO_ITEMS)[number], number>>;
  cpuSeconds: Record<(typeof CPU_MODES)[number], number>;
  contextSwitches: number;
  forks: number;
  procsRunning: number;
  procsBlocked: number;
  load: { '1m': number; '5m': number; '15m': number };
  tasks: number;
  network: Array<{ interface: string; rxBytes: number; rxPackets: number; rxErrors: number; rxDropped: number; txBytes: number; txPackets: number; txErrors: number; txDropped: number }>;
  disks: Array<{ device: string; reads: number; readBytes: number; writes: number; writtenBytes: number; ioSeconds: number }>;
}

/** readGuestStats asks the agent for its /proc files and parses them (parseGuestStats). */
export async function readGuestStats(agent: AgentClient, timeoutMs: number): Promise<GuestStats> {
  return parseGuestStats(await agent.guestStats({}, { timeoutMs }));
}

export function parseGuestStats(r: Pick<GuestStatsResponse, 'meminfo' | 'stat' | 'loadavg' | 'netDev' | 'diskstats'>): GuestStats {
  return { meminfoBytes: parseMeminfo(r.meminfo), ...parseStat(r.stat), ...parseLoadavg(r.loadavg), network: parseNetDev(r.netDev), disks: parseDiskstats(r.diskstats) };
}

function bad(file: string, why: string): HullError {
  return new HullError('internal', `Guest sent an invalid ${file}: ${why}`);
}

function linesOf(file: string, text: string): string[] {
  if (text.length > GUEST_STATS_LIMITS.fileBytes) throw bad(file, `${text.length} characters`);
  return text.split('\n').filter((l) => l !== '');
}

// count parses a kernel counter: decimal digits, within the integers a double holds exactly.
function count(file: string, s: string | undefined): number {
  if (s === undefined || !/^\d{1,16}$/.test(s)) throw bad(file, `"${String(s).slice(0, 32)}" is not a counter`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw bad(file, `${s} is out of range`);
  return n;
}

// deviceName: what an interface or block device may be called here (and in a metric label).
function deviceName(file: string, s: string): string {
  if (!/^[A-Za-z0-9._-]{1,32}$/.test(s)) throw bad(file, `device name "${s.slice(0, 32)}"`);
  return s;
}

function parseMeminfo(text: string): GuestStats['meminfoBytes'] {
  const out: GuestStats['meminfoBytes'] = {};
  const wanted = new Set<string>(MEMINFO_ITEMS);
  for (const line of linesOf('meminfo', text)) {
    const m = /^([A-Za-z0-9_()]{1,64}):\s+(\d{1,16})(?: kB)?$/.exec(line);
    if (!m) throw bad('meminfo', `line "${line.slice(0, 64)}"`);
    if (wanted.has(m[1]!)) out[m[1] as (typeof MEMINFO_ITEMS)[number]] = count('meminfo', m[2]) * 1024;
  }
  if (out.MemTotal === undefined) throw bad('meminfo', 'no MemTotal');
  return out;
}

function parseStat(text: string): Pick<GuestStats, 'cpuSeconds' | 'contextSwitches' | 'forks' | 'procsRunning' | 'procsBlocked'> {
  let cpu: number[] | undefined;
  const fields = new Map<string, number>();
  for (const line of linesOf('stat', text)) {
    const [key, ...rest] = line.split(/\s+/);
    if (key === 'cpu') cpu = rest.slice(0, CPU_MODES.length).map((v) => count('stat', v));
    else if (key === 'ctxt' || key === 'processes' || key === 'procs_running' || key === 'procs_blocked') fields.set(key, count('stat', rest[0]));
  }
  if (!cpu || cpu.length < CPU_MODES.length) throw bad('stat', 'no full cpu line');
  const cpuSeconds = Object.fromEntries(CPU_MODES.map((mode, i) => [mode, cpu![i]! / USER_HZ])) as GuestStats['cpuSeconds'];
  return { cpuSeconds, contextSwitches: fields.get('ctxt') ?? 0, forks: fields.get('processes') ?? 0, procsRunning: fields.get('procs_running') ?? 0, procsBlocked: fields.get('procs_blocked') ?? 0 };
}

function parseLoadavg(text: string): Pick<GuestStats, 'load' | 'tasks'> {
  const m = /^(\d{1,6}\.\d{2}) (\d{1,6}\.\d{2}) (\d{1,6}\.\d{2}) (\d{1,9})\/(\d{1,9}) \d{1,9}\n?$/.exec(text);
  if (!m) throw bad('loadavg', `"${text.slice(0, 64)}"`);
  return { load: { '1m': Number(m[1]), '5m': Number(m[2]), '15m': Number(m[3]) }, tasks: Number(m[5]) };
}

function parseNetDev(text: string): GuestStats['network'] {
  const out: GuestStats['network'] = [];
  // Two header lines, then "  name: 16 counters".
  for (const line of linesOf('net/dev', text).slice(2)) {
    const m = /^\s*([^:\s]+):\s*(.*)$/.exec(line);
    if (!m) throw bad('net/dev', `line "${line.slice(0, 64)}"`);
    const v = m[2]!.trim().split(/\s+/).map((s) => count('net/dev', s));
    if (v.length !== 16) throw bad('net/dev', `${v.length} counters for one interface`);
    if (out.length === GUEST_STATS_LIMITS.devices) throw bad('net/dev', `more than ${GUEST_STATS_LIMITS.devices} interfaces`);
    const name = deviceName('net/dev', m[1]!);
    if (out.some((n) => n.interface === name)) throw bad('net/dev', `interface "${name}" given twice`);
    out.push({ interface: name, rxBytes: v[0]!, rxPackets: v[1]!, rxErrors: v[2]!, rxDropped: v[3]!, txBytes: v[8]!, txPackets: v[9]!, txErrors: v[10]!, txDropped: v[11]! });
  }
  return out;
}

function parseDiskstats(text: string): GuestStats['disks'] {
  const out: GuestStats['disks'] = [];
  for (const line of linesOf('diskstats', text)) {
    const [major, minor, name, ...rest] = line.trim().split(/\s+/);
    count('diskstats', major);
    count('diskstats', minor);
    const v = rest.map((s) => count('diskstats', s));
    if (v.length < 11) throw bad('diskstats', `${v.length} counters for one device`);
    // Devices that never did I/O (the unused loop and ram devices) are left out.
    if (v.slice(0, 11).every((n) => n === 0)) continue;
    if (out.length === GUEST_STATS_LIMITS.devices) throw bad('diskstats', `more than ${GUEST_STATS_LIMITS.devices} devices`);
    const device = deviceName('diskstats', name ?? '');
    if (out.some((d) => d.device === device)) throw bad('diskstats', `device "${device}" given twice`);
    out.push({ device, reads: v[0]!, readBytes: v[2]! * SECTOR_BYTES, writes: v[4]!, writtenBytes: v[6]! * SECTOR_BYTES, ioSeconds: v[9]! / 1000 });
  }
  return out;
}
