//! The background analyzer: reads usage from Prometheus with server-side aggregated
//! queries, a fixed number per namespace scope (and per time chunk of new history),
//! in parts (`reads`), turns it into per-container recommendations with the policy's
//! `Rules`, and keeps them in the cache the admission path reads. Admission never
//! waits on it: when Prometheus is down, slow or answers garbage, the last good
//! entries stay, marked stale; when a part fails, only its workloads do.

pub mod cache;
mod execute;
mod gather;
pub mod history;
pub mod ksm;
pub mod mapping;
pub(crate) mod metrics;
pub mod policies;
pub mod prom;
mod reads;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use rightsizer_core::analysis::{compute, decide, knative, queries};
use rightsizer_core::quantity::Resource;
use rightsizer_core::recommendation::{Committed, ContainerKey};
use rightsizer_core::rules::Sizes;
use rightsizer_core::strategy::{self, MemorySizes};
use rightsizer_core::workload::WorkloadKey;

use crate::lock::LockExt;

use cache::{RecommendationCache, DEFAULT_CAPACITY};
use compute::Fold;
use decide::{Effect, Observation, PolicyView};
use gather::{max_into, max_u64_into, Acc, KnFigures, PodData, PodKey};
use mapping::OwnerIndex;
use metrics::AnalyzerMetrics;
use policies::PolicyLookup;
use prom::{PromClient, PromConfig, PromError};
use queries::{QueryConfig, QueryKind};
use rightsizer_core::strategy::SEED;
use state::{CommitStore, FileStore, State, StateError};

