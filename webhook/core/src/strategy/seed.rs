//! The project's own rules ([`crate::rules::Rules`]) as a strategy: avg, p95 and max
//! of the last 24 h give the target (`Rules::recommend`), a change must pass
//! hysteresis (`Rules::worth_changing`) and the cooldown
//! (`safeguards.cooldown_seconds`), moves at most one enforcement step
//! (`Rules::step`, never below p95 for the request), and after an overrun of the
//! applied limit (a simulated OOM kill) the limit stays at least `Rules::oom_floor`
//! for `oom.holdSeconds`.
//!
//! Inputs: [`Interval::max`](super::Interval), `avg` and `samples` over the last
//! 24 h; p95 is taken over the interval peaks, which equals the raw p95 at one
//! sample per interval (PromQL: `max_over_time`, `avg_over_time`, `count_over_time`
//! at `[5m]`).

use std::collections::VecDeque;

use super::{Interval, MemorySizes, Strategy};
use crate::quantity::Resource;
use crate::rules::{Observed, Rules, Sizes};

const WINDOW: i64 = 86400;

#[derive(Debug, Clone)]
pub struct Seed {
    rules: Rules,
    window: VecDeque<Interval>,
    /// What was applied when the strategy last answered, to detect overruns.
    applied: Option<MemorySizes>,
    last_change: Option<i64>,
    /// (floor, until): the OOM floor on the limit.
    oom: Option<(u64, i64)>,
}

impl Seed {
    pub fn new(rules: Rules) -> Self {
        Seed {
            rules,
            window: VecDeque::new(),
            applied: None,
            last_change: None,
            oom: None,
        }
    }

    fn observed(&self, now: i64) -> Option<Observed> {
        let first = self.window.front()?;
        let samples: u64 = self.window.iter().map(|i| u64::from(i.samples)).sum();
        if samples == 0 {
            return None;
        }
        let sum: f64 = self
            .window
            .iter()
            .map(|i| i.avg * f64::from(i.samples))
            .sum();
        let mut peaks: Vec<f64> = self.window.iter().map(|i| i.max).collect();
        peaks.sort_by(f64::total_cmp);
        let rank = ((0.95 * peaks.len() as f64).ceil() as usize).clamp(1, peaks.len());
        Some(Observed {
            avg: sum / samples as f64,
            p95: peaks[rank - 1],
            max: peaks[peaks.len() - 1],
            samples,
            history_seconds: u64::try_from(now - first.start).unwrap_or(0),
        })
    }
}

impl Strategy for Seed {
    fn observe(&mut self, iv: &Interval) {
        if let Some(lim) = self.applied.map(|d| d.limit) {
            if iv.max > lim as f64 {
                let floor = self.rules.oom_floor(lim);
                let until = iv.end() + self.rules.oom.hold_seconds as i64;
                self.oom = Some((floor.max(self.oom.map_or(0, |o| o.0)), until));
            }
        }
        self.window.push_back(*iv);
        while self
            .window
            .front()
            .is_some_and(|f| f.start < iv.end() - WINDOW)
        {
            self.window.pop_front();
        }
    }

    fn recommend(&mut self, now: i64, current: Option<MemorySizes>) -> Option<MemorySizes> {
        self.applied = current;
        while self.window.front().is_some_and(|f| f.start < now - WINDOW) {
            self.window.pop_front();
        }
        let obs = self.observed(now)?;
        if !self.rules.enough_evidence(&obs) {
            return None;
        }
        if let Some(t) = self.last_change {
            if now - t < self.rules.safeguards.cooldown_seconds as i64 {
                return None;
            }
        }
        let target = self.rules.recommend(Resource::Memory, &obs);
        let (req_t, mut lim_t) = (target.request?, target.limit?);
        let floor = self.oom.filter(|&(_, until)| now < until).map(|o| o.0);
        if let Some(f) = floor {
            lim_t = lim_t.max(f);
        }
        let cur = Sizes {
            request: current.map(|c| c.request),
            limit: current.map(|c| c.limit),
        };
        let to = Sizes {
            request: Some(req_t),
            limit: Some(lim_t),
        };
        let moved = self
            .rules
            .guarded_step(Resource::Memory, cur, to, Some(obs.p95));
        // Without a current value every side moves, so both are set.
        let request = moved.request.or(cur.request).unwrap_or(req_t);
        let mut limit = moved.limit.or(cur.limit).unwrap_or(lim_t);
        // The OOM floor is a safety raise: it is not held back by the step limit.
        limit = limit.max(floor.unwrap_or(0)).max(request);
        let d = MemorySizes { request, limit };
        if current == Some(d) {
            return None;
        }
        self.last_change = Some(now);
        self.applied = Some(d);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::MI;
    use crate::rules::Sizes;

    use crate::strategy::test_support::iv_mib as iv;

    fn feed(s: &mut Seed, from: i64, n: i64, mib: f64) -> i64 {
        for i in 0..n {
            s.observe(&iv(from + i * 300, mib));
        }
        from + n * 300
    }

    #[test]
    fn first_answer_is_the_rules_answer() {
        let mut s = Seed::new(Rules::default());
        let now = feed(&mut s, 0, 288, 200.0);
        let d = s.recommend(now, None).unwrap();
        let obs = Observed {
            avg: 200.0 * MI as f64,
            p95: 200.0 * MI as f64,
            max: 200.0 * MI as f64,
            samples: 288,
            history_seconds: 86400,
        };
        assert_eq!(
            Sizes::from(d),
            Rules::default().recommend(Resource::Memory, &obs)
        );
    }

    #[test]
    fn not_enough_evidence() {
        let mut s = Seed::new(Rules::default());
        let now = feed(&mut s, 0, 99, 200.0);
        assert_eq!(s.recommend(now, None), None);
    }

    #[test]
    fn hysteresis_cooldown_and_step() {
        let r = Rules::default();
        let mut s = Seed::new(r);
        let now = feed(&mut s, 0, 288, 200.0);
        let d1 = s.recommend(now, None).unwrap(); // request 304Mi (avg×1.5), limit 464Mi
        assert_eq!(d1.request, 304 * MI);
        // Cooldown: a big change 10 minutes later is held back.
        let now2 = feed(&mut s, now, 2, 2000.0);
        assert_eq!(s.recommend(now2, Some(d1)), None);
        // A day of much higher usage: each side moves one step (30%) only.
        let now3 = feed(&mut s, now2, 288, 2000.0);
        let d2 = s.recommend(now3, Some(d1)).unwrap();
        assert_eq!(
            d2.request,
            r.step(
                Resource::Memory,
                Some(d1.request),
                3008 * MI,
                Some(2000.0 * MI as f64)
            )
        );
        assert_eq!(d2.request, 2000 * MI); // the p95 floor beats the 30% step
                                           // The limit was overrun: the OOM floor lifts it past the step.
        assert_eq!(
            d2.limit,
            r.oom_floor(d1.limit)
                .max(r.step(Resource::Memory, Some(d1.limit), 4512 * MI, None))
                .max(d2.request)
        );
        // Small wobble: hysteresis keeps the values.
        let now4 = feed(&mut s, now3, 288, 2000.0);
        let d3 = s.recommend(now4, Some(d2));
        if let Some(d3) = d3 {
            assert!(
                r.worth_changing(Resource::Memory, Some(d2.request), d3.request)
                    || r.worth_changing(Resource::Memory, Some(d2.limit), d3.limit)
            );
        }
    }
}
