/**
 * hull's configuration: /etc/hull/config.toml (or the path containerd hands
 * the shim through its ConfigPath runtime option), over built-in defaults.
 * Unknown keys are errors, so a typo never silently does nothing.
 */
import { readFile } from 'node:fs/promises';
import { parse } from 'smol-toml';
import { HullError } from '../errors/index.js';

export const DEFAULT_CONFIG_PATH = '/etc/hull/config.toml';

export interface HullConfig {
  /** vCPUs every sandbox gets before container limits are added. */
  defaultVcpus: number;
  /** MiB every sandbox gets before container limits are added. */
  defaultMemoryMiB: number;
  /**
   * MiB the guest itself needs beyond its containers' limits (kernel, hull-agent, crun, page cache no
   * container cgroup counts): the slack of a pod's VM when every container has a memory limit.
   */
  guestSlackMemoryMiB: number;
  /** The most vCPUs a sandbox VM may have: a pod asking for more is refused at RunPodSandbox. */
  maxVcpus: number;
  /** The most memory (MiB) a sandbox VM may have: a pod asking for more is refused at RunPodSandbox. */
  maxMemoryMiB: number;
  /** 'auto' picks kvm only where hardware virtualization works, else tcg. */
  accel: 'auto' | 'kvm' | 'tcg';
  /** Where built guest images live. */
  guestImagesDir: string;
  /** Per-sandbox state root. */
  runRoot: string;
  /** Bound on VM start to agent ready. */
  bootTimeoutMs: number;
  /** Start sandboxes as clones of a saved VM (one per image and size) instead of booting each. */
  templates: boolean;
  /** Where template manifests and device states live. */
  templatesDir: string;
  /** Where template RAM files live: must not be tmpfs (a disk file system: see src/factory/template.ts). */
  templateRamDir: string;
  /** At most this many templates are kept; the least recently used go first. */
  templateMaxCount: number;
  /** At most this much (MiB, allocated blocks) is held by template RAM files together. */
  templateMaxRamMiB: number;
  /** MiB of TCG's translated-code buffer per VM (host memory that only grows); unused under KVM. */
  tcgTbSizeMiB: number;
  /** Let the node's KSM merge equal guest pages across VMs (saves memory, opens a side channel). */
  memoryMerge: boolean;
  /** Confine each VM's QEMU (own mount and PID namespaces, own uid, 9p's capabilities only). */
  jail: boolean;
  /** First uid (and gid) of the range leased to jailed VMs, one per VM. */
  jailUidBase: number;
  /** How many uids the range holds: at most this many VMs at once. */
  jailUidCount: number;
  /** Where `hull monitor` serves /metrics: "HOST:PORT" ("[v6]:PORT" for IPv6). */
  monitorListen: string;
  /** A file holding the bearer token `hull monitor` asks of every scrape; "" asks none (loopback only). */
  monitorTokenFile: string;
  /** Where each shim serves its read-only status socket, `<statusDir>/<sandbox-id>.sock`. */
  statusDir: string;
  /** The group that may connect to the status sockets: the monitor's (deploy/daemonset.yaml runs it so). */
  monitorGid: number;
  /** The least severe log lines the shim and the monitor write. */
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** Let root on the node open a shell or run commands in a sandbox's guest (`hull console`). */
  debugConsole: boolean;
  /** Warm VMs kept ready per VM shape by `hull pool serve` (src/pool); 0 turns the pool off. */
  poolSize: number;
  /** The pool's directory: its socket, its VMs' state, its network namespace. */
  poolDir: string;
  /** The largest VM shape the pool keeps warm VMs of (vCPUs); larger pods start without the pool. */
  poolMaxVcpus: number;
  /** The largest VM shape the pool keeps warm VMs of (MiB); larger pods start without the pool. */
  poolMaxMemoryMiB: number;
  /** The memory limit (MiB) of the pool's cgroup: ready VMs and the pool's owner, all together. */
  poolMemoryLimitMiB: number;
}