/// Told about what the analyzer decides, e.g. to persist commits in the cluster and post
/// Events. Called from the cycle; implementations must not block (spawn the I/O).
pub trait AnalyzerHooks: Send + Sync {
    /// A committed value moved (`previous` is what was committed before).
    fn committed(
        &self,
        _key: &ContainerKey,
        _r: Resource,
        _new: &Committed,
        _previous: Option<&Committed>,
    ) {
    }
    /// A recommendation was revised.
    fn revised(
        &self,
        _key: &ContainerKey,
        _r: Resource,
        _before: Option<Sizes>,
        _after: Sizes,
        _reason: &str,
    ) {
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyzerError {
    #[error(transparent)]
    Prometheus(#[from] PromError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Facts(#[from] ksm::FactsError),
}

/// Everything the analyzer is configured with.
#[derive(Debug, Clone)]
pub struct AnalyzerConfig {
    pub prometheus: PromConfig,
    pub queries: QueryConfig,
    /// Time between cycles in `run`.
    pub interval: Duration,
    pub cache_capacity: usize,
    /// Stale entries older than this (since their last refresh) are not served.
    pub stale_ttl_secs: u64,
    /// Above this many live containers, queries are split by namespace.
    pub max_series_per_query: usize,
    /// The most points (series × 5-minute steps) one range query asks for
    /// (`rightsizer_core::analysis::parts::MAX_POINTS`).
    pub max_points_per_query: u64,
    /// Queries in flight at once.
    pub concurrency: usize,
    /// Where committed values and OOM holds are kept across restarts without a
    /// cluster (in a cluster: the Rightsizings, see `Analyzer::set_store`).
    pub state_file: Option<PathBuf>,
    /// `RIGHTSIZER_ENFORCEMENT=true`: commits happen for workloads whose policy enforces.
    pub enforcement: bool,
}

impl AnalyzerConfig {
    pub fn new(prometheus: PromConfig) -> Self {
        AnalyzerConfig {
            prometheus,
            queries: QueryConfig::default(),
            interval: Duration::from_secs(300),
            cache_capacity: DEFAULT_CAPACITY,
            stale_ttl_secs: 6 * 3600,
            // At 50k a scope's instant queries outlasted the 30 s timeout at 100k
            // containers (BENCHMARKS.md "One replica at 100k containers"); smaller scopes
            // also hold smaller answers in flight.
            max_series_per_query: 10_000,
            max_points_per_query: rightsizer_core::analysis::parts::MAX_POINTS,
            concurrency: 4,
            state_file: None,
            enforcement: false,
        }
    }
}

/// What one cycle did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CycleReport {
    pub queries: u64,
    pub series_read: u64,
    pub containers: usize,
    pub scopes: usize,
    /// Parts (namespace scopes, range chunks) that failed; the cycle went on without them.
    pub failed_parts: u64,
    /// Cache entries this cycle did not refresh (served stale until the TTL).
    pub stale: usize,
    pub duration: Duration,
}

/// What a cycle read, before it is timed.
struct Read {
    series_read: u64,
    containers: usize,
    scopes: usize,
    failed_parts: u64,
}

type Progress = Box<dyn Fn(usize, usize) + Send + Sync>;

pub struct Analyzer {
    cfg: AnalyzerConfig,
    client: PromClient,
    cache: Arc<RecommendationCache>,
    policy: Arc<dyn PolicyLookup>,
    store: Arc<dyn CommitStore>,
    /// Whether this replica carries out effects (the Lease holder; always without one).
    leading: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Whether effects in a namespace are carried out (the opt-in; all without a cluster).
    scope: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    metrics: AnalyzerMetrics,
    progress: Option<Progress>,
    hooks: Option<Arc<dyn AnalyzerHooks>>,
    tracks: Mutex<history::Tracks>,
    sources: ksm::Sources,
}

impl Analyzer {
    /// Build the analyzer; metrics are registered into `registry`; committed state is
    /// kept in the state file when there is one (in memory otherwise) until
    /// `set_store` puts it elsewhere.
    pub fn new(
        cfg: AnalyzerConfig,
        policy: Arc<dyn PolicyLookup>,
        registry: &mut Registry,
    ) -> Result<Self, AnalyzerError> {
        let client = PromClient::new(cfg.prometheus.clone())?;
        let store = Arc::new(FileStore::open(cfg.state_file.clone())?);
        let cache = Arc::new(RecommendationCache::new(
            cfg.cache_capacity,
            cfg.stale_ttl_secs,
        ));
        Ok(Analyzer {
            metrics: AnalyzerMetrics::register(registry),
            tracks: Mutex::new(history::Tracks::new(cfg.cache_capacity)),
            cfg,
            client,
            cache,
            policy,
            store,
            leading: Arc::new(|| true),
            scope: Arc::new(|_| true),
            progress: None,
            hooks: None,
            sources: ksm::Sources::default(),
        })
    }

    /// The cache admission reads (`Arc<dyn RecommendationSource>` for the Admitter).
    pub fn cache(&self) -> Arc<RecommendationCache> {
        self.cache.clone()
    }

    /// Report progress as (queries done, queries total) during a cycle.
    pub fn set_progress(&mut self, f: impl Fn(usize, usize) + Send + Sync + 'static) {
        self.progress = Some(Box::new(f));
    }

    /// Be told about commits and revisions.
    pub fn set_hooks(&mut self, hooks: Arc<dyn AnalyzerHooks>) {
        self.hooks = Some(hooks);
    }

    /// Where owners, requests/limits, OOM kills and HPA targets come from when
    /// kube-state-metrics is absent (`mode`); see [`ksm`].
    pub fn set_facts_source(&mut self, mode: ksm::KsmMode, api: Arc<dyn ksm::WorkloadFacts>) {
        let homes = self.sources.homes.take();
        self.sources = ksm::Sources::new(mode, Some(api));
        self.sources.homes = homes;
    }

    /// Tell `homes` the live bare Pods each cycle that reads kube-state-metrics finds,
    /// and resolve Pods to the scaled controllers it knows.
    pub fn set_home_facts(&mut self, homes: Arc<dyn ksm::HomeFacts>) {
        self.sources.homes = Some(homes);
    }

    /// Keep committed state in `store` (the cluster's Rightsizings) instead.
    pub fn set_store(&mut self, store: Arc<dyn CommitStore>) {
        self.store = store;
    }

    /// Carry out effects only while `leading` says so (checked once per cycle).
    pub fn set_leader(&mut self, leading: impl Fn() -> bool + Send + Sync + 'static) {
        self.leading = Arc::new(leading);
    }

    /// Carry out effects only in the namespaces `acts_on` accepts (the opt-in admission
    /// uses too: `rightsizer_core::cluster::opt_in`).
    pub fn set_scope(&mut self, acts_on: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.scope = Arc::new(acts_on);
    }

    /// The committed values and OOM holds as the store holds them.
    pub fn state(&self) -> State {
        self.store.load()
    }

    /// Run cycles every `interval` until `shutdown` resolves. Errors are counted and
    /// logged; the cache keeps its last good entries.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.cycle(crate::clock::unix_now()).await {
                Ok(r) => tracing::info!(
                    queries = r.queries,
                    series = r.series_read,
                    containers = r.containers,
                    failed_parts = r.failed_parts,
                    stale = r.stale,
                    seconds = r.duration.as_secs_f64(),
                    "analyzer cycle done"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "analyzer cycle failed; serving last good recommendations, marked stale")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.interval) => {}
                _ = &mut shutdown => return,
            }
        }
    }

    /// One analysis pass, evaluated at unix time `now` (tests pass simulated time).
    pub async fn cycle(&self, now: u64) -> Result<CycleReport, AnalyzerError> {
        let started = Instant::now();
        let mut queries = 0u64;
        let result = self.cycle_inner(now, &mut queries).await;
        let duration = started.elapsed();
        self.metrics.cycle_duration.observe(duration.as_secs_f64());
        self.metrics.queries_per_cycle.set(queries as i64);
        match result {
            Ok(read) => {
                let stale = self.cache.stale_len();
                self.metrics.series_read.set(read.series_read as i64);
                self.metrics.failed_parts.set(read.failed_parts as i64);
                self.metrics.last_success.set(now as f64);
                self.metrics.cache_entries.set(self.cache.len() as i64);
                self.metrics.cache_stale.set(stale as i64);
                Ok(CycleReport {
                    queries,
                    series_read: read.series_read,
                    containers: read.containers,
                    scopes: read.scopes,
                    failed_parts: read.failed_parts,
                    stale,
                    duration,
                })
            }
            Err(e) => {
                let stale = self.cache.mark_stale_except(&HashSet::new());
                self.metrics.cache_stale.set(stale as i64);
                self.metrics.cache_entries.set(self.cache.len() as i64);
                Err(e)
            }
        }
    }

    async fn cycle_inner(&self, now: u64, queries: &mut u64) -> Result<Read, AnalyzerError> {
        let qcfg = &self.cfg.queries;
        let top = queries::Builder::new(qcfg, None);
        let mut sizes = Vec::new();
        // Without the namespace sizes no part can be planned: the cycle fails.
        let mut series_read = self
            .run_queries(
                vec![(QueryKind::NamespaceSizes, top.namespace_sizes())],
                now,
                queries,
                &mut |_, v| sizes = v,
            )
            .await?;
        let scopes = self.scopes(&sizes);
        drop(sizes);
        let mut global = top.global();
        self.sources.plan(&mut global);
        let mut acc = Acc::default();
        let (n, failed) = self
            .read_instant(global, &scopes, &mut acc, now, queries)
            .await?;
        series_read += n;
        self.sources.complete(&mut acc, now, qcfg).await?;
        // A failed scope's workloads are not decided this cycle: they keep their last
        // good entries, marked stale.
        let gone: HashSet<&str> = failed
            .iter()
            .flat_map(|i| scopes[*i].namespaces.iter().flatten())
            .map(String::as_str)
            .collect();
        acc.forget(|ns| gone.contains(ns));
        let (range_queries, range_series, failed_ranges) =
            self.read_history(&acc, &scopes, &failed, now).await;
        *queries += range_queries;
        series_read += range_series;
        // The previous state comes from the store: a restarted or new leader continues
        // exactly where the last one stopped.
        let previous = self.store.load();
        let (containers, effects) = self.apply(now, acc, &previous);
        self.execute(effects).await;
        Ok(Read {
            series_read,
            containers,
            scopes: scopes.len(),
            failed_parts: failed.len() as u64 + failed_ranges,
        })
    }

    /// Intervals fed to strategy states since the start (all containers).
    pub fn intervals_fed(&self) -> u64 {
        self.lock_tracks().fed
    }

    fn lock_tracks(&self) -> std::sync::MutexGuard<'_, history::Tracks> {
        self.tracks.locked()
    }

    /// Turn one cycle's folded answers into cache entries and effects (the decision
    /// itself is `decide::decide`, pure).
    fn apply(&self, now: u64, acc: Acc, previous: &State) -> (usize, Vec<Effect>) {
        let Acc {
            owners,
            pods,
            current,
            oom,
            hpa,
            kn_raw,
            // Handed over in `ksm::Sources::complete`.
            bare_pods: _,
        } = acc;
        let containers = fold_containers(&owners, &pods, &current, &oom);
        let workloads = WorkloadFigures {
            hpa,
            knative: fold_knative(kn_raw),
        };
        let (fresh, effects) = self.decide_all(now, containers, &workloads, previous);
        let n = fresh.len();
        self.cache.mark_stale_except(&fresh);
        self.cache.purge_expired(now);
        (n, effects)
    }

    /// Decide every workload container seen this cycle, each with its workload's
    /// policy (looked up once per workload), and put the new entries in the cache.
    /// Returns the containers decided and the effects to carry out.
    fn decide_all(
        &self,
        now: u64,
        containers: HashMap<ContainerKey, Folded>,
        workloads: &WorkloadFigures,
        previous: &State,
    ) -> (HashSet<ContainerKey>, Vec<Effect>) {
        let mut fresh = HashSet::new();
        let mut tracks = self.lock_tracks();
        let mut effects = Vec::new();
        let mut views: HashMap<WorkloadKey, PolicyView> = HashMap::new();
        for (key, f) in containers {
            let w = &key.workload;
            let view = views
                .entry(w.clone())
                .or_insert_with(|| self.policy.view(w, self.cfg.enforcement));
            let own = strategy_decision(&mut tracks, &key, &view.strategy, f.cur_mem, now);
            let obs = observation(&self.cfg.queries, w, f, own, workloads, now);
            let prev_entry = self.cache.entry(&key).unwrap_or_default();
            let prev_state = previous.containers.get(&key).cloned().unwrap_or_default();
            let out = decide::decide(&key, &obs, view, &prev_entry, &prev_state, now);
            effects.extend(out.effects);
            fresh.insert(key.clone());
            self.cache.put(key, out.entry);
        }
        (fresh, effects)
    }
}

