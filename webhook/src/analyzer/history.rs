//! Per-interval usage history for the strategies (`rightsizer_core::strategy`).
//!
//! Three `query_range` calls (peak, mean, sample count per 5-minute interval, grouped
//! by pod-container) are folded into one `Interval` series per workload container with
//! the analyzer's owner mapping. The analyzer feeds these to one strategy state per
//! container, cycle after cycle, only with intervals it has not fed before;
//! `rightsizer replay --prometheus` builds its series with the very same function.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;

use lru::LruCache;

use rightsizer_core::analysis::queries::{Builder, IntervalKind, QueryConfig};
use rightsizer_core::recommendation::ContainerKey;
use rightsizer_core::strategy::{Interval, MemorySizes, Spec, Strategy};

use super::mapping::OwnerIndex;
use super::prom::{PromClient, PromError, RangeSeries};

/// Interval width, seconds: the analyzer's and the replay's resolution.
pub const WIDTH: u32 = 300;
/// The most history read at once (a strategy's first feed).
pub const MAX_HISTORY_SECS: u64 = 14 * 86400;

type PodKey = (String, String, String);

#[derive(Debug, Default, Clone, Copy)]
struct PodPoint {
    max: Option<f64>,
    avg: Option<f64>,
    samples: u32,
}

/// Range answers, per pod-container and evaluation time, before folding.
#[derive(Debug, Default)]
pub struct IntervalAnswers {
    pods: HashMap<PodKey, BTreeMap<i64, PodPoint>>,
}

impl IntervalAnswers {
    /// Take one range query's answer.
    pub fn absorb(&mut self, kind: IntervalKind, series: Vec<RangeSeries>) {
        for s in series {
            let key = (
                s.label("namespace").to_string(),
                s.label("pod").to_string(),
                s.label("container").to_string(),
            );
            if key.2.is_empty() {
                continue;
            }
            let pts = self.pods.entry(key).or_default();
            for (t, v) in s.points {
                let p = pts.entry(t).or_default();
                match kind {
                    IntervalKind::Max => p.max = Some(v),
                    IntervalKind::Avg => p.avg = Some(v),
                    IntervalKind::Samples => p.samples = v.max(0.0).min(f64::from(u32::MAX)) as u32,
                }
            }
        }
    }

    /// Fold pods into workload containers: the max of the peaks, the sample-weighted
    /// mean (plain mean when no counts), the summed counts. An answer evaluated at `t`
    /// covers the interval that ends at `t`.
    pub fn fold(self, owners: &OwnerIndex, width: u32) -> BTreeMap<ContainerKey, Vec<Interval>> {
        #[derive(Default)]
        struct Sum {
            max: f64,
            weighted: f64,
            plain: f64,
            n: u32,
            samples: u32,
        }
        let mut by_key: HashMap<ContainerKey, BTreeMap<i64, Sum>> = HashMap::new();
        for ((ns, pod, container), pts) in self.pods {
            let key = ContainerKey::new(owners.workload(&ns, &pod), container);
            let out = by_key.entry(key).or_default();
            for (t, p) in pts {
                let (Some(max), Some(avg)) = (p.max, p.avg) else {
                    continue;
                };
                let s = out.entry(t).or_default();
                s.max = if s.n == 0 { max } else { s.max.max(max) };
                s.weighted += avg * f64::from(p.samples);
                s.plain += avg;
                s.n += 1;
                s.samples = s.samples.saturating_add(p.samples);
            }
        }
        by_key
            .into_iter()
            .map(|(k, pts)| {
                let ivs = pts
                    .into_iter()
                    .map(|(t, s)| Interval {
                        start: t - i64::from(width),
                        seconds: width,
                        max: s.max,
                        avg: if s.samples > 0 {
                            s.weighted / f64::from(s.samples)
                        } else {
                            s.plain / f64::from(s.n)
                        },
                        samples: s.samples,
                    })
                    .collect();
                (k, ivs)
            })
            .collect()
    }
}

