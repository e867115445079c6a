//! Analyzer scale benchmark: for each N, generate N containers of history in a real
//! Prometheus and run `rightsizer recommend` against it, printing queries per cycle,
//! cycle time, series read and the analyzer's peak RSS (from `/usr/bin/time -f %M`).
//!
//!     cargo bench -p rightsizer --bench analyzer_scale            # N = 1000, 10000
//!     cargo bench -p rightsizer --bench analyzer_scale -- 500 2000
//!
//! Shape: namespaces of 10 Deployments × 5 pods × 2 containers (100 containers each),
//! 8 hours of history every 2 minutes; the long window is 6h so the evidence gate passes.

#[path = "../support/prometheus.rs"]
mod prometheus;

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::process::Command;

const STEP: u64 = 120;
const HISTORY: u64 = 8 * 3600;
const MI: f64 = 1048576.0;

fn write_history(path: &std::path::Path, n: usize, t0: u64) -> std::io::Result<u64> {
    let f = std::fs::File::create(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let namespaces = n.div_ceil(100);
    let times: Vec<u64> = (0..)
        .map(|k| t0 - HISTORY + 30 + k * STEP)
        .take_while(|t| *t <= t0)
        .collect();
    let mut samples = 0u64;
    // (namespace, deployment, pod index, container) for every container.
    let containers = || {
        (0..n).map(|i| {
            let ns = i / 100;
            let d = (i % 100) / 10;
            let pod = (i % 10) / 2;
            let c = i % 2;
            (ns, d, pod, c, i)
        })
    };
    let mut line = String::with_capacity(256);
    for (metric, kind) in [
        ("container_memory_working_set_bytes", 0),
        ("container_memory_rss", 1),
        ("container_cpu_usage_seconds_total", 2),
    ] {
        writeln!(w, "# TYPE {metric} gauge")?;
        for (ns, d, pod, c, i) in containers() {
            for (k, t) in times.iter().enumerate() {
                let base = 100.0 + (i % 37) as f64 * 10.0;
                let v = match kind {
                    0 => (base + ((k * 7 + i) % 13) as f64 * 3.0) * MI,
                    1 => (base * 0.8) * MI,
                    _ => 1.0e5 + (k as f64) * STEP as f64 * (0.05 + (i % 5) as f64 * 0.02),
                };
                line.clear();
                let _ = write!(
                    line,
                    "{metric}{{namespace=\"ns-{ns:03}\",pod=\"app-{d}-rs-{pod}\",container=\"c{c}\"}} {v} {t}"
                );
                writeln!(w, "{line}")?;
                samples += 1;
            }
        }
    }
    let ksm_times: Vec<u64> = times.iter().copied().step_by(2).collect();
    writeln!(w, "# TYPE kube_pod_owner gauge")?;
    for (ns, d, pod, c, _) in containers() {
        if c == 0 {
            for t in &ksm_times {
                writeln!(w, "kube_pod_owner{{namespace=\"ns-{ns:03}\",pod=\"app-{d}-rs-{pod}\",owner_kind=\"ReplicaSet\",owner_name=\"app-{d}-rs\"}} 1 {t}")?;
                samples += 1;
            }
        }
    }
    writeln!(w, "# TYPE kube_replicaset_owner gauge")?;
    for ns in 0..namespaces {
        for d in 0..10 {
            for t in &ksm_times {
                writeln!(w, "kube_replicaset_owner{{namespace=\"ns-{ns:03}\",replicaset=\"app-{d}-rs\",owner_kind=\"Deployment\",owner_name=\"app-{d}\"}} 1 {t}")?;
                samples += 1;
            }
        }
    }
    for metric in [
        "kube_pod_container_resource_requests",
        "kube_pod_container_resource_limits",
    ] {
        writeln!(w, "# TYPE {metric} gauge")?;
        for (ns, d, pod, c, _) in containers() {
            for t in &ksm_times {
                writeln!(w, "{metric}{{namespace=\"ns-{ns:03}\",pod=\"app-{d}-rs-{pod}\",container=\"c{c}\",resource=\"memory\",unit=\"byte\"}} 536870912 {t}")?;
                samples += 1;
            }
        }
    }
    writeln!(w, "# EOF")?;
    w.flush()?;
    Ok(samples)
}

struct Figures {
    summary: String,
    rss_kb: Option<u64>,
}

fn run_recommend(url: &str, at: u64) -> Figures {
    let bin = env!("CARGO_BIN_EXE_rightsizer");
    let have_time = std::path::Path::new("/usr/bin/time").exists();
    let mut cmd = if have_time {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "maxrss_kb=%M", bin]);
        c
    } else {
        Command::new(bin)
    };
    cmd.args([
        "recommend",
        "--prometheus",
        url,
        "--at",
        &at.to_string(),
        "--long-window",
        "6h",
        "-o",
        "json",
    ]);
    let out = cmd.output().expect("run rightsizer recommend");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "recommend failed: {err}");
    let summary = err
        .lines()
        .find(|l| l.starts_with("rightsizer recommend:"))
        .unwrap_or("")
        .trim_start_matches("rightsizer recommend: ")
        .to_string();
    let rss_kb = err
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kb="))
        .and_then(|v| v.trim().parse().ok());
    Figures { summary, rss_kb }
}