/// One workload container's figures, folded from its pods.
#[derive(Default)]
struct Folded {
    mem: [Fold; 2],
    cpu: [Fold; 2],
    cur_mem: Sizes,
    cur_cpu: Sizes,
    oom: Vec<(String, u64)>,
    /// Pods with current requests or limits (running now).
    pods: u32,
}

/// Fold pod-containers into workload containers: usage of both windows, the largest
/// request and limit any pod runs with, and each pod's OOM kill. Only containers with
/// usage are decided; what runs and OOM kills of others are dropped.
fn fold_containers(
    owners: &OwnerIndex,
    pods: &HashMap<PodKey, PodData>,
    current: &HashMap<PodKey, (Sizes, Sizes)>,
    oom: &[(PodKey, u64)],
) -> HashMap<ContainerKey, Folded> {
    let key_of = |p: &PodKey| ContainerKey::new(owners.workload(&p.0, &p.1), p.2.clone());
    let mut folded: HashMap<ContainerKey, Folded> = HashMap::new();
    for (p, d) in pods {
        if p.2.is_empty() {
            continue;
        }
        let f = folded.entry(key_of(p)).or_default();
        for i in 0..2 {
            let first = if i == 1 { d.first } else { None };
            f.mem[i].add(&d.mem[i], d.samples[i], first);
            f.cpu[i].add(&d.cpu[i], d.samples[i], first);
        }
    }
    for (p, (m, c)) in current {
        if let Some(f) = folded.get_mut(&key_of(p)) {
            f.pods += 1;
            for (dst, src) in [(&mut f.cur_mem, m), (&mut f.cur_cpu, c)] {
                if let Some(v) = src.request {
                    max_u64_into(&mut dst.request, v);
                }
                if let Some(v) = src.limit {
                    max_u64_into(&mut dst.limit, v);
                }
            }
        }
    }
    for (p, limit) in oom {
        if let Some(f) = folded.get_mut(&key_of(p)) {
            f.oom.push((p.1.clone(), *limit));
        }
    }
    folded
}

