/**
 * Template save and restore for QEMU VMs (src/factory makes and keeps the templates).
 *
 * A clone is started with `-incoming defer`; before `cont` the driver
 * restores it (QMP migrate-set-capabilities x-ignore-shared, migrate-incoming on a unix socket in
 * the state dir, the saved state streamed in, MIGRATION "completed"). RAM is not in that stream:
 * the clone maps the template's RAM file privately. saveTemplate() is the other direction: stop,
 * migrate to a unix socket the driver listens on, and the bytes go to the state file. Unix sockets
 * rather than `exec:cat`, because the seccomp sandbox (spawn=deny) forbids QEMU to run programs.
 */

import { createReadStream } from 'node:fs';
import { open, realpath, rm, stat, type FileHandle } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { connectUnix, listenUnix } from '../common/unix-socket.js';
import { createHash } from 'node:crypto';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { HullError, errorCode } from '../errors/index.js';
import { decideAccel, hostTscKhz, readHostFacts } from './accel.js';
import type { VmIdentity, VmMachine, VmSpec, VmTemplateRef } from './driver.js';
import { qemuArgs, qemuPaths, type QemuArgsOptions } from './qemu-args.js';
import { findExecutable } from './qemu-process.js';
import type { QmpClient } from './qmp.js';

/** SAVE_TIMEOUT_MS bounds saveTemplate() (device state only: it takes milliseconds). */
const SAVE_TIMEOUT_MS = 60_000;
/**
 * MAX_STATE_BYTES caps a template's device state (about 75 KiB measured). A stream this large
 * means RAM was not left out (x-ignore-shared did not apply): fail rather than fill the disk.
 */
const MAX_STATE_BYTES = 64 * 1024 * 1024;
/** MIGRATION_CAPABILITIES: leave shared RAM out of the stream; report progress as MIGRATION events. */
const MIGRATION_CAPABILITIES = [
  { capability: 'x-ignore-shared', state: true },
  { capability: 'events', state: true },
];
const MIB = 1024 * 1024;

/**
 * qemuIdentity is what a saved state of `machine` depends on here: the accelerator, the host TSC a
 * TCG guest is booted with, the QEMU build (a package upgrade replaces the file; microvm has no
 * versioned machine types) and QEMU's whole command line with placeholder paths, so that any device
 * change makes another template.
 */
export async function qemuIdentity(binary: string, machine: VmMachine, argsOptions: QemuArgsOptions = {}): Promise<VmIdentity> {
  const facts = await readHostFacts();
  const { accel } = decideAccel(facts, machine.accel);
  // As QemuDriver.start does: only TCG guests get tsc_early_khz.
  const tscKhz = accel === 'tcg' ? hostTscKhz(facts.cpuinfo) : undefined;
  const found = await findExecutable(binary);
  if (found === undefined) throw new HullError('failed_precondition', `Cannot make a VM template: cannot run "${binary}": not found or not executable`);
  const path = await realpath(found);
  const info = await stat(path);
  const canonical: VmSpec = {
    id: 'template',
    stateDir: '/state',
    vcpus: machine.vcpus,
    memoryMiB: machine.memoryMiB,
    kernel: '/image/kernel',
    initrd: '/image/initrd',
    rootDisk: '/image/root',
    sharedDir: '/state/shared',
    kernelArgs: [...machine.kernelArgs],
    templateRamFile: '/ram',
  };
  const argv = qemuArgs(canonical, accel, qemuPaths(canonical.stateDir), { ...argsOptions, tscKhz, paused: true });
  return {
    accel,
    hypervisor: {
      tscKhz: tscKhz ?? null,
      qemu: { path, size: info.size, mtimeMs: info.mtimeMs },
      commandLineSha256: createHash('sha256').update(argv.join('\0')).digest('hex'),
    },
  };
}

/**
 * checkTemplateFiles fails 'not_found' / 'failed_precondition' before QEMU runs when a clone's
 * template is missing or does not fit: a RAM file smaller than the VM would be grown by QEMU, i.e.
 * written, and every other clone of it corrupted.
 */
export async function checkTemplateFiles(spec: VmSpec, template: VmTemplateRef): Promise<void> {
  const { stateFile } = template;
  const [ram, state] = await Promise.all([stat(template.ramFile).catch(() => undefined), stat(stateFile).catch(() => undefined)]);
  const problem =
    ram === undefined || !ram.isFile() ? `RAM file ${template.ramFile} does not exist`
    : state === undefined || !state.isFile() ? `state file ${stateFile} does not exist`
    : ram.size !== spec.memoryMiB * MIB ? `RAM file has ${ram.size} bytes, the VM ${spec.memoryMiB} MiB`
    : undefined;
  if (problem !== undefined) {
    throw new HullError(problem.endsWith('does not exist') ? 'not_found' : 'failed_precondition', `Cannot start VM "${spec.id}" from template ${dirname(stateFile)}: ${problem}`);
  }
}

/**
 * restoreTemplateState loads a clone's saved device state: QEMU listens on the migration socket, the
 * driver streams the state file into it, and QEMU reports the migration "completed". The vCPUs
 * stay stopped (-S) until QemuVm.attach() sends `cont`.
 */
