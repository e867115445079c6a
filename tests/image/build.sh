#!/usr/bin/env bash
# Builds the rightsizer image without a container engine or registry: a release build,
# the runtime filesystem from tests/image/rootfs.sh (the same script the Dockerfile's
# build stage runs), written as a docker-archive tar by tests/image/archive.sh, which
# `ctr -n k8s.io images import` (and `docker load`) accept.
#
# Usage: tests/image/build.sh [OUT.tar]      (prints the archive path on stdout)
# Env:   RIGHTSIZER_IMAGE   image reference (default rightsizer:0.1.0)
#        RIGHTSIZER_BINARY  use this binary instead of building one
#        CARGO_TARGET_DIR   as for cargo
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ref=${RIGHTSIZER_IMAGE:-rightsizer:0.1.0}
target=${CARGO_TARGET_DIR:-$root/target}
out=${1:-$target/image/rightsizer-image.tar}
log() { echo "image/build: $*" >&2; }

bin=${RIGHTSIZER_BINARY:-}
if [ -z "$bin" ]; then
  log "cargo build --release --locked --bin rightsizer"
  (cd "$root" && cargo build --release --locked --bin rightsizer >&2)
  bin=$target/release/rightsizer
fi
[ -x "$bin" ] || { log "no binary at $bin"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/rootfs.sh" "$bin" "$work/rootfs"

# The same config as the Dockerfile's runtime stage (user, entrypoint, ports, labels).
version=${ref##*:}
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
config=$(cat <<JSON
{"User":"65532:65532","WorkingDir":"/home/nonroot","Entrypoint":["/usr/local/bin/rightsizer"],"Cmd":["serve"],
 "ExposedPorts":{"8443/tcp":{},"9090/tcp":{}},
 "Labels":{"org.opencontainers.image.title":"rightsizer",
  "org.opencontainers.image.description":"Kubernetes mutating admission webhook that sizes memory and CPU from real usage",
  "org.opencontainers.image.version":"$version","org.opencontainers.image.revision":"$revision",
  "org.opencontainers.image.licenses":"Apache-2.0"}}
JSON
)
"$here/archive.sh" "$work/rootfs" "$ref" "$out" "$config"
log "$ref: image $(du -sh "$work/rootfs" | cut -f1) unpacked, archive $(du -h "$out" | cut -f1)"
echo "$out"
