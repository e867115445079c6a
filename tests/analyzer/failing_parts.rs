//! The analyzer reads in parts (namespace scopes, range chunks) and a part that fails or
//! outlasts the timeout costs only itself. A real Prometheus sits behind a proxy in this
//! test that refuses or holds the requests a test picks (by their PromQL and range).

use crate::prometheus;
use crate::scenario;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{StatusCode, Uri};
use prometheus_client::registry::Registry;
use rightsizer::analyzer::policies::{DefaultPolicy, PolicyLookup};
use rightsizer::analyzer::prom::PromConfig;
use rightsizer::analyzer::{Analyzer, AnalyzerConfig};
use rightsizer_core::analysis::queries::QueryConfig;
use rightsizer_core::recommendation::{ContainerKey, ContainerRecommendation};
use rightsizer_core::rules::{Rules, Sizes};
use rightsizer_core::workload::WorkloadKey;

use prometheus::TestProm;
use scenario::{Cluster, PodSpec};

const H: u64 = 3600;
const LONG: u64 = 24 * H;
const W: u64 = 300;
const SHOP: &str = "shop/Deployment/web/app";
const BATCH: &str = "batch/Deployment/job/app";
/// The client's timeout; a held request outlasts it.
const TIMEOUT: Duration = Duration::from_secs(2);

fn t0() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = now - 3 * H;
    t - t % 60
}

/// One Deployment in each of two namespaces, running for 26 hours before `t0`.
fn cluster(t0: u64) -> Cluster {
    let mut c = Cluster::new(t0);
    let (from, to) = (t0 - 26 * H, t0 + 2 * H);
    for (ns, name, base) in [("shop", "web", 200.0), ("batch", "job", 400.0)] {
        let rs = format!("{name}-1");
        c.owner(
            "kube_replicaset_owner",
            ns,
            "replicaset",
            &rs,
            "Deployment",
            name,
            from,
            to,
        );
        let pod = format!("{rs}-a");
        let spec = PodSpec {
            ns,
            pod: &pod,
            owner_kind: "ReplicaSet",
            owner_name: &rs,
            from,
            to,
        };
        c.pod(&spec, &format!("{ns}/Deployment/{name}")).container(
            "app",
            move |t| base + ((t / 60) % 11) as f64 * 7.0,
            move |_| base / 2.0,
            (Some(128), Some(512)),
            None,
        );
    }
    c
}

/// Each namespace is a scope of its own (one container each).
fn config(url: String) -> AnalyzerConfig {
    let mut p = PromConfig::new(url);
    p.retries = 0;
    p.timeout = TIMEOUT;
    let mut cfg = AnalyzerConfig::new(p);
    cfg.queries = QueryConfig {
        short_window_secs: 900,
        long_window_secs: LONG,
        ..QueryConfig::default()
    };
    cfg.max_series_per_query = 1;
    cfg
}

/// A policy naming a strategy for every workload (so history is read).
struct Named(&'static str);

impl PolicyLookup for Named {
    fn rules(&self, _w: &WorkloadKey) -> Rules {
        Rules::default()
    }
    fn recommender(&self, _w: &WorkloadKey) -> String {
        self.0.to_string()
    }
}

fn analyzer(cfg: AnalyzerConfig, policy: impl PolicyLookup + 'static) -> (Analyzer, Registry) {
    let mut reg = Registry::default();
    let a = Analyzer::new(cfg, Arc::new(policy), &mut reg).unwrap();
    (a, reg)
}

fn get(a: &Analyzer, k: &str, now: u64) -> ContainerRecommendation {
    a.cache()
        .get_at(&ContainerKey::parse(k).unwrap(), now)
        .unwrap_or_else(|| panic!("no entry for {k}"))
}

fn memory(r: &ContainerRecommendation) -> Option<Sizes> {
    r.memory.as_ref().and_then(|m| m.recommended)
}

fn metrics(reg: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, reg).unwrap();
    text
}

/// One request as the proxy sees it: the API path and the form's fields.
struct Request {
    range: bool,
    query: String,
    start: Option<u64>,
}

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Pass,
    /// 503, as a Prometheus that is overloaded answers.
    Refuse,
    /// Forwarded only after this long (past the client's timeout).
    Hold(Duration),
}

type Rule = Arc<Mutex<Box<dyn Fn(&Request) -> Fate + Send + Sync>>>;

