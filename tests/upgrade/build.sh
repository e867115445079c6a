#!/usr/bin/env bash
# Builds the previous version's `rightsizer` (the commit in tests/upgrade/PREVIOUS) once,
# into a cache outside the repository keyed by the commit, for the upgrade tests
# (tests/cluster/upgrade_e2e.rs, tests/deploy/crd_upgrade.rs). See tests/upgrade/README.md.
#
# Usage: tests/upgrade/build.sh     (prints the cache directory on stdout)
# Env:   RIGHTSIZER_UPGRADE_CACHE   cache root (default ~/.cache/rightsizer-upgrade)
#
# The commit's tree comes from `git archive` into <cache>/<commit>/src; its binary is
# built with this repository's target directory, so the dependencies (same Cargo.lock
# entries, same features, same profile) are the ones already compiled and only the
# workspace crates build (at another path, so they never replace this tree's). The binary
# is copied to <cache>/<commit>/rightsizer and a stamp written; the second run returns at once.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "upgrade/build: $*" >&2; }

commit=$(tr -d '[:space:]' <tests/upgrade/PREVIOUS)
dir=${RIGHTSIZER_UPGRADE_CACHE:-$HOME/.cache/rightsizer-upgrade}/$commit
stamp=$dir/.built

if [ -f "$stamp" ] && [ -x "$dir/rightsizer" ]; then
  echo "$dir"
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  log "commit $commit (tests/upgrade/PREVIOUS) is not in this clone (a shallow one?): fetch it, e.g. git fetch --unshallow"
  exit 1
fi

start=$(date +%s)
rm -rf "$dir/src"
mkdir -p "$dir/src"
git archive --format=tar "$commit" | tar -x -C "$dir/src"

# The cargo that builds this tree, with its target directory (CARGO_TARGET_DIR or ./target).
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
log "building rightsizer at ${commit:0:12} (target dir $target)"
# CARGO_INCREMENTAL=0: this build happens once per commit; its incremental cache would
# only take disk. It is not in the dependencies' fingerprints (they are never incremental).
exe=$(cd "$dir/src" && CARGO_INCREMENTAL=0 cargo build --locked -q -p rightsizer --bin rightsizer \
  --target-dir "$target" --message-format json-render-diagnostics |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "rightsizer" and m.get("executable"):
        exe = m["executable"]
print(exe)')
# Cargo also copies it to <target>/debug/rightsizer, where this tree's binary goes: taken
# at once (the next `cargo build` of this tree puts its own back; tests/run does that next).
cp "$exe" "$dir/rightsizer.tmp"
mv "$dir/rightsizer.tmp" "$dir/rightsizer"
"$dir/rightsizer" --version >/dev/null
echo "$commit $(date -u +%FT%TZ) built in $(($(date +%s) - start)) s" >"$stamp"
log "built in $(($(date +%s) - start)) s"
echo "$dir"
