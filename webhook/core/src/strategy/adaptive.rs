//! rightsizer's default: size the request and the limit for their different jobs.
//!
//! - The request is what the scheduler packs, and going above it costs nothing
//!   until the node is short: a high quantile of recent 5-minute peaks, from a
//!   histogram whose weights halve every few days, with a small margin, and at
//!   least limit / 8 (so a node is never overcommitted more than 8×).
//! - The limit is what OOM-kills: the highest 5-minute peak, each peak counting in
//!   full for 30 days (a month's business cycle: weekly and month-end peaks come
//!   back) and halving every 21 days after that, times a margin. The margin is learnt
//!   per series: it starts from 1.5 plus the spread of daily peaks (bursty series
//!   get more room), widens after every overrun of the applied limit (OOM-aware), and
//!   relaxes back slowly; at most 2×.
//! - Stability: the limit rises at once after an overrun or when its target is 40%
//!   above it; every other change (request ±15%, limit −25%) waits for a 10-day
//!   cooldown, and rides along with a rise when there is one.
//!
//! Inputs: [`Interval::max`](super::Interval) (PromQL `max_over_time(...[5m])`), and
//! the daily peak built from it. The defaults were chosen on the replay traces with
//! time and series splits (see BENCHMARKS.md).

use super::{to_mib_ceil, DecayingHistogram, Interval, MemorySizes, Strategy};

/// The tunables, with the defaults chosen on the replay traces (see BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveParams {
    pub request_quantile: f64,
    pub request_half_life: f64,
    pub request_margin: f64,
    /// Width ratio of the request histogram's buckets (1.05: 5% buckets).
    pub request_bucket: f64,
    pub limit_half_life: f64,
    /// Peaks count in full for this long (seconds) before they start to decay.
    pub limit_hold: f64,
    /// Base limit margin over the decayed peak.
    pub limit_margin: f64,
    /// Extra margin per unit of the daily peaks' coefficient of variation.
    pub spread_weight: f64,
    /// Multiplier on the extra margin after each overrun, and its cap.
    pub widen: f64,
    pub max_margin: f64,
    /// Half-life of the overrun-driven extra margin.
    pub relax_half_life: f64,
    /// The request moves when it changes by more than this fraction.
    pub request_hysteresis: f64,
    /// The limit falls only when the target is this fraction below it.
    pub limit_fall: f64,
    /// The limit rises (at once, past any cooldown) when the target is this fraction
    /// above it, or after an overrun.
    pub limit_rise: f64,
    /// The limit is at most this many times the request.
    pub max_limit_ratio: f64,
    /// Seconds between changes that are not limit rises.
    pub cooldown: i64,
    /// Minimum evidence before the first answer, in raw samples (3 h at 5 minutes).
    pub min_samples: u64,
}

impl Default for AdaptiveParams {
    fn default() -> Self {
        AdaptiveParams {
            request_quantile: 0.95,
            request_half_life: 3.0 * 86400.0,
            request_margin: 1.05,
            request_bucket: 1.05,
            limit_half_life: 21.0 * 86400.0,
            limit_hold: 30.0 * 86400.0,
            limit_margin: 1.5,
            spread_weight: 0.5,
            widen: 1.25,
            max_margin: 2.0,
            relax_half_life: 7.0 * 86400.0,
            request_hysteresis: 0.15,
            limit_fall: 0.25,
            limit_rise: 0.40,
            max_limit_ratio: 8.0,
            cooldown: 10 * 86400,
            min_samples: 36,
        }
    }
}