/// Time each query of a cycle on its own, to show where Prometheus spends the cycle.
fn slowest_queries(url: &str, at: u64) -> String {
    use rightsizer::analyzer::prom::{PromClient, PromConfig};
    use rightsizer_core::analysis::queries::{Builder, QueryConfig};
    let cfg = QueryConfig {
        long_window_secs: 6 * 3600,
        ..QueryConfig::default()
    };
    let b = Builder::new(&cfg, None);
    let mut list = b.global();
    list.extend(b.scoped());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = PromClient::new(PromConfig::new(url)).expect("client");
    let mut times: Vec<(f64, String)> = rt.block_on(async {
        let mut out = Vec::new();
        for (k, q) in list {
            let t = std::time::Instant::now();
            let _ = client.query(&q, at).await;
            out.push((t.elapsed().as_secs_f64(), format!("{k:?}")));
        }
        out
    });
    times.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = times.iter().map(|t| t.0).sum();
    let top: Vec<String> = times
        .iter()
        .take(4)
        .map(|(t, k)| format!("{k} {t:.1}s"))
        .collect();
    format!("sequential total {total:.1}s; slowest: {}", top.join(", "))
}

/// The three interval range queries a strategy needs: the first read (the whole 6h
/// window) and a steady-state read (the last 5 minutes), timed.
fn range_reads(url: &str, at: u64) -> String {
    use rightsizer::analyzer::history::{self, IntervalAnswers};
    use rightsizer::analyzer::prom::{PromClient, PromConfig};
    use rightsizer_core::analysis::queries::{Builder, QueryConfig};
    let cfg = QueryConfig::default();
    let b = Builder::new(&cfg, None);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = PromClient::new(PromConfig::new(url)).expect("client");
    let last = at - at % 300;
    let mut out = Vec::new();
    for (what, first) in [("first read 6h", last - 6 * 3600 + 300), ("next 5m", last)] {
        let t = std::time::Instant::now();
        let mut ans = IntervalAnswers::default();
        let series = rt
            .block_on(history::read_intervals(
                &client,
                &b,
                first,
                last,
                history::WIDTH,
                &mut ans,
            ))
            .expect("range queries");
        out.push(format!(
            "{what}: 3 queries, {series} series, {:.2}s",
            t.elapsed().as_secs_f64()
        ));
    }
    format!("strategy intervals: {}", out.join("; "))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut ns: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs this too: a quick smoke run only.
        ns = vec![100];
    } else if ns.is_empty() {
        ns = vec![1000, 10000];
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let t0 = now - 3600 - now % 60;
    println!(
        "{:>8}  {:>9}  {:<64}  {:>14}",
        "N", "samples", "cycle (queries, series read, workload containers, time)", "analyzer RSS"
    );
    for n in ns {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("history.om");
        let samples = write_history(&file, n, t0).expect("write history");
        let prom = prometheus::TestProm::start_with_file(dir, &file);
        // First run warms Prometheus' page cache; report the second.
        let _ = run_recommend(&prom.url(), t0);
        let f = run_recommend(&prom.url(), t0);
        let rss = f
            .rss_kb
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into());
        println!("{n:>8}  {samples:>9}  {:<64}  {rss:>14}", f.summary);
        println!("          {}", slowest_queries(&prom.url(), t0));
        println!("          {}", range_reads(&prom.url(), t0));
    }
}
