//! A histogram with exponentially growing buckets and exponentially decaying sample
//! weights, the structure VPA and Autopilot both keep per container.
//!
//! Bucket `i` starts at `first × (ratio^i − 1) / (ratio − 1)`: the first bucket is
//! `first` wide and each next one `ratio` times wider, so the relative resolution
//! tends to `ratio − 1`. Decay is done the cheap way: instead of shrinking old
//! weights, new samples get a weight that grows by 2 every half-life, with an
//! occasional renormalisation so the numbers stay finite. Only the buckets between the
//! lowest and the highest used are stored (a container's usage spans a few dozen of
//! the two hundred: the analyzer keeps one histogram per container).

#[derive(Debug, Clone)]
pub struct DecayingHistogram {
    first: f64,
    ratio: f64,
    ln_ratio: f64,
    half_life: f64,
    /// Buckets in all.
    buckets: usize,
    /// Weights of buckets `base..base + weights.len()`; the others are 0.
    base: usize,
    weights: Vec<f64>,
    total: f64,
    /// Time at which a weight of 1 means "1".
    reference: i64,
    lowest: usize,
    highest: usize,
}

/// Past this many half-lives from the reference the weights are renormalised.
const RENORMALISE_AFTER: f64 = 64.0;

impl DecayingHistogram {
    /// Buckets from 0 to `max_value`: the first `first` wide, each next `ratio` times
    /// wider. Weights halve every `half_life_seconds`.
    pub fn new(first: f64, ratio: f64, max_value: f64, half_life_seconds: f64) -> Self {
        let ln_ratio = ratio.ln();
        let n = ((1.0 + max_value * (ratio - 1.0) / first).ln() / ln_ratio).ceil() as usize + 1;
        DecayingHistogram {
            first,
            ratio,
            ln_ratio,
            half_life: half_life_seconds,
            buckets: n.max(1),
            base: 0,
            weights: Vec::new(),
            total: 0.0,
            reference: 0,
            lowest: usize::MAX,
            highest: 0,
        }
    }

    /// Index of the bucket holding `v` (values past the range go to the last bucket).
    pub fn bucket(&self, v: f64) -> usize {
        if v.is_nan() || v <= 0.0 {
            return 0;
        }
        let i = ((1.0 + v * (self.ratio - 1.0) / self.first).ln() / self.ln_ratio).floor();
        (i.max(0.0) as usize).min(self.buckets - 1)
    }

    fn weight(&self, b: usize) -> f64 {
        b.checked_sub(self.base)
            .and_then(|i| self.weights.get(i))
            .copied()
            .unwrap_or(0.0)
    }

    /// The stored weight of bucket `b`, storing the buckets up to it first.
    fn slot(&mut self, b: usize) -> &mut f64 {
        if self.weights.is_empty() {
            self.base = b;
        } else if b < self.base {
            let grow = self.base - b;
            self.weights.splice(0..0, std::iter::repeat_n(0.0, grow));
            self.base = b;
        }
        let i = b - self.base;
        if i >= self.weights.len() {
            self.weights.resize(i + 1, 0.0);
        }
        &mut self.weights[i]
    }

    /// Lower boundary of bucket `i`.
    pub fn bucket_start(&self, i: usize) -> f64 {
        self.first * (self.ratio.powi(i as i32) - 1.0) / (self.ratio - 1.0)
    }

    fn scaled_weight(&mut self, weight: f64, t: i64) -> f64 {
        if self.total <= 0.0 {
            self.reference = t;
        }
        let mut halves = (t - self.reference) as f64 / self.half_life;
        if halves > RENORMALISE_AFTER {
            let f = (-halves).exp2();
            self.weights.iter_mut().for_each(|w| *w *= f);
            self.total *= f;
            self.reference = t;
            halves = 0.0;
        }
        weight * halves.exp2()
    }

    /// Add a sample of value `v` observed at `t` (Unix seconds).
    pub fn add(&mut self, v: f64, weight: f64, t: i64) {
        let w = self.scaled_weight(weight, t);
        let b = self.bucket(v);
        *self.slot(b) += w;
        self.total += w;
        self.lowest = self.lowest.min(b);
        self.highest = self.highest.max(b);
    }

