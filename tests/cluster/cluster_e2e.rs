//! End to end through a real kube-apiserver v1.20.2 (with kube-controller-manager and
//! etcd) on loopback: `rightsizer serve` runs as a local process, registered with a
//! MutatingWebhookConfiguration carrying the shipped settings and a `url` clientConfig.
//! Every assertion reads what the apiserver stored (or returned).
//!
//! One control plane and one webhook serve the whole binary; tests take a lock and run
//! one at a time. Without the control plane binaries libtest reports the tests ignored with
//! the reason (tests/build.rs sets `has_control_plane`), except under `CI=true`, where
//! that is a failure (run `tests/cluster/build.sh`).

use crate::cluster;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::{counter_sum, ControlPlane, TlsFiles, Webhook};

/// The node cap and the global default PriorityClass (cluster-wide facts).
mod values_e2e;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// The webhook registration. Kept in this one place: the values mirror the shipped
// `deploy/base/mutatingwebhookconfiguration.yaml`; when that file is in the tree it is used
// instead (and `registration_matches_deploy_base` checks the two agree).

const DEPLOY_WEBHOOK: &str = "deploy/base/mutatingwebhookconfiguration.yaml";
const WEBHOOK_NAME: &str = "mutate.rightsizer.io";
const TIMEOUT_SECONDS: u64 = 3;
/// The shared webhook's identity in the leader Lease (`POD_NAME`).
const REPLICA_A: &str = "rightsizer-a";

fn mirrored_entry() -> Value {
    json!({
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "namespaceSelector": {
            "matchLabels": {"rightsizer.io/enabled": "true"},
            "matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "rightsizer-system"]
            }]
        },
        "objectSelector": {
            "matchExpressions": [{"key": "rightsizer.io/mode", "operator": "NotIn", "values": ["off"]}]
        },
        "rules": [
            {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
             "operations": ["CREATE"], "scope": "Namespaced"},
            {"apiGroups": ["apps"], "apiVersions": ["v1"],
             "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
             "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"},
            {"apiGroups": ["batch"], "apiVersions": ["v1"], "resources": ["jobs", "cronjobs"],
             "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"},
            {"apiGroups": ["serving.knative.dev"], "apiVersions": ["v1"],
             "resources": ["services", "configurations"],
             "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}
        ],
        "failurePolicy": "Ignore",
        "timeoutSeconds": TIMEOUT_SECONDS,
        "sideEffects": "NoneOnDryRun",
        "reinvocationPolicy": "IfNeeded",
        "matchPolicy": "Equivalent"
    })
}

/// The first webhook entry of the shipped configuration, if `deploy/base` has it.
fn deploy_entry() -> Option<Value> {
    let path = cluster::repo_root().join(DEPLOY_WEBHOOK);
    let text = std::fs::read_to_string(path).ok()?;
    let doc: Value = serde_norway::from_str(&text).expect("deploy webhook YAML parses");
    let mut entry = doc["webhooks"][0].clone();
    entry.as_object_mut()?.remove("clientConfig");
    Some(entry)
}

/// The shipped entry with a `url` clientConfig.
fn registration(name: &str, entry: Value, url: &str, ca_pem: &str) -> Value {
    use base64::Engine;
    let mut entry = entry;
    entry["clientConfig"] = json!({
        "url": url,
        "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
    });
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [entry],
    })
}

fn shipped_entry() -> Value {
    deploy_entry().unwrap_or_else(mirrored_entry)
}

// ---------------------------------------------------------------------------------------
// Inputs of the sizing tests: one policy (enforce everywhere, GPU placement, a priority rule)
// and one recommendation snapshot with committed values, so expected sizes are exact.

const MI: u64 = 1024 * 1024;

fn policy_configmap() -> String {
    r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: e2e
  namespace: rightsizer-system
  labels:
    rightsizer.io/policy: "true"
data:
  policy.yaml: |
    mode: enforce
    gpu:
      resources: [nvidia.com/gpu]
      requiredNodeAffinity:
        - key: nvidia.com/gpu.present
          operator: In
          values: ["true"]
      tolerations:
        - key: nvidia.com/gpu
          operator: Exists
          effect: NoSchedule
    priority:
      rules:
        - className: e2e-batch
          selector:
            namespaces: [e2e-priority]
        - className: high-priority
          selector:
            namespaces: [e2e-tier]
            labels: {tier: critical}
    placement:
      - name: spot
        selector:
          namespaces: [e2e-tolerate]
        tolerations:
          - key: spot
            operator: Exists
            effect: NoSchedule
          - key: dedicated
            operator: Exists
            effect: NoSchedule
"#
    .to_string()
}

fn committed_memory(request: u64, limit: u64) -> Value {
    json!({"memory": {"committed": {"request": request, "limit": limit, "at": 1, "reason": "e2e"}}})
}

fn snapshot() -> Value {
    let mut deploy = committed_memory(300 * MI, 600 * MI);
    deploy["cpu"] = json!({"committed": {"request": 250, "at": 1, "reason": "e2e"}});
    json!({
        "generatedAt": 1,
        "recommendations": {
            "e2e-deploy/Deployment/web/app": deploy,
            "e2e-cron/CronJob/nightly/job": committed_memory(320 * MI, 640 * MI),
            "e2e-override/Deployment/web/app": committed_memory(300 * MI, 600 * MI),
            "e2e-off/Deployment/web/app": committed_memory(300 * MI, 600 * MI),
            "e2e-limits/Pod/big/app": committed_memory(1024 * MI, 4096 * MI),
            "e2e-quota/Pod/big/app": committed_memory(2048 * MI, 3072 * MI),
            "kube-system/Pod/sys/app": committed_memory(300 * MI, 600 * MI),
            "e2e-dryrun/Pod/dry/app": committed_memory(300 * MI, 600 * MI),
            "e2e-nodes/Pod/big/app": committed_memory(3072 * MI, 6144 * MI),
        }
    })
}

/// Namespaces, PriorityClasses, LimitRange and ResourceQuota every test can rely on.
fn fixtures() -> String {
    let mut docs = Vec::new();
    let enabled = [
        "e2e-calls",
        "e2e-deploy",
        "e2e-cron",
        "e2e-override",
        "e2e-off",
        "e2e-limits",
        "e2e-quota",
        "e2e-priority",
        "e2e-gpu",
        "e2e-dryrun",
        "e2e-policy",
        "e2e-tier",
        "e2e-nodes",
    ];
    for ns in enabled {
        docs.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    rightsizer.io/enabled: \"true\"\n"
        ));
    }
    docs.push("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: e2e-plain\n".into());
    docs.push(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: e2e-slow\n  labels:\n    rightsizer.io/enabled: \"true\"\n    rightsizer-e2e/slow: \"true\"\n"
            .into(),
    );
    // v1.20 does not yet label namespaces with their name (v1.21 does); set it as a newer
    // apiserver would, so the shipped selector's exclusion can be seen working.
    docs.push(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: rightsizer-system\n  labels:\n    rightsizer.io/enabled: \"true\"\n    kubernetes.io/metadata.name: rightsizer-system\n"
            .into(),
    );
    docs.push(crate::quota_e2e::fixtures());
    for (name, value) in [("e2e-batch", 1000), ("e2e-user", 7)] {
        docs.push(format!(
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: {name}\nvalue: {value}\n"
        ));
    }
    docs.push(
        r#"apiVersion: v1
kind: LimitRange
metadata:
  name: bounds
  namespace: e2e-limits
spec:
  limits:
    - type: Container
      min: {memory: 64Mi}
      max: {memory: 512Mi}
      maxLimitRequestRatio: {memory: "2"}
"#
        .into(),
    );
    docs.push(
        r#"apiVersion: v1
kind: ResourceQuota
metadata:
  name: memory
  namespace: e2e-quota
spec:
  hard:
    requests.memory: 1Gi
    limits.memory: 1Gi
"#
        .into(),
    );
    docs.join("---\n")
}

// ---------------------------------------------------------------------------------------
// The shared environment.

pub(crate) struct Env {
    pub(crate) plane: ControlPlane,
    tls: TlsFiles,
    addr: SocketAddr,
    args: Vec<String>,
    webhook: Mutex<Option<Webhook>>,
    /// The webhook runs as the shipped ServiceAccount (impersonated): only the shipped
    /// RBAC authorizes its calls, so a missing permission fails the tests.
    webhook_kubeconfig: std::path::PathBuf,
    /// Certificates, inputs and the webhook log; inside the plane's directory, which
    /// up.sh removes when it stops (statics are never dropped).
    work: std::path::PathBuf,
}

enum Setup {
    Missing(String),
    Failed(String),
}

