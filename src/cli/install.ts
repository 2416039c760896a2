/**
 * `hull install` / `hull uninstall`: put hull on a node, and take it off again exactly.
 *
 * install links `containerd-shim-hull-v2` and `hull` into a bin dir on PATH (symlinks to this
 * checkout's `bin/`, install-files.ts), writes a documented /etc/hull/config.toml when there is none
 * (hull-config-template.ts), and adds the `hull` runtime to containerd's MAIN config file. The main
 * file, because a plugin section in a file named by containerd's `imports` replaces the whole section
 * of the main file (containerd 1.6 `mergeConfig`), so a drop-in holding only the hull runtime would
 * wipe the rest of the CRI config.
 *
 * Every step is planned and checked before anything is written (containerd-config.ts plans the edit,
 * containerd-service.ts lets containerd read the result), so a refused install changes nothing.
 * containerd is then restarted where that is safe, or the step is printed (containerd-service.ts).
 */
import { constants as fsConstants } from 'node:fs';
import { copyFile, mkdir, rm, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DEFAULT_CONFIG, DEFAULT_CONFIG_PATH, loadConfig, parseConfig } from '../config/index.js';
import { HullError } from '../errors/index.js';
import { checkHost, type CheckLine } from './check.js';
import {
  DEFAULT_CONTAINERD_CONFIG,
  DEFAULT_RUNTIME_NAME,
  RUNTIME_TYPE,
  RUNTIMES_PATH,
  at,
  beginMarker,
  parsePlain,
  parseToml,
  planContainerdEdit,
  removeManagedBlock,
} from './containerd-config.js';
import { restartContainerd, verifyWithContainerd, type RestartMode } from './containerd-service.js';
import { hullConfigTemplate } from './hull-config-template.js';
import { stopPool } from './pool.js';
import { BINARIES, hullBinDir, linkState, placeLink, readIfExists, realFile, writeAtomic, type LinkState } from './install-files.js';

// This file is the entry point of hull install: the names of the files it is built from are importable here too.
export {
  CRI_PLUGIN,
  DEFAULT_CONTAINERD_CONFIG,
  DEFAULT_RUNTIME_NAME,
  RUNTIME_TYPE,
  beginMarker,
  endMarker,
  managedBlock,
  planContainerdEdit,
  removeManagedBlock,
  runtimeEntry,
  type ContainerdPlan,
} from './containerd-config.js';
export { restartDecision, type RestartDecision, type RestartFacts, type RestartMode } from './containerd-service.js';
export { CONFIG_KEYS, hullConfigTemplate, type ConfigKeyDoc } from './hull-config-template.js';
export { BINARIES, hullBinDir } from './install-files.js';

export const DEFAULT_BIN_DIR = '/usr/local/bin';
export const BACKUP_SUFFIX = '.hull-backup';

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
  // The pool's owner (started by pods, detached) ends with hull: it and its ready VMs go first.
  const poolConfig = hullConfigText === undefined ? DEFAULT_CONFIG : parseConfig(hullConfigText, opts.hullConfig);
  if (await stopPool(poolConfig)) note(`stopped the VM pool's owner in ${poolConfig.poolDir} (its ready VMs with it)`);
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
