//! Reading a cycle from Prometheus in parts (`rightsizer_core::analysis::parts` plans
//! them): instant queries per namespace scope, range reads per scope and time chunk,
//! each answer folded as it arrives. A part that fails or outlasts the timeout costs
//! only itself: its workloads keep their last good recommendations (marked stale) and
//! the history it missed is read next cycle.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Mutex;

use futures::stream::{self, StreamExt};

use rightsizer_core::analysis::parts::{self, Scope};
use rightsizer_core::analysis::queries::{self, QueryKind};
use rightsizer_core::strategy::{self, SEED};
use rightsizer_core::workload::WorkloadKey;

use super::gather::Acc;
use super::history;
use super::prom::{PromError, PromSample};
use super::Analyzer;
use crate::lock::LockExt;

/// Answers are handed to the sink as `(tag, kind, samples)`.
pub(super) type Sink<'a> = dyn FnMut(usize, QueryKind, Vec<PromSample>) + Send + 'a;

/// The strategy each workload's policy names (`None`: `seed`), looked up once per
/// workload and cycle.
struct Specs(Mutex<HashMap<WorkloadKey, Option<&'static strategy::Spec>>>);

impl Specs {
    fn get(&self, a: &Analyzer, w: &WorkloadKey) -> Option<&'static strategy::Spec> {
        *self.0.locked().entry(w.clone()).or_insert_with(|| {
            Some(a.policy.recommender(w))
                .filter(|n| n != SEED)
                .and_then(|n| strategy::by_name(&n))
        })
    }
}

/// What a set of tagged queries did.
#[derive(Default)]
pub(super) struct Ran {
    pub(super) series: u64,
    /// Tags of which a query failed, with the first failure.
    pub(super) failed: HashMap<usize, PromError>,
}

impl Analyzer {
    /// Run `list` (each query tagged with its part) with bounded concurrency, handing
    /// each answer to `sink` as it arrives, so only the answers in flight are held in
    /// memory. A failed query marks its tag failed; the others go on.
    pub(super) async fn run_tagged(
        &self,
        list: Vec<(usize, QueryKind, String)>,
        now: u64,
        queries: &mut u64,
        sink: &mut Sink<'_>,
    ) -> Ran {
        let total = list.len();
        let mut done = 0usize;
        let mut ran = Ran::default();
        let mut st = stream::iter(list.into_iter().map(|(tag, k, q)| {
            let c = self.client.clone();
            async move { (tag, k, c.query(&q, now).await) }
        }))
        .buffer_unordered(self.cfg.concurrency.max(1));
        while let Some((tag, k, r)) = st.next().await {
            done += 1;
            *queries += 1;
            self.metrics.queries.inc();
            if let Some(p) = &self.progress {
                p(done, total);
            }
            match r {
                Ok(v) => {
                    ran.series += v.len() as u64;
                    sink(tag, k, v);
                }
                Err(e) => {
                    self.metrics.errors.inc();
                    tracing::debug!(part = tag, error = %e, "analyzer query failed");
                    ran.failed.entry(tag).or_insert(e);
                }
            }
        }
        ran
    }

    /// Run `list` as one part: the first failure fails it.
    pub(super) async fn run_queries(
        &self,
        list: Vec<(QueryKind, String)>,
        now: u64,
        queries: &mut u64,
        sink: &mut (dyn FnMut(QueryKind, Vec<PromSample>) + Send),
    ) -> Result<u64, PromError> {
        let list = list.into_iter().map(|(k, q)| (0, k, q)).collect();
        let mut ran = self
            .run_tagged(list, now, queries, &mut |_, k, v| sink(k, v))
            .await;
        match ran.failed.remove(&0) {
            Some(e) => Err(e),
            None => Ok(ran.series),
        }
    }

    /// The namespace scopes from the namespace-size answer.
    pub(super) fn scopes(&self, sizes: &[PromSample]) -> Vec<Scope> {
        let sizes: Vec<(String, f64)> = sizes
            .iter()
            .map(|s| (s.label("namespace").to_string(), s.value))
            .collect();
        parts::scopes(&sizes, self.cfg.max_series_per_query)
    }

    /// The instant queries into `acc`: `global` (not split by namespace) and every
    /// scope's. Returns the series read and the indices of the scopes of which a query
    /// failed; fails when a global query failed or every scope did.
    pub(super) async fn read_instant(
        &self,
        global: Vec<(QueryKind, String)>,
        scopes: &[Scope],
        acc: &mut Acc,
        now: u64,
        queries: &mut u64,
    ) -> Result<(u64, BTreeSet<usize>), PromError> {
        const GLOBAL: usize = usize::MAX;
        let mut list: Vec<(usize, QueryKind, String)> =
            global.into_iter().map(|(k, q)| (GLOBAL, k, q)).collect();
        for (i, s) in scopes.iter().enumerate() {
            let mut scoped =
                queries::Builder::new(&self.cfg.queries, s.namespaces.as_deref()).scoped();
            self.sources.plan(&mut scoped);
            list.extend(scoped.into_iter().map(|(k, q)| (i, k, q)));
        }
        let mut ran = self
            .run_tagged(list, now, queries, &mut |_, k, v| acc.absorb(k, &v))
            .await;
        if let Some(e) = ran.failed.remove(&GLOBAL) {
            return Err(e);
        }
        let failed: BTreeSet<usize> = ran.failed.keys().copied().collect();
        if failed.len() == scopes.len() {
            if let Some(e) = ran.failed.into_values().next() {
                return Err(e);
            }
        }
        if !failed.is_empty() {
            tracing::warn!(
                failed = failed.len(),
                scopes = scopes.len(),
                "namespace scopes failed; their workloads keep their last recommendations, marked stale"
            );
        }
        Ok((ran.series, failed))
    }

