#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, and for the test node (tests/cluster/node.sh)
# kubelet, kube-scheduler and kube-proxy, v1.20.2, once, offline, from Debian's `kubernetes`
# source package, into a cache directory outside the repository. Targets already in the
# cache are not rebuilt, so adding one builds only that one.
#
# Usage: tests/cluster/build.sh            (prints the bin directory on stdout)
# Env:   RIGHTSIZER_K8S_CACHE   cache dir (default ~/.cache/rightsizer-k8s/v1.20.2)
#        RIGHTSIZER_K8S_JOBS    parallel compile jobs (default 2)
#
# Why this way: Debian's binary `kubernetes` packages only ship kubectl, but the source
# package holds the complete v1.20.2 tree with vendor/. That tree wants Go 1.15 (newer Go
# trips over the vendored reflect2), which bullseye still ships. The second run finds the
# stamp file and returns at once.
set -euo pipefail

K8S_VERSION=v1.20.2
CACHE=${RIGHTSIZER_K8S_CACHE:-$HOME/.cache/rightsizer-k8s/$K8S_VERSION}
BIN=$CACHE/bin
STAMP=$CACHE/.built
JOBS=${RIGHTSIZER_K8S_JOBS:-2}
LOG=$CACHE/build.log
TARGETS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { echo "cluster/build: $*" >&2; }

have_all() {
  [ -f "$STAMP" ] || return 1
  for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || return 1; done
}

if have_all; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE" "$BIN"
: >"$LOG"
fail() {
  log "FAILED: $*"
  log "last lines of $LOG:"
  tail -n 40 "$LOG" >&2 || true
  exit 1
}

SUDO=
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive

# The mirror is whatever this machine already uses for bookworm, so no host is named here.
mirror_uri() {
  local uri=
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u {print u; exit}' \
      /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || fail "no bookworm apt source found to derive the mirror from"
  echo "$uri"
}

apt_updated=0
apt_update() {
  if [ $apt_updated = 0 ]; then
    log "apt-get update"
    $SUDO apt-get update -qq >>"$LOG" 2>&1 || fail "apt-get update"
    apt_updated=1
  fi
}

ensure_sources() {
  local uri changed=0
  uri=$(mirror_uri)
  local src=/etc/apt/sources.list.d/rightsizer-bookworm-src.sources
  if [ ! -f "$src" ] && ! grep -qs '^deb-src .* bookworm ' /etc/apt/sources.list; then
    log "adding a deb-src entry for bookworm"
    printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" | $SUDO tee "$src" >/dev/null
    changed=1
  fi
  local bull=/etc/apt/sources.list.d/rightsizer-bullseye.sources
  if [ ! -f "$bull" ]; then
    log "adding bullseye (pinned low; only golang-1.15 comes from it)"
    printf 'Types: deb\nURIs: %s\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" | $SUDO tee "$bull" >/dev/null
    # Priority 1: never chosen on its own; only the Go 1.15 packages are allowed through.
    printf 'Package: *\nPin: release n=bullseye\nPin-Priority: 1\n\nPackage: golang-1.15 golang-1.15-go golang-1.15-src\nPin: release n=bullseye\nPin-Priority: 500\n' \
      | $SUDO tee /etc/apt/preferences.d/rightsizer-bullseye >/dev/null
    changed=1
  fi
  if [ $changed = 1 ]; then apt_updated=0; fi
}

GO=/usr/lib/go-1.15/bin/go
need=()
[ -x "$GO" ] || need+=(golang-1.15-go)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
command -v make >/dev/null 2>&1 || need+=(make)
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)

ensure_sources
if [ ${#need[@]} -gt 0 ]; then
  apt_update
  log "installing ${need[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$LOG" 2>&1 || fail "apt-get install ${need[*]}"
fi
# A service started by the package would hold etcd's default ports; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop etcd >/dev/null 2>&1 || true; fi

SRC=$CACHE/src
if [ ! -f "$SRC/go.mod" ]; then
  dl=$CACHE/download
  rm -rf "$dl" "$SRC"
  mkdir -p "$dl"
  apt_update
  log "fetching the kubernetes source package"
  (cd "$dl" && apt-get source --download-only kubernetes >>"$LOG" 2>&1) || fail "apt-get source kubernetes"
  orig=$(ls "$dl"/kubernetes_*.orig.tar.* 2>/dev/null | head -n1)
  [ -n "$orig" ] || fail "no upstream tarball in $dl"
  case "$orig" in *"${K8S_VERSION#v}"*) ;; *) fail "upstream tarball $orig is not $K8S_VERSION" ;; esac
  log "unpacking $(basename "$orig")"
  mkdir -p "$SRC"
  tar -xf "$orig" -C "$SRC" --strip-components=1 >>"$LOG" 2>&1 || fail "unpacking $orig"
  [ -f "$SRC/go.mod" ] || fail "the tarball has no go.mod at its top"
  rm -rf "$dl"
fi

export PATH=/usr/lib/go-1.15/bin:$PATH
export GOFLAGS=-mod=vendor GOPROXY=off GOSUMDB=off GO111MODULE=on CGO_ENABLED=0
export GOCACHE=$CACHE/gocache GOPATH=$CACHE/gopath
export KUBE_GIT_VERSION=$K8S_VERSION KUBE_GIT_TREE_STATE=clean
cd "$SRC"

if [ ! -f pkg/generated/openapi/zz_generated.openapi.go ]; then
  log "generating pkg/generated/openapi (make gen_openapi)"
  start=$(date +%s)
  make gen_openapi >>"$LOG" 2>&1 || fail "make gen_openapi"
  log "generated in $(($(date +%s) - start)) s"
  [ -f pkg/generated/openapi/zz_generated.openapi.go ] || fail "make gen_openapi produced no zz_generated.openapi.go"
fi

# Version stamps the apiserver reports on /version (kubectl and clients read it).
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=20"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

for t in "${TARGETS[@]}"; do
  [ -x "$BIN/$t" ] && continue
  log "building $t (a few minutes when cold; log: $LOG)"
  start=$(date +%s)
  go build -p "$JOBS" -trimpath -ldflags "$ldflags" -o "$BIN/$t.tmp" "./cmd/$t" >>"$LOG" 2>&1 || fail "go build $t"
  mv "$BIN/$t.tmp" "$BIN/$t"
  log "built $t in $(($(date +%s) - start)) s"
done

"$BIN/kube-apiserver" --version >>"$LOG" 2>&1 || fail "kube-apiserver does not run"
echo "$K8S_VERSION $(date -u +%FT%TZ)" >"$STAMP"
echo "$BIN"
