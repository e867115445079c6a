//! `rightsizer recommend`: one analyzer pass against Prometheus, printed.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;

use rightsizer::analyzer::policies::{DefaultPolicy, PoliciesLookup, PolicyLookup};
use rightsizer::analyzer::prom::PromConfig;
use rightsizer::analyzer::{Analyzer, AnalyzerConfig};
use rightsizer_core::analysis::entry::Entry;
use rightsizer_core::analysis::queries::QueryConfig;
use rightsizer_core::cluster::NoFacts;
use rightsizer_core::duration::parse_seconds;
use rightsizer_core::quantity::Resource;
use rightsizer_core::recommendation::ContainerKey;
use rightsizer_core::rules::Sizes;

/// How to reach Prometheus (shared with `serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct PromArgs {
    /// Prometheus-compatible base URL (Prometheus, Thanos Query, Mimir's /prometheus, VictoriaMetrics).
    #[arg(long, env = "RIGHTSIZER_PROMETHEUS_URL")]
    pub prometheus: Option<String>,
    /// File holding a bearer token.
    #[arg(long, value_name = "FILE")]
    pub prometheus_token_file: Option<PathBuf>,
    /// Basic auth user (password from --prometheus-password-file).
    #[arg(long, value_name = "USER", requires = "prometheus_password_file")]
    pub prometheus_user: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub prometheus_password_file: Option<PathBuf>,
    /// Extra CA bundle (PEM) to trust for an https Prometheus.
    #[arg(long, value_name = "FILE")]
    pub prometheus_ca: Option<PathBuf>,
    /// Tenant for Mimir/Cortex (sent as X-Scope-OrgID).
    #[arg(long, value_name = "ORG")]
    pub prometheus_tenant: Option<String>,
    /// Only series of one cluster, for a Prometheus that serves several: NAME=VALUE, e.g. cluster=prod-eu.
    #[arg(long, value_name = "NAME=VALUE")]
    pub cluster_label: Option<String>,
    /// Per-request timeout (a duration; a plain number is seconds).
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    pub prometheus_timeout: u64,
    /// Short window (e.g. 15m) and long window (e.g. 24h, up to 14d).
    #[arg(long, default_value = "15m", value_parser = parse_seconds)]
    pub short_window: u64,
    #[arg(long, default_value = "24h", value_parser = parse_seconds)]
    pub long_window: u64,
}

impl PromArgs {
    /// The analyzer configuration these flags describe (None without --prometheus).
    pub fn analyzer_config(&self) -> anyhow::Result<Option<AnalyzerConfig>> {
        let Some(url) = &self.prometheus else {
            return Ok(None);
        };
        let read = |p: &PathBuf| -> anyhow::Result<String> {
            Ok(std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim()
                .to_string())
        };
        let mut p = PromConfig::new(url.clone());
        p.timeout = Duration::from_secs(self.prometheus_timeout.max(1));
        // Read once now so a missing file fails at start; the client re-reads both files
        // whenever they change (rotated tokens).
        p.bearer_token = self.prometheus_token_file.as_ref().map(read).transpose()?;
        p.bearer_token_file = self.prometheus_token_file.clone();
        if let (Some(u), Some(f)) = (&self.prometheus_user, &self.prometheus_password_file) {
            p.basic_auth = Some((u.clone(), read(f)?));
            p.password_file = Some(f.clone());
        }
        p.ca_pem = self
            .prometheus_ca
            .as_ref()
            .map(|f| std::fs::read(f).with_context(|| format!("reading {}", f.display())))
            .transpose()?;
        p.tenant = self.prometheus_tenant.clone();
        let cluster_matcher = match &self.cluster_label {
            None => None,
            Some(s) => {
                let (k, v) = s
                    .split_once('=')
                    .filter(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
                    .with_context(|| format!("--cluster-label {s:?}: expected NAME=VALUE"))?;
                Some(format!(
                    "{k}=\"{}\"",
                    v.replace('\\', "\\\\").replace('"', "\\\"")
                ))
            }
        };
        anyhow::ensure!(
            self.long_window > self.short_window && self.long_window <= 14 * 86400,
            "--long-window must be longer than --short-window and at most 14d"
        );
        let mut cfg = AnalyzerConfig::new(p);
        cfg.queries = QueryConfig {
            short_window_secs: self.short_window,
            long_window_secs: self.long_window,
            cluster_matcher,
            namespace: None,
        };
        Ok(Some(cfg))
    }
}

/// One analyzer pass at `at` (default: now), for `recommend` and `report` (`who`): the
/// analyzer (its cache holds the recommendations) and the time it was evaluated at.
///
/// With `policies`, each workload's policy (selected on namespace, kind and name, as
/// `serve` without a cluster does) gives its rules and recommender, so the numbers are
/// the analyzer's; without, the seed rules everywhere (as `serve` without policies).
pub async fn one_cycle(
    who: &str,
    prom: &PromArgs,
    policies: &[PathBuf],
    namespace: Option<String>,
    at: Option<u64>,
) -> anyhow::Result<(Analyzer, u64)> {
    let mut cfg = prom
        .analyzer_config()?
        .context("--prometheus URL (or RIGHTSIZER_PROMETHEUS_URL) is required")?;
    cfg.queries.namespace = namespace;
    let mut reg = Registry::default();
    let lookup: Arc<dyn PolicyLookup> = if policies.is_empty() {
        Arc::new(DefaultPolicy::default())
    } else {
        Arc::new(PoliciesLookup {
            store: crate::commands::input::load_policies(policies)?,
            facts: Arc::new(NoFacts),
            own_namespace: None,
        })
    };
    let mut analyzer = Analyzer::new(cfg, lookup, &mut reg)?;
    let tty = std::io::stderr().is_terminal();
    analyzer.set_progress(move |done, total| {
        if tty {
            eprint!("\rquerying Prometheus: {done}/{total}   ");
        }
    });
    let now = at.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let report = analyzer.cycle(now).await.context("querying Prometheus")?;
    if tty {
        eprint!("\r");
    }
    eprintln!(
        "rightsizer {who}: {} queries, {} series, {} containers in {:.1}s",
        report.queries,
        report.series_read,
        report.containers,
        report.duration.as_secs_f64()
    );
    Ok((analyzer, now))
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
    Csv,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub prom: Box<PromArgs>,
    /// Only this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
    /// Evaluate at this unix time instead of now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub at: Option<u64>,
    /// Folder(s) of policy ConfigMap manifests: each workload's policy (selected on
    /// namespace, kind and name, as `serve` without a cluster does) gives its rules and
    /// recommender (default `adaptive`), so the numbers are the analyzer's. Without
    /// policies, the seed rules everywhere (as `serve` without policies).
    #[arg(long)]
    pub policies: Vec<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (analyzer, now) = one_cycle(
        "recommend",
        &args.prom,
        &args.policies,
        args.namespace.clone(),
        args.at,
    )
    .await?;
    let cache = analyzer.cache();
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &cache.snapshot_at(now))?;
            writeln!(out)?;
        }
        Output::Yaml => serde_norway::to_writer(&mut out, &cache.snapshot_at(now))?,
        Output::Table | Output::Csv => {
            let mut entries = cache.entries();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let rows: Vec<[String; 11]> = entries.iter().flat_map(|(k, e)| rows(k, e)).collect();
            if matches!(args.output, Output::Csv) {
                write_csv(&mut out, &rows)?;
            } else {
                write_table(&mut out, &rows)?;
            }
        }
    }
    Ok(())
}