/// Knative figures per workload: the largest value of each series over its revisions.
fn fold_knative(kn_raw: Vec<(WorkloadKey, QueryKind, f64)>) -> HashMap<WorkloadKey, KnFigures> {
    let mut kn: HashMap<WorkloadKey, KnFigures> = HashMap::new();
    for (w, kind, v) in kn_raw {
        let f = kn.entry(w).or_default();
        match kind {
            QueryKind::KnativeConcurrencyP95 => max_into(&mut f.conc_p95, v),
            QueryKind::KnativeTarget => max_into(&mut f.target, v),
            _ => max_into(&mut f.queue_p95, v),
        }
    }
    kn
}

/// What this cycle saw per workload (rather than per container).
struct WorkloadFigures {
    hpa: HashMap<WorkloadKey, Vec<Resource>>,
    knative: HashMap<WorkloadKey, KnFigures>,
}

/// The memory strategy's own decision when the policy names a strategy other than
/// `seed` (`None` otherwise), its state fed this cycle (`read_history`); until it has
/// answered once, it starts from what the pods run with.
fn strategy_decision(
    tracks: &mut history::Tracks,
    key: &ContainerKey,
    strategy_name: &str,
    running: Sizes,
    now: u64,
) -> Option<Option<MemorySizes>> {
    let spec = Some(strategy_name)
        .filter(|n| *n != SEED)
        .and_then(strategy::by_name)?;
    let running = match (running.request, running.limit) {
        (Some(request), Some(limit)) => Some(MemorySizes { request, limit }),
        _ => None,
    };
    Some(tracks.decide(key, spec, &[], now as i64, running))
}

