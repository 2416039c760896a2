/**
 * What hull install asks of the containerd on this node: to read a candidate config before it is
 * written (verifyWithContainerd), and to restart once it changed. containerd is restarted only where
 * that is known to be safe (systemd is PID 1, the unit exists, the config is containerd's default
 * file); otherwise the step is printed.
 */
import { access, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { run as runCommand } from '../common/run.js';
import { HullError } from '../errors/index.js';
import { DEFAULT_CONTAINERD_CONFIG, RUNTIME_TYPE, RUNTIMES_PATH, at, isTable, parsePlain, type Table } from './containerd-config.js';

export type RestartMode = 'auto' | 'never';

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

/** run never throws: a program that cannot start or is killed has code -1 and the reason as stderr. */
async function run(file: string, args: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await runCommand(file, args, { timeoutMs, allowFailure: true });
    return { code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    return { code: -1, stdout: '', stderr: (e as Error).message };
  }
}

async function restartFacts(): Promise<RestartFacts> {
  const comm = (await readFile('/proc/1/comm', 'utf8').catch(() => '')).trim();
  const systemd = comm === 'systemd' && (await access('/run/systemd/system').then(() => true, () => false));
  if (!systemd) return { systemd, unitLoaded: false };
  const show = await run('systemctl', ['show', '--property=LoadState', '--value', 'containerd.service'], 10_000);
  return { systemd, unitLoaded: show.code === 0 && show.stdout.trim() === 'loaded' };
}

/** restartContainerd makes containerd read its changed config, or prints how to (restartDecision). */
export async function restartContainerd(opts: { restart: RestartMode; containerdConfig: string }, why: string, log: (l: string) => void): Promise<void> {
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

/**
 * verifyWithContainerd lets containerd itself read the new config (`containerd config dump`, which
 * only loads and prints it) when a containerd binary is on PATH: its TOML parser, not ours, decides.
 * The candidate is written next to the real file, so relative `imports` resolve the same.
 */
export async function verifyWithContainerd(file: string, text: string, existed: boolean, runtimeName: string): Promise<void> {
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
