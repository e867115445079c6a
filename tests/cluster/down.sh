#!/usr/bin/env bash
# Stops a control plane started by `tests/cluster/up.sh DIR` (in the background).
# Usage: tests/cluster/down.sh DIR
set -euo pipefail
dir=${1:?usage: down.sh CLUSTER_DIR}
pid=$(cat "$dir/up.pid" 2>/dev/null) || { echo "cluster/down: no up.pid in $dir" >&2; exit 1; }
kill -TERM "$pid" 2>/dev/null || exit 0
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
echo "cluster/down: up.sh ($pid) still running after 10 s" >&2
exit 1
