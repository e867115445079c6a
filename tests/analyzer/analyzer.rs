//! The analyzer against a real Prometheus filled with known history.
//! Expected values are computed here from the generated samples with the test's own
//! arithmetic (tests/support/scenario.rs), not by calling the code under test.

use crate::prometheus;
use crate::scenario;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use rightsizer::analyzer::policies::DefaultPolicy;
use rightsizer::analyzer::prom::PromConfig;
use rightsizer::analyzer::{Analyzer, AnalyzerConfig};
use rightsizer_core::analysis::queries::QueryConfig;
use rightsizer_core::quantity::Resource;
use rightsizer_core::recommendation::{
    ContainerKey, ContainerRecommendation, RecommendationSource,
};
use rightsizer_core::rules::Sizes;

use prometheus::TestProm;
use scenario::{expected_memory, stats, worth, Cluster, PodSpec, MI};

const H: u64 = 3600;
const SHORT: u64 = 900;
const LONG: u64 = 24 * H;

fn t0() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = now - 3 * H;
    t - t % 60
}

fn peak(t: u64, base: f64, high: f64) -> f64 {
    if (t / 60) % 10 == 0 {
        high
    } else {
        base
    }
}

/// The scenario described in the issue, in namespaces `shop` and `batch`.
fn cluster(t0: u64) -> Cluster {
    let start = t0 - 2 * 24 * H;
    let end = t0 + 2 * H;
    let mut c = Cluster::new(t0);
    let none = (None, None);

    // Deployment web: an old ReplicaSet (gone 12h ago) and the current one with 2 pods.
    c.owner(
        "kube_replicaset_owner",
        "shop",
        "replicaset",
        "web-aaa",
        "Deployment",
        "web",
        start,
        t0 - 12 * H,
    );
    c.owner(
        "kube_replicaset_owner",
        "shop",
        "replicaset",
        "web-bbb",
        "Deployment",
        "web",
        t0 - 12 * H,
        end,
    );
    for (pod, rs, from, to, base, high) in [
        ("web-aaa-1", "web-aaa", start, t0 - 12 * H, 200.0, 420.0),
        ("web-bbb-1", "web-bbb", t0 - 12 * H, end, 200.0, 300.0),
        ("web-bbb-2", "web-bbb", t0 - 12 * H, end, 220.0, 310.0),
    ] {
        let spec = PodSpec {
            ns: "shop",
            pod,
            owner_kind: "ReplicaSet",
            owner_name: rs,
            from,
            to,
        };
        c.pod(&spec, "shop/Deployment/web")
            .container(
                "app",
                move |t| peak(t, base, high),
                |_| 150.0,
                (Some(128), Some(256)),
                Some(0.2113),
            )
            .container("proxy", |_| 10.0, |_| 8.0, none, None);
    }

    // CronJob nightly: three Jobs, two of them inside the 24h window.
    for (job, from, base, high) in [
        ("nightly-1", start + H, 480.0, 900.0),
        ("nightly-2", t0 - 20 * H, 500.0, 700.0),
        ("nightly-3", t0 - 8 * H, 520.0, 640.0),
    ] {
        c.owner(
            "kube_job_owner",
            "shop",
            "job_name",
            job,
            "CronJob",
            "nightly",
            from,
            from + 5 * H,
        );
        let pod = format!("{job}-x");
        let spec = PodSpec {
            ns: "shop",
            pod: &pod,
            owner_kind: "Job",
            owner_name: job,
            from,
            to: from + 5 * H,
        };
        c.pod(&spec, "shop/CronJob/nightly").container(
            "batch",
            move |t| peak(t, base, high),
            |_| 100.0,
            none,
            None,
        );
    }

    // StatefulSet db: RSS spikes far above the working set.
    let spec = PodSpec {
        ns: "shop",
        pod: "db-0",
        owner_kind: "StatefulSet",
        owner_name: "db",
        from: start,
        to: end,
    };
    c.pod(&spec, "shop/StatefulSet/db").container(
        "postgres",
        |t| peak(t, 1000.0, 1200.0),
        |t| if (t / 60) % 50 == 7 { 3000.0 } else { 900.0 },
        none,
        None,
    );

    // Deployment cache: OOM-killed at a 256Mi limit two hours ago.
    c.owner(
        "kube_replicaset_owner",
        "shop",
        "replicaset",
        "cache-5f",
        "Deployment",
        "cache",
        start,
        end,
    );
    let spec = PodSpec {
        ns: "shop",
        pod: "cache-5f-a",
        owner_kind: "ReplicaSet",
        owner_name: "cache-5f",
        from: start,
        to: end,
    };
    c.pod(&spec, "shop/Deployment/cache").container(
        "redis",
        |t| peak(t, 180.0, 240.0),
        |_| 100.0,
        (Some(128), Some(256)),
        None,
    );
    c.constant(
        "kube_pod_container_status_last_terminated_reason",
        r#"namespace="shop",pod="cache-5f-a",container="redis",reason="OOMKilled""#,
        1.0,
        t0 - 2 * H,
        end,
    );

    // Deployment api, scaled by an HPA on memory utilization.
    c.owner(
        "kube_replicaset_owner",
        "shop",
        "replicaset",
        "api-7c",
        "Deployment",
        "api",
        start,
        end,
    );
    let spec = PodSpec {
        ns: "shop",
        pod: "api-7c-a",
        owner_kind: "ReplicaSet",
        owner_name: "api-7c",
        from: start,
        to: end,
    };
    c.pod(&spec, "shop/Deployment/api").container(
        "app",
        |t| peak(t, 300.0, 360.0),
        |_| 100.0,
        (Some(1024), Some(2048)),
        None,
    );
    c.constant(
        "kube_horizontalpodautoscaler_info",
        r#"namespace="shop",horizontalpodautoscaler="api-hpa",scaletargetref_api_version="apps/v1",scaletargetref_kind="Deployment",scaletargetref_name="api""#,
        1.0,
        start,
        end,
    );
    c.constant(
        "kube_horizontalpodautoscaler_spec_target_metric",
        r#"namespace="shop",horizontalpodautoscaler="api-hpa",metric_name="memory",metric_target_type="utilization""#,
        80.0,
        start,
        end,
    );

    // Knative Service hello (older metric names, found through its revision).
    c.owner(
        "kube_replicaset_owner",
        "shop",
        "replicaset",
        "hello-00001-deployment-6d",
        "Deployment",
        "hello-00001-deployment",
        start,
        end,
    );
    let spec = PodSpec {
        ns: "shop",
        pod: "hello-00001-deployment-6d-a",
        owner_kind: "ReplicaSet",
        owner_name: "hello-00001-deployment-6d",
        from: start,
        to: end,
    };
    c.pod(&spec, "shop/KnativeService/hello")
        .container(
            "user-container",
            |t| peak(t, 470.0, 480.0),
            |_| 200.0,
            (Some(256), Some(512)),
            None,
        )
        .container("queue-proxy", |_| 20.0, |_| 10.0, none, None);
    let rev = r#"namespace_name="shop",service_name="hello",configuration_name="hello",revision_name="hello-00001""#;
    c.constant(
        "autoscaler_stable_request_concurrency",
        rev,
        12.0,
        start,
        end,
    );
    c.constant(
        "autoscaler_target_concurrency_per_pod",
        rev,
        10.0,
        start,
        end,
    );

    // Knative Service echo (newer names, found through kube_pod_labels).
    let spec = PodSpec {
        ns: "shop",
        pod: "echo-00001-deployment-7f-a",
        owner_kind: "ReplicaSet",
        owner_name: "echo-00001-deployment-7f",
        from: start,
        to: end,
    };
    c.pod(&spec, "shop/KnativeService/echo").container(
        "user-container",
        |_| 100.0,
        |_| 50.0,
        (Some(256), Some(512)),
        None,
    );
    c.constant(
        "kube_pod_labels",
        r#"namespace="shop",pod="echo-00001-deployment-7f-a",label_serving_knative_dev_service="echo",label_serving_knative_dev_configuration="echo",label_serving_knative_dev_revision="echo-00001""#,
        1.0,
        start,
        end,
    );
    let rev = r#"k8s_namespace_name="shop",kn_service_name="echo",kn_configuration_name="echo",kn_revision_name="echo-00001""#;
    c.constant("kn_revision_concurrency_stable", rev, 4.0, start, end);
    c.constant("kn_revision_concurrency_target", rev, 10.0, start, end);
    c.constant(
        "kn_serving_queue_depth",
        &format!(r#"{rev},k8s_pod_name="echo-00001-deployment-7f-a""#),
        3.0,
        start,
        end,
    );

    // Deployment fresh: two hours of history only.
    c.owner(
        "kube_replicaset_owner",
        "shop",
        "replicaset",
        "fresh-1",
        "Deployment",
        "fresh",
        t0 - 2 * H,
        end,
    );
    let spec = PodSpec {
        ns: "shop",
        pod: "fresh-1-a",
        owner_kind: "ReplicaSet",
        owner_name: "fresh-1",
        from: t0 - 2 * H,
        to: end,
    };
    c.pod(&spec, "shop/Deployment/fresh")
        .container("app", |_| 300.0, |_| 100.0, none, None);

    // Deployment steady: the seed rules land within hysteresis of what runs.
    c.owner(
        "kube_replicaset_owner",
        "shop",
        "replicaset",
        "steady-1",
        "Deployment",
        "steady",
        start,
        end,
    );
    let spec = PodSpec {
        ns: "shop",
        pod: "steady-1-a",
        owner_kind: "ReplicaSet",
        owner_name: "steady-1",
        from: start,
        to: end,
    };
    c.pod(&spec, "shop/Deployment/steady").container(
        "app",
        |_| 200.0,
        |_| 100.0,
        (Some(288), Some(448)),
        None,
    );

    // Deployment grower (namespace batch): usage more than doubles just after t0.
    c.owner(
        "kube_replicaset_owner",
        "batch",
        "replicaset",
        "grower-1",
        "Deployment",
        "grower",
        start,
        end,
    );
    let spec = PodSpec {
        ns: "batch",
        pod: "grower-1-a",
        owner_kind: "ReplicaSet",
        owner_name: "grower-1",
        from: start,
        to: end,
    };
    c.pod(&spec, "batch/Deployment/grower").container(
        "app",
        move |t| if t < t0 + 60 { 400.0 } else { 900.0 },
        |_| 100.0,
        none,
        None,
    );
    c
}

fn config(url: String) -> AnalyzerConfig {
    let mut p = PromConfig::new(url);
    p.retries = 0;
    p.timeout = Duration::from_secs(10);
    let mut cfg = AnalyzerConfig::new(p);
    cfg.queries = QueryConfig {
        short_window_secs: SHORT,
        long_window_secs: LONG,
        ..QueryConfig::default()
    };
    cfg
}

fn analyzer(cfg: AnalyzerConfig, policy: DefaultPolicy) -> (Analyzer, Registry) {
    let mut reg = Registry::default();
    let a = Analyzer::new(cfg, Arc::new(policy), &mut reg).unwrap();
    (a, reg)
}

fn key(s: &str) -> ContainerKey {
    ContainerKey::parse(s).unwrap()
}

fn get(a: &Analyzer, k: &str, now: u64) -> ContainerRecommendation {
    a.cache().get_at(&key(k), now).unwrap_or_else(|| {
        panic!(
            "no entry for {k}; have {:?}",
            a.cache()
                .snapshot_at(now)
                .recommendations
                .keys()
                .collect::<Vec<_>>()
        )
    })
}

fn mem_sizes(r: &ContainerRecommendation) -> Option<Sizes> {
    r.memory.as_ref().and_then(|m| m.recommended)
}

fn sizes(req: u64, lim: u64) -> Option<Sizes> {
    Some(Sizes {
        request: Some(req),
        limit: Some(lim),
    })
}

/// The scenario's history in one Prometheus, and what a first analyzer cycle at `t0` made
/// of it: shared by the tests below (one behaviour each), started by the first that needs it.
struct History {
    t0: u64,
    c: Cluster,
    prom: TestProm,
    /// The first cycle's recommendations, as served at `t0`.
    at_t0: rightsizer_core::recommendation::Snapshot,
    queries: u64,
    containers: usize,
}

static HISTORY: tokio::sync::OnceCell<History> = tokio::sync::OnceCell::const_new();

async fn history() -> &'static History {
    HISTORY
        .get_or_init(|| async {
            let t0 = t0();
            let c = cluster(t0);
            let prom = TestProm::start_with(&c.om);
            let (a, _) = analyzer(config(prom.url()), DefaultPolicy::default());
            let report = a.cycle(t0).await.unwrap();
            History {
                t0,
                at_t0: a.cache().snapshot_at(t0),
                queries: report.queries,
                containers: report.containers,
                c,
                prom,
            }
        })
        .await
}