export async function restoreTemplateState(qmp: QmpClient, migrateSocket: string, stateFile: string, deadline: number, checkStopping: () => void, qemuMigrateSocket = migrateSocket): Promise<void> {
  const left = () => Math.max(1, deadline - Date.now());
  await qmp.execute('migrate-set-capabilities', { capabilities: MIGRATION_CAPABILITIES }, { timeoutMs: left() });
  const finished = migrationFinished(qmp, left());
  finished.catch(() => undefined); // awaited below; a failed send must not leave it unhandled
  // A jailed QEMU names the socket by its path in the jail; the driver by its path on the host.
  await qmp.execute('migrate-incoming', { uri: `unix:${qemuMigrateSocket}` }, { timeoutMs: left() });
  checkStopping();
  const socket = await connectUnix(migrateSocket, 'migration socket');
  const sent = pipeline(createReadStream(stateFile), socket);
  try {
    // Done when QEMU says so, or failed as soon as sending fails (then QEMU's reason is asked).
    await Promise.race([finished, sent.then(() => finished)]);
  } catch (error) {
    socket.destroy();
    throw await migrationError(qmp, 'restoring the template state', error);
  } finally {
    await rm(migrateSocket, { force: true });
  }
  await sent.catch(() => undefined); // QEMU has read all of it: it said "completed".
}

/**
 * saveTemplateState stops the VM for good and writes its device state to `stateFile` (created, must
 * not exist) over a unix socket the driver listens on; guest RAM is left out (x-ignore-shared).
 */
export async function saveTemplateState(qmp: QmpClient, migrateSocket: string, stateFile: string, qemuMigrateSocket = migrateSocket): Promise<void> {
  const deadline = Date.now() + SAVE_TIMEOUT_MS;
  const left = () => Math.max(1, deadline - Date.now());
  // Stopped for good: the guest must not write the shared RAM file after its state is taken.
  await qmp.execute('stop', undefined, { timeoutMs: left() });
  await qmp.execute('migrate-set-capabilities', { capabilities: MIGRATION_CAPABILITIES }, { timeoutMs: left() });
  const file = await open(stateFile, 'wx', 0o600);
  let server: Server | undefined;
  let saved = false;
  try {
    server = createServer();
    await listenUnix(server, migrateSocket);
    const listening = server;
    const received = new Promise<void>((resolve, reject) => {
      listening.once('connection', (connection: Socket) => {
        listening.close(); // one connection: QEMU's
        copyBounded(connection, file, MAX_STATE_BYTES, 'the template device state').then(resolve, (error: unknown) => {
          connection.destroy();
          reject(error);
        });
      });
    });
    received.catch(() => undefined); // awaited below, after the migration's outcome
    const finished = migrationFinished(qmp, left());
    finished.catch(() => undefined);
    await qmp.execute('migrate', { uri: `unix:${qemuMigrateSocket}` }, { timeoutMs: left() });
    try {
      await finished;
      await withDeadline(received, left(), 'the template state stream to end');
    } catch (error) {
      throw await migrationError(qmp, 'saving the template state', error);
    }
    await file.sync();
    saved = true;
  } finally {
    await file.close();
    server?.close();
    await rm(migrateSocket, { force: true });
    if (!saved) await rm(stateFile, { force: true });
  }
}

/**
 * migrationFinished resolves when QEMU reports the migration "completed" and rejects when it
 * reports "failed" or "cancelled", or after `timeoutMs`. Call it before starting the migration.
 */
async function migrationFinished(qmp: QmpClient, timeoutMs: number): Promise<void> {
  const terminal = new Set(['completed', 'failed', 'cancelled']);
  const event = await qmp.waitForEvent('MIGRATION', timeoutMs, (e) => terminal.has(String(e.data['status'])));
  const status = String(event.data['status']);
  if (status !== 'completed') throw new HullError('internal', `migration ${status}`);
}

/** migrationError explains a failed migration with QEMU's own reason (query-migrate error-desc). */
async function migrationError(qmp: QmpClient, what: string, cause: unknown): Promise<HullError> {
  const info = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate', undefined, { timeoutMs: 1000 }).catch(() => undefined);
  const reason = info?.['error-desc'] ?? (cause instanceof Error ? cause.message : String(cause));
  const code = errorCode(cause);
  return new HullError(code === 'deadline_exceeded' ? code : 'internal', `QEMU failed ${what}: ${reason}`, { cause });
}

/** copyBounded writes everything `source` yields to `file`, failing once it passed `max` bytes. */
async function copyBounded(source: AsyncIterable<Buffer>, file: FileHandle, max: number, what: string): Promise<void> {
  let total = 0;
  for await (const chunk of source) {
    total += chunk.length;
    if (total > max) throw new HullError('resource_exhausted', `${what} is larger than ${max} bytes`);
    await file.write(chunk);
  }
}

/** withDeadline settles like `promise`, or rejects 'deadline_exceeded' after `ms`. */
async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HullError('deadline_exceeded', `${what} did not happen within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
