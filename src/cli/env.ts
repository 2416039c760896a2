/**
 * `hull env`: what this hull would run with. The effective value of every config key and where it
 * comes from (the built-in default or the config file), the versions of hull and of what it runs
 * (node, QEMU, crun, containerd, the guest image and its kernel), and the paths it uses. For bug
 * reports and for checking an install; `--json` for programs.
 */
import { access, constants, readFile, realpath } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { parse } from 'smol-toml';
import { readMountinfo } from '../common/mountinfo.js';
import { hostRuntimeOf } from '../common/host-runtime.js';
import { run } from '../common/run.js';
import { DEFAULT_CONFIG_PATH, parseConfig, DEFAULT_CONFIG, type HullConfig } from '../config/index.js';
import { HullError } from '../errors/index.js';
import { currentGuestImage } from '../guest/index.js';
import { listTemplates } from '../factory/index.js';
import { PoolClient } from '../pool/index.js';
import { nodeMemory } from './node-memory.js';
import { JAIL_CAPABILITIES, JAIL_RLIMITS } from '../vmm/index.js';
import { CONFIG_KEYS, hullBinDir } from './install.js';

export interface EnvKey {
  key: string;
  value: unknown;
  source: 'default' | 'file';
}

export interface EnvReport {
  config: {
    path: string;
    /** pathFrom says how the path was chosen. */
    pathFrom: '--config' | 'HULL_CONFIG' | 'default';
    exists: boolean;
    keys: EnvKey[];
  };
  versions: {
    hull: string;
    node: string;
    qemu: string | null;
    crun: string | null;
    containerd: string | null;
    guestImage: { id: string; kernel: string } | null;
  };
  paths: {
    configFile: string;
    guestImagesDir: string;
    guestImage: string | null;
    runRoot: string;
    /** shimOnPath is the first containerd-shim-hull-v2 on PATH (as containerd would find it with this PATH), with its real path. */
    shimOnPath: { path: string; realPath: string } | null;
    hullBin: string | null;
    /** hostRuntime is hull's node runtime whose programs hull runs (the installer image's), or null for the host's own on PATH. */
    hostRuntime: string | null;
  };
  /** templates: what the VM template store holds now against its bounds (template_max_count, template_max_ram_mib). */
  templates: {
    dir: string;
    ramDir: string;
    count: number;
    maxCount: number;
    /** ramMiB is what their RAM files hold allocated (st_blocks). */
    ramMiB: number;
    maxRamMiB: number;
  };
  /**
   * pool: the warm VMs (pool_size per shape, src/pool) and what each ready VM costs in host memory
   * now (PSS of its processes), from the running owner; owner null when none runs.
   */
  pool: {
    size: number;
    dir: string;
    owner: { pid: number; ready: number; warming: number; lent: number; readyPssMiB: number[] } | null;
    /** memoryMiB: what the pool's cgroup is charged now (null: no such cgroup); memoryLimitMiB: pool_memory_limit. */
    memoryMiB: number | null;
    memoryLimitMiB: number;
  };
  /** confinement: what each VM's QEMU runs with here (src/vmm/jail.ts), and the host's cgroup version. */
  confinement: {
    jail: boolean;
    namespaces: string[];
    uids: string;
    capabilities: string[];
    noNewPrivs: boolean;
    seccomp: string;
    rlimits: Record<string, number>;
    cgroup: 'v1' | 'v2' | 'hybrid';
  };
}

/** configSources reads config text: the effective config and, per key, whether the file set it. */
export function configSources(text: string | undefined, where: string): { config: HullConfig; keys: EnvKey[] } {
  const config = text === undefined ? { ...DEFAULT_CONFIG } : parseConfig(text, where);
  const inFile = new Set(text === undefined ? [] : Object.keys(parse(text)));
  const keys = CONFIG_KEYS.map((k) => ({ key: k.key, value: config[k.field], source: inFile.has(k.key) ? ('file' as const) : ('default' as const) }));
  return { config, keys };
}

function firstLine(file: string, args: string[]): Promise<string | null> {
  return run(file, args, { timeoutMs: 10_000 }).then((r) => r.stdout.split('\n')[0]?.trim() ?? null, () => null);
}

