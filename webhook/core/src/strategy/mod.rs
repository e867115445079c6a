//! Memory recommenders ("strategies") that the replay backtests and the analyzer runs.
//!
//! Every strategy is a small per-series state machine fed, in time order, with
//! per-interval aggregates of usage ([`Interval`]), and asked at each decision time
//! for the request and limit to apply next ([`Strategy::recommend`]). The inputs are
//! what Prometheus can return in one aggregated `query_range` (see [`Interval`]), so
//! the analyzer and `rightsizer replay` run the very same code on the same kind of
//! input. Strategy code is pure: no clock, no I/O.

mod adaptive;
mod autopilot;
mod clamp;
mod histogram;
mod krr;
mod seed;
mod vpa;
mod window;

pub use adaptive::{Adaptive, AdaptiveParams};
pub use autopilot::AutopilotWindow;
pub use clamp::{clamp, REASON_CLAMPED};
pub use histogram::DecayingHistogram;
pub use krr::KrrSimple;
pub use seed::Seed;
pub use vpa::Vpa;
pub use window::WindowMax;

use crate::rules::Sizes;

/// Usage of one container (or one trace series) over one interval, typically 5 minutes.
///
/// The analyzer obtains these with one `query_range` per aggregate, at `step` = the
/// interval width and a range selector of the same width, grouped by container:
///
/// ```text
/// max by (namespace, pod, container) (max_over_time(container_memory_working_set_bytes{container!=""}[5m]))
/// avg by (namespace, pod, container) (avg_over_time(container_memory_working_set_bytes{container!=""}[5m]))
/// sum by (namespace, pod, container) (count_over_time(container_memory_working_set_bytes{container!=""}[5m]))
/// ```
///
/// (`start` is the evaluation timestamp minus the width.) The replay builds the same
/// aggregates from raw trace samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Unix seconds at which the interval starts.
    pub start: i64,
    /// Width in seconds.
    pub seconds: u32,
    /// Peak usage in the interval, bytes.
    pub max: f64,
    /// Mean usage in the interval, bytes.
    pub avg: f64,
    /// Number of raw samples behind the figures.
    pub samples: u32,
}

impl Interval {
    /// Unix seconds at which the interval ends.
    pub fn end(&self) -> i64 {
        self.start + i64::from(self.seconds)
    }
}

/// A memory request and limit, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemorySizes {
    pub request: u64,
    pub limit: u64,
}

impl From<MemorySizes> for Sizes {
    fn from(d: MemorySizes) -> Sizes {
        Sizes {
            request: Some(d.request),
            limit: Some(d.limit),
        }
    }
}

/// One recommender's state for one series.
pub trait Strategy: Send {
    /// Feed the next interval (intervals arrive in time order, with gaps allowed).
    fn observe(&mut self, iv: &Interval);

    /// The sizes to apply from `now` on, given what is applied now (`None`: nothing
    /// known). Returns `None` to keep `current` (not enough evidence, hysteresis or
    /// cooldown). A returned value is applied as is.
    fn recommend(&mut self, now: i64, current: Option<MemorySizes>) -> Option<MemorySizes>;
}

/// A named strategy constructor.
pub struct Spec {
    pub name: &'static str,
    /// One line for `--help` and reports.
    pub about: &'static str,
    make: Make,
}

enum Make {
    Plain(fn() -> Box<dyn Strategy>),
    /// A built-in strategy with parameters set at run time (`replay --param`).
    Tuned(Box<dyn Fn() -> Box<dyn Strategy> + Send + Sync>),
}

impl Spec {
    /// A strategy built by `make` (e.g. one with policy-set parameters).
    pub const fn new(
        name: &'static str,
        about: &'static str,
        make: fn() -> Box<dyn Strategy>,
    ) -> Self {
        Spec {
            name,
            about,
            make: Make::Plain(make),
        }
    }

    /// A fresh state for one series.
    pub fn make(&self) -> Box<dyn Strategy> {
        match &self.make {
            Make::Plain(f) => f(),
            Make::Tuned(f) => f(),
        }
    }
}

