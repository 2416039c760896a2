/**
 * `hull install` / `hull uninstall`: put hull on a node, and take it off again exactly.
 *
 * install links `containerd-shim-hull-v2` and `hull` into a bin dir on PATH (symlinks to this
 * checkout's `bin/`), writes a documented /etc/hull/config.toml when there is none, and adds the
 * `hull` runtime to containerd's MAIN config file. The main file, because a plugin section in a file
 * named by containerd's `imports` replaces the whole section of the main file (containerd 1.6
 * `mergeConfig`), so a drop-in holding only the hull runtime would wipe the rest of the CRI config.
 *
 * The containerd config is edited as text: one marked block appended at the end, the rest of the
 * file untouched byte for byte, so uninstall restores it exactly by cutting the block out again.
 * Before anything is written, every step is planned and checked (the appended text must parse, the
 * runtime must land at the right path, nothing else may change meaning), so a refused install
 * changes nothing. containerd is restarted only where that is known to be safe (systemd is PID 1,
 * the unit exists, the config is containerd's default file); otherwise the step is printed.
 */
import { execFile } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, chmod, chown, copyFile, lstat, mkdir, readFile, readlink, realpath, rename, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { parse } from 'smol-toml';
import { DEFAULT_CONFIG, DEFAULT_CONFIG_PATH, loadConfig, type HullConfig } from '../config/index.js';
import { HullError } from '../errors/index.js';
import { checkHost, type CheckLine } from './check.js';

export const DEFAULT_CONTAINERD_CONFIG = '/etc/containerd/config.toml';
export const DEFAULT_BIN_DIR = '/usr/local/bin';
/** DEFAULT_RUNTIME_NAME is the CRI handler (RuntimeClass `handler`) and the runtimes table key. */
export const DEFAULT_RUNTIME_NAME = 'hull';
export const RUNTIME_TYPE = 'io.containerd.hull.v2';
/** CRI_PLUGIN is the CRI plugin's name in a version 2 containerd config. */
export const CRI_PLUGIN = 'io.containerd.grpc.v1.cri';
/** BINARIES are the names install links into the bin dir, from this checkout's bin/. */
export const BINARIES = ['containerd-shim-hull-v2', 'hull'] as const;
export const BACKUP_SUFFIX = '.hull-backup';

export type RestartMode = 'auto' | 'never';

export interface InstallOptions {
  /** containerdConfig is containerd's main config file (default /etc/containerd/config.toml). */
  containerdConfig: string;
  /** binDir gets the symlinks (default /usr/local/bin). */
  binDir: string;
  /** hullConfig is hull's config file, written when absent and named as the runtime's ConfigPath. */
  hullConfig: string;
  restart: RestartMode;
  runtimeName: string;
  /** sourceBinDir holds the files the links point at; default: this checkout's bin/, real path. */
  sourceBinDir?: string;
  /** check runs `hull check` at the end (install only; default true). */
  check?: boolean;
  log?: (line: string) => void;
}

export interface InstallResult {
  /** changes lists what was created or modified, one line each; empty when everything was in place. */
  changes: string[];
  containerdConfigChanged: boolean;
  /** check holds `hull check`'s lines when it ran. */
  check?: CheckLine[];
  /** ready is false when a required check failed. */
  ready: boolean;
}

export interface UninstallResult {
  changes: string[];
  containerdConfigChanged: boolean;
}

// ---------------------------------------------------------------------------------------------
// hull's config file

/** ConfigKeyDoc documents one key of hull's config.toml; install writes it, `hull env` reads it. */
export interface ConfigKeyDoc {
  key: string;
  field: keyof HullConfig;
  doc: string[];
}

