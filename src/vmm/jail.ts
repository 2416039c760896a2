/**
 * jail — QEMU confined like Firecracker's jailer, with util-linux and busybox.
 *
 * The VMM is started as:
 *   setpriv --pdeathsig KILL -- [nsenter --net=<pod netns> --] unshare --mount --propagation slave
 *     --pid --fork --kill-child -- busybox sh -c JAIL_SCRIPT … -- /usr/bin/setpriv <uid, caps> -- qemu …
 *
 * The script runs in busybox's shell because it runs on every VM start: mkdir, ln and rmdir run in
 * the shell itself, mount, pivot_root and umount re-execute the static busybox (no dynamic loading,
 * no mount table to parse, as util-linux's mount(8) does each time); the rlimits are the shell's
 * `ulimit`.
 *
 * - a new mount namespace, every mount a slave of the host's (mounts the host makes later under the
 *   share still reach QEMU; nothing made inside goes back), whose root is a tmpfs on
 *   `<stateDir>/jail` holding only what this VM needs: /usr read-only (QEMU, its libraries and
 *   firmware; or, for the QEMU of hull's node runtime, that runtime instead), a few device nodes, the guest image files read-only, the template RAM file, the
 *   VM's socket directory, the share's read-only view, and a procfs of the jail's own PID
 *   namespace with only its process directories (subset=pid: QEMU's 9p server reaches files
 *   through /proc/self/fd); `pivot_root` into it, the old root detached. No host /etc, /home,
 *   /proc/sys, other sandboxes or host processes.
 * - a new PID namespace: QEMU is its PID 1 and sees no host process; it dies with `unshare`
 *   (the inner setpriv's --pdeathsig: the one of --kill-child is cleared when setpriv changes the
 *   uid), which dies with the shim (--pdeathsig) or with its lifeline's holder.
 * - an unprivileged uid/gid of its own per VM, no supplementary groups, no_new_privs, and only the
 *   capabilities 9p passthrough needs, ambient (see JAIL_CAPABILITIES); the bounding set holds only
 *   those, so nothing can regain more.
 * - rlimits: no core dumps (a core would hold guest memory), bounded open files and processes.
 * The mounts live only in the jail's mount namespace: they vanish with it, nothing to unmount.
 */
import { posix } from 'node:path';
import type { VmJail } from './driver.js';

/**
 * JAIL_CAPABILITIES are what QEMU's 9p server needs to act for the guest on the shared rootfs and
 * volumes (security_model=none: files keep the guest's owners and modes):
 *  - chown: give files the guest creates the owner the guest asks for;
 *  - dac_override: read and write files whatever their owner and mode, as root in the guest may;
 *  - fowner: chmod, utimes and other owner-only operations on files it does not own;
 *  - fsetid: keep set-user/group-ID bits on files it changes.
 * Never sys_admin, sys_module, sys_ptrace, sys_rawio, net_admin, bpf, mknod or setuid: the tap
 * is owned by the VM's uid, so opening it needs no net_admin.
 */
export const JAIL_CAPABILITIES = ['chown', 'dac_override', 'fowner', 'fsetid'] as const;

/** JAIL_RLIMITS: no core dumps, at most this many open files and processes (threads) for the VM's uid. */
export const JAIL_RLIMITS = { core: 0, nofile: 16384, nproc: 1024 } as const;

/** JailMount is one thing bound into the jail: `source` on the host at `target` in the jail. */
export interface JailMount {
  source: string;
  /** target is an absolute path in the jail. */
  target: string;
  kind: 'file' | 'dir';
  readOnly: boolean;
  /** recursive binds what is mounted below too (the share's view with its sub-mounts). */
  recursive?: boolean;
}

// The script runs in the new namespaces as root, before QEMU: it builds the root and enters it.
// Arguments: the jail dir, the directories to make, "--", the mounts as (kind source target flags)
// quadruples, "--", then the command to exec (an absolute path: a bare name would run busybox's
// applet of that name). Every path comes from hull, none from the guest or the pod spec.
const JAIL_SCRIPT = `set -euf
J=$1; shift
mount -t tmpfs -o mode=0755,nosuid,nodev,size=1m hull-jail "$J"
cd "$J"
ln -s usr/bin usr/lib usr/lib64 usr/sbin .
# Directories first, in one mkdir: the mount points' parents, the directory mount points, proc, .old.
dirs=
while [ "$1" != "--" ]; do dirs="$dirs .$1"; shift; done
shift
mkdir -p .old proc $dirs
while [ "$1" != "--" ]; do
  kind=$1; src=$2; dst=.$3; flags=$4; shift 4
  if [ "$kind" = file ]; then : > "$dst"; fi
  case "$flags" in r*) mount --rbind "$src" "$dst" ;; *) mount --bind "$src" "$dst" ;; esac
  # busybox's bind ignores -o: the flags come with a remount (nothing else runs here meanwhile).
  case "$flags" in *o*) mount -o remount,bind,ro,nosuid,nodev "$dst" ;; esac
done
shift
mount -t proc -o nosuid,nodev,noexec,subset=pid,hidepid=invisible proc proc
pivot_root . .old
umount -l /.old
rmdir /.old
ulimit -c ${JAIL_RLIMITS.core} -n ${JAIL_RLIMITS.nofile} -u ${JAIL_RLIMITS.nproc}
exec "$@"
`;

/** JailTools are the absolute host paths of the programs that build the jail (both in the jail's system directory). */
export interface JailTools {
  busybox: string;
  setpriv: string;
}

export interface JailCommandOptions {
  jail: VmJail;
  /** dir is the host directory the jail's root is mounted on (exists, empty). */
  dir: string;
  mounts: readonly JailMount[];
  /** devices are host device nodes bound at the same path in the jail. */
  devices: readonly string[];
  /** netns is the pod's network namespace (a bind-mounted path): the VMM runs in it. */
  netns?: string;
  tools: JailTools;
  binary: string;
  args: readonly string[];
}

/** jailCommand is the argv (file first) that starts `binary args` in a jail. */
export function jailCommand(o: JailCommandOptions): string[] {
  const caps = JAIL_CAPABILITIES.map((c) => `+${c}`).join(',');
  const mountArgs: string[] = [];
  const dirs = new Set<string>();
  for (const m of o.mounts) {
    mountArgs.push(m.kind, m.source, m.target, `${m.recursive ? 'r' : ''}${m.readOnly ? 'o' : ''}-`);
    dirs.add(m.kind === 'dir' ? m.target : posix.dirname(m.target));
  }
  for (const device of o.devices) {
    mountArgs.push('file', device, device, '-');
    dirs.add(posix.dirname(device));
  }
  const inner = [
    // --pdeathsig again: changing the uid cleared the one unshare --kill-child set, and QEMU must die with unshare.
    o.tools.setpriv, '--pdeathsig', 'KILL', `--reuid=${o.jail.uid}`, `--regid=${o.jail.gid}`, '--clear-groups', '--no-new-privs',
    `--inh-caps=-all,${caps}`, `--ambient-caps=-all,${caps}`, `--bounding-set=-all,${caps}`,
    '--', o.binary, ...o.args,
  ];
  return [
    'setpriv', '--pdeathsig', 'KILL', '--',
    ...(o.netns ? ['nsenter', `--net=${o.netns}`, '--'] : []),
    'unshare', '--mount', '--propagation', 'slave', '--pid', '--fork', '--kill-child', '--',
    o.tools.busybox, 'sh', '-c', JAIL_SCRIPT, 'hull-jail', o.dir, ...[...dirs].filter((d) => d !== '/'), '--', ...mountArgs, '--', ...inner,
  ];
}
