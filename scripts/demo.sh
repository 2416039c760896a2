#!/usr/bin/env bash
# The demo of `make demo`, in two parts. Needs `make image` first (make demo does that).
#  1. `hull run`: a busybox container in a hull VM, the kernel it sees next to the host's.
#  2. AKS Pod Sandboxing through CRI, as kubelet drives it: a trusted pod on runc and an untrusted pod
#     with RuntimeClass hull on one private containerd; `uname -r` in each; then everything removed
#     and checked gone (test/harness/demo-pods.ts).
# Exits non-zero when a container sees the host kernel where it should not, or anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

bundle=$(node --input-type=module -e "
  const { makeBusyboxBundle } = await import('./dist/test/helpers/bundle.js');
  console.log(makeBusyboxBundle(['sh']).dir);")
trap 'rm -rf "$bundle"' EXIT

echo "== hull check"
node bin/hull check
echo
echo "== hull run: one container in a VM"
start=$(date +%s%N)
guest=$(node bin/hull run --bundle "$bundle" -- uname -r)
elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
printf '%-30s %s\n' "host kernel (uname -r):" "$(uname -r)"
printf '%-30s %s\n' "hull container (uname -r):" "$guest"
printf '%-30s %s ms (cold boot, no templates yet)\n' "hull run, end to end:" "$elapsed"
[ "$guest" != "$(uname -r)" ] || { echo "demo: the container saw the host kernel" >&2; exit 1; }
echo
echo "== Pod Sandboxing: a trusted (runc) and an untrusted (hull) pod on one containerd, through CRI"
node dist/test/harness/demo-pods.js
