/**
 * `containerd-shim-hull-v2 delete`: clean up after container `-id` with
 * nothing in memory (the daemon may be gone or still serving the rest of
 * the pod). It replays the sandbox's ledger: all of it for the container
 * that booted the pod's VM (the VMM, network, mounts, state), only that
 * container's scope for the others — as recorded in its bundle at Create.
 * Prints a raw DeleteResponse on stdout, as containerd expects.
 */
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
// Not the sandbox's index: through it, the bundle's `delete` chunk would load all of the sandbox.
import { replayLedger } from '../sandbox/ledger.js';
import { readCleanupRecord, unmountQuietly } from './cleanup.js';
import type { ShimFlags } from './flags.js';
import { SHIM_SOCKET_DIR } from './address.js';

/** removeStaleSocket unlinks the pod shim's socket when no shim answers on it any more (it was killed). */
async function removeStaleSocket(bundle: string): Promise<void> {
  const address = await readFile(join(bundle, 'address'), 'utf8').catch(() => '');
  const path = address.trim().replace(/^unix:\/\//, '');
  if (!path.startsWith(`${SHIM_SOCKET_DIR}/`)) return;
  const answers = await new Promise<boolean>((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
  if (!answers) await rm(path, { force: true });
}

export async function deleteCommand(flags: ShimFlags): Promise<Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  const record = await readCleanupRecord(bundle);
  // containerd shows the delete command's stderr in its log.
  const log = (line: string): void => void process.stderr.write(`hull delete ${flags.id}: ${line}\n`);
  if (record.stateDir) {
    if (record.endsSandbox) await replayLedger(record.stateDir, { log });
    else if (record.containerId) await replayLedger(record.stateDir, { scope: record.containerId, log });
  }
  await unmountQuietly(join(bundle, 'rootfs'));
  if (record.stateDir) await removeStaleSocket(bundle);
  return deleteResponse(0, 137, Date.now());
}

/**
 * deleteResponse is containerd.task.v2.DeleteResponse {pid = 1, exit_status = 2, exited_at = 3}
 * as toBinary would write it (delete.test.ts compares them), written by hand: the task API's schema
 * would make `delete` load and decode all the shim's protobuf descriptors for three fields.
 */
export function deleteResponse(pid: number, exitStatus: number, exitedAtMs: number): Uint8Array {
  const w = new BinaryWriter();
  if (pid !== 0) w.tag(1, WireType.Varint).uint32(pid);
  if (exitStatus !== 0) w.tag(2, WireType.Varint).uint32(exitStatus);
  const seconds = Math.floor(exitedAtMs / 1000);
  const nanos = (exitedAtMs - seconds * 1000) * 1_000_000;
  w.tag(3, WireType.LengthDelimited).fork();
  if (seconds !== 0) w.tag(1, WireType.Varint).int64(seconds);
  if (nanos !== 0) w.tag(2, WireType.Varint).int32(nanos);
  return w.join().finish();
}
