//! Backtesting strategies on a usage history.
//!
//! Protocol: each series is cut into steps (default one day, aligned to the epoch,
//! so UTC days). At the start of each step every strategy has seen the 5-minute
//! aggregates of everything before it and answers with the request and limit for
//! the step (or keeps what is applied). Until a strategy first answers, the
//! series' own size (the trace's `memory_limit_bytes`) is what is applied. Steps
//! after the warm-up with enough samples are scored against the usage inside them;
//! `as-provisioned` (the trace's own sizes as request = limit) is always scored too.
//!
//! Series are independent, so they are spread over threads; the reader streams.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use rightsizer_core::replay::report::{DecisionRow, Report};
use rightsizer_core::replay::score::{self, StrategyTotals};
use rightsizer_core::replay::split::{DaySplit, SeriesSplit};
use rightsizer_core::replay::trace::{Series, TraceError, TraceSample};

use rightsizer_core::strategy::{Interval, MemorySizes, Spec, Strategy};

/// The name of the row for the trace's own sizes.
pub const AS_PROVISIONED: &str = "as-provisioned";

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("invalid replay settings: {0}")]
    Config(String),
}

/// Replay settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Seconds between decisions; a multiple of `interval`.
    pub step: i64,
    /// Width of the aggregates the strategies see, seconds.
    pub interval: u32,
    /// Steps that start less than this after a series' first sample are not scored.
    pub warmup: i64,
    /// A step is scored only with at least this many samples.
    pub min_samples: usize,
    /// Worker threads (at least 1).
    pub threads: usize,
    /// Which series are replayed (a split for tuning on one half, reporting on the other).
    pub series: SeriesSplit,
    /// Which of each series' scored steps are scored.
    pub days: DaySplit,
    /// Keep every step's applied decision in [`Report::decisions`].
    pub record_decisions: bool,
}

impl Config {
    /// Defaults for a step: 5-minute aggregates, 7 days of warm-up, and at least
    /// 200 samples per day of step (the README's Autopilot-style filter).
    pub fn for_step(step: i64) -> Self {
        Config {
            step,
            interval: 300,
            warmup: 7 * 86400,
            min_samples: ((200 * step) / 86400).max(1) as usize,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            series: SeriesSplit::All,
            days: DaySplit::All,
            record_decisions: false,
        }
    }

