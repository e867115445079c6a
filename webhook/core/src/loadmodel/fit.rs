//! Non-negative least squares of per-pod memory against per-pod load:
//! memory ≈ base + Σ coefficient[unit] × load[unit], with base and every coefficient
//! ≥ 0 (memory does not shrink as users arrive; a negative term would be noise).
//!
//! Models have a handful of units, so the exact solution is found by trying every set
//! of "free" variables (the others held at zero): the NNLS optimum is the unconstrained
//! least-squares solution on its own free set, and that solution is feasible, so the
//! best feasible candidate over all sets is the optimum.

/// At most this many units per model (2^(units+1) candidate sets are tried).
pub const MAX_UNITS: usize = 10;

use crate::recommendation::fit::Fit;

/// One sample: a pod's memory and its load per unit (in the order of `units`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSample {
    pub memory: f64,
    pub load: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("no samples to fit")]
    NoSamples,
    #[error("{0} units: at most {MAX_UNITS} per model")]
    TooManyUnits(usize),
    #[error("sample {index} has {got} load values, expected {want}")]
    Shape {
        index: usize,
        got: usize,
        want: usize,
    },
    #[error("sample {0} holds a value that is not a finite number")]
    NotFinite(usize),
}

/// Solve `a x = b` (square, small) by Gaussian elimination with partial pivoting.
/// `None` when the system is singular (e.g. a unit whose load never varies).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    let scale = (0..n).map(|i| a[i][i].abs()).fold(0.0, f64::max);
    if scale == 0.0 {
        return (n == 0).then(Vec::new);
    }
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() <= scale * 1e-12 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            if f != 0.0 {
                let (upper, lower) = a.split_at_mut(row);
                for (t, p) in lower[0][col..].iter_mut().zip(&upper[col][col..]) {
                    *t -= f * p;
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| a[i][k] * x[k]).sum();
        x[i] = (b[i] - s) / a[i][i];
    }
    Some(x)
}