static ENV: tokio::sync::OnceCell<Result<Env, Setup>> = tokio::sync::OnceCell::const_new();
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Env {
    fn start_webhook(&self) -> Result<Webhook, String> {
        Webhook::start(
            self.addr,
            &self.tls,
            &self.webhook_kubeconfig,
            &self.args,
            &[("RIGHTSIZER_ENFORCEMENT", "true"), ("POD_NAME", REPLICA_A)],
            self.work.join("webhook.log"),
        )
    }

    /// Another `rightsizer serve` replica with the same inputs on its own port.
    fn start_replica(&self, identity: &str) -> Result<Webhook, String> {
        let addr: SocketAddr = format!("127.0.0.1:{}", cluster::free_port())
            .parse()
            .map_err(|e: std::net::AddrParseError| e.to_string())?;
        Webhook::start(
            addr,
            &self.tls,
            &self.webhook_kubeconfig,
            &self.args,
            &[("RIGHTSIZER_ENFORCEMENT", "true"), ("POD_NAME", identity)],
            self.work.join(format!("{identity}.log")),
        )
    }

    pub(crate) async fn metrics(&self) -> String {
        // On the admin port: the TLS port serves the apiserver only.
        let admin = self
            .webhook
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|w| w.admin)
            .expect("the webhook is running");
        cluster::admin_get(admin, "/metrics")
            .await
            .expect("webhook /metrics")
    }

    /// Admission reviews answered so far, of any kind and outcome: the count is what
    /// proves the apiserver called the webhook.
    pub(crate) async fn reviews(&self) -> f64 {
        counter_sum(
            &self.metrics().await,
            "rightsizer_admission_reviews_total",
            &[],
        )
    }

    pub(crate) fn apply(&self, yaml: &str) {
        self.plane.kubectl_ok(&["apply", "-f", "-"], Some(yaml));
    }

    pub(crate) fn webhook_log(&self) -> String {
        let guard = self.webhook.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|w| w.log_text()).unwrap_or_default()
    }
}

async fn init() -> Result<Env, Setup> {
    if let Some(reason) = cluster::missing_prerequisite() {
        return Err(Setup::Missing(reason));
    }
    let fail = Setup::Failed;
    let plane = ControlPlane::start().map_err(fail)?;
    eprintln!(
        "cluster_e2e: control plane up in {:.1} s ({})",
        plane.startup.as_secs_f64(),
        plane.dir.display()
    );
    plane.install_shipped();
    let webhook_kubeconfig = plane.kubeconfig_as(cluster::WEBHOOK_USER);
    let work = plane.dir.join("e2e");
    std::fs::create_dir_all(&work).map_err(|e| fail(e.to_string()))?;
    let tls = cluster::generate_tls(&work);
    let policies = work.join("policies");
    std::fs::create_dir_all(&policies).map_err(|e| fail(e.to_string()))?;
    std::fs::write(policies.join("e2e.yaml"), policy_configmap())
        .map_err(|e| fail(e.to_string()))?;
    let snap = work.join("recommendations.json");
    std::fs::write(&snap, snapshot().to_string()).map_err(|e| fail(e.to_string()))?;
    let args = vec![
        "--policies".to_string(),
        policies.display().to_string(),
        "--recommendations".to_string(),
        snap.display().to_string(),
    ];
    let addr: SocketAddr = format!("127.0.0.1:{}", cluster::free_port())
        .parse()
        .map_err(|e: std::net::AddrParseError| fail(e.to_string()))?;
    let env = Env {
        plane,
        tls,
        addr,
        args,
        webhook: Mutex::new(None),
        webhook_kubeconfig,
        work,
    };
    let webhook = env.start_webhook().map_err(fail)?;
    *env.webhook.lock().unwrap_or_else(|e| e.into_inner()) = Some(webhook);

    env.apply(&fixtures());
    let reg = registration(
        "rightsizer",
        shipped_entry(),
        &format!("https://{}/mutate", env.addr),
        &env.tls.ca_pem,
    );
    env.apply(&reg.to_string());

    // The apiserver picks up webhook configurations asynchronously: probe with server-side
    // dry runs until one reaches the webhook.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = env.reviews().await;
    loop {
        env.plane.kubectl(
            &[
                "-n",
                "e2e-calls",
                "run",
                "probe",
                "--image=busybox",
                "--restart=Never",
                "--dry-run=server",
            ],
            None,
        );
        if env.reviews().await > before {
            break;
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "the apiserver never called the webhook; webhook log:\n{}",
                env.webhook_log()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(env)
}

/// The shared environment and the lock that runs tests one at a time. A missing prerequisite
/// is a failure here: skipping is the job of each test's `cfg_attr(not(has_control_plane), ignore)`.
pub(crate) async fn setup() -> (tokio::sync::MutexGuard<'static, ()>, &'static Env) {
    let guard = SERIAL.lock().await;
    match ENV.get_or_init(init).await {
        Ok(env) => (guard, env),
        Err(Setup::Missing(reason)) => {
            panic!("the control plane cannot run here: {reason} (tests/build.rs found it)")
        }
        Err(Setup::Failed(e)) => panic!("control plane setup failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

pub(crate) fn container(name: &str, request: &str, limit: &str) -> Value {
    json!({
        "name": name,
        "image": "busybox",
        "resources": {"requests": {"memory": request}, "limits": {"memory": limit}}
    })
}

pub(crate) fn pod(name: &str, containers: Vec<Value>) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": containers, "restartPolicy": "Never"}
    }))
    .expect("pod JSON")
}

fn deployment(name: &str, replicas: u32, annotations: Value, containers: Vec<Value>) -> String {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": containers}
            }
        }
    })
    .to_string()
}

/// Wait until at least `n` Pods match `selector` in `ns`.
async fn wait_pods(client: &kube::Client, ns: &str, selector: &str, n: usize) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = api
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list pods");
        if pods.items.len() >= n {
            return pods.items;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} pods for {selector} in {ns} after 30 s",
            pods.items.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (request, limit) memory in bytes of a stored Pod's container.
fn memory(pod: &Pod, container: &str) -> (Option<u64>, Option<u64>) {
    let spec = pod.spec.as_ref().expect("pod spec");
    let c = spec
        .containers
        .iter()
        .find(|c| c.name == container)
        .expect("container present");
    container_memory(c)
}

/// (request, limit) memory of one stored container.
fn container_memory(c: &k8s_openapi::api::core::v1::Container) -> (Option<u64>, Option<u64>) {
    let get = |m: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >| {
        m.and_then(|m| m.get("memory"))
            .map(|q| rightsizer_core::quantity::parse_bytes(&q.0).expect("memory quantity"))
    };
    let r = c.resources.as_ref();
    (
        get(r.and_then(|r| r.requests.as_ref())),
        get(r.and_then(|r| r.limits.as_ref())),
    )
}

fn cpu_request(pod: &Pod, container: &str) -> Option<u64> {
    let spec = pod.spec.as_ref()?;
    let c = spec.containers.iter().find(|c| c.name == container)?;
    let q = c.resources.as_ref()?.requests.as_ref()?.get("cpu")?;
    rightsizer_core::quantity::parse_millicores(&q.0).ok()
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

pub(crate) async fn create_pod(
    client: &kube::Client,
    ns: &str,
    p: &Pod,
) -> Result<Pod, kube::Error> {
    create_in_time(client, ns, &PostParams::default(), p).await
}

/// Create a Pod, waiting out the moment after a namespace is made when its ServiceAccount
/// has no token yet (the apiserver answers 500 "No API token found" and asks to retry;
/// kube-controller-manager adds the token within seconds).
async fn create_in_time(
    client: &kube::Client,
    ns: &str,
    params: &PostParams,
    p: &Pod,
) -> Result<Pod, kube::Error> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match api.create(params, p).await {
            Err(kube::Error::Api(s))
                if s.code == 500
                    && s.message.contains("No API token found")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The webhook is called where the shipped registration says, and never blocks admission.

#[test]
fn registration_matches_deploy_base() {
    let shipped = deploy_entry().unwrap_or_else(|| panic!("{DEPLOY_WEBHOOK} has a webhook"));
    assert_eq!(
        shipped,
        mirrored_entry(),
        "{DEPLOY_WEBHOOK} and the mirrored registration in this test differ"
    );
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn webhook_is_called_only_for_opted_in_namespaces() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    let c0 = env.reviews().await;

    // Not opted in: no label, kube-system, the webhook's own namespace (excluded by name),
    // and an object labelled `rightsizer.io/mode: off`.
    create_pod(
        &client,
        "e2e-plain",
        &pod("plain", vec![container("app", "64Mi", "128Mi")]),
    )
    .await
    .expect("pod in unlabelled namespace");
    create_pod(
        &client,
        "kube-system",
        &pod("sys-plain", vec![container("app", "64Mi", "128Mi")]),
    )
    .await
    .expect("pod in kube-system");
    create_pod(
        &client,
        "rightsizer-system",
        &pod("own", vec![container("app", "64Mi", "128Mi")]),
    )
    .await
    .expect("pod in the webhook's namespace");
    let mut off = pod("labelled-off", vec![container("app", "64Mi", "128Mi")]);
    off.metadata.labels = Some([("rightsizer.io/mode".to_string(), "off".to_string())].into());
    create_pod(&client, "e2e-calls", &off)
        .await
        .expect("pod labelled off");
    assert_eq!(
        env.reviews().await,
        c0,
        "the webhook was called for a pod it must not see"
    );

    // Opted in: exactly one more review.
    create_pod(
        &client,
        "e2e-calls",
        &pod("called", vec![container("app", "64Mi", "128Mi")]),
    )
    .await
    .expect("pod in labelled namespace");
    assert_eq!(env.reviews().await, c0 + 1.0);
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn replicaset_controller_pods_reach_the_webhook() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    let reviews0 = env.reviews().await;

    env.plane.kubectl_ok(
        &["-n", "e2e-calls", "apply", "-f", "-"],
        Some(&deployment(
            "fleet",
            3,
            json!({}),
            vec![container("app", "64Mi", "128Mi")],
        )),
    );
    let pods = wait_pods(&client, "e2e-calls", "app=fleet", 3).await;
    for p in &pods {
        let gen = p.metadata.generate_name.as_deref().unwrap_or_default();
        assert!(
            gen.starts_with("fleet-") && gen.ends_with('-'),
            "generateName {gen:?}"
        );
        let owner = &p
            .metadata
            .owner_references
            .as_ref()
            .expect("owner references")[0];
        assert_eq!(owner.kind, "ReplicaSet");
        assert_eq!(owner.controller, Some(true));
    }
    // The Deployment, its ReplicaSet and three Pods (which arrive without a name, only
    // generateName) each reach the webhook.
    let reviews = env.reviews().await;
    assert!(reviews >= reviews0 + 5.0, "{reviews0} -> {reviews} reviews");
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn webhook_down_with_failure_policy_ignore_admits() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    {
        let mut w = env.webhook.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut hook) = w.take() {
            hook.stop();
        }
    }
    let created = create_pod(
        &client,
        "e2e-calls",
        &pod("while-down", vec![container("app", "64Mi", "128Mi")]),
    )
    .await;
    // Bring the webhook back before asserting, so later tests find it.
    let restarted = env.start_webhook();
    match restarted {
        Ok(hook) => *env.webhook.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook),
        Err(e) => panic!("restarting the webhook: {e}"),
    }
    let stored = created.expect("failurePolicy Ignore: pod admitted while the webhook is down");
    assert_eq!(stored.metadata.name.as_deref(), Some("while-down"));
    let (req, lim) = memory(&stored, "app");
    assert_eq!(
        (req, lim),
        (Some(64 * MI), Some(128 * MI)),
        "stored unchanged"
    );
}