    fn check(&self) -> Result<(), ReplayError> {
        let iv = i64::from(self.interval);
        if iv <= 0 || self.step <= 0 || self.step % iv != 0 {
            return Err(ReplayError::Config(format!(
                "step ({}s) must be a positive multiple of the interval ({}s)",
                self.step, self.interval
            )));
        }
        if self.warmup < 0 {
            return Err(ReplayError::Config("warm-up must not be negative".into()));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::for_step(86400)
    }
}

/// Aggregate raw samples (sorted by time) into intervals aligned to the epoch.
pub fn intervals(samples: &[TraceSample], width: u32) -> Vec<Interval> {
    let w = i64::from(width);
    let mut out: Vec<Interval> = Vec::with_capacity(samples.len());
    let mut sum = 0.0;
    for s in samples {
        let start = s.t.div_euclid(w) * w;
        match out.last_mut() {
            Some(iv) if iv.start == start => {
                iv.max = iv.max.max(s.memory);
                iv.samples += 1;
                sum += s.memory;
                iv.avg = sum / f64::from(iv.samples);
            }
            _ => {
                sum = s.memory;
                out.push(Interval {
                    start,
                    seconds: width,
                    max: s.memory,
                    avg: s.memory,
                    samples: 1,
                });
            }
        }
    }
    out
}

/// A series known only by its intervals (e.g. read from Prometheus): the strategies
/// see exactly `ivs`; for scoring, each interval stands for `samples` samples (at
/// least one), one at its peak and the others at the value that keeps its mean, so
/// the peak, the mean and the sample count per interval are those of the source.
/// When usage is constant inside every interval, these are the raw samples' values.
pub fn from_intervals(id: String, ivs: Vec<Interval>) -> Series {
    let mut samples = Vec::new();
    for iv in &ivs {
        let n = iv.samples.max(1);
        let rest = if n > 1 {
            ((f64::from(n) * iv.avg - iv.max) / f64::from(n - 1)).max(0.0)
        } else {
            iv.max
        };
        for k in 0..n {
            samples.push(TraceSample {
                t: iv.start + i64::from(k) * i64::from(iv.seconds) / i64::from(n),
                memory: if k == 0 { iv.max } else { rest },
                limit: None,
            });
        }
    }
    Series {
        id,
        samples,
        intervals: Some(ivs),
    }
}

/// Replay one series with fresh states of `specs`. The result has one [`StrategyTotals`] per
/// spec, then one for `as-provisioned`, and, when `cfg.record_decisions`, every
/// step's applied decision per spec.
pub fn replay_series(
    series: &Series,
    specs: &[&Spec],
    cfg: &Config,
) -> (Vec<StrategyTotals>, Vec<DecisionRow>) {
    let mut accs: Vec<StrategyTotals> = (0..=specs.len())
        .map(|_| StrategyTotals::default())
        .collect();
    let mut rows = Vec::new();
    let samples = &series.samples;
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return (accs, rows);
    };
    let built;
    let ivs = match &series.intervals {
        Some(v) => v.as_slice(),
        None => {
            built = intervals(samples, cfg.interval);
            built.as_slice()
        }
    };
    let mut states: Vec<Box<dyn Strategy>> = specs.iter().map(|s| s.make()).collect();
    let mut own: Vec<Option<MemorySizes>> = vec![None; specs.len()];
    let mut changes = vec![0u64; specs.len() + 1];
    let grid = |t: i64| t.div_euclid(cfg.step) * cfg.step;
    let first_scored = grid(first.t + cfg.warmup + cfg.step - 1);
    let (score_from, score_to) = cfg.days.range(first_scored, grid(last.t), cfg.step);
    let mut scored_days = 0.0;
    let (mut next_iv, mut next_sample) = (0usize, 0usize);
    let mut usage: Vec<f64> = Vec::new();
    let mut b = grid(first.t);
    while b <= last.t {
        let end = b + cfg.step;
        while next_iv < ivs.len() && ivs[next_iv].end() <= b {
            for st in states.iter_mut() {
                st.observe(&ivs[next_iv]);
            }
            next_iv += 1;
        }
        let in_step_from = next_sample;
        while next_sample < samples.len() && samples[next_sample].t < end {
            next_sample += 1;
        }
        let step_samples = &samples[in_step_from..next_sample];
        // The size the series itself ran with at the start of the step.
        let provisioned = samples[..in_step_from]
            .last()
            .or(step_samples.first())
            .and_then(|s| s.limit)
            .map(|l| MemorySizes {
                request: l as u64,
                limit: l as u64,
            });
        let scored_period = b >= score_from && b < score_to;
        if scored_period {
            scored_days += cfg.step as f64 / 86400.0;
        }
        let mut applied: Vec<Option<MemorySizes>> = Vec::with_capacity(specs.len());
        for (i, st) in states.iter_mut().enumerate() {
            let current = own[i].or(provisioned);
            if let Some(d) = st.recommend(b, current) {
                if scored_period && current.is_some_and(|c| c != d) {
                    changes[i] += 1;
                }
                own[i] = Some(d);
            }
            applied.push(own[i].or(provisioned));
            if cfg.record_decisions {
                rows.push(DecisionRow {
                    step_start: b,
                    strategy: specs[i].name,
                    decision: own[i].or(provisioned),
                });
            }
        }
        if scored_period {
            changes[specs.len()] += step_samples
                .windows(2)
                .filter(|w| w[0].limit != w[1].limit)
                .count() as u64;
        }
        if scored_period && step_samples.len() >= cfg.min_samples && !step_samples.is_empty() {
            usage.clear();
            usage.extend(step_samples.iter().map(|s| s.memory));
            usage.sort_by(f64::total_cmp);
            let p95 = score::quantile_sorted(&usage, 0.95);
            let days = cfg.step as f64 / 86400.0;
            for (acc, d) in accs.iter_mut().zip(&applied) {
                acc.add_step(step_samples, p95, *d, days);
            }
            if step_samples.iter().all(|s| s.limit.is_some()) {
                accs[specs.len()].add_provisioned_step(step_samples, p95, days);
            }
        }
        b = end;
    }
    if scored_days > 0.0 {
        for (acc, c) in accs.iter_mut().zip(&changes) {
            acc.change_rates.push(*c as f64 / scored_days);
        }
    }
    (accs, rows)
}

