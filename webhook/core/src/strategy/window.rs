//! Sliding-window peak over timestamped values (a monotonic queue), plus the number
//! of samples in the window.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct WindowMax {
    seconds: i64,
    /// (time, value), values strictly decreasing from the front.
    peaks: VecDeque<(i64, f64)>,
    /// (time, samples) of every entry still in the window.
    counts: VecDeque<(i64, u64)>,
    samples: u64,
}

impl WindowMax {
    pub fn new(seconds: i64) -> Self {
        WindowMax {
            seconds,
            peaks: VecDeque::new(),
            counts: VecDeque::new(),
            samples: 0,
        }
    }

    /// Add `v` at time `t` (non-decreasing), standing for `samples` raw samples.
    pub fn push(&mut self, t: i64, v: f64, samples: u64) {
        while self.peaks.back().is_some_and(|&(_, b)| b <= v) {
            self.peaks.pop_back();
        }
        self.peaks.push_back((t, v));
        self.counts.push_back((t, samples));
        self.samples += samples;
    }

    fn evict(&mut self, now: i64) {
        let cutoff = now - self.seconds;
        while self.peaks.front().is_some_and(|&(t, _)| t <= cutoff) {
            self.peaks.pop_front();
        }
        while let Some(&(t, n)) = self.counts.front() {
            if t > cutoff {
                break;
            }
            self.samples -= n;
            self.counts.pop_front();
        }
    }

    /// The peak of values with time in (now − window, now], if any.
    pub fn max(&mut self, now: i64) -> Option<f64> {
        self.evict(now);
        self.peaks.front().map(|&(_, v)| v)
    }

    /// Raw samples behind the values in (now − window, now].
    pub fn samples(&mut self, now: i64) -> u64 {
        self.evict(now);
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_max_and_count() {
        let mut w = WindowMax::new(10);
        w.push(1, 5.0, 1);
        w.push(2, 3.0, 2);
        w.push(3, 4.0, 1);
        assert_eq!(w.max(3), Some(5.0));
        assert_eq!(w.samples(3), 4);
        assert_eq!(w.max(11), Some(4.0)); // t=1 left the window
        assert_eq!(w.samples(11), 3);
        assert_eq!(w.max(13), None);
        assert_eq!(w.samples(13), 0);
    }
}
