//! `rightsizer replay`: backtest recommenders on a usage trace.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rightsizer::replay_runner::{self, Config};
use rightsizer_core::replay::report::{self, Report};
use rightsizer_core::replay::split::{DaySplit, SeriesSplit};
use rightsizer_core::replay::trace;
use rightsizer_core::strategy::{self, Spec};

use rightsizer_core::duration::parse_seconds;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Csv,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Usage history: CSV `series_id,timestamp_s,memory_bytes[,memory_limit_bytes]`, plain or gzip.
    #[arg(long, required_unless_present_any = ["prometheus", "synthetic"])]
    trace: Option<PathBuf>,
    /// Replay a generated container-like trace instead: a shape (steady, daily, leak, step,
    /// batch) or `all` (every shape, `--count` series each).
    #[arg(long, value_name = "SHAPE|all", conflicts_with = "trace")]
    synthetic: Option<String>,
    /// With --synthetic: the generator's seed (same seed, same trace).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// With --synthetic: series per shape.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// With --synthetic: length of every series (whole days).
    #[arg(long, default_value = "30d", value_parser = parse_seconds)]
    length: u64,
    /// With --prometheus: how much history to replay (at most 14d).
    #[arg(long, default_value = "14d", value_parser = parse_seconds)]
    window: u64,
    /// With --prometheus: the end of the replayed history, unix seconds [default: now].
    #[arg(long)]
    end: Option<u64>,
    #[command(flatten)]
    prom: Box<super::recommend::PromArgs>,
    /// Comma-separated strategy names, or `all`.
    #[arg(long, default_value = "all")]
    strategies: String,
    /// Time between decisions (a duration: 1d, 12h, 90m, ...).
    #[arg(long, default_value = "1d", value_parser = parse_seconds)]
    step: u64,
    /// History each series has before its steps are scored.
    #[arg(long, default_value = "7d", value_parser = parse_seconds)]
    warmup: u64,
    /// Width of the usage aggregates the strategies see (the analyzer's query resolution).
    #[arg(long, default_value = "5m", value_parser = parse_seconds)]
    interval: u64,
    /// Samples a step needs to be scored [default: 200 per day of step].
    #[arg(long)]
    min_samples: Option<usize>,
    /// Worker threads [default: the number of CPUs].
    #[arg(long)]
    threads: Option<usize>,
    /// Replay only the series with odd or even numbers (tune on one, report on the other).
    #[arg(long, value_enum, default_value = "all")]
    series: SeriesArg,
    /// Score only the first or the second half of each series' scored days.
    #[arg(long, value_enum, default_value = "all")]
    days: DaysArg,
    /// Write every step's applied decision per strategy to FILE as CSV
    /// `series_id,step_start_s,strategy,request_bytes,limit_bytes`.
    #[arg(long, value_name = "FILE")]
    decisions_out: Option<PathBuf>,
    /// Experiments: set a parameter of the `adaptive` strategy, `NAME=VALUE` (durations in
    /// days); repeatable. The row is named `adaptive[NAME=VALUE,...]`.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, f64)>,
    /// Experiments: add one `adaptive` row per value, `NAME=V1,V2,...` (on top of --param).
    #[arg(long, value_name = "NAME=V1,V2,...")]
    sweep: Option<String>,
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeriesArg {
    All,
    Odd,
    Even,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DaysArg {
    All,
    FirstHalf,
    SecondHalf,
}

fn parse_param(s: &str) -> Result<(String, f64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    let v: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("invalid number in {s:?}"))?;
    Ok((k.trim().to_string(), v))
}

