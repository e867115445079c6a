//! The analyzer runs the policy's strategy on Prometheus history, and
//! `rightsizer replay --prometheus` replays that same history. Expected values come
//! from feeding the strategy with 5-minute intervals this test computes itself from
//! the generated samples, and from `replay --trace` on a CSV of those samples.

use crate::prometheus;
use crate::scenario;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use rightsizer::analyzer::policies::PolicyLookup;
use rightsizer::analyzer::prom::PromConfig;
use rightsizer::analyzer::{Analyzer, AnalyzerConfig};
use rightsizer_core::analysis::queries::QueryConfig;
use rightsizer_core::recommendation::ContainerKey;
use rightsizer_core::rules::{Rules, Sizes};
use rightsizer_core::strategy::{self, Interval, MemorySizes};
use rightsizer_core::workload::WorkloadKey;

use prometheus::TestProm;
use scenario::{Cluster, PodSeries, PodSpec};

const H: u64 = 3600;
const W: u64 = 300;
const LONG: u64 = 24 * H;

fn t0() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = now - 3 * H;
    t - t % 60
}

/// A policy naming a strategy for every workload.
struct Named(&'static str);

impl PolicyLookup for Named {
    fn rules(&self, _w: &WorkloadKey) -> Rules {
        Rules::default()
    }
    fn recommender(&self, _w: &WorkloadKey) -> String {
        self.0.to_string()
    }
}

/// Deployment `web`: an old ReplicaSet until `switch`, then two overlapping pods of
/// the new one; `ws`/`rss` in MiB as functions of time.
fn deployment(
    c: &mut Cluster,
    start: u64,
    switch: u64,
    end: u64,
    pods: &[(&str, &str, u64, u64, f64)],
    ws: fn(u64, f64) -> f64,
    rss: fn(u64, f64) -> f64,
) {
    for (rs, from, to) in [("web-a", start, switch), ("web-b", switch, end)] {
        c.owner(
            "kube_replicaset_owner",
            "shop",
            "replicaset",
            rs,
            "Deployment",
            "web",
            from,
            to,
        );
    }
    for &(pod, rs, from, to, base) in pods {
        let spec = PodSpec {
            ns: "shop",
            pod,
            owner_kind: "ReplicaSet",
            owner_name: rs,
            from,
            to,
        };
        c.pod(&spec, "shop/Deployment/web").container(
            "app",
            move |t| ws(t, base),
            move |t| rss(t, base),
            (None, None),
            None,
        );
    }
}

/// The test's own 5-minute aggregates of one workload container, intervals starting
/// in `[from, to)`: peak and mean are the larger of working set and RSS per pod; pods
/// are folded with the max of peaks, the sample-weighted mean and summed counts.
fn my_intervals(pods: &[PodSeries], from: u64, to: u64) -> Vec<Interval> {
    // bucket -> (max, weighted sum, samples)
    let mut b: BTreeMap<u64, (f64, f64, u32)> = BTreeMap::new();
    for p in pods {
        let mut per: BTreeMap<u64, (f64, f64, f64, f64, u32)> = BTreeMap::new();
        for ((t, ws), (_, rss)) in p.ws.iter().zip(&p.rss) {
            let k = t - t % W;
            if k < from || k >= to {
                continue;
            }
            let e = per.entry(k).or_insert((0.0, 0.0, 0.0, 0.0, 0));
            e.0 = e.0.max(*ws);
            e.1 = e.1.max(*rss);
            e.2 += ws;
            e.3 += rss;
            e.4 += 1;
        }
        for (k, (mw, mr, sw, sr, n)) in per {
            let avg = (sw / n as f64).max(sr / n as f64);
            let e = b.entry(k).or_insert((0.0, 0.0, 0));
            e.0 = e.0.max(mw.max(mr));
            e.1 += avg * n as f64;
            e.2 += n;
        }
    }
    b.into_iter()
        .map(|(k, (max, sum, n))| Interval {
            start: k as i64,
            seconds: W as u32,
            max,
            avg: sum / n as f64,
            samples: n,
        })
        .collect()
}

fn config(url: String) -> AnalyzerConfig {
    let mut p = PromConfig::new(url);
    p.retries = 0;
    p.timeout = Duration::from_secs(10);
    let mut cfg = AnalyzerConfig::new(p);
    cfg.queries = QueryConfig {
        short_window_secs: 900,
        long_window_secs: LONG,
        ..QueryConfig::default()
    };
    cfg
}

/// Bursty per minute, RSS above the working set now and then, two overlapping pods.
fn ws_bursty(t: u64, base: f64) -> f64 {
    base + ((t / 60) % 7) as f64 * 9.0 + if (t / 60) % 97 == 3 { 300.0 } else { 0.0 }
}
fn rss_spiky(t: u64, base: f64) -> f64 {
    if (t / 60) % 41 == 5 {
        base * 3.0
    } else {
        base * 0.5
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyzer_runs_the_policy_strategy_on_prometheus_intervals() {
    let t0 = t0();
    let (start, switch, end) = (t0 - 2 * 24 * H, t0 - 12 * H, t0 + 2 * H);
    let mut c = Cluster::new(t0);
    deployment(
        &mut c,
        start,
        switch,
        end,
        &[
            ("web-a-1", "web-a", start, switch, 200.0),
            ("web-b-1", "web-b", switch, end, 260.0),
            ("web-b-2", "web-b", switch + H, end, 230.0),
        ],
        ws_bursty,
        rss_spiky,
    );
    let prom = TestProm::start_with(&c.om);
    let mut reg = Registry::default();
    let a = Analyzer::new(config(prom.url()), Arc::new(Named("adaptive")), &mut reg).unwrap();
    let key = ContainerKey::parse("shop/Deployment/web/app").unwrap();
    let pods = &c.containers["shop/Deployment/web/app"];

    // Two cycles: the first reads the long window, the second only what is new.
    let (now1, now2) = (t0 - H - 120, t0 + H + 60);
    let r1 = a.cycle(now1).await.unwrap();
    let got1 = a.cache().get_at(&key, now1).unwrap();
    let r2 = a.cycle(now2).await.unwrap();
    let got2 = a.cache().get_at(&key, now2).unwrap();

    // Expected: one fresh strategy fed the whole series once, in order.
    let first = (now1 - LONG) - (now1 - LONG) % W;
    let cut1 = now1 - now1 % W;
    let cut2 = now2 - now2 % W;
    let spec = strategy::by_name("adaptive").unwrap();
    let mut s = spec.make();
    let ivs1 = my_intervals(pods, first, cut1);
    let ivs2 = my_intervals(pods, cut1, cut2);
    assert!(
        ivs1.len() > 200 && ivs2.len() > 20,
        "{} {}",
        ivs1.len(),
        ivs2.len()
    );
    ivs1.iter().for_each(|iv| s.observe(iv));
    let mut own: Option<MemorySizes> = None;
    if let Some(d) = s.recommend(now1 as i64, own) {
        own = Some(d);
    }
    let want1 = own.expect("adaptive answers after 22h of history");
    ivs2.iter().for_each(|iv| s.observe(iv));
    if let Some(d) = s.recommend(now2 as i64, own) {
        own = Some(d);
    }
    let want2 = own.unwrap();

    // Every interval fed exactly once (one container runs a strategy).
    assert_eq!(a.intervals_fed(), (ivs1.len() + ivs2.len()) as u64);
    let mem = |r: &rightsizer_core::recommendation::ContainerRecommendation| {
        r.memory.as_ref().and_then(|m| m.recommended)
    };
    assert_eq!(mem(&got1), Some(Sizes::from(want1)), "first cycle");
    assert_eq!(mem(&got2), Some(Sizes::from(want2)), "second cycle");

    // Queries: the seed cycle's fixed set plus three range queries, both cycles.
    assert_eq!(r1.queries, r2.queries);
    let mut reg2 = Registry::default();
    let b = Analyzer::new(
        config(prom.url()),
        Arc::new(rightsizer::analyzer::policies::DefaultPolicy::default()),
        &mut reg2,
    )
    .unwrap();
    let rs = b.cycle(now1).await.unwrap();
    assert_eq!(
        r1.queries,
        rs.queries + 3,
        "seed-only cycles run no range query"
    );
    let seed_mem = b.cache().get_at(&key, now1).and_then(|r| r.memory);
    assert_ne!(
        seed_mem.and_then(|m| m.recommended),
        mem(&got1),
        "seed and adaptive differ here"
    );
    eprintln!(
        "queries per cycle: seed {} / with a strategy {}",
        rs.queries, r1.queries
    );
}

/// Constant inside each 5-minute interval, pods one after the other.
fn ws_steps(t: u64, base: f64) -> f64 {
    base + ((t / W) % 11) as f64 * 13.0 + if (t / W) % 101 == 4 { 250.0 } else { 0.0 }
}
fn rss_low(t: u64, base: f64) -> f64 {
    ws_steps(t, base) * 0.6
}

fn rightsizer(args: &[&str]) -> String {
    let out = Command::new(crate::exe::rightsizer())
        .args(args)
        .env_remove("RIGHTSIZER_PROMETHEUS_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// With usage constant inside every 5-minute interval and one pod at a time, the
/// intervals carry all there is to know, so `replay --prometheus` equals
/// `replay --trace` on the raw samples, row for row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_prometheus_equals_replay_trace() {
    let t0 = t0();
    let t0 = t0 - t0 % W;
    // Synthesized samples sit at the interval's start, raw ones 30s later: keep the
    // warm-up's end off a step boundary so both score the same steps.
    let t0 = if t0 % (6 * H) == 0 { t0 - W } else { t0 };
    let (start, switch, end) = (t0 - 3 * 24 * H, t0 - 30 * H, t0 + 2 * H);
    let mut c = Cluster::new(t0);
    deployment(
        &mut c,
        start,
        switch,
        end,
        &[
            ("web-a-1", "web-a", start, switch, 300.0),
            ("web-b-1", "web-b", switch, end, 350.0),
        ],
        ws_steps,
        rss_low,
    );
    let prom = TestProm::start_with(&c.om);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("trace.csv");
    let mut text = String::from("series_id,timestamp_s,memory_bytes\n");
    for (id, pods) in &c.containers {
        let mut rows: Vec<(u64, f64)> = pods
            .iter()
            .flat_map(|p| {
                p.ws.iter()
                    .zip(&p.rss)
                    .map(|((t, w), (_, r))| (*t, w.max(*r)))
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        for (t, v) in rows {
            text.push_str(&format!("{id},{t},{v}\n"));
        }
    }
    std::fs::write(&csv, text).unwrap();
    let common = [
        "--step",
        "6h",
        "--warmup",
        "12h",
        "-o",
        "json",
        "--threads",
        "1",
    ];
    let mut a = vec!["replay", "--trace", csv.to_str().unwrap()];
    a.extend(common);
    let from_trace = rightsizer(&a);
    let url = prom.url();
    let end_s = end.to_string();
    let mut b = vec![
        "replay",
        "--prometheus",
        &url,
        "--window",
        "14d",
        "--end",
        &end_s,
    ];
    b.extend(common);
    let from_prom = rightsizer(&b);
    let (x, y): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&from_trace).unwrap(),
        serde_json::from_str(&from_prom).unwrap(),
    );
    assert_eq!(x["series"], 1);
    assert!(x["rows"].as_array().unwrap().len() > 3);
    assert_eq!(x, y, "trace:\n{from_trace}\nprometheus:\n{from_prom}");
}

/// A policy naming a strategy, with memory bounds below what the workload uses.
struct Bounded(&'static str);

const REQUEST_MAX: u64 = 128 << 20;
const LIMIT_MAX: u64 = 256 << 20;

impl PolicyLookup for Bounded {
    fn rules(&self, _w: &WorkloadKey) -> Rules {
        let mut r = Rules::default();
        r.memory.request.max = rightsizer_core::quantity::Bytes(REQUEST_MAX);
        if let Some(l) = r.memory.limit.as_mut() {
            l.max = rightsizer_core::quantity::Bytes(LIMIT_MAX);
        }
        r
    }
    fn recommender(&self, _w: &WorkloadKey) -> String {
        self.0.to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_is_held_to_the_policy_bounds() {
    let t0 = t0();
    let (start, switch, end) = (t0 - 2 * 24 * H, t0 - 12 * H, t0 + 2 * H);
    let mut c = Cluster::new(t0);
    deployment(
        &mut c,
        start,
        switch,
        end,
        &[
            ("web-a-1", "web-a", start, switch, 200.0),
            ("web-b-1", "web-b", switch, end, 260.0),
        ],
        ws_bursty,
        rss_spiky,
    );
    let prom = TestProm::start_with(&c.om);
    let key = ContainerKey::parse("shop/Deployment/web/app").unwrap();
    let now = t0 - H - 120;
    for name in strategy::names() {
        let mut reg = Registry::default();
        let a = Analyzer::new(config(prom.url()), Arc::new(Bounded(name)), &mut reg).unwrap();
        a.cycle(now).await.unwrap();
        let mem = a.cache().get_at(&key, now).and_then(|r| r.memory);
        let mem = mem.unwrap_or_else(|| panic!("{name}: no memory recommendation"));
        let s = mem
            .recommended
            .unwrap_or_else(|| panic!("{name}: nothing recommended"));
        // Usage is 200-800 MiB: both bounds bind, whichever strategy decided.
        assert_eq!(s.request, Some(REQUEST_MAX), "{name}");
        assert_eq!(s.limit, Some(LIMIT_MAX), "{name}");
        if name != "seed" {
            // The seed arithmetic clamps inside `Rules`; strategies are clamped after.
            assert!(
                mem.reasons.iter().any(|r| r == strategy::REASON_CLAMPED),
                "{name}: {:?}",
                mem.reasons
            );
        }
    }
}
