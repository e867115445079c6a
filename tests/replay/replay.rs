//! `rightsizer replay` end to end: synthetic traces with answers worked out by hand,
//! gzip and plain input, malformed input, the binary, and a slice of a real trace.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use rightsizer::replay_runner::{self, Config, ReplayError, AS_PROVISIONED};
use rightsizer_core::replay::report::Report;
use rightsizer_core::replay::split::{DaySplit, SeriesSplit};
use rightsizer_core::replay::trace::{self, TraceError};
use rightsizer_core::strategy::{self, Spec};

const DAY: i64 = 86400;
const MI: f64 = 1048576.0;
const GI: f64 = 1073741824.0;
/// A UTC midnight, so steps are whole days of the synthetic series.
const T0: i64 = 19_000 * DAY;

/// CSV of one series sampled every 5 minutes for `days`, usage from `usage(t)`.
fn csv(id: &str, days: i64, limit: f64, usage: impl Fn(i64) -> f64) -> String {
    let mut s = String::from("series_id,timestamp_s,memory_bytes,memory_limit_bytes\n");
    for i in 0..days * 288 {
        let t = T0 + i * 300;
        s.push_str(&format!("{id},{t},{},{}\n", usage(t - T0), limit));
    }
    s
}

fn specs(names: &[&str]) -> Vec<&'static Spec> {
    names
        .iter()
        .map(|n| strategy::by_name(n).unwrap())
        .collect()
}