export const DEFAULT_CONFIG: Readonly<HullConfig> = {
  defaultVcpus: 1,
  defaultMemoryMiB: 2048,
  guestSlackMemoryMiB: 256,
  maxVcpus: 16,
  maxMemoryMiB: 32_768,
  accel: 'auto',
  guestImagesDir: '/var/lib/hull/guest',
  runRoot: '/run/hull',
  bootTimeoutMs: 60_000,
  templates: true,
  templatesDir: '/var/lib/hull/templates',
  templateRamDir: '/var/lib/hull/template-ram',
  // As DEFAULT_TEMPLATE_MAX_COUNT and DEFAULT_TEMPLATE_MAX_RAM_MIB in src/factory/template.ts (a test checks).
  templateMaxCount: 8,
  templateMaxRamMiB: 2048,
  // As TCG_TB_SIZE_MIB in src/vmm/qemu-args.ts (a test checks).
  tcgTbSizeMiB: 256,
  memoryMerge: false,
  jail: true,
  jailUidBase: 2_000_000_000,
  jailUidCount: 65_536,
  monitorListen: '127.0.0.1:8090',
  monitorTokenFile: '',
  statusDir: '/run/hull-status',
  // The hull-monitor container's runAsGroup in deploy/daemonset.yaml (a test checks).
  monitorGid: 65532,
  logLevel: 'info',
  debugConsole: false,
  poolSize: 2,
  poolDir: '/run/hull-pool',
  poolMaxVcpus: 2,
  poolMaxMemoryMiB: 4096,
  poolMemoryLimitMiB: 2048,
};

/** parseListenAddress splits "HOST:PORT" or "[V6]:PORT"; undefined when it is neither. */
export function parseListenAddress(value: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65_535) return undefined;
  return { host: m[1] ?? m[2]!, port };
}

