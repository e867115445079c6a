//! `rightsizer plan` end to end: the binary, the shipped example policies
//! (`policies/research-load-models.yaml`), exact figures worked out by hand below.
//!
//! The seed's models: backend = 100Mi + 15Mi × participant_video + 8Mi ×
//! participant_novideo + 25Mi × experimenter + 30Mi × admin (plus a constant 16Mi
//! frontend); router = 32Mi + 2.5Mi × connections. Headroom 1.2, seed memory rules:
//! request rounded up to 16Mi and clamped to [64Mi, 4Gi]; limit = request × 1.5
//! rounded up to 16Mi, clamped to [128Mi, 8Gi].

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn plan(extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(crate::exe::rightsizer())
        .arg("plan")
        .arg("--policies")
        .arg(root().join("policies"))
        .args(extra)
        .env_remove("RIGHTSIZER_PROMETHEUS_URL")
        .output()
        .expect("rightsizer runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SEED_ARGS: &[&str] = &[
    "--workload",
    "research/Deployment/backend",
    "--workload",
    "research/Deployment/router",
    "--load",
    "participant_video=120,participant_novideo=30,experimenter=4,admin=1,connections=150",
    "--per-pod",
    "participant_video=25,connections=100",
    "--duration",
    "90m",
    "--price-per-gib-hour",
    "0.02",
    "--node-memory",
    "2Gi",
];

fn json_plan(extra: &[&str]) -> Value {
    let mut args = SEED_ARGS.to_vec();
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", "json"]);
    let (ok, out, err) = plan(&args);
    assert!(ok, "plan failed: {err}");
    serde_json::from_str(&out).expect("json output")
}

#[test]
fn seed_numbers_declared() {
    let v = json_plan(&[]);
    // backend: replicas = ceil(120 video / 25 per pod) = 5. Load per pod (rounded up):
    // video 24, novideo ceil(30/5) = 6, experimenter ceil(4/5) = 1, admin ceil(1/5) = 1.
    // Predicted 100 + 24×15 + 6×8 + 1×25 + 1×30 = 563Mi (590348288 bytes).
    // × 1.2 = 675.6Mi -> 688Mi; limit 688 × 1.5 = 1032 -> 1040Mi.
    // frontend constant 16Mi -> request 64Mi (min), limit 128Mi (min).
    // Pod 752Mi/1168Mi; 5 pods: 3760Mi/5840Mi = 3.671875 GiB requested.
    // 2Gi nodes hold floor(2048/752) = 2 pods -> ceil(5/2) = 3 nodes.
    // 90 minutes: 3.671875 × 1.5 = 5.5078125 GiB-hours × 0.02 = 0.11015625.
    let backend = json!({
        "workload": "research/Deployment/backend",
        "replicas": 5,
        "loadPerPod": {"admin": 1.0, "experimenter": 1.0, "participant_novideo": 6.0, "participant_video": 24.0},
        "containers": [
            {"name": "backend", "model": "declared",
             "note": "no fit available yet; declared coefficients apply",
             "predictedBytes": 590348288, "request": "688Mi", "limit": "1040Mi"},
            {"name": "frontend", "model": "constant", "predictedBytes": 16777216,
             "request": "64Mi", "limit": "128Mi"}
        ],
        "podRequest": "752Mi", "podLimit": "1168Mi",
        "totalRequest": "3760Mi", "totalLimit": "5840Mi",
        "totalRequestGib": 3.671875,
        "podsPerNode": 2, "nodes": 3,
        "gibHours": 5.5078125, "cost": 0.11015625
    });
    // router: replicas = ceil(150 / 100) = 2, 75 connections per pod.
    // Predicted 32 + 75 × 2.5 = 219.5Mi (230162432 bytes); × 1.2 = 263.4Mi -> 272Mi;
    // limit 272 × 1.5 = 408 -> 416Mi. 2 pods: 544Mi/832Mi = 0.53125 GiB;
    // floor(2048/272) = 7 pods per node -> 1 node; 0.53125 × 1.5 = 0.796875 GiB-hours
    // × 0.02 = 0.0159375.
    let router = json!({
        "workload": "research/Deployment/router",
        "replicas": 2,
        "loadPerPod": {"connections": 75.0},
        "containers": [
            {"name": "router", "model": "declared", "predictedBytes": 230162432,
             "request": "272Mi", "limit": "416Mi"}
        ],
        "podRequest": "272Mi", "podLimit": "416Mi",
        "totalRequest": "544Mi", "totalLimit": "832Mi",
        "totalRequestGib": 0.53125,
        "podsPerNode": 7, "nodes": 1,
        "gibHours": 0.796875, "cost": 0.0159375
    });
    assert_eq!(v, json!([backend, router]));
}

#[test]
fn table_output_is_exact() {
    let (ok, out, err) = plan(&[
        "--workload",
        "research/Deployment/router",
        "--load",
        "connections=40",
    ]);
    assert!(ok, "{err}");
    // One pod (no --per-pod): 32 + 40 × 2.5 = 132Mi × 1.2 = 158.4 -> 160Mi; limit 240Mi.
    // Default duration 1h: 160/1024 = 0.15625 GiB-hours; no price, no node size.
    let want = "\
WORKLOAD                         REPLICAS    POD-REQ    POD-LIM  TOTAL-REQ  TOTAL-LIM  NODES  GIB-HOURS       COST
research/Deployment/router              1      160Mi      240Mi      160Mi      240Mi      -      0.156          -
  load per pod: connections=40
  router               declared  predicted    132.0Mi  request    160Mi  limit    240Mi
";
    assert_eq!(out, want);
}

/// A fitted snapshot: backend's fit passes the gate (R² 0.93, 1000 samples).
fn fitted_snapshot(r2: f64) -> String {
    let mi = 1_048_576u64;
    json!({"recommendations": {"research/Deployment/backend/backend": {"loadModel": {
        "base": 80 * mi,
        "coefficients": {"participant_video": 12 * mi, "participant_novideo": 6 * mi,
                         "experimenter": 20 * mi, "admin": 20 * mi},
        "r2": r2, "samples": 1000, "residualP95": 8 * mi, "used": r2 >= 0.8, "at": 1
    }}}})
    .to_string()
}

fn backend_container(v: &Value) -> (&str, &str, &str, Option<&str>) {
    let c = &v[0]["containers"][0];
    (
        c["model"].as_str().unwrap(),
        c["request"].as_str().unwrap(),
        c["limit"].as_str().unwrap(),
        c["note"].as_str(),
    )
}

#[test]
fn fitted_coefficients_from_a_snapshot_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("snap.json");
    std::fs::write(&f, fitted_snapshot(0.93)).unwrap();
    let v = json_plan(&["--from", f.to_str().unwrap()]);
    // 80 + 24×12 + 6×6 + 1×20 + 1×20 = 444Mi × 1.2 = 532.8 -> 544Mi; limit 816Mi.
    assert_eq!(backend_container(&v), ("fitted", "544Mi", "816Mi", None));
    assert_eq!(v[0]["podRequest"], "608Mi");

    // Below the policy's minR2 0.8: declared coefficients, with the reason.
    std::fs::write(&f, fitted_snapshot(0.5)).unwrap();
    let v = json_plan(&["--from", f.to_str().unwrap()]);
    assert_eq!(
        backend_container(&v),
        (
            "declared",
            "688Mi",
            "1040Mi",
            Some("fit R² 0.500 is below minR2 0.8; declared coefficients apply")
        )
    );
}

