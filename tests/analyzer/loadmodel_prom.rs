//! Load-model fitting against a real Prometheus: per-pod memory generated as
//! base + coefficients × role counts + noise over several hours with the counts
//! changing, backfilled with promtool; the fit must find the truth within a stated
//! tolerance, and a workload whose memory has nothing to do with load must be
//! rejected by the R² gate. Then `rightsizer plan --prometheus` plans from the fit.

use crate::prometheus;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use prometheus::{OpenMetrics, TestProm};
use prometheus_client::registry::Registry;
use rightsizer::analyzer::cache::RecommendationCache;
use rightsizer::analyzer::prom::{PromClient, PromConfig};
use rightsizer::loadfit::fitter::{fit_all, FitWindow};
use rightsizer::loadfit::metrics::LoadModelMetrics;
use rightsizer::loadfit::publish::{refresh, RefreshReport};
use rightsizer::policies::store::PolicyStore;
use rightsizer_core::recommendation::ContainerKey;
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::WorkloadKey;

const MI: f64 = 1_048_576.0;
const H: u64 = 3600;
/// History length and sample interval of the generated data.
const HISTORY: u64 = 8 * H;
const INTERVAL: u64 = 60;
/// Fit window and step.
const WINDOW: u64 = 6 * H;
const STEP: u64 = 120;

/// The truth for the backend (the seed's numbers).
const BASE: f64 = 100.0 * MI;
const COEF: [(&str, f64); 4] = [
    ("participant_video", 15.0 * MI),
    ("participant_novideo", 8.0 * MI),
    ("experimenter", 25.0 * MI),
    ("admin", 30.0 * MI),
];
/// Uniform noise of ±NOISE on every memory sample.
const NOISE: f64 = 6.0 * MI;

/// Tolerances stated by the issue's test: coefficients within 0.5Mi of the truth
/// (3% of the smallest one), base within 5Mi.
const COEF_TOL: f64 = 0.5 * MI;
const BASE_TOL: f64 = 5.0 * MI;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
    fn int(&mut self, max: u32) -> f64 {
        (self.next() * f64::from(max + 1)).floor()
    }
}

fn t_end() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = now - 3 * H;
    t - t % 60
}

fn role_labels(unit: &str) -> &'static str {
    match unit {
        "participant_video" => r#"role="participant",video="true""#,
        "participant_novideo" => r#"role="participant",video="false""#,
        "experimenter" => r#"role="experimenter""#,
        _ => r#"role="admin""#,
    }
}