/** findOnPath is the first executable `name` in the PATH string. */
export async function findOnPath(name: string, path = process.env['PATH'] ?? ''): Promise<string | undefined> {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}

export async function envReport(opts: { configPath?: string; hullVersion: string }): Promise<EnvReport> {
  const fromEnv = process.env['HULL_CONFIG'] || undefined;
  const path = opts.configPath ?? fromEnv ?? DEFAULT_CONFIG_PATH;
  const pathFrom = opts.configPath !== undefined ? '--config' : fromEnv !== undefined ? 'HULL_CONFIG' : 'default';
  let text: string | undefined;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    // As loadConfig: only the default path may be missing.
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || pathFrom !== 'default') throw new HullError('invalid_argument', `Cannot read config "${path}": ${(e as Error).message}`);
  }
  const { config, keys } = configSources(text, path);

  const image = await currentGuestImage(config.guestImagesDir).catch(() => undefined);
  const shim = await findOnPath('containerd-shim-hull-v2');
  const bin = await hullBinDir().catch(() => undefined);
  const templates = await listTemplates({ templatesRoot: config.templatesDir, ramRoot: config.templateRamDir }).catch(() => []);
  const memory = await nodeMemory(config);
  const poolStatus = config.poolSize > 0 ? await new PoolClient({ dir: config.poolDir, configPath: path, log: () => undefined }).status().catch(() => undefined) : undefined;
  const [qemu, crun, containerd] = await Promise.all([
    firstLine('qemu-system-x86_64', ['--version']),
    firstLine('crun', ['--version']),
    firstLine('containerd', ['--version']),
  ]);
  return {
    config: { path, pathFrom, exists: text !== undefined, keys },
    versions: {
      hull: opts.hullVersion,
      node: process.version,
      qemu,
      crun,
      containerd,
      guestImage: image ? { id: image.id, kernel: image.kernelRelease } : null,
    },
    paths: {
      configFile: path,
      guestImagesDir: config.guestImagesDir,
      guestImage: image?.dir ?? null,
      runRoot: config.runRoot,
      shimOnPath: shim ? { path: shim, realPath: await realpath(shim).catch(() => shim) } : null,
      hullBin: bin ?? null,
      hostRuntime: hostRuntimeOf(process.execPath) ?? null,
    },
    templates: {
      dir: config.templatesDir,
      ramDir: config.templateRamDir,
      count: templates.length,
      maxCount: config.templateMaxCount,
      ramMiB: Math.round((memory.templateAllocatedBytes ?? 0) / (1024 * 1024)),
      maxRamMiB: config.templateMaxRamMiB,
    },
    pool: {
      size: config.poolSize,
      dir: config.poolDir,
      owner: poolStatus
        ? {
            pid: poolStatus.pid,
            ready: poolStatus.shapes.reduce((n, s) => n + s.ready, 0),
            warming: poolStatus.shapes.reduce((n, s) => n + s.warming, 0),
            lent: poolStatus.lent,
            readyPssMiB: poolStatus.readyPssBytes.map((b) => Math.round((b / (1024 * 1024)) * 10) / 10),
          }
        : null,
      memoryMiB: memory.poolMemoryBytes === null ? null : Math.round(memory.poolMemoryBytes / (1024 * 1024)),
      memoryLimitMiB: config.poolMemoryLimitMiB,
    },
    confinement: {
      jail: config.jail,
      namespaces: config.jail ? ['mount (root: the sandbox\'s jail)', 'pid', 'net (the pod\'s)'] : ['net (the pod\'s)'],
      uids: config.jail ? `${config.jailUidBase}..${config.jailUidBase + config.jailUidCount - 1}, one per VM` : '0 (root)',
      capabilities: config.jail ? [...JAIL_CAPABILITIES] : ['all'],
      noNewPrivs: config.jail,
      seccomp: 'QEMU -sandbox on (obsolete, elevateprivileges, spawn, resourcecontrol denied)',
      rlimits: config.jail ? { ...JAIL_RLIMITS } : {},
      cgroup: await cgroupVersion(),
    },
  };
}

