//! Scoring accumulators: one per strategy, merged across series and threads.

use super::report::Row;
use super::trace::TraceSample;
use crate::strategy::MemorySizes;

const GIB: f64 = (1u64 << 30) as f64;

/// Quantile `q` of sorted values, interpolating linearly between ranks.
pub fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    match v.len() {
        0 => f64::NAN,
        1 => v[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        }
    }
}

/// Autopilot's relative slack: (value − p95 of usage) / value, with usage capped at
/// the limit: a container cannot use more than its limit (usage above it is an OOM
/// kill, counted as such), so in a real cluster the p95 never exceeds the limit.
fn slack(value: f64, p95: f64, limit: f64) -> f64 {
    (value - p95.min(limit)) / value.max(1.0)
}

/// Totals of one strategy.
#[derive(Debug, Clone, Default)]
pub struct StrategyTotals {
    pub steps: u64,
    /// Scored steps in which nothing was applied (no answer yet, no own size).
    pub unsized_steps: u64,
    pub request_slack: Vec<f64>,
    pub limit_slack: Vec<f64>,
    pub oom_steps: u64,
    pub samples: u64,
    pub over_limit: u64,
    pub over_request: u64,
    pub request_gib_days: f64,
    pub limit_gib_days: f64,
    /// Changes per day, one entry per series.
    pub change_rates: Vec<f64>,
}

impl StrategyTotals {
    /// Score one step against a fixed decision.
    pub fn add_step(&mut self, usage: &[TraceSample], p95: f64, d: Option<MemorySizes>, days: f64) {
        let Some(d) = d else {
            self.unsized_steps += 1;
            return;
        };
        let (req, lim) = (d.request as f64, d.limit as f64);
        let over_limit = usage.iter().filter(|s| s.memory > lim).count() as u64;
        let over_request = usage.iter().filter(|s| s.memory > req).count() as u64;
        self.record(
            usage.len() as u64,
            p95,
            req,
            lim,
            over_limit,
            over_request,
            days,
        );
    }

    /// Score one step against the trace's own, possibly changing, sizes.
    pub fn add_provisioned_step(&mut self, usage: &[TraceSample], p95: f64, days: f64) {
        let mut sum = 0.0;
        let mut over = 0u64;
        for s in usage {
            let l = s.limit.unwrap_or(f64::INFINITY);
            sum += l;
            over += u64::from(s.memory > l);
        }
        let avg = sum / usage.len().max(1) as f64;
        self.record(usage.len() as u64, p95, avg, avg, over, over, days);
    }

    #[allow(clippy::too_many_arguments)]
    fn record(&mut self, n: u64, p95: f64, req: f64, lim: f64, ol: u64, or: u64, days: f64) {
        self.steps += 1;
        self.samples += n;
        self.request_slack.push(slack(req, p95, lim));
        self.limit_slack.push(slack(lim, p95, lim));
        self.oom_steps += u64::from(ol > 0);
        self.over_limit += ol;
        self.over_request += or;
        self.request_gib_days += req / GIB * days;
        self.limit_gib_days += lim / GIB * days;
    }

    pub fn merge(&mut self, o: StrategyTotals) {
        self.steps += o.steps;
        self.unsized_steps += o.unsized_steps;
        self.request_slack.extend(o.request_slack);
        self.limit_slack.extend(o.limit_slack);
        self.oom_steps += o.oom_steps;
        self.samples += o.samples;
        self.over_limit += o.over_limit;
        self.over_request += o.over_request;
        self.request_gib_days += o.request_gib_days;
        self.limit_gib_days += o.limit_gib_days;
        self.change_rates.extend(o.change_rates);
    }

    /// The figures of the report row.
    pub fn row(mut self, name: &str) -> Row {
        let pct = |a: u64, b: u64| {
            if b == 0 {
                0.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        for v in [
            &mut self.request_slack,
            &mut self.limit_slack,
            &mut self.change_rates,
        ] {
            v.sort_by(f64::total_cmp);
        }
        Row {
            strategy: name.to_string(),
            series_steps: self.steps,
            unsized_steps: self.unsized_steps,
            request_slack_mean: mean(&self.request_slack),
            request_slack_median: quantile_sorted(&self.request_slack, 0.5),
            limit_slack_mean: mean(&self.limit_slack),
            limit_slack_median: quantile_sorted(&self.limit_slack, 0.5),
            oom_steps_pct: pct(self.oom_steps, self.steps),
            oom_steps: self.oom_steps,
            samples_over_limit_pct: pct(self.over_limit, self.samples),
            samples_over_request_pct: pct(self.over_request, self.samples),
            request_gib_days: self.request_gib_days,
            limit_gib_days: self.limit_gib_days,
            changes_per_day_p50: quantile_sorted(&self.change_rates, 0.5),
            changes_per_day_p99: quantile_sorted(&self.change_rates, 0.99),
            changes_per_day_mean: mean(&self.change_rates),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile_sorted(&v, 0.5), 3.0);
        assert_eq!(quantile_sorted(&v, 0.95), 4.8);
        assert_eq!(quantile_sorted(&v, 1.0), 5.0);
        assert!(quantile_sorted(&[], 0.5).is_nan());
    }
}