/// The strategies to replay: `--strategies`, with `adaptive` replaced by its tuned
/// form when `--param` is given, plus one row per `--sweep` value.
fn strategies(args: &Args) -> anyhow::Result<Vec<&'static Spec>> {
    let mut specs = select(&args.strategies)?;
    let leak = |s: Spec| -> &'static Spec { Box::leak(Box::new(s)) };
    if !args.params.is_empty() {
        let tuned = leak(strategy::tuned("adaptive", &args.params).map_err(anyhow::Error::msg)?);
        for s in specs.iter_mut().filter(|s| s.name == "adaptive") {
            *s = tuned;
        }
    }
    if let Some(sweep) = &args.sweep {
        let (name, values) = sweep
            .split_once('=')
            .context("--sweep expects NAME=V1,V2,...")?;
        for v in values.split(',') {
            let (k, v) = parse_param(&format!("{name}={v}")).map_err(anyhow::Error::msg)?;
            let mut ps = args.params.clone();
            ps.retain(|(n, _)| *n != k);
            ps.push((k, v));
            specs.push(leak(
                strategy::tuned("adaptive", &ps).map_err(anyhow::Error::msg)?,
            ));
        }
    }
    Ok(specs)
}

fn select(list: &str) -> anyhow::Result<Vec<&'static Spec>> {
    if list.trim() == "all" {
        return Ok(strategy::ALL.iter().collect());
    }
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|n| {
            strategy::by_name(n).with_context(|| {
                format!(
                    "unknown strategy {n:?}; known: {}",
                    strategy::names().collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

/// Counts the (compressed) bytes read, for the progress line.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let specs = strategies(&args)?;
    if specs.is_empty() {
        bail!("no strategy selected");
    }
    // `parse_seconds` keeps durations within i64.
    let mut cfg = Config::for_step(args.step as i64);
    cfg.warmup = args.warmup as i64;
    cfg.interval = u32::try_from(args.interval).context("--interval is too long")?;
    if let Some(m) = args.min_samples {
        cfg.min_samples = m;
    }
    if let Some(t) = args.threads {
        cfg.threads = t.max(1);
    }
    cfg.series = match args.series {
        SeriesArg::All => SeriesSplit::All,
        SeriesArg::Odd => SeriesSplit::Odd,
        SeriesArg::Even => SeriesSplit::Even,
    };
    cfg.days = match args.days {
        DaysArg::All => DaySplit::All,
        DaysArg::FirstHalf => DaySplit::FirstHalf,
        DaysArg::SecondHalf => DaySplit::SecondHalf,
    };
    cfg.record_decisions = args.decisions_out.is_some();
    if let Some(shape) = &args.synthetic {
        return run_synthetic(&args, shape, &specs, cfg);
    }
    let Some(trace) = args.trace.clone() else {
        return run_prometheus(&args, &specs, cfg).await;
    };
    let file = File::open(&trace).with_context(|| format!("opening {}", trace.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let read = Arc::new(AtomicU64::new(0));
    let reader = trace::open(Counting {
        inner: file,
        read: read.clone(),
    })?;
    let started = Instant::now();
    let show = std::io::stderr().is_terminal();
    let series_done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let ticker = show.then(|| {
        let (read, done, finished) = (read.clone(), series_done.clone(), finished.clone());
        std::thread::spawn(move || {
            while !finished.load(Ordering::Relaxed) {
                let r = read.load(Ordering::Relaxed);
                let pct = (100 * r).checked_div(size).unwrap_or(0).min(100);
                let bar = "#".repeat((pct / 5) as usize);
                eprint!(
                    "\rreplay [{bar:<20}] {pct:>3}%  {} series  {:.1}s ",
                    done.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            eprint!("\r{:60}\r", "");
        })
    });
    let progress = |n: u64| series_done.store(n, Ordering::Relaxed);
    let cfg2 = cfg;
    let result =
        tokio::task::block_in_place(|| replay_runner::run(reader, &specs, &cfg2, &progress));
    finished.store(true, Ordering::Relaxed);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    let report = result.with_context(|| format!("replaying {}", trace.display()))?;
    summary(&report, &specs, &cfg, started);
    write_decisions(&report, args.decisions_out.as_deref())?;
    print(&report, args.output)
}

fn write_decisions(report: &Report, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    report::write_decisions(&mut w, report)
        .and_then(|()| w.flush())
        .with_context(|| format!("writing {}", path.display()))
}

/// The same replay over a generated trace (`rightsizer_core::replay::synthetic`).
fn run_synthetic(
    args: &Args,
    shape: &str,
    specs: &[&'static Spec],
    cfg: Config,
) -> anyhow::Result<()> {
    use rightsizer_core::replay::synthetic::{generate, Shape};
    let shapes: Vec<Shape> = if shape == "all" {
        Shape::ALL.to_vec()
    } else {
        vec![Shape::by_name(shape).with_context(|| {
            let names: Vec<&str> = Shape::ALL.iter().map(|s| s.name()).collect();
            format!("unknown shape {shape:?}; known: {}, all", names.join(", "))
        })?]
    };
    let days = u32::try_from(args.length.max(86400) / 86400).context("--length is too long")?;
    let started = Instant::now();
    let series = generate(&shapes, args.seed, args.count, days).map(Ok);
    let report = tokio::task::block_in_place(|| replay_runner::run(series, specs, &cfg, &|_| {}))?;
    summary(&report, specs, &cfg, started);
    write_decisions(&report, args.decisions_out.as_deref())?;
    print(&report, args.output)
}

/// The same replay over a cluster's own history: the analyzer's interval queries and
/// pod-to-workload folding (`analyzer::history::load`), one series per workload container.
async fn run_prometheus(args: &Args, specs: &[&'static Spec], cfg: Config) -> anyhow::Result<()> {
    use rightsizer::analyzer::history;
    use rightsizer::analyzer::prom::PromClient;
    let acfg = args
        .prom
        .analyzer_config()?
        .context("give --trace FILE or --prometheus URL")?;
    anyhow::ensure!(
        i64::from(history::WIDTH) == i64::from(cfg.interval),
        "--interval must be {}s with --prometheus (the analyzer's resolution)",
        history::WIDTH
    );
    let client = PromClient::new(acfg.prometheus.clone())?;
    let end = args.end.unwrap_or_else(rightsizer::clock::unix_now);
    let started = Instant::now();
    eprintln!(
        "replay: reading {}s of history from Prometheus",
        args.window
    );
    let (series, queries) = history::load(&client, &acfg.queries, args.window, end).await?;
    eprintln!(
        "replay: {} containers from {queries} queries in {:.2}s",
        series.len(),
        started.elapsed().as_secs_f64()
    );
    let total = series.len();
    let iter = series
        .into_iter()
        .map(|(k, ivs)| Ok(replay_runner::from_intervals(k.to_string(), ivs)));
    let show = std::io::stderr().is_terminal();
    let progress = |n: u64| {
        if show && (n % 100 == 0 || n as usize == total) {
            eprint!("\rreplay {n}/{total} series ");
        }
    };
    let report = tokio::task::block_in_place(|| replay_runner::run(iter, specs, &cfg, &progress))?;
    if show {
        eprintln!();
    }
    summary(&report, specs, &cfg, started);
    write_decisions(&report, args.decisions_out.as_deref())?;
    print(&report, args.output)
}

fn summary(report: &Report, specs: &[&Spec], cfg: &Config, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "replayed {} series, {} samples, {} strategies in {:.2}s ({:.0} rows/s, {} threads); step {}s, interval {}s, warm-up {}s, min {} samples per step",
        report.series,
        report.samples,
        specs.len(),
        secs,
        report.samples as f64 / secs.max(1e-9),
        cfg.threads,
        cfg.step,
        cfg.interval,
        cfg.warmup,
        cfg.min_samples
    );
}

fn print(report: &Report, output: Output) -> anyhow::Result<()> {
    let text = match output {
        Output::Table => report::render_table(report),
        Output::Csv => report::render_csv(report),
        Output::Json => serde_json::to_string_pretty(report)? + "\n",
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}
