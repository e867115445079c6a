#!/usr/bin/env bash
# Joins one real node to a control plane started by `RIGHTSIZER_CLUSTER_NODE=1 up.sh`:
# containerd (own root, state and socket) with runc, a CNI bridge, kubelet, kube-proxy and
# kube-scheduler v1.20.2, and the images a test needs, loaded from local archives.
# Facts behind each setting: ../shared/research/real-node.md (blockers 1-6).
#
# Usage: tests/cluster/node.sh CLUSTER_DIR [IMAGE.tar ...]
#   (extra docker-archive images to load, e.g. the one tests/image/build.sh writes)
#   Prints NODE_NAME=, NODE_IP=, KUBELET_PORT= once the Node is Ready, then stays in the
#   foreground. SIGTERM/SIGINT (or the exit of RIGHTSIZER_CLUSTER_PARENT_PID) tears the
#   node down and leaves the machine as it was: processes stopped by PID, containers
#   killed, mounts, network namespaces, cgroups, the bridge, iptables rules and sysctls
#   restored, and every directory the programs created removed.
#   Needs root. Only one node per machine (cgroups, /var/log/pods and the bridge are global).
#   Logs: CLUSTER_DIR/node/{containerd,kubelet,kube-proxy,scheduler}.log
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { echo "cluster/node: $*" >&2; }
CLUSTER_DIR=$(cd "${1:?usage: node.sh CLUSTER_DIR [IMAGE.tar ...]}" && pwd)
shift
extra_images=("$@")
KUBECONFIG_FILE=$CLUSTER_DIR/kubeconfig
TIMEOUT=${RIGHTSIZER_NODE_TIMEOUT:-90}
NODE_NAME=rightsizer-node
BRIDGE=rsz0
POD_CIDR=10.244.0.0/24
CGROUP_NAME=kubepods

[ "$(id -u)" = 0 ] || { log "needs root (cgroups, mounts, network)"; exit 1; }
# One node per machine: wait for an earlier one (e.g. still tearing down) to be gone.
exec 9>/tmp/rightsizer-node.lock
flock -w 120 9 || { log "another node still runs on this machine"; exit 1; }
[ -f "$CLUSTER_DIR/node-ip" ] || { log "the control plane was not started with RIGHTSIZER_CLUSTER_NODE=1"; exit 1; }
NODE_IP=$(cat "$CLUSTER_DIR/node-ip")
BIN=${RIGHTSIZER_K8S_BIN:-$("$here/build.sh")}
for t in kubelet kube-scheduler kube-proxy; do
  [ -x "$BIN/$t" ] || { log "missing $BIN/$t (run tests/cluster/build.sh)"; exit 1; }
done
for t in containerd ctr runc iptables iptables-save iptables-restore ip busybox; do
  command -v "$t" >/dev/null || { log "$t is not installed (tests/run installs it)"; exit 1; }