/// `base` (a strategy with parameters: `adaptive`) with `params` (`name=value`) set,
/// named `base[name=value;...]`: for experiments and sweeps in `rightsizer replay`.
/// The name is leaked: a process makes a handful of these.
pub fn tuned(base: &str, params: &[(String, f64)]) -> Result<Spec, String> {
    if base != "adaptive" {
        return Err(format!("strategy {base:?} has no settable parameters"));
    }
    let mut p = AdaptiveParams::default();
    for (k, v) in params {
        p.set(k, *v)?;
    }
    let name = if params.is_empty() {
        base.to_string()
    } else {
        // `;`, not `,`: the name is a CSV field of the report.
        let list: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{base}[{}]", list.join(";"))
    };
    Ok(Spec {
        name: name.leak(),
        about: "adaptive with parameters set on the command line",
        make: Make::Tuned(Box::new(move || Box::new(Adaptive::new(p)))),
    })
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec").field("name", &self.name).finish()
    }
}

/// The strategy used when a policy names none.
pub const DEFAULT: &str = "adaptive";

/// The recommender that is the seed rules themselves (`crate::rules::Rules::propose`,
/// with the analyzer's hysteresis, cooldown and OOM floor), not a strategy state.
pub const SEED: &str = "seed";

/// Every built-in strategy, the default first.
pub static ALL: &[Spec] = &[
    Spec::new(
        "adaptive",
        "request: decaying p95 of 5m peaks; limit: 30-day peak (then decaying) with a per-series, overrun-widened margin",
        || Box::new(Adaptive::default()),
    ),
    Spec::new(
        "seed",
        "the project's seed rules over the last 24h, with hysteresis, cooldown, step limit and OOM floor",
        || Box::new(Seed::new(crate::rules::Rules::default())),
    ),
    Spec::new(
        "krr-simple",
        "KRR simple: request = limit = 1.15 x 14-day peak, at least 100 MiB",
        || Box::new(KrrSimple::default()),
    ),
    Spec::new(
        "vpa",
        "VPA recommender: 1.15 x p90 of a daily-peak histogram (24h half-life, 5% buckets)",
        || Box::new(Vpa::default()),
    ),
    Spec::new(
        "autopilot-window",
        "Autopilot moving window: p98 of decaying 5m peaks (48h half-life) + 10%, max over the last hour",
        || Box::new(AutopilotWindow::default()),
    ),
];

/// The names of every built-in strategy, the default first.
pub fn names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|s| s.name)
}

/// The strategy with this name.
pub fn by_name(name: &str) -> Option<&'static Spec> {
    ALL.iter().find(|s| s.name == name)
}

/// Bytes rounded up to a whole MiB, so recommendations print as clean quantities;
/// at least 1 MiB (a memory size of 0 means "unset" to Kubernetes).
pub(crate) fn to_mib_ceil(v: f64) -> u64 {
    const MI: f64 = crate::quantity::MI as f64;
    if v.is_finite() && v > MI {
        ((v / MI).ceil() * MI).min(u64::MAX as f64) as u64
    } else {
        crate::quantity::MI
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_and_default_exists() {
        for n in names() {
            assert_eq!(by_name(n).map(|s| s.name), Some(n));
        }
        assert!(by_name(DEFAULT).is_some());
        assert!(by_name("nope").is_none());
        assert_eq!(names().next(), Some(DEFAULT));
    }

    #[test]
    fn mib_rounding() {
        assert_eq!(to_mib_ceil(1.0), 1 << 20);
        assert_eq!(to_mib_ceil((1u64 << 20) as f64), 1 << 20);
        assert_eq!(to_mib_ceil((3u64 << 20) as f64 + 1.0), 4 << 20);
        assert_eq!(to_mib_ceil(f64::NAN), 1 << 20);
        assert_eq!(to_mib_ceil(-5.0), 1 << 20);
    }
}

/// Intervals for the strategies' table tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::Interval;
    use crate::quantity::MI;

    /// A 5-minute interval with one sample of `bytes`.
    pub fn iv_bytes(start: i64, bytes: f64) -> Interval {
        Interval {
            start,
            seconds: 300,
            max: bytes,
            avg: bytes,
            samples: 1,
        }
    }

    /// A 5-minute interval with one sample of `mib` MiB.
    pub fn iv_mib(start: i64, mib: f64) -> Interval {
        iv_bytes(start, mib * MI as f64)
    }
}
