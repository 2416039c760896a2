/**
 * `containerd-shim-hull-v2 delete`: clean up after container `-id` with
 * nothing in memory (the daemon may be gone or still serving the rest of
 * the pod). It only touches that container: its rootfs mounts, and the VM
 * and state of its pod when it is the pod's sandbox. Prints a raw
 * DeleteResponse on stdout, as containerd expects.
 */
import { create, toBinary } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig } from '../config/index.js';
import { DeleteResponseSchema } from '../proto/gen/task_pb.js';
import { parseSpec } from '../sandbox/index.js';
import { CRI_CONTAINER_TYPE, CRI_SANDBOX_ID } from './address.js';
import { destroySandboxState, unmountQuietly } from './cleanup.js';
import type { ShimFlags } from './flags.js';

export async function deleteCommand(flags: ShimFlags): Promise<Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  const config = await loadConfig(process.env['HULL_CONFIG'] || undefined).catch(() => undefined);
  const runRoot = config?.runRoot ?? '/run/hull';
  const spec = await readFile(join(bundle, 'config.json'), 'utf8').then((t) => parseSpec(t, bundle), () => undefined);
  const annotations = spec?.annotations ?? {};
  const sandboxId = annotations[CRI_CONTAINER_TYPE] === 'container' ? annotations[CRI_SANDBOX_ID] : flags.id;
  if (sandboxId && sandboxId !== flags.id) {
    const shared = join(runRoot, sandboxId, 'shared', flags.id);
    await unmountQuietly(join(shared, 'rootfs'));
  }
  await unmountQuietly(join(bundle, 'rootfs'));
  if (sandboxId === flags.id) {
    const stateDir = join(runRoot, flags.id);
    if (await access(stateDir).then(() => true, () => false)) await destroySandboxState(stateDir);
  }
  return toBinary(DeleteResponseSchema, create(DeleteResponseSchema, { pid: 0, exitStatus: 137, exitedAt: timestampNow() }));
}
