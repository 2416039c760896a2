/**
 * `containerd-shim-hull-v2 delete`: clean up after container `-id` with
 * nothing in memory (the daemon may be gone or still serving the rest of
 * the pod). It replays the sandbox's ledger: all of it for the container
 * that booted the pod's VM (the VMM, network, mounts, state), only that
 * container's scope for the others — as recorded in its bundle at Create.
 * Prints a raw DeleteResponse on stdout, as containerd expects.
 */
import { create, toBinary } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { replayLedger } from '../sandbox/index.js';
import { DeleteResponseSchema } from '../proto/gen/task_pb.js';
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
  return toBinary(DeleteResponseSchema, create(DeleteResponseSchema, { pid: 0, exitStatus: 137, exitedAt: timestampNow() }));
}
