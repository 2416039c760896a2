/**
 * The sandbox's share, laid out so that the guest cannot restructure what the host walks (the
 * class of Kata's CVE-2020-2024/2026). In the state directory (0700, host-private):
 *
 *   mounts/                 its own mount, shared: the host makes every bind here, never exported
 *     <cid>/rootfs          bind of the container's rootfs (rw, as the pod may write it; nosuid, nodev)
 *     <cid>/volumes/<N>     bind of volume N (its own ro/rw, nosuid, nodev; a recursive slave
 *                           bind for HostToContainer/Bidirectional propagation, else private)
 *   shared/                 a read-only slave bind of mounts/: what QEMU exports over 9p
 *   stage/                  its own private mount, where a rootfs or volume is bound and given
 *                           its flags before it is moved into mounts/
 *
 * Mounts made under mounts/ propagate to shared/ with their own flags, so the guest can write
 * inside a writable rootfs or volume, but every directory of the structure (shared/, <cid>/,
 * volumes/) is on the read-only view: the guest cannot create, rename, replace or remove anything
 * there, and QEMU's 9p server cannot do it for the guest. The host only resolves paths in mounts/
 * and stage/, which the guest never sees. Every rootfs and volume is bound in stage/ and remounted
 * there (nosuid, nodev, ro when asked) before it is moved into mounts/, so its copy in shared/ has
 * those flags from the first instant (a remount does not propagate, a mount does, with its flags):
 * a volume is never writable when it should not be, and QEMU never opens a device node for the
 * guest.
 *
 * Every directory, file and mount is recorded in the ledger before it is made (ledger.ts).
 */
import { mkdir, stat, unlink, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HullError } from '../errors/index.js';
import type { Ledger } from './ledger.js';
import { bindMount, bindMountAsPeerGroup, bindMountAsSlave, bindMountAsView, moveMount } from './mounts.js';
import { VOLUMES_DIR, type HostShare } from './volumes.js';

export interface ShareLayout {
  /** mountsDir is host-private: where the host makes every bind. */
  mountsDir: string;
  /** sharedDir is the read-only view QEMU exports to the guest. */
  sharedDir: string;
  /** stageDir is host-private: where volumes are prepared before they move into mountsDir. */
  stageDir: string;
}

export function shareLayout(stateDir: string): ShareLayout {
  return { mountsDir: join(stateDir, 'mounts'), sharedDir: join(stateDir, 'shared'), stageDir: join(stateDir, 'stage') };
}

/** makeShare makes the three directories and their mounts (see the module comment). */
export async function makeShare(ledger: Ledger, layout: ShareLayout): Promise<void> {
  const { mountsDir, sharedDir, stageDir } = layout;
  await makeDir(ledger, '', mountsDir);
  const mountsSeq = ledger.record('', { kind: 'mount', target: mountsDir });
  // A shared peer group of its own, unrelated to the state dir's parent mount.
  await bindMountAsPeerGroup(mountsDir);
  await ledger.noteMount(mountsSeq, mountsDir);

  await makeDir(ledger, '', sharedDir);
  const sharedSeq = ledger.record('', { kind: 'mount', target: sharedDir });
  // A read-only slave: it receives later mounts, sends none.
  await bindMountAsView(mountsDir, sharedDir, 'ro,nosuid,nodev');
  await ledger.noteMount(sharedSeq, sharedDir);

  await makeDir(ledger, '', stageDir);
  const stageSeq = ledger.record('', { kind: 'mount', target: stageDir });
  // Its own private mount: `mount --move` refuses a mount whose parent mount is shared.
  await bindMount(stageDir, stageDir);
  await ledger.noteMount(stageSeq, stageDir);
}

/** containerShareDir is where container `containerId`'s rootfs and volumes are bound on the host. */
export function containerShareDir(layout: ShareLayout, containerId: string): string {
  return join(layout.mountsDir, containerId);
}

/**
 * shareContainer binds a container's rootfs and volumes into mounts/<cid>/ (all recorded under
 * the container's scope). On failure the caller replays that scope.
 */
export async function shareContainer(ledger: Ledger, layout: ShareLayout, containerId: string, rootfsSource: string, volumes: readonly HostShare[], readOnlyRootfs = false): Promise<void> {
  const dir = containerShareDir(layout, containerId);
  await makeDir(ledger, containerId, dir);
  // nodev: QEMU must never open a device node for the guest, whatever its 9p client asks for.
  const flags = `nosuid,nodev${readOnlyRootfs ? ',ro' : ''}`;
  await shareStaged(ledger, layout, containerId, { source: rootfsSource, target: join(dir, 'rootfs'), name: 'rootfs', file: false, flags, slave: false, what: `rootfs "${rootfsSource}"` });
  if (volumes.length === 0) return;
  const volumesDir = join(dir, VOLUMES_DIR);
  await makeDir(ledger, containerId, volumesDir);
  for (const share of volumes) await shareVolume(ledger, layout, containerId, volumesDir, share);
}

async function shareVolume(ledger: Ledger, layout: ShareLayout, containerId: string, volumesDir: string, share: HostShare): Promise<void> {
  const what = `volume "${share.source}" for "${share.destination}"`;
  const target = join(volumesDir, share.name);
  const flags = `nosuid,nodev${share.readOnly ? ',ro' : ''}`;
  await shareStaged(ledger, layout, containerId, { source: share.realSource, target, name: share.name, file: share.file, flags, slave: share.propagation === 'slave', what });
  const shown = await stat(target);
  if (shown.dev !== share.dev || shown.ino !== share.ino) {
    throw new HullError('failed_precondition', `Cannot share ${what}: "${share.realSource}" changed while it was being shared`);
  }
}

/**
 * shareStaged binds `source` in stage/, sets its flags there, then moves it to `target`: the copy
 * that propagates to the guest's view carries the flags from the first instant.
 */
async function shareStaged(ledger: Ledger, layout: ShareLayout, containerId: string, m: { source: string; target: string; name: string; file: boolean; flags: string; slave: boolean; what: string }): Promise<void> {
  const staged = join(layout.stageDir, `${containerId}.${m.name}`);
  await makeMountPoint(ledger, containerId, staged, m.file);
  ledger.record(containerId, { kind: 'mount', target: staged });
  try {
    // A slave keeps receiving what the host mounts below the source later (HostToContainer); the
    // flags cover the bind itself, later mounts come as the host made them (as with runc).
    await (m.slave ? bindMountAsSlave(m.source, staged, m.flags) : bindMount(m.source, staged, m.flags));
  } catch (e) {
    throw new HullError('invalid_argument', `Cannot share ${m.what}: ${(e as Error).message}`, { cause: e });
  }
  await makeMountPoint(ledger, containerId, m.target, m.file);
  const targetSeq = ledger.record(containerId, { kind: 'mount', target: m.target });
  await moveMount(staged, m.target);
  await ledger.noteMount(targetSeq, m.target);
  await (m.file ? unlink(staged) : rmdir(staged)).catch(() => {}); // recorded: replay retries
}

async function makeDir(ledger: Ledger, scope: string, path: string): Promise<void> {
  ledger.record(scope, { kind: 'dir', path });
  await mkdir(path, { mode: 0o700 });
}

async function makeMountPoint(ledger: Ledger, scope: string, path: string, file: boolean): Promise<void> {
  if (!file) return makeDir(ledger, scope, path);
  ledger.record(scope, { kind: 'file', path });
  await writeFile(path, '', { flag: 'wx', mode: 0o600 });
}