impl AdaptiveParams {
    /// Set one parameter by its field name (durations in days, `min_samples` in
    /// samples): for experiments (`rightsizer replay --param`, `--sweep`).
    pub fn set(&mut self, name: &str, v: f64) -> Result<(), String> {
        const DAY: f64 = 86400.0;
        match name {
            "request_quantile" => self.request_quantile = v,
            "request_half_life" => self.request_half_life = v * DAY,
            "request_margin" => self.request_margin = v,
            "request_bucket" => self.request_bucket = v,
            "limit_half_life" => self.limit_half_life = v * DAY,
            "limit_hold" => self.limit_hold = v * DAY,
            "limit_margin" => self.limit_margin = v,
            "spread_weight" => self.spread_weight = v,
            "widen" => self.widen = v,
            "max_margin" => self.max_margin = v,
            "relax_half_life" => self.relax_half_life = v * DAY,
            "request_hysteresis" => self.request_hysteresis = v,
            "limit_fall" => self.limit_fall = v,
            "limit_rise" => self.limit_rise = v,
            "max_limit_ratio" => self.max_limit_ratio = v,
            "cooldown" => self.cooldown = (v * DAY) as i64,
            "min_samples" => self.min_samples = v as u64,
            _ => return Err(format!("adaptive has no parameter {name:?}")),
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Adaptive {
    p: AdaptiveParams,
    hist: DecayingHistogram,
    /// Candidate peaks (value, time), values strictly decreasing from the oldest:
    /// an older peak no higher than a newer one never counts again.
    peaks: Vec<(f64, i64)>,
    /// Current day (start) and its running peak.
    day: Option<(i64, f64)>,
    /// Decayed moments of daily peaks (weights halve with the limit half-life).
    day_n: f64,
    day_sum: f64,
    day_sq: f64,
    /// Overrun multiplier on the margin: (value ≥ 1, time set).
    boost: (f64, i64),
    samples: u64,
    applied: Option<MemorySizes>,
    /// The applied limit was overrun since the last answer.
    overrun: bool,
    last_change: Option<i64>,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive::new(AdaptiveParams::default())
    }
}

impl Adaptive {
    pub fn new(p: AdaptiveParams) -> Self {
        Adaptive {
            p,
            hist: DecayingHistogram::new(
                (1u64 << 20) as f64,
                p.request_bucket,
                1e12,
                p.request_half_life,
            ),
            peaks: Vec::new(),
            day: None,
            day_n: 0.0,
            day_sum: 0.0,
            day_sq: 0.0,
            boost: (1.0, 0),
            samples: 0,
            applied: None,
            overrun: false,
            last_change: None,
        }
    }

    fn decay(&self, seconds: i64, half_life: f64) -> f64 {
        (-(seconds.max(0) as f64) / half_life).exp2()
    }

    fn close_day(&mut self, peak: f64) {
        let k = self.decay(86400, self.p.limit_half_life);
        self.day_n = self.day_n * k + 1.0;
        self.day_sum = self.day_sum * k + peak;
        self.day_sq = self.day_sq * k + peak * peak;
    }

    /// Coefficient of variation of daily peaks, including the running day.
    fn spread(&self) -> f64 {
        let (mut n, mut s, mut q) = (self.day_n, self.day_sum, self.day_sq);
        if let Some((_, p)) = self.day {
            n += 1.0;
            s += p;
            q += p * p;
        }
        if n < 2.0 || s <= 0.0 {
            return 0.0;
        }
        let mean = s / n;
        let var = (q / n - mean * mean).max(0.0);
        var.sqrt() / mean
    }

    /// Weight of a peak `age` seconds old: full during the hold, then halving.
    fn peak_weight(&self, age: i64) -> f64 {
        self.decay(age - self.p.limit_hold as i64, self.p.limit_half_life)
    }

    /// The highest peak weighted by its age. Drops the candidates that can no longer
    /// win: a newer peak that weighs at least as much now keeps doing so, as both
    /// decay alike from here on.
    fn peak(&mut self, now: i64) -> Option<f64> {
        let mut best = 0.0f64;
        let mut keep = vec![false; self.peaks.len()];
        for (i, &(v, t)) in self.peaks.iter().enumerate().rev() {
            let w = v * self.peak_weight(now - t);
            if w > best {
                best = w;
                keep[i] = true;
            }
        }
        let mut k = keep.into_iter();
        self.peaks.retain(|_| k.next().unwrap_or(true));
        (!self.peaks.is_empty()).then_some(best)
    }

    fn boost_at(&self, now: i64) -> f64 {
        1.0 + (self.boost.0 - 1.0) * self.decay(now - self.boost.1, self.p.relax_half_life)
    }

    fn target(&mut self, now: i64) -> Option<MemorySizes> {
        let request = self.hist.percentile(self.p.request_quantile)? * self.p.request_margin;
        let peak = self.peak(now)?;
        let margin = ((self.p.limit_margin + self.p.spread_weight * self.spread())
            * self.boost_at(now))
        .min(self.p.max_margin);
        let limit = to_mib_ceil(peak * margin);
        let request = to_mib_ceil(request.max(limit as f64 / self.p.max_limit_ratio));
        let limit = limit.max(request);
        Some(MemorySizes { request, limit })
    }
}

impl Strategy for Adaptive {
    fn observe(&mut self, iv: &Interval) {
        let t = iv.end();
        self.samples += u64::from(iv.samples);
        self.hist.add(iv.max, 1.0, t);
        while self.peaks.last().is_some_and(|&(v, _)| v <= iv.max) {
            self.peaks.pop();
        }
        self.peaks.push((iv.max, t));
        let day = iv.start.div_euclid(86400) * 86400;
        match self.day {
            Some((d, p)) if d == day => self.day = Some((d, p.max(iv.max))),
            Some((_, p)) => {
                self.close_day(p);
                self.day = Some((day, iv.max));
            }
            None => self.day = Some((day, iv.max)),
        }
        if let Some(a) = self.applied {
            if iv.max > a.limit as f64 {
                let b = (self.boost_at(t) * self.p.widen).min(self.p.max_margin);
                self.boost = (b, t);
                self.overrun = true;
                // Count each overrun once per applied limit.
                self.applied = Some(MemorySizes {
                    limit: to_mib_ceil(iv.max),
                    ..a
                });
            }
        }
    }

    fn recommend(&mut self, now: i64, current: Option<MemorySizes>) -> Option<MemorySizes> {
        self.applied = current;
        let overrun = std::mem::take(&mut self.overrun);
        if self.samples < self.p.min_samples {
            return None;
        }
        let t = self.target(now)?;
        let Some(cur) = current else {
            return self.change(now, t);
        };
        let rel = |a: u64, b: u64| (a as f64 - b as f64) / (b.max(1) as f64);
        // Raising the limit protects from OOM kills: no cooldown for that.
        let urgent = overrun || rel(t.limit, cur.limit) > self.p.limit_rise;
        let calm = self
            .last_change
            .is_none_or(|lc| now - lc >= self.p.cooldown);
        let request_moves = rel(t.request, cur.request).abs() > self.p.request_hysteresis;
        let limit_falls = rel(t.limit, cur.limit) < -self.p.limit_fall;
        if !(urgent || (calm && (request_moves || limit_falls))) {
            return None;
        }
        let request = if request_moves {
            t.request
        } else {
            cur.request
        };
        let limit = if urgent {
            t.limit.max(cur.limit)
        } else if limit_falls {
            t.limit
        } else {
            cur.limit
        };
        let d = MemorySizes {
            request,
            limit: limit.max(request),
        };
        if d == cur {
            return None;
        }
        self.change(now, d)
    }
}

impl Adaptive {
    fn change(&mut self, now: i64, d: MemorySizes) -> Option<MemorySizes> {
        self.applied = Some(d);
        self.last_change = Some(now);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::MI;

    use crate::strategy::test_support::iv_mib as iv;

    #[test]
    fn constant_usage_gives_tight_request_and_margin_limit() {
        let mut s = Adaptive::default();
        for i in 0..(3 * 288) {
            s.observe(&iv(i * 300, 1000.0));
        }
        let d = s.recommend(3 * 86400, None).unwrap();
        let h = &s.hist;
        let bucket_end = h.bucket_start(h.bucket(1000.0 * MI as f64) + 1);
        let p = AdaptiveParams::default();
        assert_eq!(d.request, to_mib_ceil(bucket_end * p.request_margin));
        // No spread, no overrun: the base margin over the (fresh) peak.
        assert_eq!(d.limit, to_mib_ceil(1000.0 * MI as f64 * p.limit_margin));
    }

    #[test]
    fn overrun_widens_the_margin() {
        let p = AdaptiveParams::default();
        let mut s = Adaptive::default();
        for i in 0..288 {
            s.observe(&iv(i * 300, 1000.0));
        }
        let d1 = s.recommend(86400, None).unwrap();
        // An overrun by 1%, then the same usage as before.
        s.observe(&iv(86400, d1.limit as f64 / MI as f64 * 1.01));
        let d2 = s.recommend(86400 + 300, Some(d1)).unwrap();
        assert!(d2.limit as f64 >= d1.limit as f64 * 1.01 * p.limit_margin * p.widen * 0.99);
    }

    #[test]
    fn peaks_count_in_full_for_the_hold_then_decay() {
        let p = AdaptiveParams::default();
        let mut s = Adaptive::default();
        // One day at 2000 MiB, then 1000 MiB.
        for i in 0..288 {
            s.observe(&iv(i * 300, 2000.0));
        }
        for i in 288..(3 * 288) {
            s.observe(&iv(i * 300, 1000.0));
        }
        let peak_at = 288 * 300;
        let day = 86400;
        assert_eq!(s.peak(peak_at + 20 * day), Some(2000.0 * MI as f64));
        let hold = p.limit_hold as i64;
        let later = s.peak(peak_at + hold + p.limit_half_life as i64).unwrap();
        assert!((later - 1000.0 * MI as f64).abs() < 1.0, "{later}");
    }

    #[test]
    fn hysteresis_keeps_small_moves() {
        let mut s = Adaptive::default();
        for i in 0..288 {
            s.observe(&iv(i * 300, 1000.0));
        }
        let d1 = s.recommend(86400, None).unwrap();
        for i in 288..576 {
            s.observe(&iv(i * 300, 950.0));
        }
        assert_eq!(s.recommend(2 * 86400, Some(d1)), None);
        assert_eq!(s.recommend(2 * 86400, None), s.target(2 * 86400));
    }
}