/** CONFIG_KEYS are the keys of config.toml (src/config/config.ts), in the order the file shows them. */
export const CONFIG_KEYS: readonly ConfigKeyDoc[] = [
  { key: 'default_vcpus', field: 'defaultVcpus', doc: ['vCPUs of a sandbox VM before the CPU limits of its containers are added (an integer 1..255).'] },
  { key: 'default_memory', field: 'defaultMemoryMiB', doc: ['Memory of a sandbox VM in MiB before the memory limits of its containers are added (an integer >= 128).'] },
  {
    key: 'accel',
    field: 'accel',
    doc: [
      'Accelerator: "auto" uses kvm only where /proc/cpuinfo shows vmx or svm and /dev/kvm opens, else tcg',
      '(software emulation: isolation holds, CPU-bound work is much slower). "kvm" or "tcg" force one.',
    ],
  },
  { key: 'guest_images_dir', field: 'guestImagesDir', doc: ['Where built guest images live (`hull image build` writes them; an absolute path).'] },
  {
    key: 'run_root',
    field: 'runRoot',
    doc: ['Per-sandbox state, <run_root>/<sandbox-id>/ (an absolute path; keep it short: unix socket paths', 'under it are limited to 107 bytes).'],
  },
  { key: 'boot_timeout_ms', field: 'bootTimeoutMs', doc: ['Bound in milliseconds on starting a VM until its agent answers (an integer >= 1000).'] },
  {
    key: 'templates',
    field: 'templates',
    doc: [
      'Start sandboxes as clones of a saved VM of the same image and size (fast, shared memory pages)',
      'instead of booting each; false boots every sandbox on its own (no pages shared between pods).',
    ],
  },
  { key: 'templates_dir', field: 'templatesDir', doc: ['Where VM template manifests and device states live (an absolute path).'] },
  { key: 'template_ram_dir', field: 'templateRamDir', doc: ['Where VM template RAM files live (an absolute path on tmpfs).'] },
];