/// An HTTP proxy in front of the real Prometheus that applies `rule` to each request.
struct Proxy {
    url: String,
    rule: Rule,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let rule: Rule = Arc::new(Mutex::new(Box::new(|_: &Request| Fate::Pass)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let r = rule.clone();
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |uri: Uri, body: axum::body::Bytes| {
            let (r, client, upstream) = (r.clone(), client.clone(), upstream.clone());
            async move {
                let req = parse(uri.path(), &body);
                let fate = (r.lock().unwrap())(&req);
                match fate {
                    Fate::Refuse => return (StatusCode::SERVICE_UNAVAILABLE, Vec::new()),
                    Fate::Hold(d) => tokio::time::sleep(d).await,
                    Fate::Pass => {}
                }
                let resp = client
                    .post(format!("{upstream}{}", uri.path()))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
                (status, resp.bytes().await.unwrap().to_vec())
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Proxy { url, rule }
    }

    fn set(&self, f: impl Fn(&Request) -> Fate + Send + Sync + 'static) {
        *self.rule.lock().unwrap() = Box::new(f);
    }
}

/// The form fields the analyzer posts (`application/x-www-form-urlencoded`).
fn parse(path: &str, body: &[u8]) -> Request {
    let text = String::from_utf8_lossy(body);
    let field = |name: &str| {
        text.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    };
    Request {
        range: path.ends_with("/query_range"),
        query: field("query").unwrap_or_default(),
        start: field("start").and_then(|s| s.parse().ok()),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn in_batch(r: &Request) -> bool {
    r.query.contains(r#"namespace=~"batch""#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_scope_keeps_its_workloads_stale_and_the_others_are_updated() {
    let t0 = t0();
    let prom = TestProm::start_with(&cluster(t0).om);
    let proxy = Proxy::start(prom.url()).await;
    let (a, reg) = analyzer(config(proxy.url.clone()), DefaultPolicy::default());
    let r1 = a.cycle(t0).await.unwrap();
    assert_eq!((r1.scopes, r1.failed_parts, r1.stale), (2, 0, 0), "{r1:?}");
    let batch1 = get(&a, BATCH, t0);

    proxy.set(|r| {
        if in_batch(r) {
            Fate::Refuse
        } else {
            Fate::Pass
        }
    });
    let t1 = t0 + 600;
    let r2 = a
        .cycle(t1)
        .await
        .expect("one failed scope does not fail the cycle");
    assert_eq!((r2.failed_parts, r2.stale), (1, 1), "{r2:?}");
    let batch2 = get(&a, BATCH, t1);
    assert!(batch2.stale, "the failed scope's workload is served stale");
    assert_eq!(batch2.updated_at, batch1.updated_at);
    assert_eq!(memory(&batch2), memory(&batch1), "its last good values");
    let shop2 = get(&a, SHOP, t1);
    assert!(!shop2.stale);
    assert_eq!(shop2.updated_at, t1, "the other scope is updated");
    let text = metrics(&reg);
    for line in [
        "rightsizer_analyzer_failed_parts 1",
        "rightsizer_cache_stale_entries 1",
        &format!("rightsizer_analyzer_last_success_timestamp_seconds {t1}"),
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_read_that_times_out_is_read_next_cycle_and_every_interval_is_fed_once() {
    let t0 = t0();
    let prom = TestProm::start_with(&cluster(t0).om);
    let proxy = Proxy::start(prom.url()).await;
    // An hour of 5-minute steps per range query: 24 chunks per scope for the first read.
    let parted = |url| {
        let mut cfg = config(url);
        cfg.max_points_per_query = 12;
        cfg
    };
    let (a, _) = analyzer(parted(proxy.url.clone()), Named("adaptive"));
    // The same reads without a proxy, for comparison.
    let (b, _) = analyzer(parted(prom.url()), Named("adaptive"));
    let (now1, now2) = (t0, t0 + 1800);
    // batch's range reads of the last 6 hours outlast the timeout.
    let cut = now1 - 6 * H;
    proxy.set(move |r| {
        if r.range && in_batch(r) && r.start.is_some_and(|s| s >= cut) {
            Fate::Hold(TIMEOUT + Duration::from_secs(1))
        } else {
            Fate::Pass
        }
    });
    let r1 = a
        .cycle(now1)
        .await
        .expect("a failed range part does not fail the cycle");
    b.cycle(now1).await.unwrap();
    assert_eq!(r1.failed_parts, 1, "{r1:?}");
    assert_eq!(r1.stale, 0, "instant reads all answered: {r1:?}");
    assert!(
        a.intervals_fed() < b.intervals_fed(),
        "batch's last hours are missing"
    );

    proxy.set(|_| Fate::Pass);
    let r2 = a.cycle(now2).await.unwrap();
    b.cycle(now2).await.unwrap();
    assert_eq!(r2.failed_parts, 0, "{r2:?}");
    // Every 5-minute interval from the long window's start to now2, for both
    // containers, fed exactly once (shop's were re-read, not fed again).
    let first = (now1 - LONG) - (now1 - LONG) % W + W;
    let last = now2 - now2 % W;
    let per_container = (last - first) / W + 1;
    assert_eq!(a.intervals_fed(), 2 * per_container);
    assert_eq!(b.intervals_fed(), 2 * per_container);
    // shop's strategy saw the same history at the same times as without the proxy.
    assert_eq!(memory(&get(&a, SHOP, now2)), memory(&get(&b, SHOP, now2)));
}
