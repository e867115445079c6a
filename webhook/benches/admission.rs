//! Admission latency and throughput for a typical Pod, Deployment and Knative Service
//! review: in process (`Admitter::review`, then the router through tower `oneshot`) and
//! over loopback HTTPS against the real `rightsizer serve` binary, HTTP/1.1 and HTTP/2.
//! The recommendations come from `tests/fixtures/server/bench-snapshot.json`, so the
//! Deployment and Knative reviews hit a cache entry.
//!
//! Run: `cargo bench -p rightsizer --bench admission` (BENCH_SECONDS=N per case, default 2;
//! BENCH_HTTPS=0 for the in-process cases only). Loopback only; every case is bounded by
//! time and count.

#[path = "../../tests/support/exe.rs"]
mod exe;
#[path = "../../tests/support_https/mod.rs"]
mod support_https;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use rightsizer::admission::{AdmitConfig, Admitter};
use rightsizer::policies::store::PolicyStore;
use rightsizer::policies::watch::load_dirs;
use rightsizer::server::metrics::ServerMetrics;
use rightsizer::server::readiness::Readiness;
use rightsizer::server::{router, AppState};
use rightsizer_core::cluster::NoFacts;
use rightsizer_core::recommendation::{RecommendationSource, Snapshot};
use support_https::{client_config, fixture, Conn, Proto, Server};
use tower::ServiceExt;

const MAX_COUNT: usize = 1_000_000;
/// Concurrent requests in the throughput cases (connections for HTTP/1.1, streams on one
/// connection for HTTP/2).
const CONCURRENCY: usize = 16;
const PATH: &str = "/mutate?timeout=10s";

/// The recommendations every case reads (also given to the server as `--recommendations`).
fn recommendations() -> Arc<dyn RecommendationSource> {
    let snap: Snapshot = serde_json::from_slice(&fixture(SNAPSHOT)).expect("bench snapshot parses");
    Arc::new(snap)
}

const SNAPSHOT: &str = "bench-snapshot.json";

fn snapshot_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/server")
        .join(SNAPSHOT)
}

/// The admitter measured in process: the repository's `policies/` and the bench snapshot,
/// as `serve --policies policies/ --recommendations FILE` builds it (the HTTPS cases run
/// exactly that).
fn admitter() -> Admitter {
    let store = Arc::new(PolicyStore::new());
    let problems = load_dirs(&store, &[policies_dir()]);
    assert!(problems.is_empty(), "policies refused: {problems:?}");
    store.mark_ready();
    Admitter::new(
        store,
        recommendations(),
        Arc::new(NoFacts),
        AdmitConfig::default(),
    )
}

fn policies_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

struct Figures {
    case: String,
    count: usize,
    p50: Duration,
    p99: Duration,
    per_sec: f64,
    /// Reviews per second of this thread's own CPU time (in-process cases only): the
    /// throughput of one core, whatever else the machine is running.
    per_core: Option<f64>,
}

/// CPU time this thread has run, from the scheduler's own accounting.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn figures(case: String, mut lat: Vec<Duration>, wall: Duration) -> Figures {
    lat.sort_unstable();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Figures {
        count: lat.len(),
        p50: pick(0.50),
        p99: pick(0.99),
        per_sec: lat.len() as f64 / wall.as_secs_f64(),
        per_core: None,
        case,
    }
}

fn with_cpu(mut f: Figures, cpu: Option<Duration>) -> Figures {
    f.per_core = cpu
        .filter(|c| !c.is_zero())
        .map(|c| f.count as f64 / c.as_secs_f64());
    f
}

fn print(f: &Figures) {
    let per_core = f.per_core.map(|c| format!("{c:.0}")).unwrap_or("-".into());
    println!(
        "{:<44} {:>9} {:>10.1} {:>10.1} {:>12.0} {:>12}",
        f.case,
        f.count,
        f.p50.as_secs_f64() * 1e6,
        f.p99.as_secs_f64() * 1e6,
        f.per_sec,
        per_core
    );
}

fn in_process(name: &str, body: &[u8], budget: Duration) -> Figures {
    let a = admitter();
    let mut lat = Vec::new();
    let cpu0 = thread_cpu();
    let start = Instant::now();
    while start.elapsed() < budget && lat.len() < MAX_COUNT {
        let t = Instant::now();
        let r = a.review(body).expect("review");
        std::hint::black_box(r);
        lat.push(t.elapsed());
    }
    let wall = start.elapsed();
    let cpu = thread_cpu().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    with_cpu(
        figures(format!("in process  Admitter::review  {name}"), lat, wall),
        cpu,
    )
}

async fn oneshot(name: &str, body: &[u8], budget: Duration) -> Figures {
    let mut registry = Registry::default();
    let metrics = ServerMetrics::register(&mut registry);
    let app = router(AppState {
        admitter: Arc::new(admitter()),
        recommendations: recommendations(),
        readiness: Readiness::always(),
        registry: Arc::new(registry),
        metrics,
        guard: Arc::default(),
        report: Arc::default(),
    });
    let body = bytes::Bytes::copy_from_slice(body);
    let mut lat = Vec::new();
    let cpu0 = thread_cpu();
    let start = Instant::now();
    while start.elapsed() < budget && lat.len() < MAX_COUNT {
        let t = Instant::now();
        let req = http::Request::post(PATH)
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("router");
        assert_eq!(resp.status(), 200);
        let out = resp.into_body().collect().await.expect("body");
        std::hint::black_box(out);
        lat.push(t.elapsed());
    }
    let wall = start.elapsed();
    let cpu = thread_cpu().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    with_cpu(
        figures(format!("in process  router oneshot    {name}"), lat, wall),
        cpu,
    )
}

