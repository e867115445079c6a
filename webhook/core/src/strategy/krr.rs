//! KRR's "simple" strategy for memory: request = limit = peak over the history
//! window plus a 15% buffer, at least KRR's minimum of 100 MiB; at least 100 points
//! in the window. KRR is a report, so there is no hysteresis: a different number is
//! a change.
//!
//! Input: [`Interval::max`](super::Interval) (PromQL `max_over_time(...[5m])`).

use super::{to_mib_ceil, Interval, MemorySizes, Strategy, WindowMax};
use crate::quantity::MI;

#[derive(Debug, Clone)]
pub struct KrrSimple {
    window: WindowMax,
    buffer: f64,
    points_required: u64,
    /// KRR never recommends less memory than this.
    min_bytes: u64,
}

impl Default for KrrSimple {
    fn default() -> Self {
        KrrSimple {
            window: WindowMax::new(14 * 86400),
            buffer: 0.15,
            points_required: 100,
            min_bytes: 100 * MI,
        }
    }
}

impl Strategy for KrrSimple {
    fn observe(&mut self, iv: &Interval) {
        self.window.push(iv.end(), iv.max, u64::from(iv.samples));
    }

    fn recommend(&mut self, now: i64, current: Option<MemorySizes>) -> Option<MemorySizes> {
        if self.window.samples(now) < self.points_required {
            return None;
        }
        let v = to_mib_ceil(self.window.max(now)? * (1.0 + self.buffer)).max(self.min_bytes);
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

    use crate::strategy::test_support::iv_mib as iv;

    #[test]
    fn peak_of_fourteen_days_plus_buffer() {
        let mut s = KrrSimple::default();
        // 200 points at 100Mi, one at 200Mi at the start.
        s.observe(&iv(0, 200.0));
        for i in 1..200 {
            s.observe(&iv(i * 300, 100.0));
        }
        let now = 200 * 300;
        let d = s.recommend(now, None).unwrap();
        assert_eq!(d.request, 230 * MI);
        assert_eq!(d.limit, 230 * MI);
        // Same answer again: no change.
        assert_eq!(s.recommend(now, Some(d)), None);
        // 14 days later only the 100Mi points remain... none do: nothing new observed.
        assert_eq!(s.recommend(now + 14 * 86400, Some(d)), None);
    }

    #[test]
    fn needs_points() {
        let mut s = KrrSimple::default();
        for i in 0..99 {
            s.observe(&iv(i * 300, 100.0));
        }
        assert_eq!(s.recommend(99 * 300, None), None);
        s.observe(&iv(99 * 300, 100.0));
        assert_eq!(s.recommend(100 * 300, None).unwrap().limit, 115 * MI);
    }

    #[test]
    fn never_below_krr_minimum() {
        let mut s = KrrSimple::default();
        for i in 0..100 {
            s.observe(&iv(i * 300, 10.0));
        }
        let d = s.recommend(100 * 300, None).unwrap();
        assert_eq!((d.request, d.limit), (100 * MI, 100 * MI));
    }
}