// TOML key -> config field, with the check each value must pass.
const KEYS: Record<string, { field: keyof HullConfig; check: (v: unknown) => boolean; expect: string }> = {
  default_vcpus: { field: 'defaultVcpus', check: (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 255, expect: 'an integer 1..255' },
  default_memory: { field: 'defaultMemoryMiB', check: (v) => Number.isInteger(v) && (v as number) >= 128, expect: 'an integer >= 128 (MiB)' },
  guest_slack_memory: { field: 'guestSlackMemoryMiB', check: (v) => Number.isInteger(v) && (v as number) >= 64 && (v as number) <= 65_536, expect: 'an integer 64..65536 (MiB)' },
  max_vcpus: { field: 'maxVcpus', check: (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 255, expect: 'an integer 1..255' },
  max_memory: { field: 'maxMemoryMiB', check: (v) => Number.isInteger(v) && (v as number) >= 128, expect: 'an integer >= 128 (MiB)' },
  accel: { field: 'accel', check: (v) => v === 'auto' || v === 'kvm' || v === 'tcg', expect: '"auto", "kvm" or "tcg"' },
  guest_images_dir: { field: 'guestImagesDir', check: (v) => typeof v === 'string' && v.startsWith('/'), expect: 'an absolute path' },
  run_root: { field: 'runRoot', check: (v) => typeof v === 'string' && v.startsWith('/'), expect: 'an absolute path' },
  boot_timeout_ms: { field: 'bootTimeoutMs', check: (v) => Number.isInteger(v) && (v as number) >= 1000, expect: 'an integer >= 1000' },
  templates: { field: 'templates', check: (v) => typeof v === 'boolean', expect: 'true or false' },
  templates_dir: { field: 'templatesDir', check: (v) => typeof v === 'string' && v.startsWith('/'), expect: 'an absolute path' },
  template_ram_dir: { field: 'templateRamDir', check: (v) => typeof v === 'string' && v.startsWith('/'), expect: 'an absolute path (not on tmpfs)' },
  template_max_count: { field: 'templateMaxCount', check: (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 1024, expect: 'an integer 1..1024' },
  memory_merge: { field: 'memoryMerge', check: (v) => typeof v === 'boolean', expect: 'true or false' },
  tcg_tb_size_mib: { field: 'tcgTbSizeMiB', check: (v) => Number.isInteger(v) && (v as number) >= 8 && (v as number) <= 2048, expect: 'an integer 8..2048 (MiB)' },
  jail: { field: 'jail', check: (v) => typeof v === 'boolean', expect: 'true or false' },
  jail_uid_base: { field: 'jailUidBase', check: (v) => Number.isInteger(v) && (v as number) >= 65_536 && (v as number) < 0xffff0000, expect: 'an integer >= 65536 (above host users and subuid ranges)' },
  jail_uid_count: { field: 'jailUidCount', check: (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 1 << 24, expect: 'an integer 1..16777216' },
  monitor_listen: { field: 'monitorListen', check: (v) => typeof v === 'string' && parseListenAddress(v) !== undefined, expect: '"HOST:PORT" (e.g. "127.0.0.1:8090")' },
  monitor_token_file: { field: 'monitorTokenFile', check: (v) => v === '' || (typeof v === 'string' && v.startsWith('/')), expect: 'an absolute path, or "" for none' },
  status_dir: { field: 'statusDir', check: (v) => typeof v === 'string' && v.startsWith('/') && v.length > 1 && !v.endsWith('/'), expect: 'an absolute path' },
  // Not root's group (0): the status sockets would then be root's only, and the monitor would need root.
  monitor_gid: { field: 'monitorGid', check: (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) < 0xffffffff, expect: 'an integer 1..4294967294 (a group id)' },
  log_level: { field: 'logLevel', check: (v) => v === 'debug' || v === 'info' || v === 'warn' || v === 'error', expect: '"debug", "info", "warn" or "error"' },
  debug_console: { field: 'debugConsole', check: (v) => typeof v === 'boolean', expect: 'true or false' },
  pool_size: { field: 'poolSize', check: (v) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 64, expect: 'an integer 0..64' },
  pool_dir: { field: 'poolDir', check: (v) => typeof v === 'string' && v.startsWith('/') && v.length > 1, expect: 'an absolute path' },
  pool_max_vcpus: { field: 'poolMaxVcpus', check: (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 255, expect: 'an integer 1..255' },
  pool_max_memory: { field: 'poolMaxMemoryMiB', check: (v) => Number.isInteger(v) && (v as number) >= 128, expect: 'an integer >= 128 (MiB)' },
  pool_memory_limit: { field: 'poolMemoryLimitMiB', check: (v) => Number.isInteger(v) && (v as number) >= 256, expect: 'an integer >= 256 (MiB)' },
  // One template of a small VM holds ~150-200 MiB: a smaller bound would never keep any.
  template_max_ram_mib: { field: 'templateMaxRamMiB', check: (v) => Number.isInteger(v) && (v as number) >= 256, expect: 'an integer >= 256 (MiB)' },
};

/** parseConfig reads TOML text over the defaults. */
export function parseConfig(text: string, where: string): HullConfig {
  let table: Record<string, unknown>;
  try {
    table = parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new HullError('invalid_argument', `Cannot parse config "${where}": ${(e as Error).message}`);
  }
  const config: HullConfig = { ...DEFAULT_CONFIG };
  for (const [key, raw] of Object.entries(table)) {
    const entry = KEYS[key];
    if (!entry) throw new HullError('invalid_argument', `Unknown key "${key}" in config "${where}"`);
    const value = typeof raw === 'bigint' ? Number(raw) : raw;
    if (!entry.check(value)) throw new HullError('invalid_argument', `Invalid "${key}" in config "${where}": expected ${entry.expect}`);
    (config as unknown as Record<string, unknown>)[entry.field] = value;
  }
  if (config.maxVcpus < config.defaultVcpus) throw new HullError('invalid_argument', `Invalid "max_vcpus" in config "${where}": ${config.maxVcpus} is below default_vcpus (${config.defaultVcpus})`);
  if (config.maxMemoryMiB < config.defaultMemoryMiB) throw new HullError('invalid_argument', `Invalid "max_memory" in config "${where}": ${config.maxMemoryMiB} MiB is below default_memory (${config.defaultMemoryMiB} MiB)`);
  return config;
}

/** loadConfig reads `path` (default /etc/hull/config.toml, or $HULL_CONFIG); a missing default file means defaults. */
export async function loadConfig(path?: string): Promise<HullConfig> {
  const explicit = path ?? process.env['HULL_CONFIG'];
  const file = explicit ?? DEFAULT_CONFIG_PATH;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && explicit === undefined) return { ...DEFAULT_CONFIG };
    throw new HullError('invalid_argument', `Cannot read config "${file}": ${(e as Error).message}`);
  }
  return parseConfig(text, file);
}
