#!/bin/sh
# gen-proto.sh — regenerates src/proto/gen/*_pb.ts from src/proto/*.proto with protoc and
# @bufbuild/protoc-gen-es (the version pinned in package.json).
#
# The generated files are committed, so a build never needs protoc; run this after editing a .proto.
# Needs Debian's protobuf-compiler (protoc) and libprotobuf-dev (google/protobuf/*.proto in
# /usr/include):  apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev
set -eu

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"

plugin=node_modules/.bin/protoc-gen-es
wkt_include=/usr/include

command -v protoc >/dev/null 2>&1 || {
  echo "gen-proto: protoc not found; apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev" >&2
  exit 1
}
[ -f "$wkt_include/google/protobuf/any.proto" ] || {
  echo "gen-proto: $wkt_include/google/protobuf/*.proto missing; apt-get install -y --no-install-recommends libprotobuf-dev" >&2
  exit 1
}
[ -x "$plugin" ] || { echo "gen-proto: $plugin missing; run npm ci" >&2; exit 1; }

# Regenerate from scratch so a removed .proto leaves no stale output behind.
rm -rf src/proto/gen
mkdir -p src/proto/gen
# Paths are relative to src/proto, so imports between our files read "mount.proto".
protoc \
  --plugin=protoc-gen-es="$plugin" \
  --es_out=src/proto/gen \
  --es_opt=target=ts,import_extension=js \
  -I src/proto \
  -I "$wkt_include" \
  src/proto/*.proto

echo "gen-proto: wrote $(ls src/proto/gen | wc -l) files to src/proto/gen ($(protoc --version), protoc-gen-es $("$plugin" --version 2>/dev/null || echo '?'))"