const HEADER: [&str; 11] = [
    "NAMESPACE",
    "WORKLOAD",
    "CONTAINER",
    "RESOURCE",
    "CURRENT",
    "AVG",
    "P95",
    "MAX",
    "RECOMMENDED",
    "CHANGE",
    "REASON",
];

fn pair(r: Resource, s: &Sizes) -> String {
    let f = |v: Option<u64>| v.map(|x| r.format(x)).unwrap_or_else(|| "-".into());
    format!("{}/{}", f(s.request), f(s.limit))
}

fn change(r: Resource, cur: Option<u64>, new: Option<u64>) -> String {
    match (cur, new) {
        (Some(c), Some(n)) if c == n => "=".into(),
        (Some(c), Some(n)) => {
            let sign = if n > c { "+" } else { "-" };
            let pct = if c > 0 {
                format!(" ({sign}{:.0}%)", (n.abs_diff(c) as f64 / c as f64) * 100.0)
            } else {
                String::new()
            };
            format!("{sign}{}{pct}", r.format(n.abs_diff(c)))
        }
        (None, Some(n)) => format!("set {}", r.format(n)),
        _ => "-".into(),
    }
}

fn rows(k: &ContainerKey, e: &Entry) -> Vec<[String; 11]> {
    let mut out = Vec::new();
    for r in Resource::ALL {
        let Some(rec) = e.rec.resource(r) else {
            continue;
        };
        let cur = match r {
            Resource::Memory => e.current_memory,
            Resource::Cpu => e.current_cpu,
        };
        let fmt = |v: f64| r.format(v.max(0.0).ceil() as u64);
        let (avg, p95, max) = rec
            .observed
            .map(|o| (fmt(o.avg), fmt(o.p95), fmt(o.max)))
            .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
        let recd = rec.recommended.unwrap_or_default();
        let mut reasons = rec.reasons.clone();
        if r == Resource::Memory {
            if let Some(kn) = &e.rec.knative {
                reasons.extend(kn.target.map(|t| format!("knative target {t}")));
                reasons.extend(
                    kn.container_concurrency
                        .map(|c| format!("knative containerConcurrency {c}")),
                );
            }
        }
        if e.rec.stale {
            reasons.push("stale".into());
        }
        out.push([
            k.workload.namespace.clone(),
            format!("{}/{}", k.workload.kind, k.workload.name),
            k.container.clone(),
            r.as_str().to_string(),
            pair(r, &cur),
            avg,
            p95,
            max,
            if rec.recommended.is_some() {
                pair(r, &recd)
            } else {
                "-".into()
            },
            change(r, cur.request, recd.request),
            reasons.join(", "),
        ]);
    }
    out
}

fn write_table(out: &mut impl Write, rows: &[[String; 11]]) -> std::io::Result<()> {
    let mut w: Vec<usize> = HEADER.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: Vec<&str>| -> std::io::Result<()> {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        writeln!(out, "{}", s.join("  ").trim_end())
    };
    line(out, HEADER.to_vec())?;
    for r in rows {
        line(out, r.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_csv(out: &mut impl Write, rows: &[[String; 11]]) -> std::io::Result<()> {
    let head: Vec<String> = HEADER.iter().map(|h| h.to_lowercase()).collect();
    writeln!(out, "{}", head.join(","))?;
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| csv_cell(c)).collect();
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}