/** tomlValue formats a config default as TOML (strings are plain ASCII paths and words). */
function tomlValue(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/**
 * hullConfigTemplate is the config.toml install writes: every key commented out at its default, so
 * the built-in defaults keep applying (also when a later hull changes one) until an admin sets a key.
 */
export function hullConfigTemplate(): string {
  const lines = [
    '# hull configuration, written by `hull install` (`hull uninstall` removes it while it is unchanged).',
    '# Every key is optional: a commented-out key shows its default. Unknown keys are errors.',
    '# `hull env` prints the effective value of each key and where it comes from.',
  ];
  for (const k of CONFIG_KEYS) {
    lines.push('', ...k.doc.map((d) => `# ${d}`), `# ${k.key} = ${tomlValue(DEFAULT_CONFIG[k.field])}`);
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// containerd's config: planning the edit (pure functions, unit-tested)

/** RuntimeEntry is what the managed block defines, as the parsed TOML shows it. */
export function runtimeEntry(hullConfig: string): Record<string, unknown> {
  return { runtime_type: RUNTIME_TYPE, privileged_without_host_devices: true, options: { ConfigPath: hullConfig } };
}

export function beginMarker(runtimeName: string): string {
  return `# BEGIN ${runtimeName} (managed by hull install)`;
}

export function endMarker(runtimeName: string): string {
  return `# END ${runtimeName}`;
}

function tableName(runtimeName: string): string {
  return `plugins.${JSON.stringify(CRI_PLUGIN)}.containerd.runtimes.${runtimeName}`;
}

/**
 * managedBlock is the text install appends. `created` marks a file install made from nothing (it
 * then starts with `version = 2`, and uninstall deletes the file when only the block was in it).
 */
export function managedBlock(runtimeName: string, hullConfig: string, created = false): string {
  const table = tableName(runtimeName);
  return [
    beginMarker(runtimeName),
    ...(created ? ['# hull install created this file; hull uninstall removes it again.', 'version = 2', ''] : []),
    `# Pods with runtimeClassName "${runtimeName}" (CRI runtime handler "${runtimeName}") run in their own VM.`,
    `[${table}]`,
    '  # containerd runs containerd-shim-hull-v2, found on its PATH.',
    `  runtime_type = "${RUNTIME_TYPE}"`,
    "  # A privileged pod gets the devices of its VM, never the host's /dev.",
    '  privileged_without_host_devices = true',
    `  [${table}.options]`,
    "    # hull's configuration for the pods of this runtime.",
    `    ConfigPath = ${JSON.stringify(hullConfig)}`,
    endMarker(runtimeName),
    '',
  ].join('\n');
}

export type ContainerdPlan =
  /** append: write `text` (the original plus the managed block). */
  | { action: 'append'; text: string; created: boolean; warnings: string[] }
  /** present: the runtime is already configured; nothing to do. */
  | { action: 'present'; managed: boolean; configPath: string | undefined; warnings: string[] };

type Table = Record<string, unknown>;

function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function at(root: unknown, path: string[]): unknown {
  let node = root;
  for (const key of path) {
    if (!isTable(node)) return undefined;
    node = node[key];
  }
  return node;
}

const RUNTIMES_PATH = ['plugins', CRI_PLUGIN, 'containerd', 'runtimes'];

/** plain copies smol-toml's null-prototype tables into plain objects, so deep comparisons hold. */
function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (isTable(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

/** parsePlain parses TOML into plain objects; it throws smol-toml's error. */
function parsePlain(text: string): Table {
  return plain(parse(text)) as Table;
}

function parseToml(text: string, file: string): Table {
  try {
    return parsePlain(text);
  } catch (e) {
    throw new HullError('failed_precondition', `Cannot parse containerd config "${file}": ${(e as Error).message.split('\n')[0]}; nothing was changed`, { cause: e });
  }
}

/** checkVersion refuses anything but a version 2 config, which is all this edit knows how to do. */
function checkVersion(parsed: Table, file: string): void {
  const raw = parsed['version'];
  const version = typeof raw === 'bigint' ? Number(raw) : raw;
  if (version === 2) return;
  const found = version === undefined ? 'has no "version" key, which containerd reads as version 1' : `is version ${String(version)}`;
  throw new HullError(
    'failed_precondition',
    `containerd config "${file}" ${found}: hull install supports only version = 2 configs (containerd 1.5 to 1.7); nothing was changed. ` +
      `Convert the file to version 2, or add the runtime by hand: ${tableName(DEFAULT_RUNTIME_NAME)} with runtime_type = "${RUNTIME_TYPE}"`,
  );
}

/** withoutPath returns a copy of `root` without the table at `path`, and without tables that held only it and were not in `before`. */
function withoutPath(root: Table, path: string[], before: Table): Table {
  const copy = structuredClone(root);
  const parents: Table[] = [copy];
  let node: Table = copy;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (!isTable(next)) return copy;
    parents.push(next);
    node = next;
  }
  delete node[path[path.length - 1]!];
  for (let depth = path.length - 1; depth >= 1; depth--) {
    const table = parents[depth]!;
    const prefix = path.slice(0, depth);
    if (Object.keys(table).length === 0 && at(before, prefix) === undefined) delete parents[depth - 1]![path[depth - 1]!];
  }
  return copy;
}

/**
 * planContainerdEdit decides what install does to containerd's config `original` (undefined: there
 * is no file). It throws, changing nothing, when the file is not a version 2 config or when the
 * appended block would not parse or would land anywhere but the runtimes table.
 */
export function planContainerdEdit(original: string | undefined, file: string, runtimeName: string, hullConfig: string): ContainerdPlan {
  const runtimePath = [...RUNTIMES_PATH, runtimeName];
  const expected = runtimeEntry(hullConfig);
  if (original === undefined) {
    const text = managedBlock(runtimeName, hullConfig, true);
    const parsed = parseToml(text, file);
    if (!isDeepStrictEqual(at(parsed, runtimePath), expected)) throw new HullError('internal', `The hull block for "${file}" does not parse to the runtime entry`);
    return { action: 'append', text, created: true, warnings: [] };
  }

  const before = parseToml(original, file);
  checkVersion(before, file);
  const warnings: string[] = [];
  const disabled = before['disabled_plugins'];
  if (Array.isArray(disabled) && (disabled.includes(CRI_PLUGIN) || disabled.includes('cri'))) {
    warnings.push(`the CRI plugin is disabled in "${file}" (disabled_plugins): Kubernetes reaches hull only once it is enabled`);
  }

  const existing = at(before, runtimePath);
  if (existing !== undefined) {
    const managed = original.split('\n').includes(beginMarker(runtimeName));
    const configPath = at(existing, ['options', 'ConfigPath']);
    if (managed && configPath !== hullConfig) warnings.push(`runtime "${runtimeName}" keeps ConfigPath ${JSON.stringify(configPath)}, not "${hullConfig}" (run hull uninstall first to change it)`);
    return { action: 'present', managed, configPath: typeof configPath === 'string' ? configPath : undefined, warnings };
  }
  if (original.split('\n').includes(beginMarker(runtimeName))) {
    throw new HullError('failed_precondition', `containerd config "${file}" has a "${beginMarker(runtimeName)}" line but no runtime "${runtimeName}": fix or remove that block by hand; nothing was changed`);
  }

  // A separating newline: the block starts on its own line, and uninstall knows exactly what to cut.
  const text = `${original}\n${managedBlock(runtimeName, hullConfig)}`;
  let after: Table;
  try {
    after = parsePlain(text);
  } catch (e) {
    throw new HullError(
      'failed_precondition',
      `Cannot append the runtime "${runtimeName}" to containerd config "${file}": the result would not be valid TOML ` +
        `(${(e as Error).message.split('\n')[0]}). The file probably defines the runtimes (or a table above them) as an inline table. ` +
        `Nothing was changed; add this block by hand inside that definition:\n${managedBlock(runtimeName, hullConfig)}`,
      { cause: e },
    );
  }
  if (!isDeepStrictEqual(at(after, runtimePath), expected)) {
    throw new HullError('failed_precondition', `Appending to containerd config "${file}" does not put the runtime at [${tableName(runtimeName)}]; nothing was changed`);
  }
  if (!isDeepStrictEqual(withoutPath(after, runtimePath, before), before)) {
    throw new HullError('failed_precondition', `Appending to containerd config "${file}" would change more than the runtime "${runtimeName}"; nothing was changed`);
  }
  return { action: 'append', text, created: false, warnings };
}

/**
 * removeManagedBlock cuts the managed block (and the newline install put before it) out of `text`.
 * Returns undefined when there is no block.
 */
export function removeManagedBlock(text: string, runtimeName: string, file: string): string | undefined {
  const begin = beginMarker(runtimeName);
  const end = endMarker(runtimeName);
  let start: number;
  if (text.startsWith(`${begin}\n`)) {
    start = 0;
  } else {
    const i = text.indexOf(`\n${begin}\n`);
    if (i < 0) return undefined;
    start = i + 1;
  }
  const e = text.indexOf(`\n${end}\n`, start);
  let stop: number;
  if (e >= 0) stop = e + end.length + 2;
  else if (text.endsWith(`\n${end}`)) stop = text.length;
  else throw new HullError('failed_precondition', `containerd config "${file}" has "${begin}" but no "${end}" line after it: remove the block by hand`);
  // install appended "\n" + block to the original: the newline before the block is install's too.
  const cutFrom = start > 0 ? start - 1 : 0;
  return text.slice(0, cutFrom) + text.slice(stop);
}

// ---------------------------------------------------------------------------------------------
// restarting containerd

export interface RestartFacts {
  /** systemd is PID 1 (/proc/1/comm is "systemd" and /run/systemd/system exists). */
  systemd: boolean;
  /** containerd.service is a loaded unit. */
  unitLoaded: boolean;
}

export type RestartDecision = { run: string[]; say: string } | { run?: undefined; say: string };

/** restartDecision says how to make containerd read a changed config: a command to run, or a step to print. */
export function restartDecision(mode: RestartMode, containerdConfig: string, why: string, facts: RestartFacts | undefined): RestartDecision {
  const isDefault = resolve(containerdConfig) === DEFAULT_CONTAINERD_CONFIG;
  const step = `restart containerd to ${why}`;
  if (!isDefault) return { say: `restart the containerd that reads "${containerdConfig}" to ${why}` };
  if (mode === 'auto' && facts?.systemd && facts.unitLoaded) return { run: ['systemctl', 'restart', 'containerd'], say: `restarted containerd to ${why}: systemctl restart containerd` };
  if (mode === 'auto' && facts && !facts.systemd) return { say: `${step} (systemd is not PID 1 here: restart it the way it was started)` };
  return { say: `${step}: systemctl restart containerd` };
}

function run(file: string, args: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (e, stdout, stderr) => {
      const code = e ? (typeof (e as NodeJS.ErrnoException).code === 'number' ? Number((e as NodeJS.ErrnoException).code) : -1) : 0;
      done({ code, stdout: String(stdout), stderr: e && !stderr ? (e as Error).message : String(stderr) });
    });
  });
}

async function restartFacts(): Promise<RestartFacts> {
  const comm = (await readFile('/proc/1/comm', 'utf8').catch(() => '')).trim();
  const systemd = comm === 'systemd' && (await access('/run/systemd/system').then(() => true, () => false));
  if (!systemd) return { systemd, unitLoaded: false };
  const show = await run('systemctl', ['show', '--property=LoadState', '--value', 'containerd.service'], 10_000);
  return { systemd, unitLoaded: show.code === 0 && show.stdout.trim() === 'loaded' };
}

async function restartContainerd(opts: InstallOptions, why: string, log: (l: string) => void): Promise<void> {
  const isDefault = resolve(opts.containerdConfig) === DEFAULT_CONTAINERD_CONFIG;
  // Facts are gathered only when a restart could follow from them.
  const facts = opts.restart === 'auto' && isDefault ? await restartFacts() : undefined;
  const decision = restartDecision(opts.restart, opts.containerdConfig, why, facts);
  if (!decision.run) {
    log(decision.say);
    return;
  }
  const [cmd, ...args] = decision.run as [string, ...string[]];
  const r = await run(cmd, args, 120_000);
  if (r.code !== 0) throw new HullError('unavailable', `${decision.run.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  log(decision.say);
}

// ---------------------------------------------------------------------------------------------
// files

/** hullBinDir is this checkout's bin/ (real path), which the links point at. */
export async function hullBinDir(): Promise<string> {
  const dir = fileURLToPath(new URL('../../../bin', import.meta.url));
  try {
    const real = await realpath(dir);
    for (const name of BINARIES) await access(join(real, name), fsConstants.X_OK);
    return real;
  } catch (e) {
    throw new HullError('failed_precondition', `Cannot find hull's bin/ (${BINARIES.join(', ')}) next to the running hull at "${dir}": ${(e as Error).message}`);
  }
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** realFile follows symlinks to the file that holds the text (it may not exist yet). */
async function realFile(file: string): Promise<string> {
  return realpath(file).catch(() => resolve(file));
}

/** writeAtomic replaces `file` with `text`, keeping its mode and owner when it existed. */
async function writeAtomic(file: string, text: string, tmp = `${file}.hull-tmp`): Promise<void> {
  const old = await stat(file).catch(() => undefined);
  await writeFile(tmp, text, { mode: old ? old.mode & 0o7777 : 0o644 });
  try {
    if (old) {
      await chmod(tmp, old.mode & 0o7777);
      await chown(tmp, old.uid, old.gid).catch(() => undefined);
    }
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

type LinkState = { state: 'missing' } | { state: 'ours' } | { state: 'other-hull'; target: string } | { state: 'foreign'; what: string };

/** linkState tells what is at `path`: nothing, our link, a link to another hull's file of that name, or something else. */
async function linkState(path: string, target: string): Promise<LinkState> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return { state: 'missing' };
  if (!st.isSymbolicLink()) return { state: 'foreign', what: st.isDirectory() ? 'a directory' : 'a file, not a link' };
  const to = await readlink(path);
  const abs = resolve(dirname(path), to);
  if (abs === target) return { state: 'ours' };
  if (basename(abs) === basename(target)) return { state: 'other-hull', target: abs };
  return { state: 'foreign', what: `a link to "${to}"` };
}

async function placeLink(path: string, target: string): Promise<void> {
  const tmp = `${path}.hull-tmp`;
  await rm(tmp, { force: true });
  await symlink(target, tmp);
  await rename(tmp, path);
}

// ---------------------------------------------------------------------------------------------
// install / uninstall

function validate(opts: InstallOptions): void {
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(opts.runtimeName)) {
    throw new HullError('invalid_argument', `Invalid --runtime-name "${opts.runtimeName}": a RuntimeClass handler is a DNS label (lowercase letters, digits, "-")`);
  }
  if (opts.restart !== 'auto' && opts.restart !== 'never') throw new HullError('invalid_argument', `Invalid --restart-containerd "${String(opts.restart)}": expected auto or never`);
  for (const [flag, path] of [['--config', opts.hullConfig], ['--containerd-config', opts.containerdConfig], ['--bin-dir', opts.binDir]] as const) {
    if (!path.startsWith('/')) throw new HullError('invalid_argument', `${flag} must be an absolute path (containerd hands it to shims as is): "${path}"`);
  }
}

/** install puts hull on this node; idempotent. Everything is planned and checked before the first write. */
export async function install(opts: InstallOptions): Promise<InstallResult> {
  validate(opts);
  const log = opts.log ?? ((l: string) => console.log(l));
  const changes: string[] = [];
  const note = (line: string): void => {
    changes.push(line);
    log(line);
  };

  // Plan: links, hull's config, containerd's config. Any refusal happens here, before a write.
  const source = opts.sourceBinDir ?? (await hullBinDir());
  const links: { path: string; target: string; state: LinkState }[] = [];
  for (const name of BINARIES) {
    const path = join(opts.binDir, name);
    const target = join(source, name);
    const state = await linkState(path, target);
    if (state.state === 'foreign') throw new HullError('failed_precondition', `"${path}" is ${state.what}: remove it or choose another --bin-dir; nothing was changed`);
    links.push({ path, target, state });
  }
  const hullConfigText = await readIfExists(opts.hullConfig);
  // An existing config must be valid: the runtime will name it, and the check below reads it.
  if (hullConfigText !== undefined) await loadConfig(opts.hullConfig);
  const ctrdFile = await realFile(opts.containerdConfig);
  const original = await readIfExists(ctrdFile);
  const plan = planContainerdEdit(original, opts.containerdConfig, opts.runtimeName, opts.hullConfig);
  if (plan.action === 'append') await verifyWithContainerd(ctrdFile, plan.text, original !== undefined, opts.runtimeName);

  // Apply.
  await mkdir(opts.binDir, { recursive: true, mode: 0o755 });
  for (const l of links) {
    if (l.state.state === 'ours') {
      log(`unchanged: ${l.path} -> ${l.target}`);
      continue;
    }
    await placeLink(l.path, l.target);
    note(l.state.state === 'other-hull' ? `relinked ${l.path} -> ${l.target} (was -> ${l.state.target})` : `linked ${l.path} -> ${l.target}`);
  }

  if (hullConfigText === undefined) {
    await mkdir(dirname(opts.hullConfig), { recursive: true, mode: 0o755 });
    await writeFile(opts.hullConfig, hullConfigTemplate(), { mode: 0o644, flag: 'wx' });
    note(`wrote ${opts.hullConfig} (defaults, every key documented)`);
  } else {
    log(`unchanged: ${opts.hullConfig} (exists; kept as is)`);
  }

  for (const w of plan.warnings) log(`warning: ${w}`);
  if (plan.action === 'present') {
    log(`unchanged: ${opts.containerdConfig} already has runtime "${opts.runtimeName}"${plan.managed ? '' : ' (not managed by hull install: left as is)'}`);
  } else {
    if (original !== undefined) {
      const backup = `${ctrdFile}${BACKUP_SUFFIX}`;
      const made = await copyFile(ctrdFile, backup, fsConstants.COPYFILE_EXCL).then(() => true, (e: NodeJS.ErrnoException) => {
        if (e.code === 'EEXIST') return false;
        throw e;
      });
      if (made) note(`backed up ${ctrdFile} to ${backup}`);
    } else {
      await mkdir(dirname(ctrdFile), { recursive: true, mode: 0o755 });
    }
    await writeAtomic(ctrdFile, plan.text);
    note(plan.created
      ? `created ${opts.containerdConfig} (version 2) with runtime "${opts.runtimeName}" (type ${RUNTIME_TYPE}, ConfigPath ${opts.hullConfig})`
      : `added runtime "${opts.runtimeName}" (type ${RUNTIME_TYPE}, ConfigPath ${opts.hullConfig}) to ${opts.containerdConfig}, in the block marked "${beginMarker(opts.runtimeName)}"`);
    await restartContainerd(opts, `load the ${opts.runtimeName} runtime`, log);
  }

  const result: InstallResult = { changes, containerdConfigChanged: plan.action === 'append', ready: true };
  if (opts.check ?? true) {
    result.check = await checkHost(await loadConfig(opts.hullConfig));
    for (const line of result.check) log(`check: ${line.ok ? 'ok  ' : 'FAIL'} ${line.what}: ${line.detail}`);
    result.ready = !result.check.some((l) => l.required && !l.ok);
  }
  log(changes.length === 0 ? 'hull install: nothing to change, hull is installed' : `hull install: ${changes.length} change(s)`);
  if (!result.ready) log('hull install: installed, but this host cannot run hull sandboxes yet (see FAIL above)');
  return result;
}

/** uninstall reverses install exactly; idempotent. Only what install made, and is still as install made it, is removed. */
export async function uninstall(opts: InstallOptions): Promise<UninstallResult> {
  validate(opts);
  const log = opts.log ?? ((l: string) => console.log(l));
  const changes: string[] = [];
  const note = (line: string): void => {
    changes.push(line);
    log(line);
  };

  // Plan containerd's config first: a block we cannot cut cleanly stops everything.
  const ctrdFile = await realFile(opts.containerdConfig);
  const text = await readIfExists(ctrdFile);
  const restored = text === undefined ? undefined : removeManagedBlock(text, opts.runtimeName, opts.containerdConfig);
  if (restored !== undefined && restored !== '') {
    const parsed = parseToml(restored, `${opts.containerdConfig} without the hull block`);
    if (at(parsed, [...RUNTIMES_PATH, opts.runtimeName]) !== undefined) log(`warning: ${opts.containerdConfig} defines runtime "${opts.runtimeName}" outside the hull block too`);
  }

  let containerdConfigChanged = false;
  if (text === undefined) {
    log(`unchanged: ${opts.containerdConfig} does not exist`);
  } else if (restored === undefined) {
    const parsed = (() => {
      try {
        return parsePlain(text);
      } catch {
        return undefined;
      }
    })();
    const present = parsed && at(parsed, [...RUNTIMES_PATH, opts.runtimeName]) !== undefined;
    log(`unchanged: ${opts.containerdConfig} has no hull block${present ? ` (its runtime "${opts.runtimeName}" is not managed by hull install: left as is)` : ''}`);
  } else {
    if (restored === '') {
      await unlink(ctrdFile);
      note(`removed ${opts.containerdConfig} (hull install had created it)`);
    } else {
      await writeAtomic(ctrdFile, restored);
      note(`removed runtime "${opts.runtimeName}" from ${opts.containerdConfig}`);
    }
    containerdConfigChanged = true;
  }
  const backup = `${ctrdFile}${BACKUP_SUFFIX}`;
  const backupText = await readIfExists(backup);
  if (backupText !== undefined) {
    const now = await readIfExists(ctrdFile);
    if (now === backupText) {
      await rm(backup);
      note(`removed ${backup} (the config is back to it)`);
    } else {
      log(`kept ${backup}: ${opts.containerdConfig} differs from it (changed since hull install)`);
    }
  }

  const source = opts.sourceBinDir ?? (await hullBinDir().catch(() => undefined));
  for (const name of BINARIES) {
    const path = join(opts.binDir, name);
    const state = await linkState(path, join(source ?? '/nonexistent', name));
    if (state.state === 'ours' || state.state === 'other-hull') {
      await unlink(path);
      note(`removed link ${path}`);
    } else if (state.state === 'foreign') {
      log(`kept ${path}: it is ${state.what}, not a link to hull`);
    }
  }

  const hullConfigText = await readIfExists(opts.hullConfig);
  if (hullConfigText === hullConfigTemplate()) {
    await rm(opts.hullConfig);
    note(`removed ${opts.hullConfig} (unchanged since hull install)`);
  } else if (hullConfigText !== undefined) {
    log(`kept ${opts.hullConfig}: it differs from what hull install writes`);
  }

  if (containerdConfigChanged) await restartContainerd(opts, `unload the ${opts.runtimeName} runtime`, log);
  log(changes.length === 0 ? 'hull uninstall: nothing to change, hull is not installed' : `hull uninstall: ${changes.length} change(s)`);
  return { changes, containerdConfigChanged };
}

/**
 * verifyWithContainerd lets containerd itself read the new config (`containerd config dump`, which
 * only loads and prints it) when a containerd binary is on PATH: its TOML parser, not ours, decides.
 * The candidate is written next to the real file, so relative `imports` resolve the same.
 */
async function verifyWithContainerd(file: string, text: string, existed: boolean, runtimeName: string): Promise<void> {
  const candidate = `${file}.hull-check`;
  const dumpOf = async (path: string): Promise<{ code: number; stdout: string; stderr: string }> => run('containerd', ['--config', path, 'config', 'dump'], 30_000);
  if (existed === false) await mkdir(dirname(file), { recursive: true, mode: 0o755 });
  await writeFile(candidate, text, { mode: 0o600 });
  try {
    const r = await dumpOf(candidate);
    if (r.code === -1 && /ENOENT/.test(r.stderr)) return; // no containerd here (e.g. the deploy container)
    if (r.code !== 0) {
      // Only our addition is to blame if containerd reads the file without it.
      if (existed && (await dumpOf(file)).code !== 0) return;
      throw new HullError('failed_precondition', `containerd does not accept "${file}" with the hull runtime added (containerd config dump: ${r.stderr.trim().split('\n').pop()}); nothing was changed`);
    }
    let dumped: Table;
    try {
      dumped = parsePlain(r.stdout);
    } catch {
      return;
    }
    const v = dumped['version'];
    if (v !== 2 && v !== 2n) return; // a containerd that dumps another layout (2.x): nothing to compare
    const runtime = at(dumped, [...RUNTIMES_PATH, runtimeName]);
    if (!isTable(runtime) || runtime['runtime_type'] !== RUNTIME_TYPE) {
      throw new HullError('failed_precondition', `containerd reads "${file}" with the hull block but shows no runtime "${runtimeName}" (containerd config dump); nothing was changed`);
    }
  } finally {
    await rm(candidate, { force: true });
  }
}

/** installOptions fills in the defaults of the install/uninstall command-line options. */
export function installOptions(values: { 'containerd-config'?: string; 'bin-dir'?: string; config?: string; 'restart-containerd'?: string; 'runtime-name'?: string }): InstallOptions {
  return {
    containerdConfig: values['containerd-config'] ?? DEFAULT_CONTAINERD_CONFIG,
    binDir: values['bin-dir'] ?? DEFAULT_BIN_DIR,
    hullConfig: values.config ?? DEFAULT_CONFIG_PATH,
    restart: (values['restart-containerd'] ?? 'auto') as RestartMode,
    runtimeName: values['runtime-name'] ?? DEFAULT_RUNTIME_NAME,
  };
}