done
CNI_BIN=/usr/lib/cni
[ -x "$CNI_BIN/bridge" ] && [ -x "$CNI_BIN/host-local" ] || { log "containernetworking-plugins is not installed"; exit 1; }
for c in /sys/fs/cgroup/*/"$CGROUP_NAME"; do
  [ -e "$c" ] && { log "$c exists: another node runs on this machine"; exit 1; }
done
ip link show "$BRIDGE" >/dev/null 2>&1 && { log "bridge $BRIDGE exists: another node runs here"; exit 1; }

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
NODE=$(mktemp -d /var/lib/rightsizer-node.XXXXXX)
LOGS=$CLUSTER_DIR/node
mkdir -p "$LOGS"
SOCK=$NODE/containerd.sock

# --- what the machine looks like before; teardown returns to it ---------------------------
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables)
: >"$NODE/sysctls"
for s in "${SYSCTLS[@]}"; do
  v=$(sysctl -n "$s" 2>/dev/null) && echo "$s=$v" >>"$NODE/sysctls"
done
iptables-save >"$NODE/iptables.before"
if command -v ip6tables-save >/dev/null; then ip6tables-save >"$NODE/ip6tables.before"; fi
# Directories the programs create on their own (hard-coded paths); removed only if new.
CREATED=(/var/log/pods /var/log/containers /var/lib/cni /run/containerd /run/netns /var/run/netns /etc/cni)
: >"$NODE/new-dirs"
for d in "${CREATED[@]}"; do [ -e "$d" ] || echo "$d" >>"$NODE/new-dirs"; done
ls /run/netns 2>/dev/null | sort >"$NODE/netns.before" || true

pids=()
names=()
start() { # name logfile command...
  local name=$1 logf=$2
  shift 2
  # Its own session: a signal to this script's process group must not reach containerd
  # before the teardown below has stopped the containers through it.
  setsid "$@" >"$logf" 2>&1 9>&- &
  pids+=($!)
  names+=("$name")
}

restore_sysctls() { # [skip-pattern]
  while IFS='=' read -r k v; do
    case "$k" in ${1:-none}) continue ;; esac
    [ "$(sysctl -n "$k" 2>/dev/null)" = "$v" ] || sysctl -qw "$k=$v" >/dev/null 2>&1 || log "could not restore $k=$v"
  done <"$NODE/sysctls"
}

stop_pid() { # pid: TERM, up to 10 s, then KILL
  local p=$1
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
}

ctr_() { timeout 20 ctr --address "$SOCK" --namespace k8s.io "$@"; }

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  local t0=$SECONDS
  # 1. The node's programs, in reverse start order, containerd last: each by its PID.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    if [ "${names[i]}" = containerd ]; then
      # Containers first: kill every task, delete tasks (their shims exit) and containers.
      if kill -0 "${pids[i]}" 2>/dev/null; then
        for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
        for id in $(ctr_ tasks ls -q 2>/dev/null); do
          for _ in $(seq 20); do ctr_ tasks delete "$id" >/dev/null 2>&1 && break; sleep 0.2; done
        done
        for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers rm "$id" >/dev/null 2>&1 || true; done
      fi
    fi
    stop_pid "${pids[i]}"
  done
  wait 2>/dev/null || true
  # Shims outlive containerd when a task could not be deleted: find ours by socket.
  for d in /proc/[0-9]*; do
    if { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | grep -q -- "-address $SOCK "; then
      kill -KILL "${d#/proc/}" 2>/dev/null || true
    fi
  done
  "$BIN/kube-proxy" --cleanup >"$LOGS/kube-proxy-cleanup.log" 2>&1 || true
  # 2. Network: sandboxes' namespaces, the bridge, NAT rules (exactly as before).
  for ns in $(ls /run/netns 2>/dev/null | sort | comm -13 "$NODE/netns.before" -); do
    umount "/run/netns/$ns" 2>/dev/null || umount -l "/run/netns/$ns" 2>/dev/null || true
    rm -f "/run/netns/$ns"
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  # Tables the rules were in; one that did not exist before is emptied.
  for t in nat filter mangle raw; do
    grep -q "^\*$t\$" "$NODE/iptables.before" && continue
    iptables -t "$t" -F 2>/dev/null || true
    iptables -t "$t" -X 2>/dev/null || true
  done
  iptables-restore <"$NODE/iptables.before" || log "could not restore iptables"
  if [ -f "$NODE/ip6tables.before" ]; then ip6tables-restore <"$NODE/ip6tables.before" || true; fi
  # 3. Mounts under the node's directories (the kubelet bind-mounts its root dir onto
  #    itself; Secret volumes are tmpfs; container root filesystems are overlays).
  for _ in 1 2 3; do
    mapfile -t mnts < <(awk -v n="$NODE" 'index($5, n) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    [ ${#mnts[@]} -gt 0 ] || break
    for m in "${mnts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  done
  # 4. cgroups the kubelet and runc made, deepest first.
  for c in /sys/fs/cgroup/*/"$CGROUP_NAME"; do
    [ -d "$c" ] || continue
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ -d "$c" ] && log "could not remove $c"
  done
  # 5. Directories, sysctls.
  while read -r d; do rm -rf --one-file-system "$d"; done <"$NODE/new-dirs"
  restore_sysctls
  local leftover
  leftover=$(awk -v n="$NODE" 'index($5, n) == 1' /proc/self/mountinfo | wc -l)
  if [ "$leftover" = 0 ]; then
    rm -rf --one-file-system "$NODE"
  else
    log "$leftover mounts remain under $NODE; left in place"
  fi
  log "torn down in $((SECONDS - t0)) s"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
echo $$ >"$LOGS/node.pid"

die_with_log() {
  log "$1"
  [ -f "$2" ] && { log "last lines of $2:"; tail -n 30 "$2" >&2; }
  exit 1
}

taken=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    case "$taken" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      taken+="$p "
      echo "$p"
      return 0
    fi
  done
  return 1
}
KUBELET_PORT=$(free_port)
KUBELET_HEALTHZ=$(free_port)
PROXY_METRICS=$(free_port)
PROXY_HEALTHZ=$(free_port)