fn run_text(text: &str, names: &[&str]) -> Result<Report, ReplayError> {
    let reader = trace::TraceReader::new(text.as_bytes());
    replay_runner::run(reader, &specs(names), &Config::default(), &|_| {})
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn constant_usage_has_exact_slack() {
    let rep = run_text(&csv("c", 20, 4.0 * GI, |_| GI), &["krr-simple"]).unwrap();
    let krr = rep.row("krr-simple").unwrap();
    // Warm-up 7 days, then days 7..=19 are scored.
    assert_eq!(krr.series_steps, 13);
    // 1.15 × 1 GiB = 1177.6 MiB, rounded up to 1178 MiB.
    let v = 1178.0 * MI;
    assert!(close(krr.request_slack_mean, (v - GI) / v), "{krr:?}");
    assert!(close(krr.limit_slack_median, (v - GI) / v));
    assert_eq!(krr.oom_steps, 0);
    assert!(close(krr.request_gib_days, 13.0 * 1178.0 / 1024.0));
    // The one change (template size -> first answer) happened in the warm-up.
    assert_eq!(krr.changes_per_day_p99, 0.0);
    let prov = rep.row(AS_PROVISIONED).unwrap();
    assert!(close(prov.limit_slack_mean, 0.75));
    assert!(close(prov.limit_gib_days, 13.0 * 4.0));
}

#[test]
fn a_step_up_is_one_overrun_day() {
    // 1 GiB for 10 days and 6 hours, then 2 GiB.
    let text = csv("s", 20, 4.0 * GI, |dt| {
        if dt < 10 * DAY + 6 * 3600 {
            GI
        } else {
            2.0 * GI
        }
    });
    let rep = run_text(&text, &["krr-simple", "adaptive", "seed"]).unwrap();
    let krr = rep.row("krr-simple").unwrap();
    // Day 10 runs with 1178 MiB and 18 h × 12 samples above it; day 11 on, 2356 MiB.
    assert_eq!(krr.oom_steps, 1);
    assert!(close(
        krr.samples_over_limit_pct,
        100.0 * 216.0 / (13.0 * 288.0)
    ));
    assert!(close(krr.oom_steps_pct, 100.0 / 13.0));
    // One change in 13 scored days.
    assert!(close(krr.changes_per_day_p50, 1.0 / 13.0));
    // The trace's own 4 GiB never overran.
    assert_eq!(rep.row(AS_PROVISIONED).unwrap().oom_steps, 0);
    for r in &rep.rows {
        assert_eq!(r.series_steps, 13, "{}", r.strategy);
        // Everyone sees the jump only after it happened: at most one bad day.
        assert!(r.oom_steps <= 1, "{r:?}");
    }
}

fn write_plain_and_gzip(dir: &Path, text: &str) -> (PathBuf, PathBuf) {
    let plain = dir.join("t.csv");
    std::fs::write(&plain, text).unwrap();
    let gz = dir.join("t.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
    (plain, gz)
}

#[test]
fn gzip_and_plain_read_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = csv("a", 12, 3.0 * GI, |dt| {
        GI * (1.0 + (dt % 7000) as f64 / 7000.0)
    });
    let b = csv("b", 12, 2.0 * GI, |dt| {
        0.5 * GI + (dt % 3600) as f64 * 1000.0
    });
    text.push_str(b.split_once('\n').unwrap().1); // without its header
    let (plain, gz) = write_plain_and_gzip(dir.path(), &text);
    let read = |p: &Path| {
        trace::open(std::fs::File::open(p).unwrap())
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let (a, b) = (read(&plain), read(&gz));
    assert_eq!(a.len(), 2);
    assert_eq!(a[1].samples.len(), 12 * 288);
    assert_eq!(a, b);
    let all: Vec<&Spec> = strategy::ALL.iter().collect();
    let run = |p: &Path| {
        let r = trace::open(std::fs::File::open(p).unwrap()).unwrap();
        replay_runner::run(r, &all, &Config::default(), &|_| {}).unwrap()
    };
    let (ra, rb) = (run(&plain), run(&gz));
    assert_eq!(ra, rb);
    assert_eq!(ra.series, 2);
    assert_eq!(ra.rows.len(), strategy::ALL.len() + 1);
}

#[test]
fn malformed_line_is_reported_with_its_number() {
    let text = "series_id,timestamp_s,memory_bytes\nx,1,100\nx,301,lots\n";
    match run_text(text, &["vpa"]) {
        Err(ReplayError::Trace(TraceError::BadLine { line: 3, reason })) => {
            assert!(reason.contains("memory_bytes"), "{reason}")
        }
        other => panic!("expected a bad line 3, got {other:?}"),
    }
}

#[test]
fn the_binary_prints_json_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (_, gz) = write_plain_and_gzip(dir.path(), &csv("c", 20, 4.0 * GI, |_| GI));
    let out = Command::new(crate::exe::rightsizer())
        .args(["replay", "--trace"])
        .arg(&gz)
        .args(["--strategies", "krr-simple,adaptive", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["krr-simple", "adaptive", AS_PROVISIONED]);
    assert_eq!(v["rows"][0]["series_steps"], 13);

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "a,1,2\na,2\n").unwrap();
    let out = Command::new(crate::exe::rightsizer())
        .args(["replay", "--trace"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
    let out = Command::new(crate::exe::rightsizer())
        .args(["replay", "--strategies", "nope", "--trace"])
        .arg(&gz)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown strategy"));
}

/// The shared traces live beside the repository, never in it.
fn shared_trace(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/traces")
        .join(name);
    p.exists().then_some(p)
}

#[test]
#[cfg_attr(
    not(has_shared_traces),
    ignore = "the shared traces are not beside the repository (../shared/traces)"
)]
fn default_beats_krr_and_vpa_on_a_real_trace_slice() {
    let path = shared_trace("bitbrains_rnd_2013-07_all500.csv.gz")
        .expect("tests/build.rs found the shared trace bitbrains_rnd_2013-07_all500.csv.gz");
    let reader = trace::open(std::fs::File::open(path).unwrap())
        .unwrap()
        .take(20);
    let done = std::sync::atomic::AtomicU64::new(0);
    let rep = replay_runner::run(
        reader,
        &specs(&[strategy::DEFAULT, "krr-simple", "vpa"]),
        &Config::default(),
        &|_| {
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        },
    )
    .unwrap();
    assert_eq!(rep.series, 20);
    assert_eq!(done.into_inner(), 20);
    let d = rep.row(strategy::DEFAULT).unwrap();
    assert!(d.series_steps > 300, "{d:?}");
    for peer in ["krr-simple", "vpa"] {
        let p = rep.row(peer).unwrap();
        assert_eq!(d.series_steps, p.series_steps);
        assert!(d.oom_steps <= p.oom_steps, "OOM days: {d:?} vs {p:?}");
        assert!(
            d.request_slack_mean < p.request_slack_mean,
            "slack: {d:?} vs {p:?}"
        );
        assert!(
            d.changes_per_day_p99 <= p.changes_per_day_p99,
            "changes: {d:?} vs {p:?}"
        );
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut text = String::new();
    for k in 0..12 {
        let series = csv(&format!("v{k}"), 10, (k + 1) as f64 * GI, move |dt| {
            GI * (0.2 + 0.1 * k as f64) * (1.0 + ((dt / 300 + k) % 37) as f64 / 20.0)
        });
        text.push_str(if k == 0 {
            &series
        } else {
            series.split_once('\n').unwrap().1
        });
    }
    let all: Vec<&Spec> = strategy::ALL.iter().collect();
    let with = |threads| {
        let cfg = Config {
            threads,
            warmup: 2 * DAY,
            ..Config::default()
        };
        replay_runner::run(
            trace::TraceReader::new(text.as_bytes()),
            &all,
            &cfg,
            &|_| {},
        )
        .unwrap()
    };
    let one = with(1);
    assert_eq!(one.series, 12);
    assert!(one.rows.iter().all(|r| r.series_steps == 12 * 8));
    assert_eq!(one, with(3));
}

/// Quantile of sorted values, interpolating between ranks (the replay's definition).
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// A trace whose strategies change their minds: a level that doubles every 5 days,
/// with a spike on every third day, and a second series that falls.
fn changing_trace() -> String {
    let mut text = csv("up", 21, 8.0 * GI, |dt| {
        let level = GI * 2f64.powi((dt / (5 * DAY)) as i32);
        let spike = (dt / DAY) % 3 == 2 && (dt % DAY) / 300 == 100;
        level
            * if spike {
                1.6
            } else {
                1.0 + ((dt / 300) % 7) as f64 / 100.0
            }
    });
    let down = csv("down", 21, 8.0 * GI, |dt| {
        GI * (3.0 - (dt as f64 / (21 * DAY) as f64) * 2.5)
    });
    text.push_str(down.split_once('\n').unwrap().1);
    text
}

#[test]
fn decisions_out_rescores_to_the_reported_figures() {
    let dir = tempfile::tempdir().unwrap();
    let text = changing_trace();
    let (plain, _) = write_plain_and_gzip(dir.path(), &text);
    let out_csv = dir.path().join("decisions.csv");
    let names = ["adaptive", "krr-simple"];
    let out = Command::new(crate::exe::rightsizer())
        .args(["replay", "--trace"])
        .arg(&plain)
        .args([
            "--strategies",
            &names.join(","),
            "-o",
            "json",
            "--decisions-out",
        ])
        .arg(&out_csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // The file parses: one header, then series,step,strategy,request,limit.
    let dump = std::fs::read_to_string(&out_csv).unwrap();
    let mut lines = dump.lines();
    assert_eq!(
        lines.next(),
        Some("series_id,step_start_s,strategy,request_bytes,limit_bytes")
    );
    let mut rows: Vec<(String, i64, String, f64, f64)> = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 5, "{l}");
        rows.push((
            f[0].to_string(),
            f[1].parse().unwrap(),
            f[2].to_string(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
        ));
    }
    // One row per series, day and strategy: 2 series × 21 days × 2 strategies.
    assert_eq!(rows.len(), 2 * 21 * names.len());

    // Re-score from the dump and the raw trace alone.
    let series = trace::TraceReader::new(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    for (k, name) in names.iter().enumerate() {
        let (mut slack, mut ooms, mut rates) = (Vec::new(), 0u64, Vec::new());
        for s in &series {
            let mine: Vec<_> = rows
                .iter()
                .filter(|r| r.0 == s.id && r.2 == *name)
                .collect();
            let score_from = s.samples[0].t + 7 * DAY;
            let (mut changes, mut days) = (0, 0);
            for (i, r) in mine.iter().enumerate() {
                if r.1 < score_from {
                    continue;
                }
                days += 1;
                if i > 0 && (r.3, r.4) != (mine[i - 1].3, mine[i - 1].4) {
                    changes += 1;
                }
                let mut day: Vec<f64> = s
                    .samples
                    .iter()
                    .filter(|x| x.t >= r.1 && x.t < r.1 + DAY)
                    .map(|x| x.memory)
                    .collect();
                day.sort_by(f64::total_cmp);
                let p95 = quantile(&day, 0.95);
                slack.push((r.3 - p95.min(r.4)) / r.3);
                ooms += u64::from(day.iter().any(|m| *m > r.4));
            }
            rates.push(changes as f64 / days as f64);
        }
        slack.sort_by(f64::total_cmp);
        rates.sort_by(f64::total_cmp);
        let row = &report["rows"][k];
        assert_eq!(row["strategy"], *name);
        assert_eq!(row["series_steps"], slack.len() as u64, "{name}");
        assert_eq!(row["oom_steps"], ooms, "{name}");
        let mean = slack.iter().sum::<f64>() / slack.len() as f64;
        let near = |field: &str, v: f64| {
            let got = row[field].as_f64().unwrap();
            assert!((got - v).abs() < 1e-9, "{name} {field}: {got} vs {v}");
        };
        near("request_slack_mean", mean);
        near("request_slack_median", quantile(&slack, 0.5));
        near("changes_per_day_p99", quantile(&rates, 0.99));
    }
    // The trace makes both strategies work: overruns and changes to re-score.
    assert!(report["rows"][1]["oom_steps"].as_u64().unwrap() > 0);
    assert!(report["rows"][0]["changes_per_day_p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn splits_partition_the_scored_steps() {
    let mut text = String::new();
    for k in 1..=4 {
        let series = csv(&format!("vm-{k}"), 20, 4.0 * GI, move |dt| {
            GI * (0.5 + 0.1 * k as f64) * (1.0 + ((dt / 300) % 29) as f64 / 50.0)
        });
        text.push_str(if k == 1 {
            &series
        } else {
            series.split_once('\n').unwrap().1
        });
    }
    let with = |series, days| {
        let cfg = Config {
            series,
            days,
            ..Config::default()
        };
        let r = trace::TraceReader::new(text.as_bytes());
        replay_runner::run(r, &specs(&["krr-simple"]), &cfg, &|_| {}).unwrap()
    };
    let steps = |r: &Report| r.rows[0].series_steps;
    let all = with(SeriesSplit::All, DaySplit::All);
    // 4 series × days 7..=19.
    assert_eq!(steps(&all), 4 * 13);
    let (odd, even) = (
        with(SeriesSplit::Odd, DaySplit::All),
        with(SeriesSplit::Even, DaySplit::All),
    );
    assert_eq!((odd.series, even.series), (2, 2));
    assert_eq!(steps(&odd) + steps(&even), steps(&all));
    // 13 scored days: 6 in the first half, 7 in the second.
    let first = with(SeriesSplit::All, DaySplit::FirstHalf);
    let second = with(SeriesSplit::All, DaySplit::SecondHalf);
    assert_eq!((steps(&first), steps(&second)), (4 * 6, 4 * 7));
}

#[test]
fn synthetic_traces_are_seeded() {
    let run = |seed: &str| {
        let out = Command::new(crate::exe::rightsizer())
            .args([
                "replay",
                "--synthetic",
                "all",
                "--count",
                "2",
                "--length",
                "12d",
            ])
            .args(["--seed", seed, "--strategies", "adaptive", "-o", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let a = run("7");
    // 5 shapes × 2 series, days 7..=11 scored.
    assert_eq!(a["series"], 10);
    assert_eq!(a["rows"][0]["series_steps"], 10 * 5);
    assert_eq!(a, run("7"));
    assert_ne!(a["rows"][0], run("8")["rows"][0]);
    let bad = Command::new(crate::exe::rightsizer())
        .args(["replay", "--synthetic", "sawtooth"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown shape"));
}
