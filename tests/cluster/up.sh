#!/usr/bin/env bash
# Starts a throwaway Kubernetes v1.20.2 control plane on loopback: etcd, kube-apiserver and
# kube-controller-manager, with freshly generated certificates. No scheduler, no kubelet:
# pods stay Pending, which is all admission needs.
#
# Usage: tests/cluster/up.sh [WORKDIR]
#   Prints `KUBECONFIG=<path>` (and `CLUSTER_DIR=<dir>`) on stdout once the plane is ready,
#   then stays in the foreground. SIGTERM/SIGINT (or tests/cluster/down.sh WORKDIR) stops
#   everything it started and removes WORKDIR unless RIGHTSIZER_CLUSTER_KEEP=1.
#   A harness can start it in its own process group, read the KUBECONFIG line, and kill the
#   group when done. Component logs: WORKDIR/{etcd,apiserver,controller-manager}.log
# Env: RIGHTSIZER_K8S_BIN   directory holding the binaries (default: what build.sh prints)
#      RIGHTSIZER_CLUSTER_TIMEOUT  seconds to wait for readiness (default 90)
#      RIGHTSIZER_CLUSTER_PARENT_PID  stop when this process exits
#      RIGHTSIZER_CLUSTER_NODE=1  ready the plane for a node (tests/cluster/node.sh): the
#        apiserver also listens on the machine's address and advertises it (pods reach it
#        through the `kubernetes` Service), and reaches kubelets by InternalIP.
#      SIGUSR1 restarts kube-apiserver (same flags and port, log appended): the soak's
#        "apiserver restarted" fault (tests/soak/run); readiness is the caller's to wait for.
#      RIGHTSIZER_CLUSTER_WEBHOOK_CLIENT=1  the apiserver presents a client certificate to
#        every webhook (an AdmissionConfiguration whose kubeconfig has user `*`), signed by
#        WORKDIR/pki/webhook-client-ca.crt (for `serve --client-ca`).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { echo "cluster/up: $*" >&2; }

BIN=${RIGHTSIZER_K8S_BIN:-$("$here/build.sh")}
for t in kube-apiserver kube-controller-manager; do
  [ -x "$BIN/$t" ] || { log "missing $BIN/$t (run tests/cluster/build.sh)"; exit 1; }
done
command -v etcd >/dev/null || { log "etcd not installed (run tests/cluster/build.sh)"; exit 1; }
command -v kubectl >/dev/null || { log "kubectl not installed"; exit 1; }
command -v openssl >/dev/null || { log "openssl not installed"; exit 1; }
TIMEOUT=${RIGHTSIZER_CLUSTER_TIMEOUT:-90}

# The apiserver honours proxy variables when calling webhooks; everything here is loopback.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

if [ $# -ge 1 ]; then
  DIR=$1
  mkdir -p "$DIR"
else
  # tmpfs keeps etcd's fsyncs cheap.
  base=/tmp
  [ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
  DIR=$(mktemp -d "$base/rightsizer-cluster.XXXXXX")
fi
DIR=$(cd "$DIR" && pwd)

pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Reverse order: controller-manager, apiserver, etcd.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "${RIGHTSIZER_CLUSTER_KEEP:-0}" != 1 ]; then rm -rf "$DIR"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
echo $$ >"$DIR/up.pid"

# Ports outside the kernel's ephemeral range, so they do not collide with bind(0) users.
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
  log "no free port found"
  return 1
}
ETCD_PORT=$(free_port)
taken+="$ETCD_PORT "
ETCD_PEER_PORT=$(free_port)
taken+="$ETCD_PEER_PORT "
API_PORT=$(free_port)

# With a node, pods reach the apiserver through the `kubernetes` Service, whose endpoint
# is the advertised address: it must be one a pod can route to (not loopback).
api_net=(--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --endpoint-reconciler-type none)
if [ "${RIGHTSIZER_CLUSTER_NODE:-0}" = 1 ]; then
  NODE_IP=$(ip -4 -o addr show scope global | awk '{split($4, a, "/"); print a[1]; exit}')
  [ -n "$NODE_IP" ] || { log "no global IPv4 address for a node"; exit 1; }
  echo "$NODE_IP" >"$DIR/node-ip"
  api_net=(--bind-address 0.0.0.0 --advertise-address "$NODE_IP" --endpoint-reconciler-type lease
    --kubelet-preferred-address-types InternalIP,Hostname)
fi

die_with_log() {
  log "$1"
  if [ -f "$2" ]; then
    log "last lines of $2:"
    tail -n 30 "$2" >&2
  fi
  exit 1
}