#[test]
fn fitted_coefficients_from_a_webhook_url() {
    // A one-shot HTTP server on a free loopback port standing in for GET /recommendations.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = fitted_snapshot(0.93);
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let req = String::from_utf8_lossy(&buf[..n]).into_owned();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).unwrap();
        req
    });
    let url = format!("http://127.0.0.1:{port}/recommendations");
    let v = json_plan(&["--from", &url]);
    let req = server.join().unwrap();
    assert!(req.starts_with("GET /recommendations "), "{req}");
    assert_eq!(backend_container(&v), ("fitted", "544Mi", "816Mi", None));
}

#[test]
fn yaml_output_parses_to_the_same_plan() {
    let j = json_plan(&[]);
    let mut args = SEED_ARGS.to_vec();
    args.extend_from_slice(&["-o", "yaml"]);
    let (ok, out, err) = plan(&args);
    assert!(ok, "{err}");
    let y: Value = serde_norway::from_str(&out).unwrap();
    assert_eq!(y, j);
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let (ok, _, err) = plan(&[
        "--workload",
        "research/Deployment/router",
        "--load",
        "connections=many",
    ]);
    assert!(!ok);
    assert!(
        err.contains("connections: \"many\" is not a non-negative number"),
        "{err}"
    );
    let (ok, _, err) = plan(&[
        "--workload",
        "research/Widget/router",
        "--load",
        "connections=1",
    ]);
    assert!(!ok);
    assert!(err.contains("unknown kind \"Widget\""), "{err}");
    let (ok, _, err) = plan(&[
        "--workload",
        "shop/Deployment/api",
        "--load",
        "connections=1",
    ]);
    assert!(!ok);
    assert!(
        err.contains("has no load model that selects shop/Deployment/api"),
        "{err}"
    );
}
