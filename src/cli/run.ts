/**
 * `hull run`: boot a sandbox, run one container from an OCI bundle in it,
 * relay stdio, and exit with the container's exit status. The sandbox is
 * destroyed on every path out, including SIGINT/SIGTERM.
 */
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { HullError } from '../errors/index.js';
import type { HullConfig } from '../config/index.js';
import { Sandbox, type GuestAssets } from '../sandbox/index.js';
import { TemplateFactory } from '../factory/index.js';
import { QemuDriver } from '../vmm/index.js';

export interface RunOptions {
  bundle: string;
  args: string[];
  tty: boolean;
  vcpus?: number;
  memoryMiB?: number;
  id?: string;
}

const CONTAINER_ID = 'main';

export async function runContainer(config: HullConfig, image: GuestAssets, options: RunOptions): Promise<number> {
  const id = options.id ?? `run-${randomBytes(6).toString('hex')}`;
  let sandbox: Sandbox | undefined;
  let interrupted = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupted = signal === 'SIGINT' ? 130 : 143;
    void sandbox?.destroy();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const stdin = process.stdin;
  const tty = options.tty;
  const driver = new QemuDriver({ tcgTbSizeMiB: config.tcgTbSizeMiB, memoryMerge: config.memoryMerge });
  try {
    sandbox = await Sandbox.create({
      id,
      image,
      vcpus: options.vcpus ?? config.defaultVcpus,
      memoryMiB: options.memoryMiB ?? config.defaultMemoryMiB,
      accel: config.accel,
      runRoot: config.runRoot,
      bootTimeoutMs: config.bootTimeoutMs,
      driver,
      factory: config.templates ? new TemplateFactory(driver, { templatesRoot: config.templatesDir, ramRoot: config.templateRamDir, maxCount: config.templateMaxCount, maxRamMiB: config.templateMaxRamMiB }) : undefined,
      protectedRoots: [config.guestImagesDir, config.templatesDir, config.templateRamDir],
      jail: config.jail ? { base: config.jailUidBase, count: config.jailUidCount } : false,
      log: (line) => process.stderr.write(`hull: ${line}\n`),
    });
    if (interrupted) return interrupted;
    const size = tty && process.stdout.isTTY ? { rows: process.stdout.rows, cols: process.stdout.columns } : { rows: 24, cols: 80 };
    await sandbox.createContainer(CONTAINER_ID, {
      bundle: resolve(options.bundle),
      args: options.args,
      stdio: { stdin: true, stdout: true, stderr: !tty, terminal: tty, ...size },
    });
    await sandbox.startContainer(CONTAINER_ID);
    if (tty && stdin.isTTY) stdin.setRawMode(true);
    const onResize = (): void => void sandbox?.resize(CONTAINER_ID, '', process.stdout.rows, process.stdout.columns).catch(() => {});
    if (tty && process.stdout.isTTY) process.stdout.on('resize', onResize);
    const output = sandbox.attach(CONTAINER_ID, '', { stdin, stdout: process.stdout, stderr: tty ? undefined : process.stderr });
    const [exit] = await Promise.all([sandbox.wait(CONTAINER_ID), output]);
    process.stdout.off('resize', onResize);
    return exit.exitStatus;
  } catch (e) {
    if (interrupted) return interrupted;
    throw e;
  } finally {
    if (tty && stdin.isTTY) stdin.setRawMode(false);
    stdin.pause();
    stdin.destroy();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await sandbox?.destroy();
  }
}

export function parsePositiveInt(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new HullError('invalid_argument', `Invalid ${flag} "${value}": expected a positive integer`);
  return n;
}
