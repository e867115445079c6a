#!/usr/bin/env bash
# Runs a command and stops it when PARENT_PID exits or when this script is signalled.
# Test harnesses start long-lived helpers (the webhook) through it so they never outlive
# the test binary, even when it exits without running destructors.
# Usage: tests/cluster/tether.sh PARENT_PID COMMAND [ARGS...]
set -euo pipefail
parent=${1:?usage: tether.sh PARENT_PID COMMAND [ARGS...]}
shift
"$@" &
child=$!
stop() {
  trap - EXIT INT TERM
  kill -TERM "$child" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$child" 2>/dev/null || true
  wait "$child" 2>/dev/null
}
trap 'stop; exit 143' TERM
trap 'stop; exit 130' INT
while kill -0 "$child" 2>/dev/null; do
  if ! kill -0 "$parent" 2>/dev/null; then stop || true; exit 0; fi
  sleep 0.5 &
  wait $! || true
done
set +e
wait "$child"
exit $?
