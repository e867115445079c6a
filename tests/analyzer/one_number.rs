//! One number (issue 21): one Prometheus fixture, one policy (`recommender` left to its
//! default, `adaptive`), and the memory recommendation is the same from `rightsizer
//! recommend --policies`, from `serve`'s analyzer (`/recommendations`), in what offline
//! `mutate` records from that snapshot, and in `replay`'s last decision on the same history.

use crate::prometheus;
use crate::scenario;
use crate::support_https;

use std::process::Command;
use std::time::{Duration, Instant};

use prometheus::TestProm;
use scenario::{Cluster, PodSpec};
use serde_json::Value;
use support_https::Server;

const H: u64 = 3600;

/// No `recommender`: the default (`adaptive`), as for the analyzer.
const POLICY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: observe, namespace: rightsizer-system, labels: {rightsizer.io/policy: "true"}}
data:
  policy.yaml: |
    mode: observe
"#;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  generateName: api-7f9c-
  namespace: shop
  labels: {app: api, pod-template-hash: 7f9c}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: api-7f9c, uid: u, controller: true}]
spec:
  containers: [{name: app, image: api:1}]
"#;

const KEY: &str = "shop/Deployment/api/app";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rightsizer(args: &[&str]) -> String {
    let out = Command::new(crate::exe::rightsizer())
        .args(args)
        .env_remove("RIGHTSIZER_PROMETHEUS_URL")
        .env_remove("RIGHTSIZER_ENFORCEMENT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Memory request and limit of a snapshot's entry.
fn recommended(snapshot: &Value) -> (u64, u64) {
    let m = &snapshot["recommendations"][KEY]["memory"]["recommended"];
    (
        m["request"]
            .as_u64()
            .unwrap_or_else(|| panic!("{snapshot}")),
        m["limit"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_serve_mutate_and_replay_give_one_number() {
    // Two days of a steady pod: every reader sees the same usage, whenever it reads.
    let t0 = now() - now() % 60;
    let start = t0 - 2 * 24 * H;
    let mut c = Cluster::new(t0);
    c.owner(
        "kube_replicaset_owner",
        "shop",
        "replicaset",
        "api-7f9c",
        "Deployment",
        "api",
        start,
        t0 + H,
    );
    c.pod(
        &PodSpec {
            ns: "shop",
            pod: "api-7f9c-abcde",
            owner_kind: "ReplicaSet",
            owner_name: "api-7f9c",
            from: start,
            to: t0 + H,
        },
        "shop/Deployment/api",
    )
    .container("app", |_| 300.0, |_| 250.0, (Some(1024), Some(2048)), None);
    let prom = TestProm::start_with(&c.om);
    let url = prom.url();
    let tmp = tempfile::tempdir().unwrap();
    let pol = tmp.path().join("policies");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(pol.join("p.yaml"), POLICY).unwrap();
    let pol = pol.to_str().unwrap();

    // 1. `recommend --policies`.
    let text = rightsizer(&[
        "recommend",
        "--prometheus",
        &url,
        "--policies",
        pol,
        "--long-window",
        "24h",
        "-o",
        "json",
    ]);
    let from_recommend: Value = serde_json::from_str(&text).unwrap();
    let want = recommended(&from_recommend);
    // Without the policies, the seed rules: a different number here, so the comparisons
    // below tell the recommenders apart.
    let seed: Value = serde_json::from_str(&rightsizer(&[
        "recommend",
        "--prometheus",
        &url,
        "--long-window",
        "24h",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_ne!(recommended(&seed), want, "seed rules and adaptive");

    // 2. `serve`'s analyzer, read from `/recommendations`.
    let server = Server::start(
        &[
            "--self-signed",
            "--ca-out",
            tmp.path().join("ca.pem").to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
            "--policies",
            pol,
            "--prometheus",
            &url,
            "--long-window",
            "24h",
            "--kube",
            "never",
        ],
        tmp.path().join("serve.log"),
    );
    let admin = server.admin.expect("admin port");
    let deadline = Instant::now() + Duration::from_secs(60);
    let from_serve = loop {
        let v = support_https::plain_get(admin, "/recommendations")
            .await
            .unwrap()
            .json();
        if v["recommendations"].get(KEY).is_some() {
            break v;
        }
        assert!(Instant::now() < deadline, "no entry: {}", server.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(recommended(&from_serve), want, "serve and recommend");

    // 3. Offline `mutate` with recommend's snapshot records the same values.
    let snap = tmp.path().join("snapshot.json");
    std::fs::write(&snap, &text).unwrap();
    let pod = tmp.path().join("pod.yaml");
    std::fs::write(&pod, POD).unwrap();
    let out = rightsizer(&[
        "mutate",
        "-f",
        pod.to_str().unwrap(),
        "--policies",
        pol,
        "--recommendations",
        snap.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let mutated: Value = serde_json::from_str(&out).unwrap();
    let note: Value = serde_json::from_str(
        mutated["metadata"]["annotations"]["rightsizer.io/recommendation"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let q = |s: &Value| rightsizer_core::quantity::parse_bytes(s.as_str().unwrap()).unwrap();
    assert_eq!(
        (
            q(&note["app"]["memory"]["request"]),
            q(&note["app"]["memory"]["limit"])
        ),
        want,
        "mutate and recommend"
    );

    // 4. `replay` of the same history, the policy's recommender: its last decision.
    let decisions = tmp.path().join("decisions.csv");
    let end = now().to_string();
    rightsizer(&[
        "replay",
        "--prometheus",
        &url,
        "--window",
        "2d",
        "--end",
        &end,
        "--strategies",
        "adaptive",
        "--step",
        "6h",
        "--warmup",
        "12h",
        "--threads",
        "1",
        "--decisions-out",
        decisions.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let csv = std::fs::read_to_string(&decisions).unwrap();
    let last = csv
        .lines()
        .rfind(|l| l.contains(",adaptive,"))
        .unwrap_or_else(|| panic!("no decision in\n{csv}"));
    let cells: Vec<&str> = last.split(',').collect();
    let replayed = (
        cells[3].parse::<u64>().unwrap(),
        cells[4].parse::<u64>().unwrap(),
    );
    assert_eq!(replayed, want, "replay and recommend ({last})");
}
