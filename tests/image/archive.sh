#!/usr/bin/env bash
# Writes a one-layer docker-archive image tar (what `docker save` writes and what
# `ctr -n k8s.io images import` and `docker load` read) from a root filesystem directory.
# No container engine or registry is involved; the same inputs give the same digests.
#
# Usage: tests/image/archive.sh ROOTFS REF OUT.tar CONFIG_JSON
#   CONFIG_JSON is the image's "config" object (User, Entrypoint, Cmd, Labels, ...).
set -euo pipefail
rootfs=${1:?usage: archive.sh ROOTFS REF OUT.tar CONFIG_JSON}
ref=${2:?}
out=${3:?}
config=${4:?}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
layer_sha=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":$config,"rootfs":{"type":"layers","diff_ids":["sha256:$layer_sha"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tests/image/archive.sh"}]}
JSON
config_sha=$(sha256sum "$work/config.json" | cut -d' ' -f1)
arch=$work/archive
mkdir -p "$arch/$layer_sha"
mv "$work/layer.tar" "$arch/$layer_sha/layer.tar"
mv "$work/config.json" "$arch/$config_sha.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' \
  "$config_sha" "$ref" "$layer_sha" >"$arch/manifest.json"
mkdir -p "$(dirname "$out")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$arch" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "image/archive: $ref -> $out ($(du -h "$out" | cut -f1), layer sha256:${layer_sha:0:12})" >&2
