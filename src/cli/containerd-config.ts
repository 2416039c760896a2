/**
 * Planning hull install's edit of containerd's config (pure functions, unit-tested).
 *
 * The config is edited as text: one marked block appended at the end, the rest of the file
 * untouched byte for byte, so uninstall restores it exactly by cutting the block out again
 * (removeManagedBlock). Before anything is written, the edit is planned and checked
 * (planContainerdEdit: the appended text must parse, the runtime must land at the right path,
 * nothing else may change meaning), so a refused install changes nothing.
 */
import { isDeepStrictEqual } from 'node:util';
import { parse } from 'smol-toml';
import { HullError } from '../errors/index.js';

export const DEFAULT_CONTAINERD_CONFIG = '/etc/containerd/config.toml';
/** DEFAULT_RUNTIME_NAME is the CRI handler (RuntimeClass `handler`) and the runtimes table key. */
export const DEFAULT_RUNTIME_NAME = 'hull';
export const RUNTIME_TYPE = 'io.containerd.hull.v2';
/** CRI_PLUGIN is the CRI plugin's name in a version 2 containerd config. */
export const CRI_PLUGIN = 'io.containerd.grpc.v1.cri';

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

export type Table = Record<string, unknown>;

export function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

export function at(root: unknown, path: string[]): unknown {
  let node = root;
  for (const key of path) {
    if (!isTable(node)) return undefined;
    node = node[key];
  }
  return node;
}

export const RUNTIMES_PATH = ['plugins', CRI_PLUGIN, 'containerd', 'runtimes'];

/** plain copies smol-toml's null-prototype tables into plain objects, so deep comparisons hold. */
function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (isTable(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

/** parsePlain parses TOML into plain objects; it throws smol-toml's error. */
export function parsePlain(text: string): Table {
  return plain(parse(text)) as Table;
}

export function parseToml(text: string, file: string): Table {
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