    /// Read the 5-minute intervals not read before (the first time: the long window,
    /// at most 14 days) when some workload's policy names a strategy other than `seed`,
    /// per scope (but `skip`: scopes that failed) and time chunk, chunks of a scope in
    /// time order; each chunk is folded per workload container and fed to the strategy
    /// states at once. Returns (range queries run, series read, failed parts).
    pub(super) async fn read_history(
        &self,
        acc: &Acc,
        scopes: &[Scope],
        skip: &BTreeSet<usize>,
        now: u64,
    ) -> (u64, u64, u64) {
        let specs = Specs(Mutex::new(HashMap::new()));
        let wanted = acc
            .pods
            .keys()
            .any(|(ns, pod, _)| specs.get(self, &acc.owners.workload(ns, pod)).is_some());
        if !wanted {
            return (0, 0, 0);
        }
        let previous = self.lock_tracks().read_until;
        let long = self
            .cfg
            .queries
            .long_window_secs
            .min(history::MAX_HISTORY_SECS);
        let after = previous.unwrap_or(now.saturating_sub(long) as i64);
        let Some((first, last)) = history::new_range(after, now, history::WIDTH) else {
            return (0, 0, 0);
        };
        let fed_before = self.lock_tracks().fed;
        // Parts of different scopes in parallel, three queries each.
        let per_scope = (self.cfg.concurrency / 3).max(1);
        // Built before they run: a stream mapping with a borrowing closure would not
        // be `Send` for every lifetime (the cycle runs in a spawned task).
        let reads: Vec<_> = scopes
            .iter()
            .enumerate()
            .map(|(i, scope)| {
                self.read_scope_history(acc, scope, first, last, &specs, skip.contains(&i))
            })
            .collect();
        let outcomes: Vec<(Option<u64>, u64, u64, u64)> = stream::iter(reads)
            .buffer_unordered(per_scope)
            .collect()
            .await;
        let fed_through: Vec<Option<u64>> = outcomes.iter().map(|o| o.0).collect();
        let (mut queries, mut series, mut failed) = (0, 0, 0);
        for (_, q, s, f) in &outcomes {
            queries += q;
            series += s;
            failed += f;
        }
        let mut tracks = self.lock_tracks();
        tracks.read_until = parts::read_until(previous, &fed_through);
        self.metrics.intervals_fed.inc_by(tracks.fed - fed_before);
        (queries, series, failed)
    }

    /// One scope's chunks in time order until one fails (none when `skip`: its instant
    /// reads failed). Returns (the last evaluation
    /// time read without a gap, queries, series, failed parts).
    async fn read_scope_history(
        &self,
        acc: &Acc,
        scope: &Scope,
        first: u64,
        last: u64,
        specs: &Specs,
        skip: bool,
    ) -> (Option<u64>, u64, u64, u64) {
        if skip {
            return (None, 0, 0, 0);
        }
        let b = queries::Builder::new(&self.cfg.queries, scope.namespaces.as_deref());
        let (mut fed, mut queries, mut series) = (None, 0u64, 0u64);
        let chunks = parts::chunks(
            first,
            last,
            history::WIDTH,
            scope.series,
            self.cfg.max_points_per_query,
        );
        for (from, to) in chunks {
            let mut answers = history::IntervalAnswers::default();
            let r =
                history::read_intervals(&self.client, &b, from, to, history::WIDTH, &mut answers)
                    .await;
            queries += 3;
            self.metrics.queries.inc_by(3);
            self.metrics.range_queries.inc_by(3);
            match r {
                Ok(n) => series += n,
                Err(e) => {
                    self.metrics.errors.inc();
                    tracing::warn!(error = %e, from, to, namespaces = scope.namespaces.as_ref().map_or(0, Vec::len), "a range read failed; its intervals are read next cycle");
                    return (fed, queries, series, 1);
                }
            }
            let folded = answers.fold(&acc.owners, history::WIDTH);
            let mut tracks = self.lock_tracks();
            for (key, ivs) in &folded {
                if let Some(spec) = specs.get(self, &key.workload) {
                    tracks.feed(key, spec, ivs);
                }
            }
            fed = Some(to);
        }
        (fed, queries, series, 0)
    }
}