# --- certificates -------------------------------------------------------------------------
pki=$DIR/pki
mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3 \
    -keyout ca.key -out ca.crt -subj "/CN=rightsizer-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes.default.svc${NODE_IP:+,IP:$NODE_IP}" \
    "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment" >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3 \
    -extfile apiserver.ext -out apiserver.crt
  # Service-account tokens are signed with this key (RSA: what v1.20 expects by default).
  openssl genrsa -out sa.key 2048
  openssl rsa -in sa.key -pubout -out sa.pub
) >"$DIR/pki.log" 2>&1 || die_with_log "certificate generation failed" "$DIR/pki.log"
admission_args=()
if [ "${RIGHTSIZER_CLUSTER_WEBHOOK_CLIENT:-0}" = 1 ]; then
  (
    cd "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3 \
      -keyout webhook-client-ca.key -out webhook-client-ca.crt -subj "/CN=rightsizer-webhook-client-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout webhook-client.key -out webhook-client.csr -subj "/CN=kube-apiserver-webhook-client"
    printf '%s\n' "extendedKeyUsage=clientAuth" "keyUsage=critical,digitalSignature" >webhook-client.ext
    openssl x509 -req -in webhook-client.csr -CA webhook-client-ca.crt -CAkey webhook-client-ca.key \
      -CAcreateserial -days 3 -extfile webhook-client.ext -out webhook-client.crt
  ) >>"$DIR/pki.log" 2>&1 || die_with_log "webhook client certificate generation failed" "$DIR/pki.log"
  cat >"$DIR/admission-kubeconfig.yaml" <<EOF
apiVersion: v1
kind: Config
users:
- name: "*"
  user:
    client-certificate: $pki/webhook-client.crt
    client-key: $pki/webhook-client.key
EOF
  cat >"$DIR/admission-config.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $DIR/admission-kubeconfig.yaml
EOF
  admission_args=(--admission-control-config-file "$DIR/admission-config.yaml")
fi
TOKEN=$(openssl rand -hex 24)
echo "$TOKEN,admin,admin,system:masters" >"$pki/tokens.csv"

KUBECONFIG_FILE=$DIR/kubeconfig
cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rightsizer-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: rightsizer-test
  context:
    cluster: rightsizer-test
    user: admin
    namespace: default
current-context: rightsizer-test
EOF
chmod 600 "$KUBECONFIG_FILE"
kc() { kubectl --kubeconfig "$KUBECONFIG_FILE" --request-timeout=5s "$@"; }

# --- etcd ---------------------------------------------------------------------------------
etcd --name rightsizer-test --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "rightsizer-test=http://127.0.0.1:$ETCD_PEER_PORT" \
  --logger zap --log-level warn >"$DIR/etcd.log" 2>&1 &
pids+=($!)

# --- kube-apiserver -----------------------------------------------------------------------
start_apiserver() {
"$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  "${api_net[@]}" --secure-port "$API_PORT" --insecure-port 0 \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24 \
  --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,Priority,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota,PodTolerationRestriction \
  ${admission_args[@]+"${admission_args[@]}"} \
  --profiling=false --v 1 >>"$DIR/apiserver.log" 2>&1 &
api_pid=$!
}
start_apiserver
pids+=($api_pid)
api_index=$((${#pids[@]} - 1))

restart_apiserver() {
  log "restarting kube-apiserver (SIGUSR1)"
  kill -TERM "$api_pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$api_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$api_pid" 2>/dev/null || true
  wait "$api_pid" 2>/dev/null || true
  start_apiserver
  pids[api_index]=$api_pid
}
restart_requested=0
trap 'restart_requested=1' USR1

deadline=$((SECONDS + TIMEOUT))
until kc get --raw /readyz >/dev/null 2>&1; do
  kill -0 "$api_pid" 2>/dev/null || die_with_log "kube-apiserver exited" "$DIR/apiserver.log"
  [ $SECONDS -lt $deadline ] || die_with_log "kube-apiserver not ready after ${TIMEOUT}s" "$DIR/apiserver.log"
  sleep 0.3
done
log "apiserver ready on https://127.0.0.1:$API_PORT after ${SECONDS}s"

# --- kube-controller-manager (only now: it gives up at once if RBAC is not bootstrapped) ---
"$BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG_FILE" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --leader-elect=false --port 0 --secure-port 0 --v 1 >"$DIR/controller-manager.log" 2>&1 &
pids+=($!)
kcm_pid=$!

# Pods are refused until the ServiceAccount controller has made `default`.
until kc -n default get serviceaccount default >/dev/null 2>&1; do
  kill -0 "$kcm_pid" 2>/dev/null || die_with_log "kube-controller-manager exited" "$DIR/controller-manager.log"
  [ $SECONDS -lt $deadline ] || die_with_log "no default ServiceAccount after ${TIMEOUT}s" "$DIR/controller-manager.log"
  sleep 0.3
done
log "control plane ready after ${SECONDS}s (dir $DIR)"

echo "CLUSTER_DIR=$DIR"
echo "KUBECONFIG=$KUBECONFIG_FILE"

# Stay up; if any component dies, say which and take the rest down. With
# RIGHTSIZER_CLUSTER_PARENT_PID set, also go when that process is gone (a test binary that
# exits without running destructors must not leave a control plane behind).
names=(etcd kube-apiserver kube-controller-manager)
logs=(etcd.log apiserver.log controller-manager.log)
parent=${RIGHTSIZER_CLUSTER_PARENT_PID:-}
while :; do
  if [ "$restart_requested" = 1 ]; then
    restart_requested=0
    restart_apiserver
  fi
  for i in "${!pids[@]}"; do
    kill -0 "${pids[i]}" 2>/dev/null || die_with_log "${names[i]} exited" "$DIR/${logs[i]}"
  done
  if [ -n "$parent" ] && ! kill -0 "$parent" 2>/dev/null; then
    log "parent $parent is gone; stopping"
    exit 0
  fi
  # In the background so a signal runs the trap at once.
  sleep 1 &
  wait $! || true
done