/// Role counts change every 10 minutes per pod. Pod c3 never has an admin and has no
/// admin series at all (absent series count as zero load). Series do not come and go
/// within the history: backfilled data has no staleness markers, so a vanished series
/// would keep its last value for Prometheus' 5-minute lookback.
fn history(end: u64) -> OpenMetrics {
    let mut om = OpenMetrics::default();
    let mut rng = Lcg(42);
    let start = end - HISTORY;
    let maxes = [30u32, 15, 3, 1];
    for (pod, workload) in [
        ("backend-7d9f-a1", "backend"),
        ("backend-7d9f-b2", "backend"),
        ("backend-7d9f-c3", "backend"),
        ("noisy-55c4-a1", "noisy"),
        ("noisy-55c4-b2", "noisy"),
    ] {
        let mut mem = Vec::new();
        let mut load: BTreeMap<&str, Vec<(u64, f64)>> = BTreeMap::new();
        let mut counts = [0.0; 4];
        for t in (start..=end).step_by(INTERVAL as usize) {
            if (t - start) % 600 == 0 {
                for (i, c) in counts.iter_mut().enumerate() {
                    *c = rng.int(maxes[i]);
                }
                if pod.ends_with("c3") {
                    counts[3] = 0.0;
                }
            }
            let m = if workload == "backend" {
                BASE + COEF
                    .iter()
                    .zip(counts)
                    .map(|((_, c), n)| c * n)
                    .sum::<f64>()
                    + (rng.next() * 2.0 - 1.0) * NOISE
            } else {
                // Memory that wanders on its own: unrelated to the users.
                300.0 * MI + 200.0 * MI * rng.next()
            };
            mem.push((t, m.round()));
            for (i, (u, _)) in COEF.iter().enumerate() {
                if *u == "admin" && pod.ends_with("c3") {
                    continue;
                }
                load.entry(u).or_default().push((t, counts[i]));
            }
        }
        let container = workload;
        om.series(
            "container_memory_working_set_bytes",
            &format!(r#"namespace="research",pod="{pod}",container="{container}""#),
            mem,
        );
        for (u, samples) in load {
            om.series(
                "research_active_users",
                &format!(r#"namespace="research",pod="{pod}",{}"#, role_labels(u)),
                samples,
            );
        }
    }
    om
}

/// The shipped example policy plus a fitted model for the `noisy` workload.
fn policies() -> PolicyStore {
    let store = PolicyStore::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let text = std::fs::read_to_string(dir.join("research-load-models.yaml")).unwrap();
    store.apply("research-load-models.yaml", &text).unwrap();
    let noisy = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: noisy, namespace: rightsizer-system, labels: {rightsizer.io/policy: "true"}}
data:
  policy.yaml: |
    precedence: 30
    selector: {namespaces: [research], names: [noisy]}
    loadModels:
      - name: noisy
        containers:
          noisy:
            base: 256Mi
            fitted: true
            units:
              participant_video:
                coefficient: 1Mi
                query: 'sum by (namespace, pod) (research_active_users{role="participant", video="true"})'
"#;
    store.apply("noisy.yaml", noisy).unwrap();
    store.mark_ready();
    store
}

fn key(name: &str) -> WorkloadKey {
    WorkloadKey {
        namespace: "research".into(),
        kind: WorkloadKind::Deployment,
        name: name.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fit_from_real_prometheus() {
    let end = t_end();
    let prom = TestProm::start_with(&history(end));
    let client = PromClient::new(PromConfig::new(prom.url())).unwrap();
    let store = policies();
    let window = FitWindow {
        end,
        seconds: WINDOW,
        step: STEP,
    };
    let started = std::time::Instant::now();
    let fits = fit_all(
        &client,
        &store.current(),
        &[key("backend"), key("noisy")],
        window,
    )
    .await;
    // Figures, not assertions: each container costs one query per step plus one.
    println!(
        "fit_all: 2 containers, {} queries each, {:?}",
        WINDOW / STEP + 2,
        started.elapsed()
    );
    let backend = ContainerKey::new(key("backend"), "backend");
    let noisy = ContainerKey::new(key("noisy"), "noisy");
    assert_eq!(
        fits.keys().cloned().collect::<Vec<_>>(),
        [backend.clone(), noisy.clone()]
    );

    let b = fits[&backend].as_ref().expect("backend fit");
    // 6h / 2m steps = 181 instants × 3 pods.
    assert_eq!(b.fit.samples, 181 * 3);
    assert!(
        (b.fit.base - BASE).abs() <= BASE_TOL,
        "base {} vs {}",
        b.fit.base / MI,
        BASE / MI
    );
    for (u, want) in COEF {
        let got = b.fit.coefficients[u];
        assert!(
            (got - want).abs() <= COEF_TOL,
            "{u}: {} vs {}",
            got / MI,
            want / MI
        );
    }
    assert!(b.fit.r2 > 0.99, "R² {}", b.fit.r2);
    assert!(b.used && b.reason.is_none());
    // Uniform ±6Mi noise: the 95th percentile residual is about 0.9 × 6Mi.
    assert!(
        b.fit.residual_p95 > 4.0 * MI && b.fit.residual_p95 < 7.0 * MI,
        "p95 {}",
        b.fit.residual_p95 / MI
    );
    let cur = b.current.expect("predicted vs actual");
    assert!((cur.predicted - cur.actual).abs() < NOISE, "{cur:?}");
    println!(
        "backend fit: base {:.2}Mi, {}, R² {:.4}, {} samples, residual p95 {:.2}Mi",
        b.fit.base / MI,
        b.fit
            .coefficients
            .iter()
            .map(|(u, c)| format!("{u} {:.3}Mi", c / MI))
            .collect::<Vec<_>>()
            .join(", "),
        b.fit.r2,
        b.fit.samples,
        b.fit.residual_p95 / MI
    );

    let n = fits[&noisy].as_ref().expect("noisy fit");
    assert!(n.fit.r2 < 0.1, "R² {}", n.fit.r2);
    assert!(!n.used);
    let reason = n.reason.as_deref().unwrap();
    assert!(reason.contains("is below minR2 0.8"), "{reason}");
    println!("noisy fit: R² {:.4} -> {reason}", n.fit.r2);

    // The figures reach /metrics.
    let mut reg = Registry::default();
    let m = LoadModelMetrics::register(&mut reg);
    for (k, r) in &fits {
        m.record(k, r.as_ref().unwrap());
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(text.contains(r#"rightsizer_loadmodel_coefficient_bytes{workload="research/Deployment/backend",container="backend",unit="admin"}"#));
    assert!(text.contains(
        r#"rightsizer_loadmodel_fit_used{workload="research/Deployment/noisy",container="noisy"} 0"#
    ));

    // Published into the analyzer's cache: `/recommendations` (the snapshot) carries
    // each fit with its verdict, so a rejected fit says why.
    let cache = RecommendationCache::new(100, 3600);
    let r = refresh(
        &client,
        &store.current(),
        &cache,
        None,
        &[key("backend"), key("noisy")],
        window,
    )
    .await;
    assert_eq!(
        r,
        RefreshReport {
            fitted: 2,
            used: 1,
            failed: 0
        }
    );
    let snap = serde_json::to_value(cache.snapshot_at(end)).unwrap();
    let lm = &snap["recommendations"]["research/Deployment/noisy/noisy"]["loadModel"];
    assert_eq!(lm["used"], false);
    assert_eq!(lm["reason"], reason);
    let lm = &snap["recommendations"]["research/Deployment/backend/backend"]["loadModel"];
    assert_eq!(lm["used"], true);
    assert_eq!(lm["samples"], 543);

    // `plan --prometheus` fits the same way and plans with the fitted coefficients.
    let out = Command::new(crate::exe::rightsizer())
        .args(["plan", "--policies"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies"))
        .args([
            "--workload",
            "research/Deployment/backend",
            "--load",
            "participant_video=40,experimenter=2",
        ])
        .args([
            "--prometheus",
            &prom.url(),
            "--long-window",
            "6h",
            "--fit-step",
            "2m",
        ])
        .args(["--at", &end.to_string(), "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v[0]["containers"][0];
    assert_eq!(c["model"], "fitted");
    // Truth: 100 + 40×15 + 2×25 = 750Mi; the fit lands within 5 + 40×0.5 + 2×0.5 = 26Mi.
    let predicted = c["predictedBytes"].as_f64().unwrap();
    assert!(
        (predicted - 750.0 * MI).abs() <= 26.0 * MI,
        "{}",
        predicted / MI
    );
}
