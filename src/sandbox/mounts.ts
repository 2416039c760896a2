/**
 * The host mount operations a sandbox uses, each one mount(8)/umount(8) call. Targets are always
 * inside the sandbox's host-private directories (see share.ts), never under a directory the guest
 * can write, so resolving them cannot be steered by the guest.
 */
import { run } from '../common/run.js';

// mount(8) and umount(8) answer in milliseconds; a wedged one (a hung NFS source, say) must not
// hold a pod's create or teardown for ever.
const MOUNT_COMMAND_TIMEOUT_MS = 30_000;

async function mountCommand(file: string, args: string[]): Promise<void> {
  await run(file, args, { timeoutMs: MOUNT_COMMAND_TIMEOUT_MS });
}

/** bindMount mounts `source` on `target` (an existing directory or file), not recursively, private. */
export async function bindMount(source: string, target: string): Promise<void> {
  await mountCommand('mount', ['--bind', '--make-private', source, target]);
}

/**
 * bindMountAsSlave mounts `source` and everything below it on `target`, as a slave: mounts made
 * later below `source` (a shared mount) appear below `target` too; nothing goes back.
 */
export async function bindMountAsSlave(source: string, target: string): Promise<void> {
  await mountCommand('mount', ['--rbind', source, target]);
  await mountCommand('mount', ['--make-rslave', target]);
}

/** bindMountAsPeer mounts `source` on `target` keeping propagation: a bind of a shared mount joins its peer group. */
export async function bindMountAsPeer(source: string, target: string): Promise<void> {
  await mountCommand('mount', ['--bind', source, target]);
}

/** remountBind changes the per-mount flags of the bind at `target` (e.g. "ro,nosuid,nodev"). */
export async function remountBind(target: string, flags: string): Promise<void> {
  await mountCommand('mount', ['-o', `remount,bind,${flags}`, target]);
}

/** setPropagation makes the mount at `target` private, shared or a slave (not recursively). */
export async function setPropagation(target: string, type: 'private' | 'shared' | 'slave'): Promise<void> {
  await mountCommand('mount', [`--make-${type}`, target]);
}

/**
 * moveMount moves the mount at `from` (whose parent mount must not be shared) to `to`. A mount
 * moved under a shared mount propagates to its slaves with its own flags: that is how a read-only
 * volume reaches the guest's view read-only from the first instant.
 */
export async function moveMount(from: string, to: string): Promise<void> {
  await mountCommand('mount', ['--move', from, to]);
}

/** unmount detaches the mount at exactly `target` (lazily: a busy mount cannot stall teardown). */
export function unmount(target: string): Promise<void> {
  return mountCommand('umount', ['--no-canonicalize', '--lazy', target]);
}
