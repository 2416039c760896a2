/**
 * rootfs — stages the guest's root file system in a directory, for mkfs.ext4 -d.
 *
 * The root disk is read-only in the guest; everything writable (/run, /tmp, /var, /dev) is a fresh
 * mount made by /sbin/init, so the directories here are only mount points.
 */

import { chmod, copyFile, cp, mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { run } from '../common/run.js';
import type { HostFile } from './host-files.js';
import { BUSYBOX } from './host-files.js';
import { ETC_FILES, ROOT_INIT } from './init-scripts.js';

/** AGENT_PATH is where the agent bundle lives in the guest. */
export const AGENT_PATH = '/hull/agent.js';

/** DIRS are made first, with their modes; most are empty mount points. */
const DIRS: ReadonlyArray<[string, number]> = [
  ['/bin', 0o755],
  ['/sbin', 0o755],
  ['/usr', 0o755],
  ['/usr/bin', 0o755],
  ['/usr/sbin', 0o755],
  ['/lib', 0o755],
  ['/lib64', 0o755],
  ['/etc', 0o755],
  ['/hull', 0o755],
  ['/root', 0o700],
  ['/proc', 0o755],
  ['/sys', 0o755],
  ['/sys/fs', 0o755],
  ['/sys/fs/cgroup', 0o755],
  ['/dev', 0o755],
  ['/run', 0o755],
  ['/tmp', 0o1777],
  ['/var', 0o755],
  ['/mnt', 0o755],
];

/** SKIPPED_APPLETS get no /bin link: the guest's init is /sbin/init, not busybox's. */
const SKIPPED_APPLETS = new Set(['busybox', 'init', 'linuxrc']);

export interface RootfsInput {
  /** hostFiles are copied to their guest paths (busybox among them). */
  hostFiles: readonly HostFile[];
  /** agent is the content of the agent's one-file bundle. */
  agent: Uint8Array;
  /** applets is `busybox --list`. */
  applets: readonly string[];
  /** moduleTree is copied to /lib/modules/<release>/ (on-demand modules, modules.dep, modules.alias). */
  moduleTree?: { release: string; dir: string };
}

/**
 * MODPROBE is where the kernel runs modprobe to load a module it needs (its default kernel.modprobe):
 * busybox's, which reads /lib/modules/<release>/modules.dep and modules.alias.
 */
export const MODPROBE = '/sbin/modprobe';

/** busyboxApplets lists the applets of the busybox at `path`. */
export async function busyboxApplets(path: string): Promise<string[]> {
  const res = await run(path, ['--list']);
  return res.stdout.split('\n').map((s) => s.trim()).filter((s) => s !== '');
}

/**
 * appletLinks picks the applets that get a /bin/<name> symlink to busybox: not the ones whose name
 * is a program copied from the host (wherever it lives, so that no PATH order can pick busybox's
 * instead) and not init.
 */
export function appletLinks(applets: readonly string[], hostFiles: readonly HostFile[]): string[] {
  const real = new Set(hostFiles.map((f) => f.guestPath.slice(f.guestPath.lastIndexOf('/') + 1)));
  return applets.filter((a) => /^[\w.[\]-]+$/.test(a) && !SKIPPED_APPLETS.has(a) && !real.has(a));
}

/** stageRootfs fills the empty directory `dir` with the guest's root file system; returns the guest paths it made. */
export async function stageRootfs(dir: string, input: RootfsInput): Promise<string[]> {
  const paths: string[] = [];
  const ensureDir = async (guestDir: string, mode = 0o755): Promise<void> => {
    if (guestDir === '/' || paths.includes(guestDir)) return;
    await ensureDir(dirname(guestDir));
    await mkdir(join(dir, guestDir), { recursive: true });
    await chmod(join(dir, guestDir), mode);
    paths.push(guestDir);
  };
  const put = async (guestPath: string, data: string | Uint8Array, mode: number): Promise<void> => {
    await ensureDir(dirname(guestPath));
    await writeFile(join(dir, guestPath), data);
    await chmod(join(dir, guestPath), mode);
    paths.push(guestPath);
  };

  for (const [d, mode] of DIRS) await ensureDir(d, mode);
  for (const f of input.hostFiles) {
    await ensureDir(dirname(f.guestPath));
    await copyFile(f.hostPath, join(dir, f.guestPath));
    await chmod(join(dir, f.guestPath), f.mode);
    paths.push(f.guestPath);
  }
  for (const applet of appletLinks(input.applets, input.hostFiles)) {
    const link = `/bin/${applet}`;
    if (input.hostFiles.some((f) => f.guestPath === link)) continue;
    await symlink(BUSYBOX.slice(BUSYBOX.lastIndexOf('/') + 1), join(dir, link));
    paths.push(link);
  }
  if (input.moduleTree) {
    if (!/^[\w.+-]+$/.test(input.moduleTree.release)) throw new Error(`Bad kernel release "${input.moduleTree.release}"`);
    const guestDir = `/lib/modules/${input.moduleTree.release}`;
    await ensureDir(guestDir);
    await cp(input.moduleTree.dir, join(dir, guestDir), { recursive: true });
    await chmodTree(join(dir, guestDir));
    await symlink(BUSYBOX, join(dir, MODPROBE));
    paths.push(MODPROBE);
  }
  await put('/sbin/init', ROOT_INIT, 0o755);
  for (const [path, text] of Object.entries(ETC_FILES)) await put(path, text, 0o644);
  await put(AGENT_PATH, input.agent, 0o644);
  return paths;
}

/** chmodTree makes a copied tree 0755 directories and 0644 files, whatever the cache's modes were. */
async function chmodTree(path: string): Promise<void> {
  await chmod(path, 0o755);
  for (const entry of await readdir(path, { withFileTypes: true })) {
    if (entry.isDirectory()) await chmodTree(join(path, entry.name));
    else if (entry.isFile()) await chmod(join(path, entry.name), 0o644);
  }
}