/// Accepts TLS with the webhook's certificate and never answers.
async fn silent_tls_server(tls: &TlsFiles, handshakes: Arc<AtomicUsize>) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let handshakes = handshakes.clone();
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    // Hold the connection open without a byte of response.
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    drop(stream);
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn webhook_slower_than_timeout_admits() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    let handshakes = Arc::new(AtomicUsize::new(0));
    let slow = silent_tls_server(&env.tls, handshakes.clone()).await;
    // Same settings as shipped; only the name and (so other tests are not slowed down)
    // a namespace label narrow it to `e2e-slow`.
    let mut entry = shipped_entry();
    entry["name"] = json!("slow.rightsizer.io");
    entry["namespaceSelector"]["matchLabels"]["rightsizer-e2e/slow"] = json!("true");
    let reg = registration(
        "rightsizer-e2e-slow",
        entry,
        &format!("https://{slow}/mutate"),
        &env.tls.ca_pem,
    );
    env.apply(&reg.to_string());

    // Until the apiserver has loaded the configuration, creations do not reach it.
    let mut slow_creation = None;
    for i in 0..20 {
        let started = Instant::now();
        let created = create_pod(
            &client,
            "e2e-slow",
            &pod(
                &format!("slow-{i}"),
                vec![container("app", "64Mi", "128Mi")],
            ),
        )
        .await;
        let took = started.elapsed();
        if handshakes.load(Ordering::SeqCst) > 0 {
            slow_creation = Some((created, took));
            break;
        }
        created.expect("pod admitted before the slow webhook was loaded");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    env.plane.kubectl_ok(
        &[
            "delete",
            "mutatingwebhookconfiguration",
            "rightsizer-e2e-slow",
        ],
        None,
    );
    let (created, took) = slow_creation.expect("the apiserver never called the silent webhook");
    let stored =
        created.expect("failurePolicy Ignore: pod admitted although the webhook timed out");
    assert!(stored.metadata.uid.is_some());
    eprintln!(
        "creation with a silent webhook took {:.1} s (timeoutSeconds {TIMEOUT_SECONDS})",
        took.as_secs_f64()
    );
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn server_dry_run_calls_the_webhook_and_stores_nothing() {
    let (_serial, env) = setup().await;
    let before = env.reviews().await;
    let manifest = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dry-calls", "namespace": "e2e-calls"},
        "spec": {"containers": [container("app", "64Mi", "128Mi")]}
    });
    let out = env.plane.kubectl_ok(
        &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&manifest.to_string()),
    );
    let returned: Pod = serde_json::from_str(&out).expect("kubectl returns the Pod");
    assert_eq!(returned.metadata.name.as_deref(), Some("dry-calls"));
    assert_eq!(
        env.reviews().await,
        before + 1.0,
        "dry run reaches the webhook (NoneOnDryRun)"
    );
    let get = env
        .plane
        .kubectl(&["-n", "e2e-calls", "get", "pod", "dry-calls"], None);
    assert!(!get.status.success(), "a dry run stored the Pod");
}