/// Requests one after another on one keep-alive connection: latency.
async fn sequential(conn: &mut Conn, body: &[u8], budget: Duration) -> (Vec<Duration>, Duration) {
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget && lat.len() < MAX_COUNT {
        let t = Instant::now();
        let r = conn.post(PATH, body.to_vec()).await.expect("request");
        assert_eq!(r.status, 200);
        lat.push(t.elapsed());
    }
    (lat, start.elapsed())
}

/// `CONCURRENCY` requests in flight at all times: throughput (and latency under load).
async fn concurrent(conns: Vec<Conn>, body: &[u8], budget: Duration) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let body = bytes::Bytes::copy_from_slice(body);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let body = body.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while start.elapsed() < budget && lat.len() < MAX_COUNT / CONCURRENCY {
                    let t = Instant::now();
                    let r = c.post(PATH, body.clone()).await.expect("request");
                    assert_eq!(r.status, 200);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    (lat, start.elapsed())
}

/// A new TLS connection per request (what a client without keep-alive pays).
async fn fresh(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    proto: Proto,
    body: &[u8],
    budget: Duration,
) -> (Vec<Duration>, Duration) {
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget && lat.len() < MAX_COUNT {
        let t = Instant::now();
        let mut c = Conn::connect(addr, cfg.clone(), proto)
            .await
            .expect("connect");
        let r = c.post(PATH, body.to_vec()).await.expect("request");
        assert_eq!(r.status, 200);
        lat.push(t.elapsed());
    }
    (lat, start.elapsed())
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` it is absent and a
    // short smoke run checks that every case works.
    let benching = std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benching { 2.0 } else { 0.05 });
    let budget = Duration::from_secs_f64(secs);
    let cases = [
        ("Pod", fixture("pod-review.json")),
        ("Deployment", fixture("deployment-review.json")),
        ("Knative Service", fixture("knative-service-review.json")),
    ];
    let https = std::env::var("BENCH_HTTPS").map_or(true, |v| v != "0");
    // Profiling mode (e.g. under `valgrind --tool=callgrind`): a fixed number of
    // `Admitter::review` calls for one case, no clocks, nothing else.
    if let Ok(spec) = std::env::var("BENCH_PROFILE") {
        let (case, count) = spec.split_once(':').unwrap_or((spec.as_str(), "1000"));
        let count: usize = count.parse().expect("BENCH_PROFILE=CASE:COUNT");
        let (_, body) = cases
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(case))
            .expect("BENCH_PROFILE case: Pod, Deployment or Knative Service");
        let a = admitter();
        for _ in 0..count {
            std::hint::black_box(a.review(std::hint::black_box(body)).expect("review"));
        }
        return;
    }
    println!(
        "{:<44} {:>9} {:>10} {:>10} {:>12} {:>12}",
        "case", "requests", "p50 µs", "p99 µs", "req/s", "req/s/core"
    );
    for (name, body) in &cases {
        let r = admitter().review(body).expect("review");
        println!(
            "# {name}: outcome {}, {} patch operations",
            r.outcome.as_str(),
            r.patch_ops
        );
    }
    for (name, body) in &cases {
        print(&in_process(name, body, budget));
    }
    // The hostile review of issue 10: admitted unchanged at the container cap.
    let hostile = support_https::hostile_pod_review(90_000, "hostile");
    print(&in_process("Pod, 90,000 containers", &hostile, budget));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for (name, body) in &cases {
            print(&oneshot(name, body, budget).await);
        }
    });
    if !https {
        return;
    }

    // Over loopback HTTPS against the real binary (its own process and runtime).
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca_out = tmp.path().join("ca.pem");
    let args = [
        "--self-signed".to_string(),
        "--ca-out".to_string(),
        ca_out.display().to_string(),
        "--policies".to_string(),
        policies_dir().display().to_string(),
        "--recommendations".to_string(),
        snapshot_path().display().to_string(),
    ];
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&argv, tmp.path().join("serve.log"));
    let ca = std::fs::read_to_string(&ca_out).expect("CA bundle");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for (proto, label) in [(Proto::H1, "HTTP/1.1"), (Proto::H2, "HTTP/2")] {
            let cfg = client_config(&[&ca], proto);
            for (name, body) in &cases {
                let mut conn = Conn::connect(server.addr, cfg.clone(), proto)
                    .await
                    .expect("connect");
                let (lat, wall) = sequential(&mut conn, body, budget).await;
                print(&figures(
                    format!("HTTPS {label:<8} sequential      {name}"),
                    lat,
                    wall,
                ));

                let conns: Vec<Conn> = match proto {
                    Proto::H1 => {
                        let mut v = Vec::new();
                        for _ in 0..CONCURRENCY {
                            v.push(
                                Conn::connect(server.addr, cfg.clone(), proto)
                                    .await
                                    .expect("connect"),
                            );
                        }
                        v
                    }
                    Proto::H2 => (0..CONCURRENCY).filter_map(|_| conn.h2_handle()).collect(),
                };
                let (lat, wall) = concurrent(conns, body, budget).await;
                print(&figures(
                    format!("HTTPS {label:<8} {CONCURRENCY} in flight    {name}"),
                    lat,
                    wall,
                ));
            }
            let (lat, wall) = fresh(server.addr, cfg.clone(), proto, &cases[0].1, budget).await;
            print(&figures(
                format!("HTTPS {label:<8} new conn each   Pod"),
                lat,
                wall,
            ));
        }
    });
    drop(server);
}
