/**
 * init-scripts — the two busybox sh scripts that bring the guest up, and the small files of its /etc.
 *
 * INITRAMFS_INIT (/init in the initramfs) loads the kernel modules, mounts the root disk read-only
 * and switch_roots into it. ROOT_INIT (/sbin/init on the root disk, PID 1) mounts the API
 * filesystems, sets up cgroup v2, and runs the agent under supervision. Both power the VM off on a
 * fatal error, so the host sees QEMU exit instead of a hung guest.
 *
 * Their text is part of the image id: editing a script here makes the next build a new image.
 */

/** MODULE_ORDER_FILE lists the initramfs's modules, one file name a line, in load order. */
export const MODULE_ORDER_FILE = '/lib/modules/load-order';

/** INITRAMFS_APPLETS get /bin symlinks in the initramfs; the script calls nothing else. */
export const INITRAMFS_APPLETS: readonly string[] = Object.freeze([
  'sh', 'cat', 'echo', 'insmod', 'mkdir', 'mount', 'umount', 'poweroff', 'sleep', 'switch_root', 'usleep',
]);

export const INITRAMFS_INIT = `#!/bin/sh
# hull initramfs /init: load the guest's kernel modules, mount the root disk read-only on /newroot and
# switch_root into its /sbin/init. Kernel command line: hull.root=DEVICE (default /dev/vda).
# On any failure: say why on the console and power off, so that QEMU exits instead of hanging.
export PATH=/bin
fail() {
  echo "hull-initramfs: FATAL: $*"
  echo "hull-initramfs: powering off"
  poweroff -f
  sleep 10
  exit 1
}
mount -t proc -o nosuid,nodev,noexec proc /proc || fail "cannot mount /proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || fail "cannot mount devtmpfs on /dev"
exec </dev/console >/dev/console 2>&1

root=/dev/vda
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    hull.root=*) root="\${arg#hull.root=}" ;;
  esac
done

while read -r mod; do
  [ -n "$mod" ] || continue
  insmod "/lib/modules/$mod" || fail "cannot load kernel module $mod"
done < ${MODULE_ORDER_FILE}

tries=0
while [ ! -b "$root" ]; do
  tries=$((tries + 1))
  [ "$tries" -le 500 ] || fail "root disk $root did not appear within 5 s"
  usleep 10000
done
mount -t ext4 -o ro "$root" /newroot || fail "cannot mount root disk $root (ext4, read-only)"
[ -x /newroot/sbin/init ] || fail "root disk $root has no /sbin/init"
mount --move /dev /newroot/dev || fail "cannot move /dev onto the root disk"
umount /sys
umount /proc
exec switch_root /newroot /sbin/init
`;

export const ROOT_INIT = `#!/bin/sh
# hull guest /sbin/init (PID 1): mount the API filesystems, set up cgroup v2, then run the agent
# (/hull/agent.js under node) and restart it whenever it exits. Every kernel command line parameter
# hull.NAME=VALUE reaches the agent as HULL_NAME=VALUE (NAME upper-cased, "." and "-" as "_").
export PATH=/usr/bin:/bin:/usr/sbin:/sbin
umask 022
log() { echo "hull-init: $*"; }
fatal() {
  echo "hull-init: FATAL: $*"
  echo "hull-init: powering off"
  poweroff -f
  sleep 10
  exit 1
}
must() { "$@" || fatal "failed: $*"; }

must mount -t proc -o nosuid,nodev,noexec proc /proc
must mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
must mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
must mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
must mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /var
mkdir -p /var/log /var/lib /var/cache
mkdir -m 1777 /var/tmp
ln -s /run /var/run

mkdir -p /dev/pts /dev/shm /dev/mqueue
must mount -t devpts -o nosuid,noexec,newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
rm -f /dev/ptmx
ln -s pts/ptmx /dev/ptmx
must mount -t tmpfs -o nosuid,nodev,mode=1777 shm /dev/shm
mount -t mqueue -o nosuid,nodev,noexec mqueue /dev/mqueue || log "cannot mount mqueue on /dev/mqueue"
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
[ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin
[ -e /dev/stdout ] || ln -s /proc/self/fd/1 /dev/stdout
[ -e /dev/stderr ] || ln -s /proc/self/fd/2 /dev/stderr

must mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 /sys/fs/cgroup
for c in cpu cpuset memory pids io; do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || log "cgroup controller $c is not available"
done

ip link set lo up || log "cannot bring up lo"
hostname -F /etc/hostname || log "cannot set the host name"

for arg in $(cat /proc/cmdline); do
  case "$arg" in
    hull.*=*)
      key=$(echo "\${arg%%=*}" | tr 'a-z.-' 'A-Z__')
      key="HULL_\${key#HULL_}"
      case "$key" in
        *[!A-Z0-9_]*) log "ignoring kernel parameter \${arg%%=*}" ;;
        *) export "$key=\${arg#*=}" ;;
      esac
      ;;
  esac
done

# Read what every container start runs into the page cache now: in a VM template this puts the
# pages in the template's RAM, shared by every clone, instead of each clone reading them from disk
# through virtio and keeping its own copy (measured per clone: SetupSandbox ~530 ms instead of
# ~680, crun run ~260 ms instead of ~330).
cat /bin/busybox /usr/bin/crun /usr/bin/script /lib/x86_64-linux-gnu/* >/dev/null 2>&1

unset NODE_OPTIONS
export HOME=/root
cd /
# --jitless: under TCG all machine code V8 generates is translated again by QEMU in each clone; the
# interpreter alone serves the agent's short calls as fast, with less translated code per VM.
# --no-memory-reducer: its GCs ~10-20 s after a burst of work cost an idle VM ~150 ms of host CPU
# and give the host nothing back (pages freed in the guest stay resident in QEMU).
while true; do
  /usr/bin/node --jitless --no-memory-reducer /hull/agent.js
  log "agent exited ($?), restarting"
  sleep 1
done
`;

/** ETC_FILES are the root disk's /etc: root is the only user; the host name is hull. */
export const ETC_FILES: Readonly<Record<string, string>> = Object.freeze({
  '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\n',
  '/etc/group': 'root:x:0:\n',
  '/etc/hostname': 'hull\n',
  '/etc/hosts': '127.0.0.1\tlocalhost hull\n::1\tlocalhost ip6-localhost ip6-loopback\n',
});