// ---------------------------------------------------------------------------------------
// Sizing through the real apiserver (needs the admission logic in `serve`).

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn deployment_pods_sized_from_snapshot_keyed_to_the_deployment() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    env.plane.kubectl_ok(
        &["-n", "e2e-deploy", "apply", "-f", "-"],
        Some(&deployment(
            "web",
            2,
            json!({}),
            vec![container("app", "128Mi", "256Mi")],
        )),
    );
    let pods = wait_pods(&client, "e2e-deploy", "app=web", 2).await;
    for p in &pods {
        assert_eq!(
            memory(p, "app"),
            (Some(300 * MI), Some(600 * MI)),
            "log:\n{}",
            env.webhook_log()
        );
        assert_eq!(cpu_request(p, "app"), Some(250));
        assert!(
            annotation(p, "rightsizer.io/sized").is_some(),
            "no rightsizer.io/sized annotation"
        );
    }
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn cronjob_job_pods_keyed_to_the_cronjob() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    // batch/v1 CronJob arrives in v1.21; v1.20 serves batch/v1beta1. Suspended, so the
    // Job below is the only one; it is created as the CronJob controller would name and own it.
    env.apply(
        r#"apiVersion: batch/v1beta1
kind: CronJob
metadata:
  name: nightly
  namespace: e2e-cron
spec:
  schedule: "0 3 * * *"
  suspend: true
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: job
              image: busybox
              resources:
                requests: {memory: 64Mi}
                limits: {memory: 128Mi}
"#,
    );
    let uid = env.plane.kubectl_ok(
        &[
            "-n",
            "e2e-cron",
            "get",
            "cronjobs.v1beta1.batch",
            "nightly",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    );
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": "nightly-28000000", "namespace": "e2e-cron",
            "ownerReferences": [{"apiVersion": "batch/v1beta1", "kind": "CronJob", "name": "nightly",
                                 "uid": uid.trim(), "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [container("job", "64Mi", "128Mi")]}}}
    });
    env.apply(&job.to_string());
    let pods = wait_pods(&client, "e2e-cron", "job-name=nightly-28000000", 1).await;
    let owner = &pods[0].metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(owner.kind, "Job", "the Job controller created the Pod");
    assert_eq!(
        memory(&pods[0], "job"),
        (Some(320 * MI), Some(640 * MI)),
        "log:\n{}",
        env.webhook_log()
    );
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn overrides_win_over_committed_values() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    let overrides = json!({"app": {"memory": {"request": "200Mi", "limit": "400Mi"}}}).to_string();
    env.plane.kubectl_ok(
        &["-n", "e2e-override", "apply", "-f", "-"],
        Some(&deployment(
            "web",
            1,
            json!({"rightsizer.io/overrides": overrides}),
            vec![container("app", "128Mi", "256Mi")],
        )),
    );
    let pods = wait_pods(&client, "e2e-override", "app=web", 1).await;
    assert_eq!(
        memory(&pods[0], "app"),
        (Some(200 * MI), Some(400 * MI)),
        "log:\n{}",
        env.webhook_log()
    );
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn mode_off_annotation_opts_out() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    let reviews = env.reviews().await;
    env.plane.kubectl_ok(
        &["-n", "e2e-off", "apply", "-f", "-"],
        Some(&deployment(
            "web",
            1,
            json!({"rightsizer.io/mode": "off"}),
            vec![container("app", "128Mi", "256Mi")],
        )),
    );
    let pods = wait_pods(&client, "e2e-off", "app=web", 1).await;
    // An annotation is invisible to selectors: the webhook is called and must leave it alone.
    assert!(env.reviews().await > reviews);
    assert_eq!(memory(&pods[0], "app"), (Some(128 * MI), Some(256 * MI)));
    assert!(annotation(&pods[0], "rightsizer.io/sized").is_none());
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn limit_range_still_admits_sized_pods() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    // Committed 1Gi/4Gi, but the LimitRange allows at most 512Mi and a ratio of 2.
    let stored = create_pod(
        &client,
        "e2e-limits",
        &pod("big", vec![container("app", "128Mi", "256Mi")]),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "LimitRanger refused the sized pod: {e}\nlog:\n{}",
            env.webhook_log()
        )
    });
    let (req, lim) = memory(&stored, "app");
    let (req, lim) = (req.expect("request"), lim.expect("limit"));
    assert!(
        lim <= 512 * MI && req >= 64 * MI && lim <= 2 * req,
        "request {req} limit {lim}"
    );
    assert!(
        annotation(&stored, "rightsizer.io/sized").is_some(),
        "pod was not sized"
    );
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn resource_quota_never_rejects_because_of_sizing() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    // The quota admission refuses pods until the quota controller has filled in the status.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env
        .plane
        .kubectl_ok(
            &[
                "-n",
                "e2e-quota",
                "get",
                "resourcequota",
                "memory",
                "-o",
                "jsonpath={.status.hard}",
            ],
            None,
        )
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "quota status never synced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reviews = env.reviews().await;
    // Committed 2Gi/3Gi would exceed the 1Gi quota; the pod as written fits.
    let stored = create_pod(
        &client,
        "e2e-quota",
        &pod("big", vec![container("app", "100Mi", "200Mi")]),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "sizing got the pod rejected: {e}\nlog:\n{}",
            env.webhook_log()
        )
    });
    assert!(
        env.reviews().await > reviews,
        "the webhook was not consulted"
    );
    let (req, lim) = memory(&stored, "app");
    assert!(req.unwrap_or(0) <= 1024 * MI && lim.unwrap_or(0) <= 1024 * MI);
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn priority_class_from_policy_and_user_class_kept() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    let stored = create_pod(
        &client,
        "e2e-priority",
        &pod("assigned", vec![container("app", "64Mi", "128Mi")]),
    )
    .await
    .expect("pod admitted");
    let spec = stored.spec.as_ref().unwrap();
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("e2e-batch"),
        "log:\n{}",
        env.webhook_log()
    );
    assert_eq!(
        spec.priority,
        Some(1000),
        "spec.priority must be the cluster class's value"
    );

    let mut own = pod("own-class", vec![container("app", "64Mi", "128Mi")]);
    own.spec.as_mut().unwrap().priority_class_name = Some("e2e-user".into());
    let stored = create_pod(&client, "e2e-priority", &own)
        .await
        .expect("pod admitted");
    let spec = stored.spec.as_ref().unwrap();
    assert_eq!(spec.priority_class_name.as_deref(), Some("e2e-user"));
    assert_eq!(spec.priority, Some(7));
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn gpu_pods_get_affinity_and_tolerations() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    let mut gpu = container("app", "64Mi", "128Mi");
    gpu["resources"]["limits"]["nvidia.com/gpu"] = json!("1");
    let stored = create_pod(&client, "e2e-gpu", &pod("trainer", vec![gpu]))
        .await
        .expect("gpu pod admitted");
    let spec = stored.spec.as_ref().unwrap();
    let tolerates = spec.tolerations.iter().flatten().any(|t| {
        t.key.as_deref() == Some("nvidia.com/gpu") && t.effect.as_deref() == Some("NoSchedule")
    });
    assert!(tolerates, "no GPU toleration; log:\n{}", env.webhook_log());
    let required = serde_json::to_value(
        spec.affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
    )
    .unwrap();
    assert!(
        required.to_string().contains("nvidia.com/gpu.present"),
        "required affinity {required}"
    );

    let plain = create_pod(
        &client,
        "e2e-gpu",
        &pod("cpu-only", vec![container("app", "64Mi", "128Mi")]),
    )
    .await
    .expect("pod admitted");
    let spec = plain.spec.as_ref().unwrap();
    assert!(spec.affinity.is_none(), "non-GPU pod got an affinity");
    assert!(!spec
        .tolerations
        .iter()
        .flatten()
        .any(|t| t.key.as_deref() == Some("nvidia.com/gpu")));
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn kube_system_is_never_sized_even_when_labelled() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    // On v1.20 nothing labels kube-system with its name, so with the opt-in label the
    // apiserver does call the webhook; the webhook itself must leave it alone.
    env.plane.kubectl_ok(
        &[
            "label",
            "namespace",
            "kube-system",
            "rightsizer.io/enabled=true",
            "--overwrite",
        ],
        None,
    );
    let reviews = env.reviews().await;
    let created = create_pod(
        &client,
        "kube-system",
        &pod("sys", vec![container("app", "64Mi", "128Mi")]),
    )
    .await;
    let called = env.reviews().await > reviews;
    env.plane.kubectl_ok(
        &[
            "label",
            "namespace",
            "kube-system",
            "rightsizer.io/enabled-",
        ],
        None,
    );
    let stored = created.expect("pod admitted");
    assert!(
        called,
        "the webhook was not consulted, so nothing was proven"
    );
    assert_eq!(memory(&stored, "app"), (Some(64 * MI), Some(128 * MI)));
    assert!(annotation(&stored, "rightsizer.io/sized").is_none());
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn server_dry_run_returns_the_sized_object() {
    let (_serial, env) = setup().await;
    let manifest = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dry", "namespace": "e2e-dryrun"},
        "spec": {"containers": [container("app", "64Mi", "128Mi")]}
    });
    let out = env.plane.kubectl_ok(
        &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&manifest.to_string()),
    );
    let returned: Pod = serde_json::from_str(&out).expect("kubectl returns the Pod");
    assert_eq!(
        memory(&returned, "app"),
        (Some(300 * MI), Some(600 * MI)),
        "log:\n{}",
        env.webhook_log()
    );
    let get = env
        .plane
        .kubectl(&["-n", "e2e-dryrun", "get", "pod", "dry"], None);
    assert!(!get.status.success(), "a dry run stored the Pod");
    let events = env
        .plane
        .kubectl_ok(&["-n", "e2e-dryrun", "get", "events", "-o", "json"], None);
    assert!(
        !events.contains("rightsizer"),
        "a dry run wrote an Event: {events}"
    );
}

// ---------------------------------------------------------------------------------------
// The webhook's Kubernetes side through the real binary: policy ConfigMaps, committed values
// read by another replica, the leader Lease.

/// A policy ConfigMap in the webhook's namespace. `memory` is the defaults' YAML flow map.
fn live_policy(name: &str, precedence: i32, namespaces: &str, body: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  namespace: rightsizer-system
  labels:
    rightsizer.io/policy: "true"
data:
  policy.yaml: |
    precedence: {precedence}
    selector:
      namespaces: {namespaces}
{body}"#
    )
}

fn defaults_policy(memory: &str) -> String {
    live_policy(
        "e2e-live",
        50,
        "[e2e-policy]",
        &format!("    mode: observe\n    defaults:\n      memory: {memory}\n"),
    )
}

/// A container that declares nothing: policy defaults size it.
fn bare_container(name: &str) -> Value {
    json!({"name": name, "image": "busybox"})
}

/// What the webhook makes of a new Pod now, by a server-side dry run (nothing stored).
async fn dry_run_memory(client: &kube::Client, ns: &str) -> (Option<u64>, Option<u64>) {
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let returned = create_in_time(
        client,
        ns,
        &params,
        &pod("probe", vec![bare_container("app")]),
    )
    .await
    .expect("dry-run pod creation");
    memory(&returned, "app")
}