/// The evaluation times of the intervals that end in `(after, end]` on the `width`
/// grid: `(first, last)`, or `None` when there is none.
pub fn new_range(after: i64, end: u64, width: u32) -> Option<(u64, u64)> {
    let w = u64::from(width);
    let last = end - end % w;
    let first = u64::try_from(after).ok().map_or(w, |a| a - a % w + w);
    (first <= last).then_some((first, last))
}

/// Run the three range queries for evaluation times `first..=last` into `answers`,
/// each answer absorbed as it arrives (so at most the three answers in flight are held
/// decoded). Returns the number of series read; the first failure fails the part.
pub async fn read_intervals(
    client: &PromClient,
    builder: &Builder<'_>,
    first: u64,
    last: u64,
    width: u32,
    answers: &mut IntervalAnswers,
) -> Result<u64, PromError> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let qs = builder.memory_intervals(width);
    let step = u64::from(width);
    let mut running: FuturesUnordered<_> = qs
        .iter()
        .map(|(kind, q)| async move { (*kind, client.query_range(q, first, last, step).await) })
        .collect();
    let mut series = 0u64;
    while let Some((kind, ans)) = running.next().await {
        let ans = ans?;
        series += ans.len() as u64;
        answers.absorb(kind, ans);
    }
    Ok(series)
}

/// The per-container series of `(end - window, end]` (window capped at 14 days),
/// pods mapped to workloads with the owner series of that window. Returns the
/// series and the number of queries run. Used by `rightsizer replay --prometheus`.
pub async fn load(
    client: &PromClient,
    cfg: &QueryConfig,
    window: u64,
    end: u64,
) -> Result<(BTreeMap<ContainerKey, Vec<Interval>>, u64), PromError> {
    let window = window.clamp(u64::from(WIDTH), MAX_HISTORY_SECS);
    let cfg = QueryConfig {
        long_window_secs: window,
        ..cfg.clone()
    };
    let b = Builder::new(&cfg, None);
    let mut owners = OwnerIndex::default();
    let owner_qs = b.owners();
    let mut queries = owner_qs.len() as u64;
    for (kind, q) in owner_qs {
        let v = client.query(&q, end).await?;
        owners.absorb(kind, &v);
    }
    let mut answers = IntervalAnswers::default();
    let after = end.saturating_sub(window) as i64;
    if let Some((first, last)) = new_range(after, end, WIDTH) {
        read_intervals(client, &b, first, last, WIDTH, &mut answers).await?;
        queries += 3;
    }
    Ok((answers.fold(&owners, WIDTH), queries))
}

/// One container's strategy state.
struct Track {
    name: &'static str,
    strategy: Box<dyn Strategy>,
    /// End of the last interval fed.
    fed_until: i64,
    /// The strategy's last answer (what it believes is applied).
    own: Option<MemorySizes>,
}

/// One strategy state per container, bounded like the cache, and the time up to
/// which intervals have been read.
pub struct Tracks {
    tracks: LruCache<ContainerKey, Track>,
    /// Evaluation time of the last interval read for everyone.
    pub read_until: Option<i64>,
    /// Intervals fed so far, all containers.
    pub fed: u64,
}