# --- containerd ------------------------------------------------------------------------------
mkdir -p "$NODE/cni/net.d" "$NODE/containerd"
cat >"$NODE/cni/net.d/10-rightsizer.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "rightsizer",
  "plugins": [{
    "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
             "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$NODE/cni/ipam"}
  }]
}
EOF
cat >"$NODE/containerd/config.toml" <<EOF
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "rightsizer.test/pause:1"
  # Blocker 1: root here lacks CAP_SYS_RESOURCE, so a negative oom_score_adj is refused.
  restrict_oom_score_adj = true
  # Blocker 3: hugetlb is compiled in but not mounted.
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$NODE/cni/net.d"
EOF
start containerd "$LOGS/containerd.log" containerd --config "$NODE/containerd/config.toml"
deadline=$((SECONDS + TIMEOUT))
until ctr --address "$SOCK" version >/dev/null 2>&1; do
  kill -0 "${pids[0]}" 2>/dev/null || die_with_log "containerd exited" "$LOGS/containerd.log"
  [ $SECONDS -lt $deadline ] || die_with_log "containerd not up" "$LOGS/containerd.log"
  sleep 0.2
done

# --- images --------------------------------------------------------------------------------
"$here/../image/node-images.sh" "$NODE/images" 2>>"$LOGS/images.log" || die_with_log "node images" "$LOGS/images.log"
for img in "$NODE/images/pause.tar" "$NODE/images/busybox.tar" "${extra_images[@]}"; do
  ctr_ images import "$img" >>"$LOGS/images.log" 2>&1 || die_with_log "importing $img" "$LOGS/images.log"
done

# --- kubelet ---------------------------------------------------------------------------------
cat >"$NODE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
address: 0.0.0.0
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ
# Test node: anonymous read of /metrics/cadvisor and /metrics/resource (Prometheus
# scrapes without a token) and of logs; nothing else listens on the machine's network.
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
# A shared test machine: never evict for disk or memory pressure of other work.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
start kubelet "$LOGS/kubelet.log" "$BIN/kubelet" \
  --config "$NODE/kubelet.yaml" --kubeconfig "$KUBECONFIG_FILE" \
  --root-dir "$NODE/kubelet" --cert-dir "$NODE/kubelet/pki" \
  --container-runtime remote --container-runtime-endpoint "unix://$SOCK" \
  --containerd "$SOCK" --pod-infra-container-image rightsizer.test/pause:1 \
  --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1
start kube-proxy "$LOGS/kube-proxy.log" "$BIN/kube-proxy" \
  --kubeconfig "$KUBECONFIG_FILE" --hostname-override "$NODE_NAME" --proxy-mode iptables \
  --cluster-cidr "$POD_CIDR" --conntrack-max-per-core 0 \
  --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 \
  --metrics-bind-address "127.0.0.1:$PROXY_METRICS" --healthz-bind-address "127.0.0.1:$PROXY_HEALTHZ" \
  --oom-score-adj 0 --v 1
start scheduler "$LOGS/scheduler.log" "$BIN/kube-scheduler" \
  --kubeconfig "$KUBECONFIG_FILE" --leader-elect=false --port 0 --secure-port 0 --v 1

kc() { kubectl --kubeconfig "$KUBECONFIG_FILE" --request-timeout=5s "$@"; }
until [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; do
  for i in "${!pids[@]}"; do
    kill -0 "${pids[i]}" 2>/dev/null || die_with_log "${names[i]} exited" "$LOGS/${names[i]}.log"
  done
  [ $SECONDS -lt $deadline ] || die_with_log "node not Ready after ${TIMEOUT}s" "$LOGS/kubelet.log"
  sleep 0.5
done
# Blocker 2: the kubelet rewrote host sysctls at start; put them back now it runs. Forwarding
# stays on until teardown: pod -> Service -> pod traffic is routed through the host.
restore_sysctls 'net.ipv4.*'
log "node $NODE_NAME Ready after ${SECONDS}s (kubelet https://$NODE_IP:$KUBELET_PORT, dir $NODE)"
echo "NODE_NAME=$NODE_NAME"
echo "NODE_IP=$NODE_IP"
echo "KUBELET_PORT=$KUBELET_PORT"

parent=${RIGHTSIZER_CLUSTER_PARENT_PID:-}
while :; do
  for i in "${!pids[@]}"; do
    kill -0 "${pids[i]}" 2>/dev/null || die_with_log "${names[i]} exited" "$LOGS/${names[i]}.log"
  done
  if [ -n "$parent" ] && ! kill -0 "$parent" 2>/dev/null; then
    log "parent $parent is gone; stopping"
    exit 0
  fi
  sleep 1 &
  wait $! || true
done