/// Poll until new Pods in `ns` get `want`; the time it took, or None after `limit`.
async fn time_until_sized(
    client: &kube::Client,
    ns: &str,
    want: (Option<u64>, Option<u64>),
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if dry_run_memory(client, ns).await == want {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The contract says 2 s; the margin covers one poll and a busy 2-core machine.
const POLICY_DEADLINE: Duration = Duration::from_millis(2500);

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn policy_configmap_edits_apply_within_2s_and_broken_ones_are_refused() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    let ns = "e2e-policy";

    env.apply(&defaults_policy("{request: 96Mi, limit: 192Mi}"));
    let created = time_until_sized(
        &client,
        ns,
        (Some(96 * MI), Some(192 * MI)),
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|| panic!("new policy never applied; log:\n{}", env.webhook_log()));

    env.apply(&defaults_policy("{request: 160Mi, limit: 320Mi}"));
    let edited = time_until_sized(
        &client,
        ns,
        (Some(160 * MI), Some(320 * MI)),
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|| panic!("edited policy never applied; log:\n{}", env.webhook_log()));
    eprintln!(
        "policy ConfigMap in force {:.0} ms after create, {:.0} ms after edit",
        created.as_secs_f64() * 1e3,
        edited.as_secs_f64() * 1e3
    );
    assert!(created <= POLICY_DEADLINE, "create took {created:?}");
    assert!(edited <= POLICY_DEADLINE, "edit took {edited:?}");
    let stored = create_pod(&client, ns, &pod("edited", vec![bare_container("app")]))
        .await
        .expect("pod admitted");
    assert_eq!(memory(&stored, "app"), (Some(160 * MI), Some(320 * MI)));
    let sized: Value =
        serde_json::from_str(annotation(&stored, "rightsizer.io/sized").expect("sized")).unwrap();
    assert_eq!(sized["app"]["memory"]["request"]["source"], "default");

    // A broken edit: refused with a Warning Event naming the field; the last good stays.
    env.apply(&defaults_policy("{request: 160Mi, limit: lots}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        let out = env.plane.kubectl_ok(
            &[
                "-n",
                "rightsizer-system",
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=ConfigMap,involvedObject.name=e2e-live,reason=PolicyRejected",
                "-o",
                "json",
            ],
            None,
        );
        let list: Value = serde_json::from_str(&out).expect("event list JSON");
        if let Some(e) = list["items"].as_array().and_then(|a| a.first()) {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no PolicyRejected Event; log:\n{}",
            env.webhook_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(event["type"], "Warning");
    let message = event["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("defaults.memory.limit"),
        "the Event does not name the field: {message}"
    );
    // A policy ConfigMap outside the webhook's namespace is not read (it would win here).
    env.apply(
        &live_policy(
            "e2e-foreign",
            99,
            "[e2e-policy]",
            "    mode: observe\n    defaults:\n      memory: {request: 480Mi, limit: 960Mi}\n",
        )
        .replace("namespace: rightsizer-system", "namespace: e2e-policy"),
    );
    // Give a wrongly accepted edit the same time a good one gets, then check it was not.
    tokio::time::sleep(POLICY_DEADLINE).await;
    let kept = create_pod(
        &client,
        ns,
        &pod("after-broken", vec![bare_container("app")]),
    )
    .await
    .expect("pod admitted");
    let ready = cluster::webhook_status(env.addr, &env.tls.ca_pem, "/readyz").await;
    let rejected = counter_sum(&env.metrics().await, "rightsizer_policy_rejected", &[]);
    env.plane.kubectl_ok(
        &["-n", "rightsizer-system", "delete", "configmap", "e2e-live"],
        None,
    );
    env.plane
        .kubectl_ok(&["-n", ns, "delete", "configmap", "e2e-foreign"], None);
    // Deleting the ConfigMap withdraws its policy: the folder policy (no defaults) is back.
    let removed = time_until_sized(&client, ns, (None, None), Duration::from_secs(10)).await;
    // And it clears the refusal.
    let deadline = Instant::now() + POLICY_DEADLINE;
    let cleared = loop {
        let now = counter_sum(&env.metrics().await, "rightsizer_policy_rejected", &[]);
        if now == 0.0 || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        memory(&kept, "app"),
        (Some(160 * MI), Some(320 * MI)),
        "the last good policy must stay in force"
    );
    assert_eq!(ready, Ok(200), "/readyz after a refused policy");
    assert_eq!(rejected, 1.0, "rightsizer_policy_rejected while refused");
    assert_eq!(cleared, 0.0, "rightsizer_policy_rejected after the delete");
    let removed = removed.expect("the deleted policy still sizes new pods");
    assert!(removed <= POLICY_DEADLINE, "delete took {removed:?}");
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn webhook_namespace_and_kube_system_untouched_even_when_a_policy_selects_them() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    env.apply(&live_policy(
        "e2e-system",
        60,
        "[kube-system, rightsizer-system]",
        "    mode: enforce\n    defaults:\n      memory: {request: 99Mi, limit: 198Mi}\n    priority:\n      rules:\n        - className: e2e-batch\n          selector:\n            namespaces: [kube-system, rightsizer-system]\n",
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.webhook_log().contains("rightsizer-system/e2e-system") {
        assert!(
            Instant::now() < deadline,
            "policy never applied; log:\n{}",
            env.webhook_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Make the apiserver call the webhook for both (a newer apiserver's name label is what
    // keeps the shipped selector away from the webhook's namespace; v1.20 has none).
    let kubectl = |args: &[&str]| env.plane.kubectl_ok(args, None);
    kubectl(&[
        "label",
        "namespace",
        "kube-system",
        "rightsizer.io/enabled=true",
        "--overwrite",
    ]);
    kubectl(&[
        "label",
        "namespace",
        "rightsizer-system",
        "kubernetes.io/metadata.name-",
    ]);
    let reviews = env.reviews().await;
    let mut stored = Vec::new();
    for ns in ["kube-system", "rightsizer-system"] {
        stored.push(create_pod(&client, ns, &pod("selected", vec![bare_container("app")])).await);
    }
    let calls = env.reviews().await - reviews;
    kubectl(&[
        "label",
        "namespace",
        "kube-system",
        "rightsizer.io/enabled-",
    ]);
    kubectl(&[
        "label",
        "namespace",
        "rightsizer-system",
        "kubernetes.io/metadata.name=rightsizer-system",
    ]);
    kubectl(&[
        "-n",
        "rightsizer-system",
        "delete",
        "configmap",
        "e2e-system",
    ]);
    assert_eq!(calls, 2.0, "the webhook must be consulted for both pods");
    for p in stored {
        let p = p.expect("pod admitted");
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        assert_eq!(memory(&p, "app"), (None, None), "{ns}: resources added");
        assert!(annotation(&p, "rightsizer.io/sized").is_none(), "{ns}");
        let spec = p.spec.as_ref().unwrap();
        assert!(spec.priority_class_name.is_none(), "{ns}: class set");
    }
}

fn lease_holder(env: &Env) -> String {
    env.plane
        .kubectl(
            &[
                "-n",
                "rightsizer-system",
                "get",
                "lease",
                "rightsizer-leader",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )
        .stdout
        .iter()
        .map(|b| *b as char)
        .collect()
}

/// Poll the Lease until `want` holds it; the time it took, or None after `limit`.
async fn time_until_holder(env: &Env, want: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if lease_holder(env) == want {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Longest acceptable hand-over. An unreleased Lease would take its 15 s duration; a
/// released one is taken at the follower's next retry (every 2 s).
const HANDOVER: Duration = Duration::from_secs(5);

/// The webhook runs as the shipped ServiceAccount: every watch lists, the Lease is
/// held, and nothing it did was refused (a missing permission shows as a 403 in its log).
#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn the_webhook_works_with_the_shipped_rights_only() {
    let (_serial, env) = setup().await;
    time_until_holder(env, REPLICA_A, Duration::from_secs(20))
        .await
        .expect("the webhook holds the Lease as the ServiceAccount");
    let metrics = env.metrics().await;
    for resource in [
        "namespaces",
        "limitranges",
        "resourcequotas",
        "nodes",
        "replicasets",
        "jobs",
        "deployments",
        "cronjobs",
        "policyconfigmaps",
    ] {
        assert!(
            metrics.contains(&format!(
                "rightsizer_watch_objects{{resource=\"{resource}\"}}"
            )),
            "no {resource} watch:\n{metrics}"
        );
    }
    let log = env.webhook_log();
    for refused in ["forbidden", "Forbidden", "watch failed"] {
        assert!(
            !log.contains(refused),
            "{refused} in the webhook log:\n{log}"
        );
    }
    let denied = env.plane.kubectl(
        &[
            "auth",
            "can-i",
            "patch",
            "deployments.apps",
            "-n",
            "kube-system",
            "--as",
            cluster::WEBHOOK_USER,
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "no");
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn leader_lease_hands_over_when_the_leader_stops() {
    let (_serial, env) = setup().await;
    time_until_holder(env, REPLICA_A, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| {
            panic!(
                "{REPLICA_A} never held the Lease (holder {:?}); log:\n{}",
                lease_holder(env),
                env.webhook_log()
            )
        });
    let mut b = env.start_replica("rightsizer-b").expect("replica b starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster::webhook_status(b.addr, &env.tls.ca_pem, "/readyz").await != Ok(200) {
        assert!(Instant::now() < deadline, "replica b never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // b has tried and lost at least once by the time it is ready.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let while_both = lease_holder(env);

    // SIGTERM to the leader: it drains, releases the Lease and exits.
    let stopped_at = Instant::now();
    if let Some(mut a) = env.webhook.lock().unwrap_or_else(|e| e.into_inner()).take() {
        a.stop();
    }
    let exit = stopped_at.elapsed();
    let to_b = time_until_holder(env, "rightsizer-b", Duration::from_secs(20)).await;
    let to_b = to_b.map(|_| stopped_at.elapsed());
    let a_log = std::fs::read_to_string(env.work.join("webhook.log")).unwrap_or_default();

    // Back to a: restart it (a follower now), stop b, and a takes over again.
    let restarted = env.start_webhook().expect("restarting the webhook");
    *env.webhook.lock().unwrap_or_else(|e| e.into_inner()) = Some(restarted);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back_at = Instant::now();
    b.stop();
    let to_a = time_until_holder(env, REPLICA_A, Duration::from_secs(20))
        .await
        .map(|_| back_at.elapsed());

    eprintln!(
        "leader hand-over: a exited {:.1} s after SIGTERM; b held the Lease after {:?}, a again after {:?}",
        exit.as_secs_f64(),
        to_b,
        to_a
    );
    assert_eq!(while_both, REPLICA_A, "one holder while both run");
    let to_b = to_b.unwrap_or_else(|| panic!("b never took the Lease; a's log:\n{a_log}"));
    assert!(to_b <= HANDOVER, "a -> b took {to_b:?}; a's log:\n{a_log}");
    assert!(a_log.contains("released the leader Lease"), "{a_log}");
    let to_a = to_a.unwrap_or_else(|| panic!("a never took the Lease back:\n{}", b.log_text()));
    assert!(to_a <= HANDOVER, "b -> a took {to_a:?}");
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn committed_values_stored_by_the_leader_are_read_by_a_second_replica() {
    use rightsizer::kube::events::EventLimits;
    use rightsizer::kube::leader::LeaseTimings;
    use rightsizer::kube::KubeOptions;
    use rightsizer_core::analysis::container_state::{ContainerState, Saved};
    use rightsizer_core::quantity::Resource;
    use rightsizer_core::recommendation::{Committed, ContainerKey};
    use rightsizer_core::rules::Sizes;

    let saved = |key: &ContainerKey, c: Committed| {
        let mut state = ContainerState::default();
        state.record(Resource::Memory, c);
        Saved {
            key: key.clone(),
            state,
            rec: None,
            strategy: "seed".into(),
            cooldown_seconds: 1800,
        }
    };

    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    let ns = "e2e-replica";
    // Only replica b is registered for this namespace, so what its Pods get comes from b.
    env.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    rightsizer-e2e/replica: b\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: e2e-writer\n"
    ));
    env.plane.kubectl_ok(
        &["-n", ns, "apply", "-f", "-"],
        Some(&deployment(
            "web",
            0,
            json!({}),
            vec![container("app", "128Mi", "256Mi")],
        )),
    );

    // The writer: the library's Kubernetes side leading in its own namespace, storing
    // committed values in Rightsizings as a leader replica's analyzer does.
    let store = Arc::new(rightsizer::policies::store::PolicyStore::new());
    let mut registry = prometheus_client::registry::Registry::default();
    let writer = rightsizer::kube::start_with(
        client.clone(),
        "e2e-writer",
        store,
        &mut registry,
        KubeOptions {
            identity: "e2e-writer".into(),
            lease: LeaseTimings {
                lease_duration: Duration::from_secs(5),
                retry_period: Duration::from_millis(200),
            },
            events: EventLimits::default(),
        },
    )
    .await
    .expect("writer starts");
    writer
        .wait_synced(Duration::from_secs(20))
        .await
        .expect("writer synced");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !writer.leader.is_leader() {
        assert!(Instant::now() < deadline, "the writer never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = ContainerKey::parse(&format!("{ns}/Deployment/web/app")).expect("key");
    let value = Committed {
        sizes: Sizes {
            request: Some(352 * MI),
            limit: Some(704 * MI),
        },
        at: 1_700_000_000,
        reason: "e2e".into(),
    };
    writer
        .commit_store()
        .save(vec![saved(&key, value)])
        .await
        .expect("commit written");
    // Into the workload's Rightsizing; the Deployment itself is not written.
    let stored = env.plane.kubectl_ok(
        &[
            "-n",
            ns,
            "get",
            "rsz",
            "deployment-web",
            "-o",
            "jsonpath={.status.memoryCommitted}",
        ],
        None,
    );
    assert_eq!(stored, "app=352Mi/704Mi");
    let managers = env.plane.kubectl_ok(
        &[
            "-n",
            ns,
            "get",
            "deployment",
            "web",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ],
        None,
    );
    assert!(
        !managers.split_whitespace().any(|m| m == "rightsizer"),
        "rightsizer wrote the Deployment: {managers}"
    );

    // Replica b starts after the commit and reads it through its own watch.
    let b = env.start_replica("rightsizer-b").expect("replica b starts");
    let mut entry = shipped_entry();
    entry["name"] = json!("replica-b.rightsizer.io");
    entry["namespaceSelector"]["matchLabels"] = json!({"rightsizer-e2e/replica": "b"});
    let reg = registration(
        "rightsizer-e2e-replica-b",
        entry,
        &format!("https://{}/mutate", b.addr),
        &env.tls.ca_pem,
    );
    env.apply(&reg.to_string());
    let b_reviews = || async {
        let text = cluster::admin_get(b.admin, "/metrics")
            .await
            .unwrap_or_default();
        counter_sum(&text, "rightsizer_admission_reviews_total", &[])
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while b_reviews().await == 0.0 {
        assert!(Instant::now() < deadline, "the apiserver never called b");
        dry_run_memory(&client, ns).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster::webhook_status(b.addr, &env.tls.ca_pem, "/readyz").await != Ok(200) {
        assert!(Instant::now() < deadline, "replica b never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    env.plane.kubectl_ok(
        &["-n", ns, "scale", "deployment", "web", "--replicas=1"],
        None,
    );
    let pods = wait_pods(&client, ns, "app=web", 1).await;

    // A later commit reaches the running replica through its watch: Pods of the same
    // ReplicaSet (server dry runs, nothing stored) get it.
    let owner = pods[0].metadata.owner_references.clone().expect("owner");
    let newer = Committed {
        sizes: Sizes {
            request: Some(384 * MI),
            limit: Some(768 * MI),
        },
        at: 1_700_000_100,
        reason: "e2e again".into(),
    };
    writer
        .commit_store()
        .save(vec![saved(&key, newer)])
        .await
        .expect("second commit written");
    let committed_at = Instant::now();
    let mut sibling = pod("sibling", vec![container("app", "128Mi", "256Mi")]);
    sibling.metadata.owner_references = Some(owner);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let followed = loop {
        let returned = pods_api.create(&dry, &sibling).await.expect("dry run");
        let got = memory(&returned, "app");
        if got == (Some(384 * MI), Some(768 * MI))
            || committed_at.elapsed() > Duration::from_secs(10)
        {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let follow_time = committed_at.elapsed();
    writer.shutdown().await.expect("writer stops");
    env.plane.kubectl_ok(
        &[
            "delete",
            "mutatingwebhookconfiguration",
            "rightsizer-e2e-replica-b",
        ],
        None,
    );
    let b_log = b.log_text();
    drop(b);
    eprintln!(
        "replica b served the newer commit {:.0} ms after it was applied",
        follow_time.as_secs_f64() * 1e3
    );
    assert_eq!(
        followed,
        (Some(384 * MI), Some(768 * MI)),
        "b never served the newer commit; b's log:\n{b_log}"
    );
    assert_eq!(
        memory(&pods[0], "app"),
        (Some(352 * MI), Some(704 * MI)),
        "b's log:\n{b_log}"
    );
    let sized: Value =
        serde_json::from_str(annotation(&pods[0], "rightsizer.io/sized").expect("sized"))
            .expect("sized JSON");
    assert_eq!(sized["app"]["memory"]["request"]["source"], "enforced");
    assert_eq!(sized["app"]["memory"]["limit"]["source"], "enforced");
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn server_dry_run_update_writes_no_event_and_no_commit() {
    let (_serial, env) = setup().await;
    let ns = "e2e-dryrun";
    let original = deployment(
        "dry-web",
        0,
        json!({}),
        vec![container("app", "128Mi", "256Mi")],
    );
    env.plane
        .kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&original));
    let reviews = env.reviews().await;
    let changed = deployment(
        "dry-web",
        2,
        json!({}),
        vec![container("app", "200Mi", "400Mi")],
    );
    env.plane.kubectl_ok(
        &[
            "-n",
            ns,
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        Some(&changed),
    );
    assert!(
        env.reviews().await > reviews,
        "the dry run did not reach the webhook"
    );
    // Anything the webhook might write would be on its way by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored: Value = serde_json::from_str(&env.plane.kubectl_ok(
        &[
            "-n",
            ns,
            "get",
            "deployment",
            "dry-web",
            "--show-managed-fields",
            "-o",
            "json",
        ],
        None,
    ))
    .expect("deployment JSON");
    assert_eq!(stored["spec"]["replicas"], 0, "the dry run was stored");
    assert!(
        stored["metadata"]["annotations"]["rightsizer.io/committed"].is_null(),
        "a dry run committed: {}",
        stored["metadata"]
    );
    let managers: Vec<&str> = stored["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(!managers.contains(&"rightsizer"), "managers {managers:?}");
    let events: Value = serde_json::from_str(
        &env.plane
            .kubectl_ok(&["-n", ns, "get", "events", "-o", "json"], None),
    )
    .expect("event list JSON");
    let ours: Vec<&Value> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["source"]["component"] == "rightsizer"
                || e["reportingComponent"] == "rightsizer"
                || ["Committed", "RecommendationChanged"]
                    .contains(&e["reason"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(ours.is_empty(), "a dry run wrote Events: {ours:?}");
}

// ---------------------------------------------------------------------------------------
// Init containers: sized by policy, counted as the LimitRanger and ResourceQuota count them
// (the larger of the largest init container and the sum of the app containers).

/// A Pod with one init container `migrate` and one app container `app`, each declaring
/// `declared` (request = limit; None: nothing), and `migrate` overridden to `migrate_to`.
fn pod_with_init(name: &str, declared: Option<&str>, migrate_to: &str) -> Pod {
    let c = |n: &str| {
        let mut v = json!({"name": n, "image": "busybox"});
        if let Some(q) = declared {
            v["resources"] = json!({"requests": {"memory": q}, "limits": {"memory": q}});
        }
        v
    };
    let overrides = json!({"migrate": {"memory": {"request": migrate_to, "limit": migrate_to}}});
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {"rightsizer.io/overrides": overrides.to_string()}},
        "spec": {"initContainers": [c("migrate")], "containers": [c("app")], "restartPolicy": "Never"}
    }))
    .expect("pod JSON")
}

/// (request, limit) memory of a stored Pod's init container.
fn init_memory(pod: &Pod, container: &str) -> (Option<u64>, Option<u64>) {
    let spec = pod.spec.as_ref().expect("pod spec");
    let c = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == container)
        .expect("init container present");
    container_memory(c)
}

const INIT_LIMITS: &str = "e2e-init-limits";
const INIT_QUOTA: &str = "e2e-init-quota";
/// Without limits: probes for the policy here (a bare probe Pod breaks the others' rules).
const INIT_PROBE: &str = "e2e-init-probe";

/// Both namespaces, a LimitRange with a Pod max of 1Gi, a 1Gi memory quota, and a policy
/// with memory defaults for them; returns once the policy is in force.
async fn init_container_fixtures(env: &Env, client: &kube::Client) {
    let mut docs = Vec::new();
    for ns in [INIT_LIMITS, INIT_QUOTA, INIT_PROBE] {
        docs.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    rightsizer.io/enabled: \"true\"\n"
        ));
    }
    docs.push(format!(
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: pod-max\n  namespace: {INIT_LIMITS}\nspec:\n  limits:\n    - type: Pod\n      max: {{memory: 1Gi}}\n"
    ));
    docs.push(format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: memory\n  namespace: {INIT_QUOTA}\nspec:\n  hard:\n    requests.memory: 1Gi\n    limits.memory: 1Gi\n"
    ));
    docs.push(live_policy(
        "e2e-init",
        40,
        &format!("[{INIT_LIMITS}, {INIT_QUOTA}, {INIT_PROBE}]"),
        "    mode: observe\n    defaults:\n      memory: {request: 128Mi, limit: 256Mi}\n",
    ));
    env.apply(&docs.join("---\n"));
    time_until_sized(
        client,
        INIT_PROBE,
        (Some(128 * MI), Some(256 * MI)),
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|| panic!("init policy never applied; log:\n{}", env.webhook_log()));
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn init_containers_sized_within_a_pod_limit_range() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    init_container_fixtures(env, &client).await;
    // app gets the 256Mi default limit, migrate 896Mi: the LimitRanger counts
    // max(896Mi, 256Mi) against the 1Gi Pod max (a sum, 1152Mi, would not fit).
    let stored = create_pod(&client, INIT_LIMITS, &pod_with_init("fits", None, "896Mi"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "LimitRanger refused the sized pod: {e}\nlog:\n{}",
                env.webhook_log()
            )
        });
    assert_eq!(
        init_memory(&stored, "migrate"),
        (Some(896 * MI), Some(896 * MI))
    );
    assert_eq!(memory(&stored, "app"), (Some(128 * MI), Some(256 * MI)));
    let sized: Value =
        serde_json::from_str(annotation(&stored, "rightsizer.io/sized").expect("sized")).unwrap();
    assert_eq!(sized["migrate"]["memory"]["limit"]["source"], "override");
    // 1536Mi for migrate would break the Pod max: memory is left as declared, and admitted.
    let stored = create_pod(
        &client,
        INIT_LIMITS,
        &pod_with_init("too-big", Some("256Mi"), "1536Mi"),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "sizing got the pod refused: {e}\nlog:\n{}",
            env.webhook_log()
        )
    });
    assert_eq!(
        init_memory(&stored, "migrate"),
        (Some(256 * MI), Some(256 * MI))
    );
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn init_containers_sized_within_a_resource_quota() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    init_container_fixtures(env, &client).await;
    let status = |field: &str| {
        env.plane.kubectl_ok(
            &[
                "-n",
                INIT_QUOTA,
                "get",
                "resourcequota",
                "memory",
                "-o",
                &format!("jsonpath={{.status.{field}}}"),
            ],
            None,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while status("hard").trim().is_empty() {
        assert!(Instant::now() < deadline, "quota status never synced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The quota charges max(896Mi init, 256Mi app) = 896Mi of its 1Gi (a sum would not fit).
    let first = create_pod(
        &client,
        INIT_QUOTA,
        &pod_with_init("first", Some("256Mi"), "896Mi"),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the sized pod was refused: {e}\nlog:\n{}",
            env.webhook_log()
        )
    });
    assert_eq!(
        init_memory(&first, "migrate"),
        (Some(896 * MI), Some(896 * MI))
    );
    // 128Mi left: the same raise for the next Pod does not fit and is undone. Wait until
    // the webhook sees the charge (a dry run is admitted once it does).
    let second = pod_with_init("second", Some("64Mi"), "896Mi");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let api = Api::<Pod>::namespaced(client.clone(), INIT_QUOTA);
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.create(&dry, &second).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the webhook never saw the quota charge; used {}; log:\n{}",
            status("used"),
            env.webhook_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = create_pod(&client, INIT_QUOTA, &second)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "sizing got the pod refused: {e}\nlog:\n{}",
                env.webhook_log()
            )
        });
    assert_eq!(
        init_memory(&stored, "migrate"),
        (Some(64 * MI), Some(64 * MI))
    );
    assert!(annotation(&stored, "rightsizer.io/sized").is_none());
}

// ---------------------------------------------------------------------------------------
// The quota guard on templates (`target: templates`): a raise all replicas would not fit in
// is undone, so the ReplicaSet controller can create every Pod.

const TPL_QUOTA: &str = "e2e-tpl-quota";
const TPL_PROBE: &str = "e2e-tpl-probe";

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn template_raise_its_replicas_would_not_fit_in_the_quota_is_undone() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    let mut docs = Vec::new();
    for ns in [TPL_QUOTA, TPL_PROBE] {
        docs.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    rightsizer.io/enabled: \"true\"\n"
        ));
    }
    docs.push(format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: memory\n  namespace: {TPL_QUOTA}\nspec:\n  hard:\n    requests.memory: 1Gi\n"
    ));
    docs.push(live_policy(
        "e2e-tpl",
        40,
        &format!("[{TPL_QUOTA}, {TPL_PROBE}]"),
        "    mode: observe\n    target: templates\n    defaults:\n      memory: {request: 96Mi, limit: 192Mi}\n",
    ));
    env.apply(&docs.join("---\n"));
    time_until_sized(
        &client,
        TPL_PROBE,
        (Some(96 * MI), Some(192 * MI)),
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|| panic!("template policy never applied; log:\n{}", env.webhook_log()));
    let overrides = |q: &str| json!({"rightsizer.io/overrides": json!({"app": {"memory": {"request": q, "limit": q}}}).to_string()});
    let apply = |name: &str, raise: &str| {
        let yaml = deployment(
            name,
            2,
            overrides(raise),
            vec![container("app", "100Mi", "100Mi")],
        );
        env.plane
            .kubectl_ok(&["-n", TPL_QUOTA, "apply", "-f", "-"], Some(&yaml));
    };
    let template_request = |name: &str| {
        env.plane.kubectl_ok(
            &[
                "-n",
                TPL_QUOTA,
                "get",
                "deployment",
                name,
                "-o",
                "jsonpath={.spec.template.spec.containers[0].resources.requests.memory}",
            ],
            None,
        )
    };
    // 2 × 640Mi would not fit in 1Gi: the template keeps its 100Mi.
    apply("wide", "640Mi");
    assert_eq!(
        template_request("wide"),
        "100Mi",
        "log:\n{}",
        env.webhook_log()
    );
    // 2 × 300Mi fits beside wide's 2 × 100Mi: sized.
    apply("fits", "300Mi");
    assert_eq!(
        template_request("fits"),
        "300Mi",
        "log:\n{}",
        env.webhook_log()
    );
    // Every replica of both was admitted by the quota.
    let wide = wait_pods(&client, TPL_QUOTA, "app=wide", 2).await;
    let fits = wait_pods(&client, TPL_QUOTA, "app=fits", 2).await;
    assert!(wide.iter().all(|p| memory(p, "app").0 == Some(100 * MI)));
    assert!(fits.iter().all(|p| memory(p, "app").0 == Some(300 * MI)));
}

// ---------------------------------------------------------------------------------------
// Never block a deploy, as a new user meets it: the example `policies/` loaded, namespace
// `shop` opted in, and no PriorityClasses installed (deploy/priority-classes is optional).
// A control plane of its own, since the shared one installs classes.

struct Shop {
    plane: ControlPlane,
    webhook: Webhook,
}

static SHOP: tokio::sync::OnceCell<Result<Shop, Setup>> = tokio::sync::OnceCell::const_new();
static SHOP_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Committed 300Mi for the quota test's Pod (the example policies bring no recommendations).
fn shop_snapshot() -> Value {
    json!({"generatedAt": 1, "recommendations": {
        "shop-quota/Pod/near/app": committed_memory(300 * MI, 300 * MI)
    }})
}

async fn shop_init() -> Result<Shop, Setup> {
    if let Some(reason) = cluster::missing_prerequisite() {
        return Err(Setup::Missing(reason));
    }
    let fail = Setup::Failed;
    let plane = ControlPlane::start().map_err(fail)?;
    let work = plane.dir.join("shop");
    std::fs::create_dir_all(&work).map_err(|e| fail(e.to_string()))?;
    let tls = cluster::generate_tls(&work);
    let snap = work.join("recommendations.json");
    std::fs::write(&snap, shop_snapshot().to_string()).map_err(|e| fail(e.to_string()))?;
    let args = vec![
        "--policies".to_string(),
        cluster::repo_root().join("policies").display().to_string(),
        "--recommendations".to_string(),
        snap.display().to_string(),
    ];
    let addr: SocketAddr = format!("127.0.0.1:{}", cluster::free_port())
        .parse()
        .map_err(|e: std::net::AddrParseError| fail(e.to_string()))?;
    let webhook = Webhook::start(
        addr,
        &tls,
        &plane.kubeconfig,
        &args,
        &[("RIGHTSIZER_ENFORCEMENT", "true"), ("POD_NAME", "shop-a")],
        work.join("webhook.log"),
    )
    .map_err(fail)?;
    let mut docs =
        vec!["apiVersion: v1\nkind: Namespace\nmetadata:\n  name: rightsizer-system\n".to_string()];
    // `storefront` meets only the default policy (no priority class): the readiness probe.
    for ns in ["shop", "shop-quota", "storefront"] {
        docs.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    rightsizer.io/enabled: \"true\"\n"
        ));
    }
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&docs.join("---\n")));
    let reg = registration(
        "rightsizer",
        shipped_entry(),
        &format!("https://{addr}/mutate"),
        &tls.ca_pem,
    );
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&reg.to_string()));
    let shop = Shop { plane, webhook };
    // Wait until the apiserver calls the webhook: a dry-run Pod comes back sized.
    let deadline = Instant::now() + Duration::from_secs(30);
    while dry_run_pod(
        &shop,
        "storefront",
        &pod("probe", vec![bare_container("app")]),
    )
    .await
    .and_then(|p| annotation(&p, "rightsizer.io/sized").map(str::to_string))
    .is_none()
    {
        if Instant::now() > deadline {
            return Err(fail("the apiserver never called the shop webhook".into()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(shop)
}

async fn shop_setup() -> (tokio::sync::MutexGuard<'static, ()>, &'static Shop) {
    let guard = SHOP_SERIAL.lock().await;
    match SHOP.get_or_init(shop_init).await {
        Ok(shop) => (guard, shop),
        Err(Setup::Missing(reason)) => {
            panic!("the control plane cannot run here: {reason} (tests/build.rs found it)")
        }
        Err(Setup::Failed(e)) => panic!("shop control plane setup failed: {e}"),
    }
}

/// A server-side dry run of a Pod: what the apiserver would store, or None if refused.
async fn dry_run_pod(shop: &Shop, ns: &str, p: &Pod) -> Option<Pod> {
    let client = shop.plane.client().await;
    Api::<Pod>::namespaced(client, ns)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            p,
        )
        .await
        .ok()
}

impl Shop {
    fn log(&self) -> String {
        self.webhook.log_text()
    }

    fn apply_class(&self) {
        self.plane.kubectl_ok(
            &["apply", "-f", "-"],
            Some("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: normal-priority\nvalue: 100\n"),
        );
    }

    /// Wait for `n` Pods of a Deployment; on timeout, fail with the namespace's events
    /// (where the ReplicaSet controller reports refused Pods).
    async fn deployment_pods(&self, ns: &str, name: &str, n: usize) -> Vec<Pod> {
        let client = self.plane.client().await;
        let api: Api<Pod> = Api::namespaced(client, ns);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pods = api
                .list(&ListParams::default().labels(&format!("app={name}")))
                .await
                .expect("list pods");
            if pods.items.len() >= n {
                return pods.items;
            }
            if Instant::now() > deadline {
                let events = self
                    .plane
                    .kubectl(&["-n", ns, "get", "events", "-o", "wide"], None);
                panic!(
                    "{} of {n} Pods of {ns}/{name} after 30 s; events:\n{}\nwebhook log:\n{}",
                    pods.items.len(),
                    String::from_utf8_lossy(&events.stdout),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn example_policies_without_priority_classes_let_deployment_pods_be_created() {
    let (_serial, shop) = shop_setup().await;
    shop.plane.kubectl_ok(
        &[
            "delete",
            "priorityclass",
            "normal-priority",
            "--ignore-not-found",
        ],
        None,
    );
    let classes = shop
        .plane
        .kubectl_ok(&["get", "priorityclass", "-o", "name"], None);
    assert!(!classes.contains("normal-priority"), "{classes}");
    let d = deployment("checkout", 2, json!({}), vec![bare_container("app")]);
    shop.plane
        .kubectl_ok(&["-n", "shop", "apply", "-f", "-"], Some(&d));
    let pods = shop.deployment_pods("shop", "checkout", 2).await;
    for p in &pods {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.priority_class_name, None, "a missing class was set");
        // The webhook did act on them: the policy's override for checkout.
        assert_eq!(memory(p, "app"), (Some(1024 * MI), Some(2048 * MI)));
    }
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn a_deleted_priority_class_stops_being_set_within_seconds() {
    let (_serial, shop) = shop_setup().await;
    let class_of = |p: Option<Pod>| p.and_then(|p| p.spec?.priority_class_name);
    let probe = pod("probe", vec![bare_container("app")]);
    shop.apply_class();
    // Once the watch has it, the policy's default class is set.
    let deadline = Instant::now() + Duration::from_secs(20);
    while class_of(dry_run_pod(shop, "shop", &probe).await).as_deref() != Some("normal-priority") {
        assert!(
            Instant::now() < deadline,
            "class never set; log:\n{}",
            shop.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shop.plane
        .kubectl_ok(&["delete", "priorityclass", "normal-priority"], None);
    let deleted = Instant::now();
    loop {
        let got = dry_run_pod(shop, "shop", &probe).await;
        assert!(
            got.is_some(),
            "a Pod was refused after the class was deleted"
        );
        if class_of(got).is_none() {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(10),
            "the deleted class was still set after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("class deleted -> no longer set: {:?}", deleted.elapsed());
    let d = deployment("after-delete", 1, json!({}), vec![bare_container("app")]);
    shop.plane
        .kubectl_ok(&["-n", "shop", "apply", "-f", "-"], Some(&d));
    shop.deployment_pods("shop", "after-delete", 1).await;
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn resource_quota_near_full_gets_no_raise() {
    let (_serial, shop) = shop_setup().await;
    let ns = "shop-quota";
    shop.plane.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: memory\n  namespace: {ns}\nspec:\n  hard:\n    requests.memory: 1Gi\n    limits.memory: 1Gi\n"
        )),
    );
    let near = pod("near", vec![container("app", "100Mi", "100Mi")]);
    // With room, the committed 300Mi is applied (so a raise is really on offer).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(p) = dry_run_pod(shop, ns, &near).await {
            if memory(&p, "app") == (Some(300 * MI), Some(300 * MI)) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never raised; log:\n{}",
            shop.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Fill the quota to 900Mi of 1Gi with a Pod the webhook leaves as written.
    let client = shop.plane.client().await;
    create_pod(
        &client,
        ns,
        &pod("filler", vec![container("app", "900Mi", "900Mi")]),
    )
    .await
    .expect("filler admitted");
    // The webhook's quota view follows the quota's status; a raise would now be refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    while dry_run_pod(shop, ns, &near)
        .await
        .map(|p| memory(&p, "app"))
        != Some((Some(100 * MI), Some(100 * MI)))
    {
        assert!(
            Instant::now() < deadline,
            "raise kept; log:\n{}",
            shop.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = create_pod(&client, ns, &near)
        .await
        .unwrap_or_else(|e| panic!("the near-full quota refused the Pod: {e}"));
    assert_eq!(memory(&stored, "app"), (Some(100 * MI), Some(100 * MI)));
}
