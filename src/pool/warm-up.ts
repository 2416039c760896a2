/**
 * The warm-up: what a pooled VM runs before it is lent, so that TCG has translated the guest's hot
 * path (the agent's calls, crun create/start/exec/delete, the container's namespaces and cgroups,
 * 9p) before a pod needs it. Two throwaway containers from a bundle hull makes itself (the host's
 * static busybox, nothing of any pod): one that runs `true` to its end, as `ctr run IMAGE true`
 * does, and one that sleeps while `true` is exec'd into it, then is killed. Both are removed: the
 * agent forgets them (crun state, process records, guest files), the host unbinds their rootfs.
 * The bundle's rootfs is bound read-only on the host: the owner's ledger later removes its files by
 * path, which must not lead through anything a guest could have changed. Its /etc binds are files.
 */
import { copyFile, lstat, mkdir, realpath, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { OciSpec } from '../common/oci.js';
import { HullError } from '../errors/index.js';
import type { Sandbox } from '../sandbox/index.js';
import { findExecutable } from '../vmm/index.js';

export const WARM_CONTAINER_IDS = ['hull-warm-up-run', 'hull-warm-up-exec'] as const;
const APPLETS = ['sh', 'true', 'sleep'];
/** WARM_MOUNT_POINTS: the directories warmSpec mounts on (made in the bundle: its rootfs is read-only). */
export const WARM_MOUNT_POINTS = ['dev', 'proc', 'sys', 'etc'];
/** ETC_FILES: bound into the container as CRI binds the pod's (each a volume shared over 9p). */
const ETC_FILES = ['hosts', 'hostname', 'resolv.conf'];
/** WARM_FILES: what makeWarmBundle writes below its directory, directories first (for the caller's ledger). */
export const WARM_FILES = {
  dirs: ['rootfs', 'rootfs/bin', ...WARM_MOUNT_POINTS.map((p) => `rootfs/${p}`), 'etc'],
  files: ['config.json', 'rootfs/bin/busybox', ...APPLETS.map((a) => `rootfs/bin/${a}`), ...ETC_FILES.flatMap((f) => [`rootfs/etc/${f}`, `etc/${f}`])],
};
const SIGKILL = 9;

/** makeWarmBundle writes the warm-up's OCI bundle in `dir` (made here; the caller records it). */
export async function makeWarmBundle(dir: string): Promise<void> {
  const busybox = await findExecutable('busybox');
  if (busybox === undefined) throw new HullError('failed_precondition', 'The VM pool needs busybox (apt-get install busybox-static) for its warm-up container');
  const bin = join(dir, 'rootfs', 'bin');
  await mkdir(bin, { recursive: true, mode: 0o755 });
  // The spec's mount points exist: crun, which mounts the rootfs read-only, need not make them.
  for (const point of WARM_MOUNT_POINTS) await mkdir(join(dir, 'rootfs', point), { recursive: true, mode: 0o755 });
  await copyFile(await realpath(busybox), join(bin, 'busybox'));
  for (const applet of APPLETS) {
    if (!(await lstat(join(bin, applet)).then(() => true, () => false))) await symlink('busybox', join(bin, applet));
  }
  await mkdir(join(dir, 'etc'), { mode: 0o755 });
  for (const file of ETC_FILES) {
    await writeFile(join(dir, 'rootfs', 'etc', file), '');
    await writeFile(join(dir, 'etc', file), file === 'hosts' ? '127.0.0.1 localhost\n' : file === 'hostname' ? 'hull-warm-up\n' : '');
  }
  await writeFile(join(dir, 'config.json'), JSON.stringify(warmSpec(['/bin/true'], dir)));
}

/** warmUp runs the throwaway containers in `sandbox` and removes them. */
export async function warmUp(sandbox: Sandbox, bundle: string, guestMac: string): Promise<void> {
  const [runId, execId] = WARM_CONTAINER_IDS;
  // The guest's `ip`, as SetupNetwork will run it for the pod: its NIC up (the tap stays down in the pool's netns).
  await sandbox.agent.setupNetwork({ interfaces: [{ mac: guestMac, mtu: 1500, addresses: [] }], routes: [], neighbors: [] }, { timeoutMs: 30_000 });
  await sandbox.createContainer(runId, { bundle, stdio: {}, readOnlyRootfs: true });
  await sandbox.startContainer(runId);
  await sandbox.wait(runId);
  await sandbox.removeContainer(runId);

  await sandbox.createContainer(execId, { bundle, spec: warmSpec(['/bin/sleep', '600'], bundle), stdio: {}, readOnlyRootfs: true });
  await sandbox.startContainer(execId);
  for (const n of [1, 2]) {
    const id = `exec-${n}`;
    await sandbox.exec(execId, id, warmSpec(['/bin/true'], bundle).process!, {});
    const exit = await sandbox.wait(execId, id);
    if (exit.exitStatus !== 0) throw new HullError('internal', `warm-up exec exited ${exit.exitStatus}`);
    await sandbox.removeExec(execId, id);
  }
  await sandbox.signal(execId, '', SIGKILL, true);
  await sandbox.wait(execId);
  await sandbox.removeContainer(execId);
}

/** warmSpec is a container as containerd's CRI spec makes it (with its /etc binds from `bundle`), running `args`. */
function warmSpec(args: string[], bundle: string): OciSpec {
  const caps = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID', 'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE'];
  return {
    ociVersion: '1.0.2',
    process: {
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/bin'],
      cwd: '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: true },
    hostname: 'hull-warm-up',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      ...ETC_FILES.map((f) => ({ destination: `/etc/${f}`, type: 'bind', source: join(bundle, 'etc', f), options: ['rbind', 'rprivate', 'rw'] })),
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      resources: { devices: [{ allow: false, access: 'rwm' }], memory: { limit: 64 * 1024 * 1024 } },
      maskedPaths: ['/proc/kcore', '/proc/keys', '/sys/firmware'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
    },
  } as OciSpec;
}