fn p95(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    // Nearest rank.
    let rank = ((v.len() as f64) * 0.95).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Fit base and non-negative coefficients for `units` to `samples`.
pub fn fit(units: &[String], samples: &[LoadSample]) -> Result<Fit, FitError> {
    let k = units.len();
    if k > MAX_UNITS {
        return Err(FitError::TooManyUnits(k));
    }
    if samples.is_empty() {
        return Err(FitError::NoSamples);
    }
    for (i, s) in samples.iter().enumerate() {
        if s.load.len() != k {
            return Err(FitError::Shape {
                index: i,
                got: s.load.len(),
                want: k,
            });
        }
        if !s.memory.is_finite() || s.load.iter().any(|v| !v.is_finite()) {
            return Err(FitError::NotFinite(i));
        }
    }
    // Column 0 is the base (all ones); column j>0 is unit j-1.
    let m = k + 1;
    let x = |s: &LoadSample, j: usize| if j == 0 { 1.0 } else { s.load[j - 1] };
    let mut gram = vec![vec![0.0; m]; m];
    let mut xty = vec![0.0; m];
    for s in samples {
        for (i, row) in gram.iter_mut().enumerate() {
            xty[i] += x(s, i) * s.memory;
            for (j, g) in row.iter_mut().enumerate() {
                *g += x(s, i) * x(s, j);
            }
        }
    }
    let ss_res = |beta: &[f64]| -> f64 {
        samples
            .iter()
            .map(|s| {
                let pred: f64 = (0..m).map(|j| beta[j] * x(s, j)).sum();
                (s.memory - pred).powi(2)
            })
            .sum()
    };
    let mut best: Option<(f64, Vec<f64>)> = None;
    for mask in 0u32..(1u32 << m) {
        let free: Vec<usize> = (0..m).filter(|j| mask & (1 << j) != 0).collect();
        let a = free
            .iter()
            .map(|&i| free.iter().map(|&j| gram[i][j]).collect())
            .collect();
        let b = free.iter().map(|&i| xty[i]).collect();
        let Some(sol) = solve(a, b) else { continue };
        if sol.iter().any(|v| *v < 0.0) {
            continue;
        }
        let mut beta = vec![0.0; m];
        for (&j, v) in free.iter().zip(sol) {
            beta[j] = v;
        }
        let r = ss_res(&beta);
        if best.as_ref().is_none_or(|(b, _)| r < *b) {
            best = Some((r, beta));
        }
    }
    // The empty set (all zero) is always feasible, so there is a best.
    let (res, beta) = best.unwrap_or_else(|| (ss_res(&vec![0.0; m]), vec![0.0; m]));
    let n = samples.len() as f64;
    let mean = samples.iter().map(|s| s.memory).sum::<f64>() / n;
    let ss_tot: f64 = samples.iter().map(|s| (s.memory - mean).powi(2)).sum();
    let r2 = if ss_tot > 0.0 {
        1.0 - res / ss_tot
    } else if res <= f64::EPSILON * mean.abs().max(1.0) {
        1.0
    } else {
        0.0
    };
    let residuals = samples
        .iter()
        .map(|s| s.memory - (0..m).map(|j| beta[j] * x(s, j)).sum::<f64>())
        .collect();
    Ok(Fit {
        base: beta[0],
        coefficients: units
            .iter()
            .cloned()
            .zip(beta[1..].iter().copied())
            .collect(),
        r2,
        samples: samples.len() as u64,
        residual_p95: p95(residuals),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (tests must not depend on a seed crate).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
        }
    }

    const MB: f64 = 1_048_576.0;

    fn units(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// memory = base + Σ c × load + uniform noise in ±noise.
    fn synth(base: f64, coef: &[f64], noise: f64, n: usize, seed: u64) -> Vec<LoadSample> {
        let mut r = Lcg(seed);
        (0..n)
            .map(|_| {
                let load: Vec<f64> = coef.iter().map(|_| (r.next() * 40.0).floor()).collect();
                let mem = base
                    + coef.iter().zip(&load).map(|(c, l)| c * l).sum::<f64>()
                    + (r.next() * 2.0 - 1.0) * noise;
                LoadSample { memory: mem, load }
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        base: f64,
        coef: &'static [f64],
        noise: f64,
        /// Tolerance on base and coefficients (bytes).
        tol: f64,
        min_r2: f64,
    }

    #[test]
    fn recovers_known_truth() {
        let cases = [
            Case {
                name: "exact",
                base: 100.0 * MB,
                coef: &[15.0 * MB, 8.0 * MB, 25.0 * MB],
                noise: 0.0,
                tol: 1.0,
                min_r2: 0.999_999,
            },
            Case {
                name: "noisy",
                base: 100.0 * MB,
                coef: &[15.0 * MB, 8.0 * MB, 25.0 * MB, 30.0 * MB],
                noise: 20.0 * MB,
                tol: 1.5 * MB,
                min_r2: 0.95,
            },
            Case {
                name: "router",
                base: 32.0 * MB,
                coef: &[2.5 * MB],
                noise: 4.0 * MB,
                tol: 0.1 * MB,
                min_r2: 0.98,
            },
            // A unit with no effect: its coefficient is found at (or near) zero.
            Case {
                name: "idle-unit",
                base: 64.0 * MB,
                coef: &[10.0 * MB, 0.0],
                noise: 2.0 * MB,
                tol: 0.2 * MB,
                min_r2: 0.99,
            },
        ];
        for c in cases {
            let names: Vec<String> = (0..c.coef.len()).map(|i| format!("u{i}")).collect();
            let data = synth(c.base, c.coef, c.noise, 2000, 7);
            let f = fit(&names, &data).unwrap();
            assert!(
                (f.base - c.base).abs() <= c.tol * 3.0,
                "{}: base {} vs {}",
                c.name,
                f.base,
                c.base
            );
            for (i, want) in c.coef.iter().enumerate() {
                let got = f.coefficients[&names[i]];
                assert!(got >= 0.0);
                assert!(
                    (got - want).abs() <= c.tol,
                    "{}: u{i} {got} vs {want}",
                    c.name
                );
            }
            assert!(f.r2 >= c.min_r2, "{}: r2 {}", c.name, f.r2);
            assert_eq!(f.samples, 2000);
            assert!(
                f.residual_p95 <= c.noise + 1.0,
                "{}: p95 {}",
                c.name,
                f.residual_p95
            );
        }
    }

    #[test]
    fn negative_relation_is_clamped_to_zero() {
        // Memory falls with load: the best non-negative answer is a flat model.
        let data: Vec<LoadSample> = (0..100)
            .map(|i| LoadSample {
                memory: 500.0 - 2.0 * f64::from(i % 50),
                load: vec![f64::from(i % 50)],
            })
            .collect();
        let f = fit(&units(&["a"]), &data).unwrap();
        assert_eq!(f.coefficients["a"], 0.0);
        // Flat fit at the mean: 500 − 2 × 24.5 = 451.
        assert!((f.base - 451.0).abs() < 1e-6, "{}", f.base);
        assert!(f.r2.abs() < 1e-9);
    }

    #[test]
    fn unrelated_series_has_low_r2() {
        let mut r = Lcg(99);
        let data: Vec<LoadSample> = (0..1000)
            .map(|_| LoadSample {
                memory: 200.0 * MB + r.next() * 100.0 * MB,
                load: vec![(r.next() * 40.0).floor()],
            })
            .collect();
        let f = fit(&units(&["a"]), &data).unwrap();
        assert!(f.r2 < 0.05, "r2 {}", f.r2);
    }

    #[test]
    fn constant_load_is_not_singular_trouble() {
        // A unit that never varies cannot be told from the base: the fit still answers.
        let data: Vec<LoadSample> = (0..50)
            .map(|i| LoadSample {
                memory: 100.0 + f64::from(i),
                load: vec![3.0, f64::from(i)],
            })
            .collect();
        let f = fit(&units(&["flat", "b"]), &data).unwrap();
        assert!((f.coefficients["b"] - 1.0).abs() < 1e-9);
        assert!((f.base + 3.0 * f.coefficients["flat"] - 100.0).abs() < 1e-6);
        assert!(f.r2 > 0.999_999);
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(fit(&units(&["a"]), &[]), Err(FitError::NoSamples));
        let bad = [LoadSample {
            memory: 1.0,
            load: vec![],
        }];
        assert!(matches!(
            fit(&units(&["a"]), &bad),
            Err(FitError::Shape { .. })
        ));
        let nan = [LoadSample {
            memory: f64::NAN,
            load: vec![1.0],
        }];
        assert_eq!(fit(&units(&["a"]), &nan), Err(FitError::NotFinite(0)));
        let many: Vec<String> = (0..11).map(|i| format!("u{i}")).collect();
        assert_eq!(fit(&many, &bad), Err(FitError::TooManyUnits(11)));
    }

    #[test]
    fn p95_nearest_rank() {
        assert_eq!(p95((1..=100).map(f64::from).collect()), 95.0);
        assert_eq!(p95(vec![3.0]), 3.0);
        assert_eq!(p95(vec![]), 0.0);
    }
}
