//! The replay's figures and their table and CSV forms (JSON is serde's).

use std::fmt::Write;

use serde::Serialize;

use crate::strategy::MemorySizes;

/// Figures of one strategy over every scored series-step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub strategy: String,
    pub series_steps: u64,
    pub unsized_steps: u64,
    pub request_slack_mean: f64,
    pub request_slack_median: f64,
    pub limit_slack_mean: f64,
    pub limit_slack_median: f64,
    /// Series-steps with at least one sample above the limit (simulated OOM kill).
    pub oom_steps: u64,
    pub oom_steps_pct: f64,
    pub samples_over_limit_pct: f64,
    pub samples_over_request_pct: f64,
    pub request_gib_days: f64,
    pub limit_gib_days: f64,
    /// Per series: changes of request or limit per day of scored history.
    pub changes_per_day_p50: f64,
    pub changes_per_day_p99: f64,
    pub changes_per_day_mean: f64,
}

/// A whole replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub series: u64,
    pub samples: u64,
    pub step_seconds: i64,
    pub warmup_seconds: i64,
    pub min_samples: usize,
    pub rows: Vec<Row>,
    /// With `Config::record_decisions`: per series (in trace order), every step's
    /// applied decision per strategy.
    #[serde(skip)]
    pub decisions: Vec<(String, Vec<DecisionRow>)>,
}

/// What one strategy applied during one step (`None`: nothing known yet).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecisionRow {
    pub step_start: i64,
    pub strategy: &'static str,
    pub decision: Option<MemorySizes>,
}

/// The decisions as CSV `series_id,step_start_s,strategy,request_bytes,limit_bytes`
/// (empty sizes where nothing was applied), one line per series, step and strategy.
pub fn write_decisions(mut w: impl std::io::Write, rep: &Report) -> std::io::Result<()> {
    writeln!(
        w,
        "series_id,step_start_s,strategy,request_bytes,limit_bytes"
    )?;
    for (id, rows) in &rep.decisions {
        for r in rows {
            match r.decision {
                Some(d) => writeln!(
                    w,
                    "{id},{},{},{},{}",
                    r.step_start, r.strategy, d.request, d.limit
                )?,
                None => writeln!(w, "{id},{},{},,", r.step_start, r.strategy)?,
            }
        }
    }
    Ok(())
}

impl Report {
    pub fn row(&self, strategy: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.strategy == strategy)
    }
}

const HEADERS: [&str; 12] = [
    "strategy",
    "series-steps",
    "req slack mean",
    "req slack p50",
    "lim slack mean",
    "lim slack p50",
    "OOM steps %",
    "samples>lim %",
    "samples>req %",
    "req GiB-days",
    "lim GiB-days",
    "changes/day p50/p99",
];

fn cells(r: &Row) -> [String; 12] {
    [
        r.strategy.clone(),
        r.series_steps.to_string(),
        format!("{:.3}", r.request_slack_mean),
        format!("{:.3}", r.request_slack_median),
        format!("{:.3}", r.limit_slack_mean),
        format!("{:.3}", r.limit_slack_median),
        format!("{:.2}", r.oom_steps_pct),
        format!("{:.3}", r.samples_over_limit_pct),
        format!("{:.2}", r.samples_over_request_pct),
        format!("{:.0}", r.request_gib_days),
        format!("{:.0}", r.limit_gib_days),
        format!("{:.2}/{:.2}", r.changes_per_day_p50, r.changes_per_day_p99),
    ]
}

/// A Markdown-compatible aligned table.
pub fn render_table(rep: &Report) -> String {
    let rows: Vec<[String; 12]> = rep.rows.iter().map(cells).collect();
    let mut width: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cs: &[String]| {
        out.push('|');
        for (i, (c, w)) in cs.iter().zip(&width).enumerate() {
            if i == 0 {
                let _ = write!(out, " {c:<w$} |");
            } else {
                let _ = write!(out, " {c:>w$} |");
            }
        }
        out.push('\n');
    };
    line(&mut out, &HEADERS.map(String::from));
    out.push('|');
    for (i, w) in width.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if i == 0 {
            let _ = write!(out, " {dashes} |");
        } else {
            let _ = write!(out, " {}: |", &dashes[1..]);
        }
    }
    out.push('\n');
    for r in &rows {
        line(&mut out, r);
    }
    out
}

/// CSV with one header line and full precision.
pub fn render_csv(rep: &Report) -> String {
    let mut out = String::from(
        "strategy,series_steps,unsized_steps,request_slack_mean,request_slack_median,limit_slack_mean,limit_slack_median,oom_steps,oom_steps_pct,samples_over_limit_pct,samples_over_request_pct,request_gib_days,limit_gib_days,changes_per_day_p50,changes_per_day_p99,changes_per_day_mean\n",
    );
    for r in &rep.rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.strategy,
            r.series_steps,
            r.unsized_steps,
            r.request_slack_mean,
            r.request_slack_median,
            r.limit_slack_mean,
            r.limit_slack_median,
            r.oom_steps,
            r.oom_steps_pct,
            r.samples_over_limit_pct,
            r.samples_over_request_pct,
            r.request_gib_days,
            r.limit_gib_days,
            r.changes_per_day_p50,
            r.changes_per_day_p99,
            r.changes_per_day_mean
        );
    }
    out
}
