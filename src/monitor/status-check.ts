/**
 * checkStatus: a shim's SandboxStatus (src/shim/sandbox-status.ts), read back from JSON and checked
 * field by field. A shim is host-side, but what it relays comes partly from the guest, and a
 * broken or hostile shim must cost the monitor one sandbox's series, not the scrape: a value of
 * the wrong type, out of range, a string too long or a list too long refuses the whole answer.
 * Only the known fields are copied; anything else is dropped.
 */
import { AGENT_RPC_BUCKETS, CPU_MODES, MEMINFO_ITEMS, type AgentRpcHistogram, type GuestStats, type StartupPhase } from '../sandbox/index.js';
import { STATUS_VERSION, type ProcessStats, type SandboxStatus } from '../shim/sandbox-status.js';

export const STATUS_LIMITS = { containers: 1024, devices: 64, rpcMethods: 64, startupPhases: 16, labelChars: 253, errorChars: 1024 } as const;

const SANDBOX_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,75}$/;
const DEVICE = /^[A-Za-z0-9._-]{1,32}$/;
const PHASES = new Set<StartupPhase['name']>(['network', 'pool', 'template', 'vmm', 'agent', 'setup', 'guest-network']);

class StatusError extends Error {}

type Obj = Record<string, unknown>;

function obj(v: unknown, what: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new StatusError(`${what} is not an object`);
  return v as Obj;
}

function list(v: unknown, what: string, max: number): unknown[] {
  if (!Array.isArray(v)) throw new StatusError(`${what} is not a list`);
  if (v.length > max) throw new StatusError(`${what} has ${v.length} entries (at most ${max})`);
  return v;
}

// num: a finite, non-negative number (every value here is a count, a size, a time or a ratio).
function num(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new StatusError(`${what} is not a non-negative number`);
  return v;
}

function int(v: unknown, what: string): number {
  const n = num(v, what);
  if (!Number.isSafeInteger(n)) throw new StatusError(`${what} is not an integer`);
  return n;
}

function str(v: unknown, what: string, pattern?: RegExp, max: number = STATUS_LIMITS.labelChars): string {
  if (typeof v !== 'string' || v.length > max) throw new StatusError(`${what} is not a string of at most ${max} characters`);
  if (pattern && !pattern.test(v)) throw new StatusError(`${what} "${v.slice(0, 64)}" is malformed`);
  return v;
}

// A label value: printable ASCII, as Kubernetes names and uids are.
const label = (v: unknown, what: string) => str(v, what, /^[\x21-\x7e]*$/);

function proc(v: unknown, what: string): ProcessStats | null {
  if (v === null) return null;
  const p = obj(v, what);
  return {
    pid: int(p['pid'], `${what}.pid`),
    cpuSeconds: num(p['cpuSeconds'], `${what}.cpuSeconds`),
    rssBytes: int(p['rssBytes'], `${what}.rssBytes`),
    pssBytes: int(p['pssBytes'], `${what}.pssBytes`),
    threads: int(p['threads'], `${what}.threads`),
    openFds: int(p['openFds'], `${what}.openFds`),
  };
}

function guest(v: unknown): GuestStats {
  const g = obj(v, 'guest');
  const mem = obj(g['meminfoBytes'], 'guest.meminfoBytes');
  const meminfoBytes: GuestStats['meminfoBytes'] = {};
  for (const item of MEMINFO_ITEMS) if (mem[item] !== undefined) meminfoBytes[item] = int(mem[item], `guest.meminfoBytes.${item}`);
  const cpu = obj(g['cpuSeconds'], 'guest.cpuSeconds');
  const load = obj(g['load'], 'guest.load');
  return {
    meminfoBytes,
    cpuSeconds: Object.fromEntries(CPU_MODES.map((m) => [m, num(cpu[m], `guest.cpuSeconds.${m}`)])) as GuestStats['cpuSeconds'],
    contextSwitches: int(g['contextSwitches'], 'guest.contextSwitches'),
    forks: int(g['forks'], 'guest.forks'),
    procsRunning: int(g['procsRunning'], 'guest.procsRunning'),
    procsBlocked: int(g['procsBlocked'], 'guest.procsBlocked'),
    load: { '1m': num(load['1m'], 'guest.load.1m'), '5m': num(load['5m'], 'guest.load.5m'), '15m': num(load['15m'], 'guest.load.15m') },
    tasks: int(g['tasks'], 'guest.tasks'),
    network: list(g['network'], 'guest.network', STATUS_LIMITS.devices).map((e, i) => {
      const n = obj(e, `guest.network[${i}]`);
      const c = (k: string) => int(n[k], `guest.network[${i}].${k}`);
      return {
        interface: str(n['interface'], `guest.network[${i}].interface`, DEVICE),
        rxBytes: c('rxBytes'), rxPackets: c('rxPackets'), rxErrors: c('rxErrors'), rxDropped: c('rxDropped'),
        txBytes: c('txBytes'), txPackets: c('txPackets'), txErrors: c('txErrors'), txDropped: c('txDropped'),
      };
    }),
    disks: list(g['disks'], 'guest.disks', STATUS_LIMITS.devices).map((e, i) => {
      const d = obj(e, `guest.disks[${i}]`);
      const c = (k: string) => int(d[k], `guest.disks[${i}].${k}`);
      return { device: str(d['device'], `guest.disks[${i}].device`, DEVICE), reads: c('reads'), readBytes: c('readBytes'), writes: c('writes'), writtenBytes: c('writtenBytes'), ioSeconds: num(d['ioSeconds'], `guest.disks[${i}].ioSeconds`) };
    }),
  };
}

