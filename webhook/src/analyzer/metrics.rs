//! The analyzer's own metrics, registered into the registry `/metrics` serves.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct AnalyzerMetrics {
    pub cycle_duration: Histogram,
    pub queries: Counter,
    pub queries_per_cycle: Gauge,
    pub series_read: Gauge,
    pub errors: Counter,
    pub last_success: Gauge<f64, AtomicU64>,
    pub cache_entries: Gauge,
    pub cache_stale: Gauge,
    /// `query_range` calls for the strategies' 5-minute intervals (also in `queries`).
    pub range_queries: Counter,
    /// Intervals fed to strategy states.
    pub intervals_fed: Counter,
    /// Values committed (and persisted) by this replica.
    pub commits: Counter,
    /// Parts (namespace scopes, range chunks) that failed in the last completed cycle.
    pub failed_parts: Gauge,
}

impl AnalyzerMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = AnalyzerMetrics {
            cycle_duration: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            queries: Counter::default(),
            queries_per_cycle: Gauge::default(),
            series_read: Gauge::default(),
            errors: Counter::default(),
            last_success: Gauge::default(),
            cache_entries: Gauge::default(),
            cache_stale: Gauge::default(),
            range_queries: Counter::default(),
            intervals_fed: Counter::default(),
            commits: Counter::default(),
            failed_parts: Gauge::default(),
        };
        r.register(
            "rightsizer_analyzer_cycle_duration_seconds",
            "Duration of analyzer cycles",
            m.cycle_duration.clone(),
        );
        // The client library appends `_total` to counters.
        r.register(
            "rightsizer_analyzer_queries",
            "Prometheus queries run by the analyzer",
            m.queries.clone(),
        );
        r.register(
            "rightsizer_analyzer_queries_per_cycle",
            "Prometheus queries in the last analyzer cycle",
            m.queries_per_cycle.clone(),
        );
        r.register(
            "rightsizer_analyzer_series_read",
            "Series read from Prometheus in the last successful cycle",
            m.series_read.clone(),
        );
        r.register(
            "rightsizer_analyzer_errors",
            "Failed Prometheus queries and state writes",
            m.errors.clone(),
        );
        r.register(
            "rightsizer_analyzer_last_success_timestamp_seconds",
            "Unix time of the last successful analyzer cycle",
            m.last_success.clone(),
        );
        r.register(
            "rightsizer_cache_entries",
            "Containers in the recommendation cache",
            m.cache_entries.clone(),
        );
        r.register(
            "rightsizer_cache_stale_entries",
            "Cache entries the last cycle could not refresh",
            m.cache_stale.clone(),
        );
        r.register(
            "rightsizer_analyzer_range_queries",
            "Range queries for the strategies' 5-minute usage intervals",
            m.range_queries.clone(),
        );
        r.register(
            "rightsizer_analyzer_intervals_fed",
            "5-minute usage intervals fed to the policies' strategies",
            m.intervals_fed.clone(),
        );
        r.register(
            "rightsizer_analyzer_commits",
            "Values committed and persisted by this replica (the leader)",
            m.commits.clone(),
        );
        r.register(
            "rightsizer_analyzer_failed_parts",
            "Parts (namespace scopes, range chunks) that failed in the last completed analyzer cycle; their workloads were served stale",
            m.failed_parts.clone(),
        );
        m
    }
}