/// Replay every series of `trace` (e.g. a [`TraceReader`](rightsizer_core::replay::trace::TraceReader)) with `specs`; `progress`
/// is told how many series are done, from the worker threads.
pub fn run<I: IntoIterator<Item = Result<Series, TraceError>>>(
    trace: I,
    specs: &[&Spec],
    cfg: &Config,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Report, ReplayError> {
    cfg.check()?;
    let (tx, rx) = mpsc::sync_channel::<(usize, Series)>(64);
    // Only the workers hold the receiver: if they all die, sending fails instead
    // of blocking the reader forever.
    let rx = Arc::new(Mutex::new(rx));
    let done = AtomicU64::new(0);
    let samples = AtomicU64::new(0);
    let threads = cfg.threads.max(1);
    let (read_result, parts) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                let (done, samples) = (&done, &samples);
                scope.spawn(move || {
                    let mut mine: Vec<(usize, String, Vec<StrategyTotals>, Vec<DecisionRow>)> =
                        Vec::new();
                    loop {
                        // The lock is held only to take the next series.
                        let next = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => break,
                        };
                        let Ok((i, series)) = next else { break };
                        samples.fetch_add(series.samples.len() as u64, Ordering::Relaxed);
                        let (accs, rows) = replay_series(&series, specs, cfg);
                        mine.push((i, series.id, accs, rows));
                        progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                    }
                    mine
                })
            })
            .collect();
        drop(rx);
        let mut read_result = Ok(());
        for (i, series) in trace.into_iter().enumerate() {
            match series {
                Ok(s) if !cfg.series.keeps(&s.id, i) => {}
                Ok(s) => {
                    if tx.send((i, s)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    read_result = Err(e);
                    break;
                }
            }
        }
        drop(tx);
        let parts: Vec<_> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (read_result, parts)
    });
    read_result?;
    // Merge in trace order, so the floating-point sums do not depend on scheduling.
    let mut parts = parts;
    parts.sort_unstable_by_key(|p| p.0);
    let mut total: Vec<StrategyTotals> = (0..=specs.len())
        .map(|_| StrategyTotals::default())
        .collect();
    let mut decisions = Vec::new();
    for (_, id, part, rows) in parts {
        for (t, a) in total.iter_mut().zip(part) {
            t.merge(a);
        }
        if cfg.record_decisions {
            decisions.push((id, rows));
        }
    }
    let names = specs
        .iter()
        .map(|s| s.name)
        .chain(std::iter::once(AS_PROVISIONED));
    let rows = names.zip(total).map(|(n, a)| a.row(n)).collect();
    Ok(Report {
        series: done.load(Ordering::Relaxed),
        samples: samples.load(Ordering::Relaxed),
        step_seconds: cfg.step,
        warmup_seconds: cfg.warmup,
        min_samples: cfg.min_samples,
        rows,
        decisions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Panics;
    impl Strategy for Panics {
        fn observe(&mut self, _: &Interval) {
            panic!("strategy bug");
        }
        fn recommend(&mut self, _: i64, _: Option<MemorySizes>) -> Option<MemorySizes> {
            None
        }
    }
    static PANICS: Spec = Spec::new("panics", "test", || Box::new(Panics));

    #[test]
    fn a_panicking_strategy_fails_the_run_instead_of_hanging() {
        // More series than the channel holds, so the reader would block on a dead pool.
        let series = (0..500).map(|i| {
            Ok(Series {
                id: format!("s{i}"),
                samples: (0..10)
                    .map(|k| TraceSample {
                        t: k * 86400,
                        memory: 1.0,
                        limit: None,
                    })
                    .collect(),
                intervals: None,
            })
        });
        let r = std::panic::catch_unwind(|| run(series, &[&PANICS], &Config::default(), &|_| {}));
        assert!(r.is_err());
    }

    #[test]
    fn intervals_aggregate_by_epoch_buckets() {
        let s = |t, m| TraceSample {
            t,
            memory: m,
            limit: None,
        };
        let ivs = intervals(
            &[
                s(0, 1.0),
                s(100, 3.0),
                s(299, 2.0),
                s(300, 5.0),
                s(1000, 4.0),
            ],
            300,
        );
        assert_eq!(ivs.len(), 3);
        assert_eq!(
            (ivs[0].start, ivs[0].max, ivs[0].avg, ivs[0].samples),
            (0, 3.0, 2.0, 3)
        );
        assert_eq!((ivs[1].start, ivs[1].samples), (300, 1));
        assert_eq!(ivs[2].start, 900);
    }

    #[test]
    fn step_must_be_a_multiple_of_the_interval() {
        let cfg = Config::for_step(1000);
        let r = run(std::iter::empty(), &[], &cfg, &|_| {});
        assert!(matches!(r, Err(ReplayError::Config(_))));
    }
}
