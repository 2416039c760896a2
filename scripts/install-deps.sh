#!/usr/bin/env bash
# Installs what hull needs on a Debian 12 host: Debian packages (only those
# missing, so a ready machine pays nothing) and the npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  qemu-system-x86   # the VMM (microvm machine, 9p, virtio-serial)
  busybox-static    # guest init and tools, test images
  crun              # the OCI runtime copied into the guest
  bsdutils          # util-linux `script`, copied into the guest for terminals
  e2fsprogs         # mkfs.ext4 -d builds the guest root disk
  util-linux        # mount/umount (sharing with the guest), nsenter (pod netns), setpriv (VMs die with their shim)
  containerd        # the private containerd of the test harness (1.6.20 in Debian 12; ctr too)
  runc              # containerd's default runtime, the baseline in tests and benchmarks
  runsc             # gVisor, measured next to runc and hull by `make bench` (through containerd's runc shim)
  containernetworking-plugins  # CNI bridge/host-local/loopback for the harness's CRI pods
  iproute2          # ip and tc: the tap and its tc redirect in the pod netns (and the harness's bridge)
  iptables          # port-forward into VM pods: the pod netns hands loopback TCP to the guest
  nftables          # nft: the anti-spoofing guard on each pod's tap (only the pod's own MAC and addresses leave the VM)
  patchelf          # make oci-image: points the node runtime's programs at their own loader and libraries
  # kubectl parses deploy/*.yaml offline in test/integration/deploy.test.ts. Only when no kubectl is on
  # PATH: another package's kubectl (e.g. Google Cloud's `kubectl`) owns /usr/bin/kubectl too, and
  # dpkg refuses to overwrite it.
  $(command -v kubectl >/dev/null || echo kubernetes-client)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "install-deps: hull needs Node.js 20 or newer on PATH (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

# npm ci only when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
