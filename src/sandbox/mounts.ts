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

// Each helper is one mount(8) call: util-linux applies the bind, then the propagation changes in
// the order given, then remounts the bind with `flags` (a bind ignores them when it is made), so a
// start costs one process per mount.

/** bindMount mounts `source` on `target` (an existing directory or file), not recursively, private, with `flags` (e.g. "ro,nosuid,nodev"). */
export async function bindMount(source: string, target: string, flags?: string): Promise<void> {
  await mountCommand('mount', ['--bind', '--make-private', ...withFlags(flags), source, target]);
}

/**
 * bindMountAsSlave mounts `source` and everything below it on `target`, as a slave: mounts made
 * later below `source` (a shared mount) appear below `target` too; nothing goes back. `flags`
 * apply to the top bind; mounts below keep their own, as the host made them.
 */
export async function bindMountAsSlave(source: string, target: string, flags?: string): Promise<void> {
  await mountCommand('mount', ['--rbind', '--make-rslave', ...withFlags(flags), source, target]);
}

/** bindMountAsPeerGroup binds `dir` on itself as a shared mount in a peer group of its own (private first, then shared). */
export async function bindMountAsPeerGroup(dir: string): Promise<void> {
  await mountCommand('mount', ['--bind', '--make-private', '--make-shared', dir, dir]);
}

/**
 * bindMountAsView binds the shared mount `source` on `target` as its slave with `flags`: a plain
 * bind of a shared mount joins its peer group, --make-slave turns it into a receiver.
 */
export async function bindMountAsView(source: string, target: string, flags: string): Promise<void> {
  await mountCommand('mount', ['--bind', '--make-slave', ...withFlags(flags), source, target]);
}

function withFlags(flags: string | undefined): string[] {
  return flags ? ['-o', flags] : [];
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
