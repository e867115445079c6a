//! Autopilot's moving-window recommender for memory (Rzadca et al., EuroSys 2020):
//! every 5-minute peak goes into a histogram whose weights halve every 48 h; the
//! raw recommendation is its p98 plus a 10% safety margin, recomputed at every
//! interval; what is applied is the highest raw recommendation of the last hour, so
//! a downward move waits for the hour to pass. request = limit (Borg sizes memory by
//! its limit).
//!
//! Input: [`Interval::max`](super::Interval) (PromQL `max_over_time(...[5m])`).

use super::{to_mib_ceil, DecayingHistogram, Interval, MemorySizes, Strategy, WindowMax};

#[derive(Debug, Clone)]
pub struct AutopilotWindow {
    hist: DecayingHistogram,
    recent: WindowMax,
    last: Option<f64>,
    percentile: f64,
    margin: f64,
}

impl Default for AutopilotWindow {
    fn default() -> Self {
        AutopilotWindow {
            hist: DecayingHistogram::new((1u64 << 20) as f64, 1.05, 1e12, 48.0 * 3600.0),
            recent: WindowMax::new(3600),
            last: None,
            percentile: 0.98,
            margin: 0.10,
        }
    }
}

impl Strategy for AutopilotWindow {
    fn observe(&mut self, iv: &Interval) {
        self.hist.add(iv.max, 1.0, iv.end());
        if let Some(p) = self.hist.percentile(self.percentile) {
            let r = p * (1.0 + self.margin);
            self.recent.push(iv.end(), r, 1);
            self.last = Some(r);
        }
    }

    fn recommend(&mut self, now: i64, current: Option<MemorySizes>) -> Option<MemorySizes> {
        // With no interval in the last hour, the last raw recommendation stands.
        let r = self.recent.max(now).or(self.last)?;
        let v = to_mib_ceil(r);
        let d = MemorySizes {
            request: v,
            limit: v,
        };
        (current != Some(d)).then_some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::strategy::test_support::iv_bytes as iv;

    #[test]
    fn p98_plus_margin_held_for_an_hour() {
        let mut s = AutopilotWindow::default();
        // 100 points at 1e9, then a flood of 1e8 points: the p98 falls, but the
        // applied value is the highest of the last hour.
        for i in 0..100 {
            s.observe(&iv(i * 300, 1e9));
        }
        let high = s.recommend(100 * 300, None).unwrap();
        let h = &s.hist;
        assert_eq!(
            high.limit,
            to_mib_ceil(h.bucket_start(h.bucket(1e9) + 1) * 1.1)
        );
        let mut t = 100 * 300;
        for _ in 0..10_000 {
            s.observe(&iv(t, 1e8));
            t += 300;
        }
        let low = s.recommend(t, Some(high)).unwrap();
        let h = &s.hist;
        assert_eq!(
            low.limit,
            to_mib_ceil(h.bucket_start(h.bucket(1e8) + 1) * 1.1)
        );
        assert_eq!(low.request, low.limit);
    }
}