impl Tracks {
    pub fn new(capacity: usize) -> Self {
        Tracks {
            tracks: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
            read_until: None,
            fed: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Feed `key`'s strategy (`spec`; a new state when the policy switched strategy)
    /// with the intervals it has not seen, then ask it at `now`. `running`: what the
    /// pods run with, used until the strategy has answered once. Returns the
    /// strategy's current decision.
    pub fn decide(
        &mut self,
        key: &ContainerKey,
        spec: &'static Spec,
        intervals: &[Interval],
        now: i64,
        running: Option<MemorySizes>,
    ) -> Option<MemorySizes> {
        self.feed(key, spec, intervals);
        let t = self.tracks.get_mut(key)?;
        if let Some(d) = t.strategy.recommend(now, t.own.or(running)) {
            t.own = Some(d);
        }
        t.own
    }

    /// Feed `key`'s strategy (`spec`; a new state when the policy switched strategy)
    /// with the intervals it has not seen (`intervals` in time order).
    pub fn feed(&mut self, key: &ContainerKey, spec: &'static Spec, intervals: &[Interval]) {
        if self.tracks.peek(key).is_none_or(|t| t.name != spec.name) {
            self.tracks.put(
                key.clone(),
                Track {
                    name: spec.name,
                    strategy: spec.make(),
                    fed_until: i64::MIN,
                    own: None,
                },
            );
        }
        let Some(t) = self.tracks.get_mut(key) else {
            return;
        };
        for iv in intervals {
            // Never feed an interval twice (overlapping reads, a cursor held back by a
            // failed part, restarts of the cursor).
            if iv.start >= t.fed_until {
                t.strategy.observe(iv);
                t.fed_until = iv.end();
                self.fed += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(pod: &str, pts: &[(i64, f64)]) -> RangeSeries {
        RangeSeries {
            labels: vec![
                ("namespace".into(), "a".into()),
                ("pod".into(), pod.into()),
                ("container".into(), "c".into()),
            ],
            points: pts.to_vec(),
        }
    }

    #[test]
    fn folds_pods_with_weighted_means() {
        let mut a = IntervalAnswers::default();
        a.absorb(
            IntervalKind::Max,
            vec![rs("p1", &[(600, 10.0)]), rs("p2", &[(600, 30.0)])],
        );
        a.absorb(
            IntervalKind::Avg,
            vec![rs("p1", &[(600, 4.0)]), rs("p2", &[(600, 10.0)])],
        );
        a.absorb(
            IntervalKind::Samples,
            vec![rs("p1", &[(600, 3.0)]), rs("p2", &[(600, 1.0)])],
        );
        let f = a.fold(&OwnerIndex::default(), 300);
        let (k, ivs) = f.iter().next().unwrap();
        assert_eq!(k.container, "c");
        // Bare pods are their own workloads.
        assert_eq!(f.len(), 2);
        assert_eq!(ivs[0].start, 300);
        assert_eq!(ivs[0].end(), 600);
    }

    #[test]
    fn ranges_are_on_the_grid() {
        assert_eq!(new_range(600, 1250, 300), Some((900, 1200)));
        assert_eq!(new_range(1200, 1250, 300), None);
        assert_eq!(new_range(-5, 700, 300), Some((300, 600)));
    }

    #[test]
    fn intervals_are_fed_once() {
        let spec = rightsizer_core::strategy::by_name("krr-simple").unwrap();
        let key = ContainerKey::new(
            rightsizer_core::workload::WorkloadKey {
                namespace: "a".into(),
                kind: rightsizer_core::workload::kind::WorkloadKind::Pod,
                name: "p".into(),
            },
            "c",
        );
        let iv = |s: i64, m: f64| Interval {
            start: s,
            seconds: 300,
            max: m,
            avg: m,
            samples: 5,
        };
        let mut t = Tracks::new(10);
        let all: Vec<Interval> = (0..50).map(|i| iv(i * 300, 1e9 + i as f64)).collect();
        t.decide(&key, spec, &all[..30], 30 * 300, None);
        // Overlapping second read: the first 30 must not be fed again.
        let a = t.decide(&key, spec, &all[20..], 50 * 300, None);
        let mut fresh = spec.make();
        for i in &all[..30] {
            fresh.observe(i);
        }
        let mut own = fresh.recommend(30 * 300, None);
        for i in &all[30..] {
            fresh.observe(i);
        }
        if let Some(d) = fresh.recommend(50 * 300, own) {
            own = Some(d);
        }
        assert_eq!(a, own);
    }
}