/** cgroupVersion: v2 (unified), hybrid (v1 controllers with a v2 tree beside them), or v1. */
async function cgroupVersion(): Promise<'v1' | 'v2' | 'hybrid'> {
  const types = new Set((await readMountinfo().catch(() => [])).map((m) => m.fsType));
  const v2 = types.has('cgroup2');
  const v1 = types.has('cgroup');
  return v1 && v2 ? 'hybrid' : v2 ? 'v2' : 'v1';
}

/** formatEnv is the human form of the report. */
export function formatEnv(r: EnvReport): string {
  const out: string[] = [];
  const fromText = r.config.pathFrom === 'default' ? 'default path' : r.config.pathFrom;
  out.push(`config ${r.config.path} (${fromText}${r.config.exists ? '' : ', not present: defaults'})`);
  const width = Math.max(...r.config.keys.map((k) => k.key.length));
  for (const k of r.config.keys) out.push(`  ${k.key.padEnd(width)} = ${JSON.stringify(k.value)}  (${k.source})`);
  const v = r.versions;
  out.push('versions');
  out.push(`  hull        ${v.hull}`);
  out.push(`  node        ${v.node}`);
  out.push(`  qemu        ${v.qemu ?? 'not found'}`);
  out.push(`  crun        ${v.crun ?? 'not found'}`);
  out.push(`  containerd  ${v.containerd ?? 'not found'}`);
  out.push(`  guest image ${v.guestImage ? `${v.guestImage.id} (kernel ${v.guestImage.kernel})` : 'none (run: hull image build)'}`);
  const p = r.paths;
  out.push('paths');
  out.push(`  config file       ${p.configFile}`);
  out.push(`  guest images      ${p.guestImagesDir}${p.guestImage ? ` (current: ${p.guestImage})` : ''}`);
  out.push(`  run root          ${p.runRoot}`);
  out.push(`  shim on PATH      ${p.shimOnPath ? (p.shimOnPath.realPath === p.shimOnPath.path ? p.shimOnPath.path : `${p.shimOnPath.path} -> ${p.shimOnPath.realPath}`) : 'containerd-shim-hull-v2 not on PATH (run: hull install)'}`);
  out.push(`  hull bin/         ${p.hullBin ?? 'unknown'}`);
  out.push(`  programs          ${p.hostRuntime ? `${p.hostRuntime} (hull's node runtime: node, QEMU and the tools hull runs)` : "the host's, on PATH"}`);
  const t = r.templates;
  out.push(`templates ${t.dir} (RAM in ${t.ramDir})`);
  out.push(`  kept              ${t.count} of at most ${t.maxCount}`);
  out.push(`  RAM allocated     ${t.ramMiB} MiB of at most ${t.maxRamMiB} MiB`);
  const pool = r.pool;
  out.push(`VM pool ${pool.dir}: ${pool.size === 0 ? 'off (pool_size = 0)' : `${pool.size} ready VMs per shape`}`);
  if (pool.size > 0) {
    const o = pool.owner;
    out.push(`  owner             ${o ? `pid ${o.pid}: ${o.ready} ready, ${o.warming} warming, ${o.lent} lent` : 'not running (the next pod starts it)'}`);
    if (o && o.readyPssMiB.length > 0) out.push(`  memory per ready VM  ${o.readyPssMiB.join(', ')} MiB (PSS of its host processes)`);
  }
  out.push(`  memory            ${pool.memoryMiB === null ? 'no pool cgroup' : `${pool.memoryMiB} MiB`} of at most ${pool.memoryLimitMiB} MiB (its cgroup; pool_memory_limit)`);
  const c = r.confinement;
  out.push(`QEMU confinement  ${c.jail ? 'jailed' : 'NOT jailed (jail = false)'}`);
  out.push(`  namespaces        ${c.namespaces.join(', ')}`);
  out.push(`  uid/gid           ${c.uids}`);
  out.push(`  capabilities      ${c.capabilities.join(', ')}${c.noNewPrivs ? '; no_new_privs' : ''}`);
  out.push(`  seccomp           ${c.seccomp}`);
  if (Object.keys(c.rlimits).length > 0) out.push(`  rlimits           ${Object.entries(c.rlimits).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  out.push(`  host cgroups      ${c.cgroup}`);
  return out.join('\n');
}