impl History {
    fn exp(&self, k: &str, now: u64) -> (u64, u64) {
        expected_memory(&self.c.containers[k], now, SHORT, LONG)
    }

    fn get(&self, k: &str) -> &ContainerRecommendation {
        self.at_t0
            .recommendations
            .get(&key(k))
            .unwrap_or_else(|| panic!("no entry for {k}"))
    }

    /// An analyzer of its own on the shared history after cycles at t0, +10 min, +31 min.
    async fn three_cycles(&self) -> (Analyzer, Registry) {
        let (a, reg) = analyzer(config(self.prom.url()), DefaultPolicy::default());
        for at in [self.t0, self.t0 + 600, self.t0 + 1860] {
            a.cycle(at).await.unwrap();
        }
        (a, reg)
    }
}

/// What every snapshot comparison compares (observed averages may differ in the last float
/// bit with evaluation order).
#[allow(clippy::type_complexity)]
fn decided(
    s: rightsizer_core::recommendation::Snapshot,
) -> Vec<(
    ContainerKey,
    Option<(Option<Sizes>, Vec<String>, Option<u64>)>,
    Option<(Option<Sizes>, Vec<String>)>,
    Option<rightsizer_core::recommendation::KnativeRecommendation>,
    Vec<Resource>,
)> {
    s.recommendations
        .into_iter()
        .map(|(k, r)| {
            let m = r.memory.map(|m| (m.recommended, m.reasons, m.oom_floor));
            let c = r.cpu.map(|c| (c.recommended, c.reasons));
            (k, m, c, r.knative, r.hpa_resources)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_spans_its_replicasets() {
    let h = history().await;
    let k = "shop/Deployment/web/app";
    let web = h.get(k);
    let (req, lim) = h.exp(k, h.t0);
    assert_eq!(mem_sizes(web), sizes(req, lim));
    let obs = web.memory.as_ref().unwrap().observed.unwrap();
    let st = stats(&h.c.containers[k], h.t0, LONG).unwrap();
    assert_eq!(
        obs.max,
        420.0 * MI as f64,
        "old ReplicaSet's peak is part of the history"
    );
    assert_eq!(obs.samples as usize, st.n);
    assert!((obs.avg - st.avg).abs() < 1.0, "{} vs {}", obs.avg, st.avg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_comes_from_the_rate_while_pods_ran() {
    let h = history().await;
    let web = h.get("shop/Deployment/web/app");
    // CPU: rate 0.2113 cores → p95 211.3m × 1.2 = 253.56 → 254 → ↑5m = 255m; no limit.
    let cpu_obs = web.cpu.as_ref().unwrap().observed.unwrap();
    // Averaged over the time the pods ran (the old ReplicaSet's pod ran half the window).
    assert!((cpu_obs.avg - 211.3).abs() < 1.0, "{cpu_obs:?}");
    assert!((cpu_obs.p95 - 211.3).abs() < 1e-6 && (cpu_obs.max - 211.3).abs() < 1e-6);
    let cpu = web.cpu.as_ref().unwrap().recommended.unwrap();
    assert_eq!(
        cpu,
        Sizes {
            request: Some(255),
            limit: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_sidecar_sits_on_the_floors() {
    let h = history().await;
    let proxy = h.get("shop/Deployment/web/proxy");
    assert_eq!(mem_sizes(proxy), sizes(64 * MI, 128 * MI));
    assert_eq!(
        h.exp("shop/Deployment/web/proxy", h.t0),
        (64 * MI, 128 * MI)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_spans_its_jobs() {
    let h = history().await;
    let k = "shop/CronJob/nightly/batch";
    let nightly = h.get(k);
    let (r, l) = h.exp(k, h.t0);
    assert_eq!(mem_sizes(nightly), sizes(r, l));
    assert_eq!(
        nightly.memory.as_ref().unwrap().observed.unwrap().max,
        700.0 * MI as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_spikes_raise_the_limit() {
    let h = history().await;
    let k = "shop/StatefulSet/db/postgres";
    let (r, l) = h.exp(k, h.t0);
    assert_eq!(mem_sizes(h.get(k)), sizes(r, l));
    // The limit follows the RSS max, not the working set.
    let ws_only = scenario::seed_memory(
        st_ws_avg(&h.c, k, h.t0),
        1200.0 * MI as f64,
        1200.0 * MI as f64,
    )
    .1;
    assert!(l > ws_only, "RSS spikes raise the limit ({l} > {ws_only})");
    assert_eq!(l, 3312 * MI); // 3000Mi × 1.1 = 3300Mi → 3312Mi
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_sets_a_floor() {
    let h = history().await;
    // At least max(256Mi × 1.2, 256Mi + 100Mi) = 356Mi → 368Mi.
    let m = h
        .get("shop/Deployment/cache/redis")
        .memory
        .as_ref()
        .unwrap();
    assert_eq!(m.oom_floor, Some(368 * MI));
    assert!(m.reasons.iter().any(|r| r == "oom"), "{:?}", m.reasons);
    let (r, l) = h.exp("shop/Deployment/cache/redis", h.t0);
    assert_eq!(m.recommended, sizes(r.max(368 * MI), l.max(368 * MI)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_on_memory_leaves_the_request_alone() {
    let h = history().await;
    // Memory request left alone, limit still recommended, CPU untouched.
    let api = h.get("shop/Deployment/api/app");
    assert_eq!(api.hpa_resources, vec![Resource::Memory]);
    let m = api.memory.as_ref().unwrap();
    assert!(m.reasons.iter().any(|r| r == "hpa"));
    let (_, l) = h.exp("shop/Deployment/api/app", h.t0);
    // Current limit 2048Mi vs proposed: far apart, so the proposal stands (≥ the 1024Mi request).
    assert!(worth(2048 * MI, l));
    assert_eq!(
        m.recommended,
        Some(Sizes {
            request: None,
            limit: Some(l.max(1024 * MI))
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knative_targets_follow_concurrency_and_memory() {
    let h = history().await;
    // hello near its limit with concurrency above target → target 10 → 8,
    // containerConcurrency ceil(8 / 0.7) = 12; echo has headroom and a queue → 10 → 12.
    let hello = h.get("shop/KnativeService/hello/user-container");
    let kn = hello.knative.as_ref().expect("knative proposal for hello");
    assert_eq!((kn.target, kn.container_concurrency), (Some(8.0), Some(12)));
    assert!(h
        .get("shop/KnativeService/hello/queue-proxy")
        .knative
        .is_none());
    let echo = h.get("shop/KnativeService/echo/user-container");
    let kn = echo.knative.as_ref().expect("knative proposal for echo");
    assert_eq!((kn.target, kn.container_concurrency), (Some(12.0), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_history_gives_no_recommendation() {
    let h = history().await;
    // 2h of history (< 3h).
    let m = h.get("shop/Deployment/fresh/app").memory.as_ref().unwrap();
    assert_eq!(m.recommended, None);
    assert_eq!(m.reasons, vec!["not enough data".to_string()]);
    assert!(m.observed.unwrap().history_seconds < 3 * H);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hysteresis_keeps_the_running_sizes() {
    let h = history().await;
    // The seed value is within 20%/64Mi of the running request.
    let (r, l) = h.exp("shop/Deployment/steady/app", h.t0);
    assert!(
        !worth(288 * MI, r) && !worth(448 * MI, l),
        "scenario: {r} {l}"
    );
    assert_ne!((r, l), (288 * MI, 448 * MI));
    assert_eq!(
        mem_sizes(h.get("shop/Deployment/steady/app")),
        sizes(288 * MI, 448 * MI)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_holds_a_growing_workload_then_lets_it_go() {
    let h = history().await;
    let (a, _) = analyzer(config(h.prom.url()), DefaultPolicy::default());
    let g = "batch/Deployment/grower/app";
    a.cycle(h.t0).await.unwrap();
    let first = h.exp(g, h.t0);
    assert_eq!(mem_sizes(&get(&a, g, h.t0)), sizes(first.0, first.1));
    a.cycle(h.t0 + 600).await.unwrap();
    let at10 = h.exp(g, h.t0 + 600);
    assert!(worth(first.0, at10.0), "scenario: usage rise must matter");
    let r10 = get(&a, g, h.t0 + 600);
    assert_eq!(
        mem_sizes(&r10),
        sizes(first.0, first.1),
        "held by the 30 min cooldown"
    );
    assert!(r10
        .memory
        .as_ref()
        .unwrap()
        .reasons
        .iter()
        .any(|r| r == "cooldown"));
    a.cycle(h.t0 + 1860).await.unwrap();
    let at31 = h.exp(g, h.t0 + 1860);
    assert_eq!(mem_sizes(&get(&a, g, h.t0 + 1860)), sizes(at31.0, at31.1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_inputs_keep_their_proposals_across_cycles() {
    let h = history().await;
    let (a, _) = h.three_cycles().await;
    let later = h.t0 + 1860;
    // Knative proposals stay as they were while the inputs stay the same.
    let kn = get(&a, "shop/KnativeService/hello/user-container", later)
        .knative
        .unwrap();
    assert_eq!((kn.target, kn.container_concurrency), (Some(8.0), Some(12)));
    // web did not move enough to be revised between the cycles.
    assert_eq!(
        mem_sizes(&get(&a, "shop/Deployment/web/app", later)),
        mem_sizes(h.get("shop/Deployment/web/app"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_takes_a_few_queries_for_every_container() {
    let h = history().await;
    // Queries per cycle are a constant, and every container came from a few queries.
    assert!(h.queries < 30, "{} queries", h.queries);
    assert!(h.containers >= 12, "{} containers", h.containers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_json_is_the_snapshot_mutate_reads() {
    let h = history().await;
    let json = serde_json::to_string(&h.at_t0).unwrap();
    let back: rightsizer_core::recommendation::Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(decided(back), decided(h.at_t0.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analyzer_metrics_count_cycles_and_queries() {
    let h = history().await;
    let (_a, reg) = h.three_cycles().await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    for name in [
        "rightsizer_analyzer_cycle_duration_seconds_count 3",
        &format!("rightsizer_analyzer_queries_total {}", h.queries * 3),
        &format!("rightsizer_analyzer_queries_per_cycle {}", h.queries),
        "rightsizer_analyzer_errors_total 0",
        &format!(
            "rightsizer_analyzer_last_success_timestamp_seconds {}",
            h.t0 + 1860
        ),
        &format!("rightsizer_cache_entries {}", h.containers),
        "rightsizer_cache_stale_entries 0",
        "rightsizer_analyzer_series_read ",
    ] {
        assert!(text.contains(name), "missing {name:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splitting_by_namespace_gives_the_same_answers() {
    let h = history().await;
    let mut cfg = config(h.prom.url());
    cfg.max_series_per_query = 3;
    let (split, _) = analyzer(cfg, DefaultPolicy::default());
    let rep = split.cycle(h.t0).await.unwrap();
    assert!(rep.scopes >= 2, "{rep:?}");
    let got = decided(split.cache().snapshot_at(h.t0));
    assert_eq!(got.len(), h.containers);
    assert_eq!(got, decided(h.at_t0.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforcement_steps_at_most_30_percent_and_survives_a_restart() {
    let h = history().await;
    let t0 = h.t0;
    let p95 = h
        .get("shop/Deployment/web/app")
        .memory
        .as_ref()
        .unwrap()
        .observed
        .unwrap()
        .p95;
    // Steps of at most 30%, never below p95, cooldown, survives a restart.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(h.prom.url());
    cfg.enforcement = true;
    cfg.state_file = Some(dir.path().join("state.json"));
    let (e, _) = analyzer(cfg.clone(), DefaultPolicy { enforce: true });
    e.cycle(t0).await.unwrap();
    let web_key = key("shop/Deployment/web/app");
    let c1 = e.state().containers[&web_key].memory.clone().unwrap();
    // From the running 128Mi towards the recommendation: +30% is 166.4Mi, but never below
    // p95, rounded up to 16Mi like every recommended value.
    let step = (128 * MI) + ((128 * MI) as f64 * 0.3).ceil() as u64;
    let want = step.max(p95.ceil() as u64).div_ceil(16 * MI) * (16 * MI);
    assert_eq!(c1.sizes.request, Some(want));
    assert_eq!(c1.at, t0);
    e.cycle(t0 + 600).await.unwrap();
    assert_eq!(
        e.state().containers[&web_key].memory,
        Some(c1.clone()),
        "cooldown"
    );
    drop(e);
    let (e2, _) = analyzer(cfg, DefaultPolicy { enforce: true });
    assert_eq!(
        e2.state().containers[&web_key].memory,
        Some(c1.clone()),
        "survives restart"
    );
    e2.cycle(t0 + 1860).await.unwrap();
    let c2 = e2.state().containers[&web_key].memory.clone().unwrap();
    let cur = c1.sizes.request.unwrap();
    let target = get(&e2, "shop/Deployment/web/app", t0 + 1860)
        .memory
        .unwrap()
        .recommended
        .unwrap()
        .request
        .unwrap();
    let want = target.clamp(
        cur - (cur as f64 * 0.3).ceil() as u64,
        cur + (cur as f64 * 0.3).ceil() as u64,
    );
    assert_eq!(c2.sizes.request, Some(want.max(p95.ceil() as u64)));
    assert_eq!(c2.at, t0 + 1860);
    let served = get(&e2, "shop/Deployment/web/app", t0 + 1860);
    assert_eq!(served.memory.unwrap().committed, Some(c2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oom_hold_is_persisted() {
    let h = history().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(h.prom.url());
    cfg.enforcement = true;
    cfg.state_file = Some(dir.path().join("state.json"));
    let (e, _) = analyzer(cfg.clone(), DefaultPolicy { enforce: true });
    e.cycle(h.t0).await.unwrap();
    drop(e);
    let (again, _) = analyzer(cfg, DefaultPolicy { enforce: true });
    let cache_key = key("shop/Deployment/cache/redis");
    assert_eq!(
        again.state().containers[&cache_key]
            .oom
            .as_ref()
            .unwrap()
            .floor,
        368 * MI
    );
}

/// The working-set-only average, for the RSS comparison.
fn st_ws_avg(c: &Cluster, k: &str, now: u64) -> f64 {
    let v: Vec<f64> = c.containers[k]
        .iter()
        .flat_map(|p| p.ws.iter())
        .filter(|(t, _)| *t > now - LONG && *t <= now)
        .map(|(_, v)| *v)
        .collect();
    v.iter().sum::<f64>() / v.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_then_back() {
    let t0 = t0();
    let mut c = Cluster::new(t0);
    let start = t0 - 26 * H;
    c.owner(
        "kube_replicaset_owner",
        "shop",
        "replicaset",
        "web-1",
        "Deployment",
        "web",
        start,
        t0 + 2 * H,
    );
    let spec = PodSpec {
        ns: "shop",
        pod: "web-1-a",
        owner_kind: "ReplicaSet",
        owner_name: "web-1",
        from: start,
        to: t0 + 2 * H,
    };
    c.pod(&spec, "shop/Deployment/web").container(
        "app",
        |t| peak(t, 200.0, 260.0),
        |_| 100.0,
        none(),
        None,
    );
    let mut prom = TestProm::start_with(&c.om);
    let mut cfg = config(prom.url());
    cfg.stale_ttl_secs = 3600;
    cfg.prometheus.timeout = Duration::from_secs(2);
    let (a, reg) = analyzer(cfg, DefaultPolicy::default());
    let k = "shop/Deployment/web/app";

    a.cycle(t0).await.unwrap();
    let good = get(&a, k, t0);
    assert!(!good.stale);
    let (r, l) = expected_memory(&c.containers[k], t0, SHORT, LONG);
    assert_eq!(mem_sizes(&good), sizes(r, l));

    prom.stop();
    assert!(a.cycle(t0 + 300).await.is_err());
    let stale = get(&a, k, t0 + 300);
    assert!(stale.stale, "served, marked stale");
    assert_eq!(mem_sizes(&stale), mem_sizes(&good));
    assert!(
        a.cache().get_at(&key(k), t0 + 3600).is_some(),
        "within the TTL"
    );
    assert!(
        a.cache().get_at(&key(k), t0 + 3601).is_none(),
        "past the TTL"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(text.contains("rightsizer_cache_stale_entries 1"), "{text}");
    assert!(
        !text.contains("rightsizer_analyzer_errors_total 0"),
        "{text}"
    );

    prom.start();
    a.cycle(t0 + 600).await.unwrap();
    let back = get(&a, k, t0 + 600);
    assert!(!back.stale);
    assert_eq!(back.updated_at, t0 + 600);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(text.contains("rightsizer_cache_stale_entries 0"), "{text}");

    // The background loop (wall-clock time) fills its cache and stops on shutdown.
    let mut cfg = config(prom.url());
    cfg.interval = Duration::from_millis(50);
    let (bg, _) = analyzer(cfg, DefaultPolicy::default());
    let bg = Arc::new(bg);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bg.clone().run(async move {
        let _ = rx.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while bg.cache().get(&key(k)).is_none() {
        assert!(std::time::Instant::now() < deadline, "no cycle completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run stops on shutdown")
        .unwrap();
}

fn none() -> (Option<u64>, Option<u64>) {
    (None, None)
}

/// `rightsizer recommend` prints the same recommendations as table, CSV and JSON (Snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_command_prints_recommendations() {
    let t0 = t0();
    let mut c = Cluster::new(t0);
    let start = t0 - 26 * H;
    for (ns, name) in [("shop", "web"), ("other", "job")] {
        let rs = format!("{name}-1");
        let pod = format!("{name}-1-a");
        c.owner(
            "kube_replicaset_owner",
            ns,
            "replicaset",
            &rs,
            "Deployment",
            name,
            start,
            t0 + H,
        );
        let spec = PodSpec {
            ns,
            pod: &pod,
            owner_kind: "ReplicaSet",
            owner_name: &rs,
            from: start,
            to: t0 + H,
        };
        c.pod(&spec, &format!("{ns}/Deployment/{name}")).container(
            "app",
            |t| peak(t, 200.0, 260.0),
            |_| 100.0,
            (Some(1024), Some(2048)),
            None,
        );
    }
    let prom = TestProm::start_with(&c.om);
    let run = |fmt: &str, ns: Option<&str>| {
        let mut cmd = std::process::Command::new(crate::exe::rightsizer());
        cmd.args([
            "recommend",
            "--prometheus",
            &prom.url(),
            "--at",
            &t0.to_string(),
            "-o",
            fmt,
        ]);
        if let Some(n) = ns {
            cmd.args(["--namespace", n]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("queries"));
        String::from_utf8(out.stdout).unwrap()
    };
    let (r, l) = expected_memory(&c.containers["shop/Deployment/web/app"], t0, SHORT, LONG);
    let fmt = |v: u64| format!("{}Mi", v / MI);

    let snap: rightsizer_core::recommendation::Snapshot =
        serde_json::from_str(&run("json", None)).unwrap();
    assert_eq!(snap.recommendations.len(), 2);
    let web = &snap.recommendations[&key("shop/Deployment/web/app")];
    assert_eq!(mem_sizes(web), sizes(r, l));

    let csv = run("csv", Some("shop"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "namespace,workload,container,resource,current,avg,p95,max,recommended,change,reason"
    );
    assert_eq!(lines.len(), 3, "{csv}"); // memory and cpu rows of shop/web only
    let mem: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(
        &mem[..5],
        &["shop", "Deployment/web", "app", "memory", "1Gi/2Gi"]
    );
    assert_eq!(mem[6], "260Mi");
    assert_eq!(mem[8], format!("{}/{}", fmt(r), fmt(l)));
    assert!(mem[9].starts_with('-'), "a decrease: {}", mem[9]);

    let table = run("table", None);
    eprintln!("{table}");
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(
        table.contains("other") && table.contains(&format!("{}/{}", fmt(r), fmt(l))),
        "{table}"
    );
    let cpu_row = table
        .lines()
        .find(|l| l.contains("shop") && l.contains(" cpu "))
        .unwrap();
    assert!(cpu_row.contains("not enough data"), "{cpu_row}");
}