    /// Remove a sample previously added with the same value, weight and time.
    pub fn subtract(&mut self, v: f64, weight: f64, t: i64) {
        let w = weight * ((t - self.reference) as f64 / self.half_life).exp2();
        let b = self.bucket(v);
        let slot = self.slot(b);
        *slot = (*slot - w).max(0.0);
        self.total = (self.total - w).max(0.0);
    }

    pub fn is_empty(&self) -> bool {
        self.total <= 0.0
    }

    /// The `p` quantile (0..=1) as the upper end of the bucket where the cumulative
    /// weight reaches `p` of the total (the lower end for the last bucket).
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.is_empty() || self.lowest > self.highest {
            return None;
        }
        let threshold = p * self.total;
        // Scan from the top: the quantiles asked for are high ones.
        let mut above = 0.0;
        let mut b = self.highest;
        while b > self.lowest && self.total - above - self.weight(b) >= threshold {
            above += self.weight(b);
            b -= 1;
        }
        Some(if b + 1 < self.buckets {
            self.bucket_start(b + 1)
        } else {
            self.bucket_start(b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn vpa_like() -> DecayingHistogram {
        DecayingHistogram::new(1e7, 1.05, 1e12, 86400.0)
    }

    #[test]
    fn buckets_grow_by_ratio() {
        let h = vpa_like();
        assert_eq!(h.bucket(0.0), 0);
        assert_eq!(h.bucket(9.99e6), 0);
        assert_eq!(h.bucket(1e7), 1);
        assert!((h.bucket_start(1) - 1e7).abs() < 1e-3);
        assert!((h.bucket_start(2) - 2.05e7).abs() < 1e-3);
        assert_eq!(h.bucket(2.06e7), 2);
        assert_eq!(h.bucket(1e15), h.buckets - 1);
    }

    #[rstest]
    #[case(0.5, 2.05e7)] // half the weight is in bucket 1 [1e7, 2.05e7)
    #[case(0.9, 3.1525e7)] // the rest is in bucket 2 [2.05e7, 3.1525e7)
    fn percentile_is_bucket_end(#[case] p: f64, #[case] want: f64) {
        let mut h = vpa_like();
        h.add(1.5e7, 1.0, 0);
        h.add(2.5e7, 1.0, 0);
        let got = h.percentile(p).unwrap();
        assert!((got - want).abs() < 1.0, "{got} vs {want}");
    }

    #[test]
    fn decay_halves_old_weight() {
        let mut h = vpa_like();
        // A high sample of weight 1, then one half-life later a low one of weight 2,
        // which counts 4 against the old one's 1: the low bucket holds 80%.
        h.add(5e8, 1.0, 0);
        h.add(1.5e7, 2.0, 86400);
        assert!((h.percentile(0.79).unwrap() - 2.05e7).abs() < 1.0);
        assert!(h.percentile(0.81).unwrap() > 5e8);
    }

    #[test]
    fn renormalises_without_losing_order() {
        let mut h = vpa_like();
        h.add(5e8, 1.0, 0);
        for day in 1..200 {
            h.add(1.5e7, 1.0, day * 86400);
        }
        assert!(h.total.is_finite());
        assert!(h.percentile(0.99).unwrap() < 1e8);
    }

    #[test]
    fn only_the_used_span_is_stored() {
        let mut h = vpa_like();
        h.add(5e8, 1.0, 0);
        h.add(4e8, 1.0, 0);
        h.add(6e8, 1.0, 0);
        let (lo, hi) = (h.bucket(4e8), h.bucket(6e8));
        assert_eq!((h.base, h.weights.len()), (lo, hi - lo + 1));
        assert_eq!(h.weight(h.bucket(5e8)), 1.0);
        assert_eq!(h.weight(0), 0.0);
        assert_eq!(h.weight(h.buckets - 1), 0.0);
    }

    #[test]
    fn subtract_undoes_add() {
        let mut h = vpa_like();
        h.add(1.5e7, 1.0, 100);
        h.add(9e8, 1.0, 100);
        h.subtract(9e8, 1.0, 100);
        assert!(h.percentile(1.0).unwrap() < 3e7);
        assert!(DecayingHistogram::new(1e7, 1.05, 1e12, 1.0)
            .percentile(0.5)
            .is_none());
    }
}
