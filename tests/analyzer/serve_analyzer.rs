//! `rightsizer serve --prometheus`: the analyzer runs beside the webhook against a real
//! Prometheus, its recommendations reach `/recommendations` and admission, and the
//! live answer equals what `mutate` makes offline from the served snapshot.

use crate::monitoring;
use crate::prometheus;
use crate::scenario;
use crate::support_https;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine;
use prometheus::TestProm;
use scenario::{expected_memory, Cluster, PodSpec};
use serde_json::{json, Value};
use support_https::{client_config, Conn, Proto, Server};

const H: u64 = 3600;

// `recommender: seed`: the assertions below are the seed rules' exact values.
const POLICY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: enforce, namespace: rightsizer-system, labels: {rightsizer.io/policy: "true"}}
data:
  policy.yaml: |
    mode: enforce
    recommender: seed
"#;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn pod_review() -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b1d6", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "api-7f9c-", "namespace": "shop",
                    "labels": {"app": "api", "pod-template-hash": "7f9c"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7f9c", "uid": "u", "controller": true}]},
                "spec": {"containers": [{"name": "app", "image": "api:1",
                    "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}}}]}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyzer_recommendations_reach_admission() {
    // Two days of a Deployment whose pod uses ~300Mi with 420Mi peaks every 10 minutes.
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
            to: t0,
        },
        "shop/Deployment/api",
    )
    .container(
        "app",
        |t| if (t / 60) % 10 == 0 { 420.0 } else { 300.0 },
        |_| 250.0,
        (Some(1024), Some(2048)),
        None,
    );
    let prom = TestProm::start_with(&c.om);

    let tmp = tempfile::tempdir().unwrap();
    let pol = tmp.path().join("policies");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(pol.join("p.yaml"), POLICY).unwrap();
    let ca = tmp.path().join("ca.pem");
    let url = prom.url();
    let server = Server::start(
        &[
            "--self-signed",
            "--ca-out",
            ca.to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
            "--policies",
            pol.to_str().unwrap(),
            "--prometheus",
            &url,
            "--long-window",
            "24h",
            "--enforcement",
            "--kube",
            "never",
        ],
        tmp.path().join("serve.log"),
    );
    let admin = server.admin.expect("admin port");

    // The first analyzer cycle runs at start; wait for its entry.
    let deadline = Instant::now() + Duration::from_secs(60);
    let snapshot = loop {
        let r = support_https::plain_get(admin, "/recommendations")
            .await
            .unwrap();
        let v = r.json();
        if v["recommendations"]
            .get("shop/Deployment/api/app")
            .is_some()
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no recommendation after 60 s: {}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let entry = &snapshot["recommendations"]["shop/Deployment/api/app"]["memory"];
    let at = snapshot["recommendations"]["shop/Deployment/api/app"]["updatedAt"]
        .as_u64()
        .unwrap();
    let (req, lim) = expected_memory(&c.containers["shop/Deployment/api/app"], at, 900, 24 * H);
    assert_eq!(
        entry["recommended"]["request"].as_u64(),
        Some(req),
        "{entry}"
    );
    assert_eq!(entry["recommended"]["limit"].as_u64(), Some(lim), "{entry}");

    // Admission over HTTPS applies it (enforce, nothing committed: one guarded step).
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let mut conn = Conn::connect(server.addr, client_config(&[&ca_pem], Proto::H2), Proto::H2)
        .await
        .unwrap();
    let body = serde_json::to_vec(&pod_review()).unwrap();
    let reply = conn.post("/mutate?timeout=10s", body).await.unwrap();
    assert_eq!(reply.status, 200);
    let resp = reply.json();
    let patch_b64 = resp["response"]["patch"].as_str().expect("a patch");
    let live: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(patch_b64)
            .unwrap(),
    )
    .unwrap();

    // Offline `mutate` with the served snapshot gives the same patch.
    let snap_file = tmp.path().join("snapshot.json");
    std::fs::write(&snap_file, serde_json::to_vec(&snapshot).unwrap()).unwrap();
    let review_file = tmp.path().join("review.json");
    std::fs::write(&review_file, serde_json::to_vec(&pod_review()).unwrap()).unwrap();
    let out = std::process::Command::new(crate::exe::rightsizer())
        .args([
            "mutate",
            "-f",
            review_file.to_str().unwrap(),
            "--policies",
            pol.to_str().unwrap(),
            "--recommendations",
            snap_file.to_str().unwrap(),
            "--enforcement",
            "-o",
            "patch",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(offline["patch"], live);
    // Enforce mode with RIGHTSIZER_ENFORCEMENT: the analyzer commits one guarded step
    // (at most 30% from what runs, rounded to 16Mi) and admission applies the commit.
    let step = |cur: u64, target: u64| -> u64 {
        let lo = cur - (cur as f64 * 0.3).ceil() as u64;
        let v = target.max(lo);
        v.div_ceil(16 << 20) * (16 << 20)
    };
    let want_req = step(1 << 30, req);
    let want_lim = step(2 << 30, lim).max(want_req);
    let committed = &entry["committed"];
    assert_eq!(committed["request"].as_u64(), Some(want_req), "{entry}");
    assert_eq!(committed["limit"].as_u64(), Some(want_lim), "{entry}");
    let ops = live.as_array().unwrap();
    let value_at = |path: &str| {
        ops.iter()
            .find(|o| o["path"] == path)
            .map(|o| o["value"].clone())
    };
    let fmt = |v: u64| rightsizer_core::quantity::format_bytes(v);
    assert_eq!(
        value_at("/spec/containers/0/resources/requests/memory"),
        Some(json!(fmt(want_req)))
    );
    assert_eq!(
        value_at("/spec/containers/0/resources/limits/memory"),
        Some(json!(fmt(want_lim)))
    );
    let text = live.to_string();
    assert!(text.contains("\\\"source\\\":\\\"enforced\\\""), "{text}");

    // The analyzer's metrics are on /metrics.
    let m = support_https::plain_get(admin, "/metrics").await.unwrap();
    let m = String::from_utf8_lossy(&m.body).to_string();
    assert!(m.contains("rightsizer_analyzer_queries_total"), "{m}");
    assert!(m.contains("rightsizer_cache_entries"), "{m}");
}

/// Metric names in an exposition (OpenMetrics text), with the label names of each
/// sample. Families declared without samples yet (a counter no request has touched)
/// count by their `# TYPE` line, with the suffixes their type adds.
fn exported(text: &str) -> std::collections::BTreeMap<String, Vec<BTreeSet<String>>> {
    let mut out: std::collections::BTreeMap<String, Vec<BTreeSet<String>>> = Default::default();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').unwrap();
            let names = match kind {
                "counter" => vec![format!("{name}_total")],
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{name}{s}"))
                    .collect(),
                _ => vec![name.to_string()],
            };
            for n in names {
                out.entry(n).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap();
            let labels = line[end..]
                .strip_prefix('{')
                .and_then(|l| l.split_once('}'))
                .map(|(l, _)| {
                    l.split(',')
                        .filter_map(|p| p.split_once('=').map(|(k, _)| k.to_string()))
                        .filter(|k| k != "le")
                        .collect()
                })
                .unwrap_or_default();
            out.entry(line[..end].to_string()).or_default().push(labels);
        }
    }
    out
}

/// The recommendation series of a scrape: (namespace/kind/name/container, side) -> bytes.
fn recommendation_samples(text: &str) -> BTreeSet<(String, String, u64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("rightsizer_recommendation_bytes{"))
        .map(|l| {
            let (labels, value) = l.split_once("} ").unwrap();
            let get = |k: &str| {
                labels
                    .split(',')
                    .find_map(|p| p.strip_prefix(&format!("{k}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
                    .unwrap()
            };
            assert_eq!(get("resource"), "memory", "{l}");
            (
                format!(
                    "{}/{}/{}/{}",
                    get("namespace"),
                    get("kind"),
                    get("name"),
                    get("container")
                ),
                get("side"),
                value.parse::<f64>().unwrap() as u64,
            )
        })
        .collect()
}

/// Every metric a recording rule, alert or dashboard query in deploy/monitoring reads is
/// exported by a running `serve` (scraped on its admin port) with the labels metrics.txt
/// declares; kube-state-metrics, cAdvisor, cluster-autoscaler and Prometheus names come
/// only from metrics.txt's documented list. Checked with a recommendation snapshot and
/// with the analyzer against a real Prometheus; rightsizer_recommendation_bytes has one
/// series per workload container and side, equal to what /recommendations serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_monitoring_reads_is_exported() {
    let list = monitoring::metric_list();
    let q = monitoring::queries();
    let mut used_webhook = BTreeSet::new();
    for (origin, expr) in &q.exprs {
        for (name, _) in monitoring::promql_metrics(expr) {
            if q.records.contains(&name) {
                continue;
            }
            if list.webhook_metric(&name).is_some() {
                used_webhook.insert(name);
            } else {
                assert!(
                    list.external.contains(&name),
                    "{origin}: {name} is neither exported by rightsizer nor in the documented external list (deploy/monitoring/metrics.txt)"
                );
            }
        }
    }
    assert!(used_webhook.contains("rightsizer_recommendation_bytes"));

    // A Deployment with 6 hours of history for the analyzer.
    let t0 = now() - now() % 60;
    let start = t0 - 6 * H;
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
            to: t0,
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
    let snap = tmp.path().join("snapshot.json");
    std::fs::write(
        &snap,
        r#"{"recommendations": {
            "shop/Deployment/web/app": {"memory": {"recommended": {"request": 157286400, "limit": 314572800}}},
            "shop/StatefulSet/db/pg": {"memory": {"recommended": {"request": 314572800}}, "cpu": {"recommended": {"request": 250}}},
            "shop/Pod/debug/sh": {"cpu": {"recommended": {"request": 10}}}}}"#,
    )
    .unwrap();

    let ca = tmp.path().join("ca.pem").to_str().unwrap().to_string();
    // (mode, extra serve flags, whether the analyzer runs)
    let analyzer_only =
        |n: &str| n.starts_with("rightsizer_analyzer_") || n.starts_with("rightsizer_cache_");
    let cases: [(&str, Vec<&str>, bool); 2] = [
        (
            "snapshot",
            vec!["--recommendations", snap.to_str().unwrap()],
            false,
        ),
        (
            "analyzer",
            vec!["--prometheus", &url, "--long-window", "6h"],
            true,
        ),
    ];
    for (mode, extra, analyzer) in cases {
        let mut args = vec![
            "--self-signed",
            "--ca-out",
            &ca,
            "--admin-listen",
            "127.0.0.1:0",
            "--policies",
            pol.to_str().unwrap(),
            "--kube",
            "never",
        ];
        args.extend(extra);
        let server = Server::start(&args, tmp.path().join(format!("{mode}.log")));
        let admin = server.admin.expect("admin port");

        // What /recommendations serves (the analyzer: once its first cycle is in).
        let deadline = Instant::now() + Duration::from_secs(60);
        let recs = loop {
            let v = support_https::plain_get(admin, "/recommendations")
                .await
                .unwrap()
                .json();
            let n = v["recommendations"].as_object().map_or(0, |m| m.len());
            if n > 0 {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: no recommendation: {}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // One review, so the per-outcome counters have a series.
        let ca_pem = std::fs::read_to_string(&ca).unwrap();
        let mut conn = Conn::connect(server.addr, client_config(&[&ca_pem], Proto::H2), Proto::H2)
            .await
            .unwrap();
        let body = serde_json::to_vec(&pod_review()).unwrap();
        assert_eq!(conn.post("/mutate", body).await.unwrap().status, 200);

        let m = support_https::plain_get(admin, "/metrics").await.unwrap();
        let text = String::from_utf8_lossy(&m.body).to_string();
        let got = exported(&text);

        for name in &used_webhook {
            // Run with --kube never: the watchers' metrics are checked by kube/sync.rs.
            if (!analyzer && analyzer_only(name)) || list.kube_only.contains(name) {
                continue;
            }
            let samples = got.get(name).unwrap_or_else(|| {
                panic!("{mode}: {name} is read by deploy/monitoring but not exported:\n{text}")
            });
            let (_, declared) = list.webhook_metric(name).unwrap();
            for labels in samples {
                assert_eq!(labels, declared, "{mode}: labels of {name} (metrics.txt)");
            }
        }

        // One series per container and side with a memory recommendation, as served.
        let mut want = BTreeSet::new();
        for (key, r) in recs["recommendations"].as_object().unwrap() {
            for side in ["request", "limit"] {
                if let Some(v) = r["memory"]["recommended"][side].as_u64() {
                    want.insert((key.clone(), side.to_string(), v));
                }
            }
        }
        assert!(!want.is_empty(), "{mode}: {recs}");
        assert_eq!(recommendation_samples(&text), want, "{mode}");
        if !analyzer {
            assert_eq!(
                want.len(),
                3,
                "web request+limit, db request; nothing for CPU only"
            );
        }
    }
}