/// What `decide` looks at for one container: its usage with each window capped at
/// its length, what runs now, its OOM kills, and its workload's HPA resources and
/// (for Knative workloads) Knative figures.
fn observation(
    qcfg: &QueryConfig,
    w: &WorkloadKey,
    f: Folded,
    strategy: Option<Option<MemorySizes>>,
    workloads: &WorkloadFigures,
    now: u64,
) -> Observation {
    let observed = |folds: &[Fold; 2]| {
        compute::merge_windows(
            folds[0].observed(now, qcfg.short_window_secs),
            folds[1].observed(now, qcfg.long_window_secs),
        )
    };
    let memory = observed(&f.mem);
    let knative = w.kind.is_knative().then(|| {
        let figs = workloads.knative.get(w).copied().unwrap_or_default();
        knative::KnativeInput {
            concurrency_p95: figs.conc_p95,
            target: figs.target,
            queue_depth_p95: figs.queue_p95,
            memory_max: memory.map(|o| o.max),
            memory_limit: f.cur_mem.limit,
        }
    });
    Observation {
        memory,
        cpu: observed(&f.cpu),
        current_memory: f.cur_mem,
        current_cpu: f.cur_cpu,
        ooms: f.oom,
        pods: f.pods,
        hpa: workloads.hpa.get(w).cloned().unwrap_or_default(),
        strategy,
        knative,
    }
}
