//! Certificates on a real kube-apiserver v1.20.2 (issue 20): the certificate Job issuing,
//! rotating and retiring a CA under its own ServiceAccount while a webhook replica,
//! impersonating the webhook's, follows its Secret; and the TLS port requiring the
//! apiserver's client certificate (`serve --client-ca`, the apiserver configured with an
//! AdmissionConfiguration).

use crate::cluster;
use crate::exe;
use crate::identity_e2e::{
    apply, delete, kind, kustomized, setup, IDENTITY_KINDS, JOB_SA, NS, SERIAL, WEBHOOK_SA,
};

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use cluster::{admin_get, admin_status, repo_root, ControlPlane, Webhook};
use serde_json::{json, Value};

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
