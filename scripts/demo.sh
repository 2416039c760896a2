#!/usr/bin/env bash
# The main job: run a busybox container in a hull VM and show the kernel it
# sees next to the host's. Needs `make image` first (make demo does that).
set -euo pipefail
cd "$(dirname "$0")/.."

bundle=$(node --input-type=module -e "
  const { makeBusyboxBundle } = await import('./dist/test/helpers/bundle.js');
  console.log(makeBusyboxBundle(['sh']).dir);")
trap 'rm -rf "$bundle"' EXIT

node bin/hull check
echo
start=$(date +%s%N)
guest=$(node bin/hull run --bundle "$bundle" -- uname -r)
elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
printf '%-28s %s\n' "host kernel (uname -r):" "$(uname -r)"
printf '%-28s %s\n' "hull container (uname -r):" "$guest"
printf '%-28s %s ms (cold boot, no templates yet)\n' "hull run, end to end:" "$elapsed"
[ "$guest" != "$(uname -r)" ] || { echo "demo: the container saw the host kernel" >&2; exit 1; }
