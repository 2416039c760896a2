/**
 * `hull pool serve|status|stop`: the node's pool of warm VMs (src/pool). `serve` runs the owner in
 * the foreground until SIGTERM/SIGINT (shims start it on demand, detached; `hull install` nodes may
 * run it from their init system), logging JSON lines to `<pool_dir>/pool.log` when not on a
 * terminal. `status` prints the owner's view; `stop` ends the owner, which ends its ready VMs.
 */
import { openSync, writeSync, closeSync, statSync, renameSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processStartTime } from '../common/process.js';
import type { HullConfig } from '../config/index.js';
import { HullError } from '../errors/index.js';
import { PoolClient, PoolOwner, type PoolStatus } from '../pool/index.js';
import { createLogger } from '../shim/log.js';

const LOG_FILE = 'pool.log';
const LOG_MAX_BYTES = 1 << 20;
// Ending the ready VMs and a warm-up under way takes seconds; a loaded 2-core TCG host, more.
const STOP_WAIT_MS = 90_000;

export async function servePool(config: HullConfig, configPath: string | undefined): Promise<number> {
  if (config.poolSize === 0) throw new HullError('failed_precondition', `pool_size is 0 in ${configPath ?? 'the config'}: the VM pool is off`);
  await mkdir(config.poolDir, { recursive: true, mode: 0o700 });
  const write = process.stderr.isTTY ? (line: string) => process.stderr.write(line) : rotatingFile(join(config.poolDir, LOG_FILE));
  const logger = createLogger(write, { component: 'hull-pool' }, config.logLevel);
  const owner = await PoolOwner.start({ config, log: (line) => logger.info(line) });
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => resolve());
  });
  logger.info('stopping: ending the ready VMs');
  await owner.stop();
  return 0;
}

export async function poolStatus(config: HullConfig, json: boolean): Promise<number> {
  const status = await new PoolClient({ dir: config.poolDir, configPath: '', log: () => undefined }).status();
  if (json) console.log(JSON.stringify(status ?? null, null, 2));
  else console.log(status ? formatStatus(status) : `no VM pool owner runs in ${config.poolDir} (pool_size ${config.poolSize})`);
  return 0;
}

/** stopPool ends the pool's owner (SIGTERM: it ends its ready VMs) and waits for it; false when none ran. */
export async function stopPool(config: HullConfig): Promise<boolean> {
  const [pid, startTime] = (await readFile(join(config.poolDir, 'owner.pid'), 'utf8').catch(() => '')).trim().split(' ');
  if (pid === undefined || startTime === undefined || processStartTime(Number(pid)) !== startTime) return false;
  process.kill(Number(pid), 'SIGTERM');
  const deadline = Date.now() + STOP_WAIT_MS;
  while (processStartTime(Number(pid)) === startTime) {
    if (Date.now() > deadline) throw new HullError('deadline_exceeded', `the VM pool owner (pid ${pid}) did not stop within ${STOP_WAIT_MS} ms`);
    await sleep(50);
  }
  return true;
}

export function formatStatus(s: PoolStatus): string {
  const mib = (b: number) => (b / (1024 * 1024)).toFixed(1);
  const lines = [`owner pid ${s.pid}, pool_size ${s.size}, lent ${s.lent}, replaced ${s.replaced}, failed warm-ups ${s.warmFailures}`];
  for (const shape of s.shapes) lines.push(`  ${shape.shape.vcpus} vCPU ${shape.shape.memoryMiB} MiB (image ${shape.shape.imageId}): ${shape.ready} ready, ${shape.warming} warming`);
  if (s.readyPssBytes.length > 0) lines.push(`  host memory per ready VM (PSS, MiB): ${s.readyPssBytes.map(mib).join(', ')}`);
  return lines.join('\n');
}

/** rotatingFile appends lines to `path`, moving it to `path.1` once it passes LOG_MAX_BYTES. */
function rotatingFile(path: string): (line: string) => void {
  let fd = openSync(path, 'a', 0o600);
  let size = statSync(path).size;
  return (line) => {
    if (size > LOG_MAX_BYTES) {
      closeSync(fd);
      renameSync(path, `${path}.1`);
      fd = openSync(path, 'a', 0o600);
      size = 0;
    }
    size += writeSync(fd, line);
  };
}