function agentRpc(v: unknown): AgentRpcHistogram[] {
  return list(v, 'agentRpc', STATUS_LIMITS.rpcMethods).map((e, i) => {
    const h = obj(e, `agentRpc[${i}]`);
    const counts = list(h['counts'], `agentRpc[${i}].counts`, AGENT_RPC_BUCKETS.length).map((c, j) => int(c, `agentRpc[${i}].counts[${j}]`));
    const count = int(h['count'], `agentRpc[${i}].count`);
    if (counts.length !== AGENT_RPC_BUCKETS.length) throw new StatusError(`agentRpc[${i}] has ${counts.length} buckets`);
    // Cumulative buckets, each at most the total.
    if (counts.some((c, j) => c > count || (j > 0 && c < counts[j - 1]!))) throw new StatusError(`agentRpc[${i}] buckets are not cumulative`);
    return { method: str(h['method'], `agentRpc[${i}].method`, /^[A-Za-z]{1,64}$/), counts, count, sumSeconds: num(h['sumSeconds'], `agentRpc[${i}].sumSeconds`), errors: int(h['errors'], `agentRpc[${i}].errors`) };
  });
}

/**
 * checkStatus returns the status in `body` (parsed JSON) or throws an Error saying what is wrong.
 * `expectedId` is the directory the shim was found in: a shim answering for another sandbox is refused.
 */
export function checkStatus(body: unknown, expectedId: string): SandboxStatus {
  const s = obj(body, 'status');
  if (s['version'] !== STATUS_VERSION) throw new StatusError(`status version ${String(s['version']).slice(0, 16)} (expected ${STATUS_VERSION})`);
  const sandboxId = str(s['sandboxId'], 'sandboxId', SANDBOX_ID);
  if (sandboxId !== expectedId) throw new StatusError(`status is for sandbox "${sandboxId}", not "${expectedId}"`);
  const pod = obj(s['pod'], 'pod');
  if (s['state'] !== 'running' && s['state'] !== 'stopped') throw new StatusError('state is not "running" or "stopped"');
  const host = obj(s['host'], 'host');
  const status: SandboxStatus = {
    version: STATUS_VERSION,
    sandboxId,
    pod: { namespace: label(pod['namespace'], 'pod.namespace'), name: label(pod['name'], 'pod.name'), uid: label(pod['uid'], 'pod.uid') },
    state: s['state'],
    createdAt: int(s['createdAt'], 'createdAt'),
    vcpus: int(s['vcpus'], 'vcpus'),
    memoryMiB: int(s['memoryMiB'], 'memoryMiB'),
    containers: list(s['containers'], 'containers', STATUS_LIMITS.containers).map((c, i) => str(c, `containers[${i}]`, SANDBOX_ID)),
    startup: list(s['startup'], 'startup', STATUS_LIMITS.startupPhases).map((e, i) => {
      const p = obj(e, `startup[${i}]`);
      if (!PHASES.has(p['name'] as StartupPhase['name'])) throw new StatusError(`startup[${i}].name is not a start phase`);
      return { name: p['name'] as StartupPhase['name'], ms: num(p['ms'], `startup[${i}].ms`) };
    }),
    host: { shim: proc(host['shim'], 'host.shim'), qemu: proc(host['qemu'], 'host.qemu') },
  };
  if (s['guest'] !== undefined) status.guest = guest(s['guest']);
  if (s['guestError'] !== undefined) status.guestError = str(s['guestError'], 'guestError', undefined, STATUS_LIMITS.errorChars);
  if (s['agentRpc'] !== undefined) status.agentRpc = agentRpc(s['agentRpc']);
  return status;
}
