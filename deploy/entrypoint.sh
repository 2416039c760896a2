#!/bin/sh
# hull-deploy: the entrypoint of the installer image (`make oci-image`), run by deploy/daemonset.yaml.
#
#   install (the default): copy hull (with its node runtime: node, QEMU and the programs hull runs, each
#     with its own libraries) to the host's /opt/hull and the guest image to the host's
#     /var/lib/hull/guest, run `hull install`, check the host, label the node hull.dev/enabled=true and
#     mark the pod ready; then wait. On SIGTERM or SIGINT (the pod is deleted) undo it: label off,
#     `hull uninstall`, /opt/hull emptied; exit 0.
#   uninstall: only the undo part, then exit.
#   monitor: run `hull monitor` (the DaemonSet's second container) from the image's own copy.
#
# Every host directory is mounted at its own path (the DaemonSet's hostPath volumes): what hull install
# writes (the links, the runtime's ConfigPath) names paths that exist on the host. The guest images in
# /var/lib/hull/guest are kept by uninstall: VMs and templates of pods still running use them.
#
# Environment: NODE_NAME (the node to label; unset: no labelling), HULL_HOST_CHECK (nsenter, the
# default: run `hull check` in the host's mount namespace, which needs hostPID; none: skip it),
# HULL_RESTART_CONTAINERD (auto, the default, or never).
set -eu

SRC=/usr/share/hull
GUEST_SRC=/usr/share/hull-guest
OPT=/opt/hull
GUEST_ROOT=/var/lib/hull/guest
READY=/tmp/hull-deploy.ready
RESTART="${HULL_RESTART_CONTAINERD:-auto}"
# systemctl sees another root than PID 1's (a container) and would ignore `restart` without this.
export SYSTEMD_IGNORE_CHROOT=1

say() { echo "hull-deploy: $*"; }

copy_hull() {
  # Each top-level entry is replaced whole: files of an older hull do not linger.
  rm -rf "$OPT/.hull-new"
  mkdir -p "$OPT"
  cp -a "$SRC" "$OPT/.hull-new"
  for entry in $(ls -A "$OPT/.hull-new"); do
    rm -rf "${OPT:?}/$entry"
    mv "$OPT/.hull-new/$entry" "$OPT/$entry"
  done
  rmdir "$OPT/.hull-new"
  say "copied hull to $OPT"
}

copy_guest() {
  id=$(ls "$GUEST_SRC")
  mkdir -p "$GUEST_ROOT"
  if [ -d "$GUEST_ROOT/$id" ]; then
    say "guest image $id is already in $GUEST_ROOT"
  else
    rm -rf "$GUEST_ROOT/.deploy-$id"
    cp -a "$GUEST_SRC/$id" "$GUEST_ROOT/.deploy-$id"
    mv "$GUEST_ROOT/.deploy-$id" "$GUEST_ROOT/$id"
    say "copied guest image $id to $GUEST_ROOT"
  fi
  # Pointed at last and atomically, as hull image build does.
  ln -sfn "$id" "$GUEST_ROOT/.current-deploy"
  mv -fT "$GUEST_ROOT/.current-deploy" "$GUEST_ROOT/current"
}

# HULL_CLI runs the image's own hull CLI on the image's runtime, through its loader: the runtime's
# programs name their loader at its host path, /opt/hull/runtime, which uninstall may have emptied
# and the monitor does not wait for. (Paths without blanks: used unquoted, as words.)
HULL_CLI="$SRC/runtime/lib/ld-linux-x86-64.so.2 $SRC/runtime/bin/node $SRC/dist/src/cli/main.js"

host_check() {
  case "${HULL_HOST_CHECK:-nsenter}" in
    none) say "host check skipped (HULL_HOST_CHECK=none)" ;;
    # The host's own view, where the shim and QEMU will run: its kernel, its containerd, /opt/hull.
    nsenter) nsenter -t 1 -m -- /usr/local/bin/hull check ;;
    *) say "HULL_HOST_CHECK must be nsenter or none"; return 1 ;;
  esac
}

undo() {
  rm -f "$READY"
  if [ -n "${NODE_NAME:-}" ]; then kubectl label node "$NODE_NAME" hull.dev/enabled- || true; fi
  $HULL_CLI uninstall --restart-containerd "$RESTART"
  for entry in $(ls -A "$SRC"); do rm -rf "${OPT:?}/$entry"; done
  # With hostPID this shell is not its PID namespace's init: nothing else would end the sleep.
  if [ -n "${sleeper:-}" ]; then kill "$sleeper" 2>/dev/null || true; fi
  say "hull is uninstalled"
}

case "${1:-install}" in
  install) ;;
  uninstall)
    undo
    exit 0
    ;;
  monitor)
    # Its config and the status sockets are the node's (/etc/hull, /run/hull-status mounted); it waits for nothing.
    exec $HULL_CLI monitor
    ;;
  *)
    say "usage: entrypoint.sh [install|uninstall|monitor]"
    exit 2
    ;;
esac

trap 'undo; exit 0' TERM INT
copy_hull
copy_guest
# The links name $OPT/bin, a host path: hull install runs from there.
"$OPT/bin/hull" install --restart-containerd "$RESTART" --skip-check
if ! host_check; then
  say "this node cannot run hull sandboxes (see FAIL above): it stays unlabelled"
  exit 1
fi
if [ -n "${NODE_NAME:-}" ]; then
  kubectl label node "$NODE_NAME" hull.dev/enabled=true --overwrite
else
  say "NODE_NAME is not set: no node to label"
fi
touch "$READY"
say "hull is installed"
while :; do
  sleep 3600 &
  sleeper=$!
  wait "$sleeper" || true
done
