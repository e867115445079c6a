//! The Kubernetes Vertical Pod Autoscaler recommender, memory side, with its default
//! flags: every 24-hour aggregation window contributes its running peak to a
//! histogram (exponential buckets, first 10 MB wide, 5% growth, up to 1 TB; weights
//! halve every 24 h); target = p90 × (1 + 15% margin), at least 250 MiB (the pod
//! minimum, one container per series here). The updater acts when the target moves
//! more than 10% away from what is applied. VPA keeps the limit/request ratio of the
//! original spec; the replay's originals have limit = request, so limit = request.
//!
//! Input: [`Interval::max`](super::Interval) (PromQL `max_over_time(...[5m])`).

use super::{to_mib_ceil, DecayingHistogram, Interval, MemorySizes, Strategy};
use crate::quantity::MI;

const WINDOW: i64 = 86400;

#[derive(Debug, Clone)]
pub struct Vpa {
    hist: DecayingHistogram,
    /// Start of the current aggregation window and its running peak.
    window: Option<(i64, f64)>,
    percentile: f64,
    margin: f64,
    min_bytes: u64,
    update_threshold: f64,
}

impl Default for Vpa {
    fn default() -> Self {
        Vpa {
            hist: DecayingHistogram::new(1e7, 1.05, 1e12, 86400.0),
            window: None,
            percentile: 0.9,
            margin: 0.15,
            min_bytes: 250 * MI,
            update_threshold: 0.10,
        }
    }
}

impl Strategy for Vpa {
    fn observe(&mut self, iv: &Interval) {
        match self.window {
            Some((start, peak)) if iv.start < start + WINDOW => {
                // Replace the window's running peak when it grows.
                if iv.max > peak {
                    self.hist.subtract(peak, 1.0, start);
                    self.hist.add(iv.max, 1.0, start);
                    self.window = Some((start, iv.max));
                }
            }
            _ => {
                self.hist.add(iv.max, 1.0, iv.start);
                self.window = Some((iv.start, iv.max));
            }
        }
    }

    fn recommend(&mut self, _now: i64, current: Option<MemorySizes>) -> Option<MemorySizes> {
        let target = self.hist.percentile(self.percentile)? * (1.0 + self.margin);
        let v = to_mib_ceil(target).max(self.min_bytes);
        if let Some(cur) = current {
            let cur_v = cur.request.max(1) as f64;
            if ((v as f64 - cur_v) / cur_v).abs() <= self.update_threshold {
                return None;
            }
        }
        Some(MemorySizes {
            request: v,
            limit: v,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::strategy::test_support::iv_bytes as iv;

    #[test]
    fn daily_peaks_p90_with_margin() {
        let mut s = Vpa::default();
        // Ten days, each with a 1 GB peak and lower points; the histogram holds one
        // entry per day, all in the bucket of 1e9.
        for day in 0..10 {
            for i in 0..288 {
                let v = if i == 100 { 1e9 } else { 2e8 };
                s.observe(&iv(day * 86400 + i * 300, v));
            }
        }
        let d = s.recommend(10 * 86400, None).unwrap();
        let h = &s.hist;
        let want = to_mib_ceil(h.bucket_start(h.bucket(1e9) + 1) * 1.15);
        assert_eq!(d.request, want);
        assert_eq!(d.limit, want);
        // Within 10%: no update.
        let near = MemorySizes {
            request: want + want / 20,
            limit: want + want / 20,
        };
        assert_eq!(s.recommend(10 * 86400, Some(near)), None);
    }

    #[test]
    fn floor_of_250mib() {
        let mut s = Vpa::default();
        s.observe(&iv(0, 1e6));
        assert_eq!(s.recommend(300, None).unwrap().request, 250 * MI);
    }
}
