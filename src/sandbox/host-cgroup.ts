/**
 * The pod's cgroup on the host. containerd hands the sandbox a `linux.cgroupsPath` (kubelet derives
 * it from the pod's cgroup parent, which carries the pod's limits plus the RuntimeClass overhead);
 * runc would put pause there. hull puts the shim there before it starts anything, so QEMU and every
 * helper the shim runs (ip, tc, nft, mount) are counted against the pod, as Kata's
 * sandbox_cgroup_only does: kubelet's stats and evictions see the VM, and a VM that grows past the
 * pod's limit is stopped by the host, not paid for by the node.
 *
 * Both layouts: cgroup v1 (one hierarchy per controller, and hybrid hosts with an empty v2 tree
 * beside them) and cgroup v2 (one unified tree). Both path forms: cgroupfs ("/kubepods/pod<uid>/<id>")
 * and systemd ("<slice>:<prefix>:<name>", expanded as runc does). Every directory made is recorded in
 * the ledger first; releasing one moves the calling process out of it first (the shim leaves its
 * own cgroup at teardown) and removes it only when empty.
 */
import { mkdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { HullError } from '../errors/index.js';
import type { Ledger } from './ledger.js';
import { readMountinfo } from '../common/mountinfo.js';

export interface Hierarchy {
  /** mount is where the hierarchy is mounted ("/sys/fs/cgroup/memory", "/sys/fs/cgroup"). */
  mount: string;
  /** key names it in /proc/<pid>/cgroup: its controllers ("cpu,cpuacct", "name=systemd") or "" for v2. */
  key: string;
}

/** hostHierarchies lists the cgroup hierarchies mounted on this host. */
export async function hostHierarchies(): Promise<Hierarchy[]> {
  const found = new Map<string, Hierarchy>();
  for (const m of await readMountinfo()) {
    if (m.fsType === 'cgroup2') found.set('', { mount: m.mountPoint, key: '' });
    else if (m.fsType === 'cgroup') {
      const key = m.superOptions.filter((o) => o !== 'rw' && o !== 'ro' && !o.startsWith('release_agent') && o !== 'clone_children' && o !== 'noprefix' && o !== 'xattr').join(',');
      if (!found.has(key)) found.set(key, { mount: m.mountPoint, key });
    }
  }
  return [...found.values()];
}

/**
 * cgroupRelPath turns a spec's cgroupsPath into a path below each hierarchy's root: cgroupfs paths
 * as they are (relative ones below "/"), systemd's "slice:prefix:name" as runc expands it
 * ("kubepods-burstable-pod1.slice:cri-containerd:abc" -> "/kubepods.slice/kubepods-burstable.slice/
 * kubepods-burstable-pod1.slice/cri-containerd-abc.scope").
 */
export function cgroupRelPath(cgroupsPath: string): string {
  const parts = cgroupsPath.split(':');
  let path: string;
  if (parts.length === 3 && !cgroupsPath.startsWith('/')) {
    const [slice, prefix, name] = parts as [string, string, string];
    path = `${expandSlice(slice || '-.slice')}/${prefix ? `${prefix}-` : ''}${name}.scope`;
  } else {
    path = cgroupsPath.startsWith('/') ? cgroupsPath : `/${cgroupsPath}`;
  }
  const normal = posix.normalize(path);
  if (normal !== path.replace(/\/+$/, '') || normal.split('/').some((p) => p === '..') || normal === '/') {
    throw new HullError('invalid_argument', `Invalid cgroupsPath "${cgroupsPath}" in the sandbox spec`);
  }
  return normal;
}

function expandSlice(slice: string): string {
  if (slice === '-.slice') return '';
  if (!slice.endsWith('.slice') || slice.includes('/')) throw new HullError('invalid_argument', `Invalid systemd slice "${slice}" in cgroupsPath`);
  const names = slice.slice(0, -'.slice'.length).split('-');
  if (names.some((n) => n === '')) throw new HullError('invalid_argument', `Invalid systemd slice "${slice}" in cgroupsPath`);
  return names.map((_, i) => `/${names.slice(0, i + 1).join('-')}.slice`).join('');
}

/** currentCgroups maps each hierarchy key to this process's cgroup in it (from /proc/self/cgroup). */
async function currentCgroups(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const line of (await readFile('/proc/self/cgroup', 'utf8')).split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

/**
 * joinPodCgroup makes `cgroupsPath` in every hierarchy (each level it makes recorded in the ledger
 * before it is made) and moves this process into it, so that everything it starts from now on is
 * the pod's; and `others` too (a pooled VM's processes, started before the pod existed: what they
 * were charged before stays where it was, as cgroups do when a process moves).
 */
export async function joinPodCgroup(ledger: Ledger, cgroupsPath: string, others: readonly number[] = []): Promise<void> {
  const rel = cgroupRelPath(cgroupsPath);
  const now = await currentCgroups();
  for (const h of await hostHierarchies()) {
    const previous = now.get(h.key);
    // A hierarchy this process is not in (mounted twice, or not ours to use) is left alone.
    if (previous === undefined) continue;
    const levels = rel.split('/').filter(Boolean);
    for (let i = 1; i <= levels.length; i++) {
      const dir = join(h.mount, ...levels.slice(0, i));
      // One that exists is kubelet's or another's: never recorded, so never removed by us.
      if (await stat(dir).then(() => true, () => false)) continue;
      ledger.record('', { kind: 'cgroup', dir, leave: join(h.mount, previous) });
      await mkdir(dir);
      if (h.key.split(',').includes('cpuset')) await inheritCpuset(dir);
    }
    const leaf = join(h.mount, ...levels);
    // One write per process: cgroup.procs takes one pid at a time (the whole thread group moves).
    for (const pid of [process.pid, ...others]) await writeFile(join(leaf, 'cgroup.procs'), String(pid));
  }
}

// A v1 cpuset cgroup starts with no CPUs and no memory nodes: nothing can join it until it has them.
async function inheritCpuset(dir: string): Promise<void> {
  for (const file of ['cpuset.cpus', 'cpuset.mems']) {
    const parent = (await readFile(join(dir, '..', file), 'utf8')).trim();
    await writeFile(join(dir, file), parent);
  }
}

/**
 * memoryHierarchy is where the memory controller of `cgroupsPath` is: its directory and the names of
 * its limit and usage files (v1: memory.limit_in_bytes, memory.usage_in_bytes; v2: memory.max,
 * memory.current). Undefined when the host has no memory controller mounted.
 */
async function memoryFiles(cgroupsPath: string): Promise<{ dir: string; limit: string; usage: string } | undefined> {
  const hierarchies = await hostHierarchies();
  const rel = cgroupRelPath(cgroupsPath);
  const v1 = hierarchies.find((h) => h.key.split(',').includes('memory'));
  if (v1) return { dir: join(v1.mount, rel), limit: 'memory.limit_in_bytes', usage: 'memory.usage_in_bytes' };
  const v2 = hierarchies.find((h) => h.key === '');
  if (v2 && (await readFile(join(v2.mount, 'cgroup.controllers'), 'utf8').catch(() => '')).split(/\s+/).includes('memory')) {
    return { dir: join(v2.mount, rel), limit: 'memory.max', usage: 'memory.current' };
  }
  return undefined;
}

/** setMemoryLimit caps the memory of the cgroup `cgroupsPath` (made by joinPodCgroup) at `bytes`; false when there is no memory controller. */
export async function setMemoryLimit(cgroupsPath: string, bytes: number): Promise<boolean> {
  const files = await memoryFiles(cgroupsPath);
  if (files === undefined) return false;
  await writeFile(join(files.dir, files.limit), String(bytes));
  return true;
}

/**
 * podMemoryLimit is the memory limit of the pod's cgroup, the parent of the sandbox's `cgroupsPath`
 * (kubelet's pod cgroup), in bytes; undefined when it has none (unlimited), cannot be read, or the
 * sandbox sits at a hierarchy's root. kubelet limits a pod's cgroup only when every container of
 * the pod (init containers too) has a memory limit, to their sum plus the RuntimeClass overhead.
 */
export async function podMemoryLimit(cgroupsPath: string): Promise<number | undefined> {
  const files = await memoryFiles(cgroupsPath).catch(() => undefined);
  if (files === undefined) return undefined;
  // A sandbox at the top of a hierarchy has no pod cgroup above it (the root is never limited).
  if (cgroupRelPath(cgroupsPath).split('/').filter(Boolean).length < 2) return undefined;
  const parent = posix.dirname(files.dir);
  const text = (await readFile(join(parent, files.limit), 'utf8').catch(() => '')).trim();
  if (!/^\d{1,20}$/.test(text)) return undefined; // "max" (v2), or nothing readable
  const n = Number(text);
  // v1 writes "unlimited" as the page counter's maximum (~2^63 rounded down to a page).
  return n > 0 && n < 2 ** 62 ? n : undefined;
}

/** memoryUsage is what the cgroup `cgroupsPath` is charged now, in bytes; undefined when unknown. */
export async function memoryUsage(cgroupsPath: string): Promise<number | undefined> {
  const files = await memoryFiles(cgroupsPath);
  if (files === undefined) return undefined;
  const n = Number((await readFile(join(files.dir, files.usage), 'utf8').catch(() => '')).trim());
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

/**
 * releaseCgroup removes a cgroup directory hull made: it first moves this process to `leave` if it
 * is still inside (the shim leaving its pod's cgroup), then removes the directory, which the
 * kernel allows only when no process is left in it.
 */
export async function releaseCgroup(dir: string, leave: string): Promise<void> {
  const procs = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
  if (procs === undefined) return; // gone already
  if (procs.split('\n').includes(String(process.pid))) await writeFile(join(leave, 'cgroup.procs'), String(process.pid));
  await rmdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
}

/** isCgroupDir tells whether `dir` lies in a cgroup hierarchy (for the ledger's checks). */
export function isCgroupDir(dir: unknown): boolean {
  return typeof dir === 'string' && dir.startsWith('/sys/fs/cgroup/') && posix.normalize(dir) === dir && !dir.split('/').includes('..');
}
