//! Synthetic container-like memory traces for the replay: seeded and deterministic
//! (the same shape, seed, series count and days give the same samples on every
//! machine), one sample every 5 minutes from a fixed UTC midnight.
//!
//! A container's working set is smoother than a VM's active memory (the shared
//! traces): these shapes are the ones that decide whether a recommender is safe and
//! tight on containers. Every series gets its own base size (log-uniform, 64 MiB to
//! 4 GiB), ±2% noise, and a hand-set size (`memory_limit_bytes`) of 1.5 × its
//! highest level rounded up to 64 MiB, which the `as-provisioned` row scores.

use super::trace::{Series, TraceSample};

/// The shapes `rightsizer replay --synthetic` generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Flat, with a rare spike (1.3–2×, 5–15 minutes, about one a week).
    Steady,
    /// A daily cycle: the peak hour is 1.3–2.5× the night level.
    Daily,
    /// A slow leak (5–30% of the base a day) and a restart every 2–7 days.
    Leak,
    /// Flat, then a deploy changes the level once (×0.5–0.7 or ×1.4–2).
    Step,
    /// A daily batch job: idle at 3–10% of the job's size, a 1–4 h run ramping up.
    Batch,
}

impl Shape {
    pub const ALL: [Shape; 5] = [
        Shape::Steady,
        Shape::Daily,
        Shape::Leak,
        Shape::Step,
        Shape::Batch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Steady => "steady",
            Shape::Daily => "daily",
            Shape::Leak => "leak",
            Shape::Step => "step",
            Shape::Batch => "batch",
        }
    }

    pub fn by_name(name: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Start of every synthetic series: 2024-01-01 00:00 UTC.
pub const T0: i64 = 1_704_067_200;
const STEP: i64 = 300;
const PER_DAY: i64 = 86400 / STEP;
const MI: f64 = 1048576.0;

/// SplitMix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, shape: Shape, index: usize) -> Self {
        let mut r = Rng(seed ^ ((shape as u64 + 1) << 56) ^ (index as u64).wrapping_mul(0x9E37));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// The `index`-th (0-based) series of `shape`: `days` days of 5-minute samples.
pub fn series(shape: Shape, seed: u64, index: usize, days: u32) -> Series {
    let mut r = Rng::new(seed, shape, index);
    let base = 64.0 * MI * 64f64.powf(r.unit());
    let n = i64::from(days) * PER_DAY;
    let mut level = vec![0.0; n as usize];
    match shape {
        Shape::Steady => {
            let mut spike = 0;
            let mut height = 1.0;
            for v in level.iter_mut() {
                if spike == 0 && r.unit() < 1.0 / (7.0 * PER_DAY as f64) {
                    spike = 1 + (r.unit() * 3.0) as i32;
                    height = r.range(1.3, 2.0);
                }
                *v = if spike > 0 {
                    spike -= 1;
                    base * height
                } else {
                    base
                };
            }
        }
        Shape::Daily => {
            let amplitude = r.range(0.3, 1.5);
            let peak_hour = r.range(0.0, 24.0);
            for (i, v) in level.iter_mut().enumerate() {
                let hour = (i as i64 % PER_DAY) as f64 * 24.0 / PER_DAY as f64;
                let phase = (hour - peak_hour) / 24.0 * std::f64::consts::TAU;
                *v = base * (1.0 + amplitude * (0.5 + 0.5 * phase.cos()));
            }
        }
        Shape::Leak => {
            let per_sample = r.range(0.05, 0.30) / PER_DAY as f64;
            let mut next_restart = (r.range(2.0, 7.0) * PER_DAY as f64) as usize;
            let mut since = 0usize;
            for (i, v) in level.iter_mut().enumerate() {
                if i == next_restart {
                    since = 0;
                    next_restart = i + (r.range(2.0, 7.0) * PER_DAY as f64) as usize;
                }
                *v = base * (1.0 + per_sample * since as f64);
                since += 1;
            }
        }
        Shape::Step => {
            let at = (r.range(0.3, 0.7) * n as f64) as usize;
            let factor = if r.unit() < 0.5 {
                r.range(0.5, 0.7)
            } else {
                r.range(1.4, 2.0)
            };
            for (i, v) in level.iter_mut().enumerate() {
                *v = if i < at { base } else { base * factor };
            }
        }
        Shape::Batch => {
            let idle = base * r.range(0.03, 0.10);
            let start_hour = r.range(0.0, 20.0);
            for day in 0..i64::from(days) {
                let start = day * PER_DAY + (start_hour * 12.0 + r.range(0.0, 6.0)) as i64;
                let len = (r.range(1.0, 4.0) * 12.0) as i64;
                let size = base * r.range(0.8, 1.2);
                for k in 0..PER_DAY {
                    let i = day * PER_DAY + k;
                    let into = i - start;
                    level[i as usize] = if (0..len).contains(&into) {
                        // Ramps up over the run's first quarter, then holds.
                        idle + (size - idle) * ((into + 1) as f64 / (len as f64 / 4.0)).min(1.0)
                    } else {
                        idle
                    };
                }
            }
        }
    }
    let top = level.iter().copied().fold(0.0, f64::max);
    let provisioned = (1.5 * top / (64.0 * MI)).ceil() * 64.0 * MI;
    let samples = level
        .iter()
        .enumerate()
        .map(|(i, v)| TraceSample {
            t: T0 + i as i64 * STEP,
            memory: (v * r.range(0.98, 1.02)).round(),
            limit: Some(provisioned),
        })
        .collect();
    Series {
        id: format!("synthetic-{}-{}", shape.name(), index + 1),
        samples,
        intervals: None,
    }
}

/// `count` series of each of `shapes`, shape by shape.
pub fn generate(
    shapes: &[Shape],
    seed: u64,
    count: usize,
    days: u32,
) -> impl Iterator<Item = Series> + '_ {
    shapes
        .iter()
        .flat_map(move |&s| (0..count).map(move |i| series(s, seed, i, days)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_series_other_seed_other_series() {
        for s in Shape::ALL {
            let a = series(s, 7, 3, 10);
            assert_eq!(a, series(s, 7, 3, 10), "{}", s.name());
            assert_ne!(a.samples, series(s, 8, 3, 10).samples, "{}", s.name());
            assert_eq!(a.samples.len(), 10 * 288);
            assert_eq!(a.id, format!("synthetic-{}-4", s.name()));
            let top = a.samples.iter().map(|x| x.memory).fold(0.0, f64::max);
            assert!(
                a.samples.iter().all(|x| x.limit.unwrap() >= top),
                "{}",
                s.name()
            );
        }
    }

    fn day_peaks(s: &Series) -> Vec<f64> {
        s.samples
            .chunks(288)
            .map(|d| d.iter().map(|x| x.memory).fold(0.0, f64::max))
            .collect()
    }

    #[test]
    fn shapes_look_like_their_names() {
        // Daily: every day's peak is well above its trough.
        let d = series(Shape::Daily, 1, 0, 3);
        let lo = d.samples.iter().map(|x| x.memory).fold(f64::MAX, f64::min);
        assert!(day_peaks(&d).iter().all(|p| *p > 1.25 * lo));
        // Leak: usage drops by a restart at least once in two weeks.
        let l = series(Shape::Leak, 1, 0, 14);
        assert!(l
            .samples
            .windows(2)
            .any(|w| w[1].memory < 0.95 * w[0].memory));
        // Step: the first and last days differ by at least 30%.
        let s = day_peaks(&series(Shape::Step, 1, 0, 10));
        let ratio = s[9] / s[0];
        assert!(!(0.7..=1.3).contains(&ratio), "{ratio}");
        // Batch: most of the day is idle, far below the day's peak.
        let b = series(Shape::Batch, 1, 0, 2);
        let peak = day_peaks(&b)[0];
        let idle = b.samples[..288]
            .iter()
            .filter(|x| x.memory < 0.2 * peak)
            .count();
        assert!(idle > 288 / 2, "{idle}");
    }
}
