//! Put fits where admission, `/recommendations` and `/metrics` read them: the
//! `loadModel` field of the analyzer's cache entries, and the load-model gauges.

use std::collections::BTreeSet;

use rightsizer_core::policy::select::PolicySet;
use rightsizer_core::workload::WorkloadKey;

use crate::analyzer::cache::RecommendationCache;
use crate::loadfit::fitter::{fit_all, FitWindow};
use crate::loadfit::metrics::LoadModelMetrics;
use crate::loadfit::source::LoadSeriesSource;

/// What one refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    pub fitted: usize,
    pub used: usize,
    pub failed: usize,
}

/// Fit the load models of every workload the cache knows (plus `extra`), and store
/// each report in its container's entry. A failed fit leaves the previous report.
/// The analyzer's cycle rebuilds entries from the previous one, so reports survive it.
pub async fn refresh<S: LoadSeriesSource>(
    src: &S,
    policies: &PolicySet,
    cache: &RecommendationCache,
    metrics: Option<&LoadModelMetrics>,
    extra: &[WorkloadKey],
    window: FitWindow,
) -> RefreshReport {
    let workloads: Vec<WorkloadKey> = cache
        .entries()
        .into_iter()
        .map(|(k, _)| k.workload)
        .chain(extra.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut report = RefreshReport::default();
    for (key, result) in fit_all(src, policies, &workloads, window).await {
        match result {
            Ok(fit) => {
                report.fitted += 1;
                report.used += usize::from(fit.used);
                if let Some(m) = metrics {
                    m.record(&key, &fit);
                }
                let mut entry = cache.entry(&key).unwrap_or_else(|| {
                    // A container the analyzer has no usage for yet: dated by the fit so
                    // the cache's staleness TTL applies from now.
                    let mut e = rightsizer_core::analysis::entry::Entry::default();
                    e.rec.updated_at = fit.at;
                    e
                });
                entry.rec.load_model = Some(fit);
                cache.put(key, entry);
            }
            Err(e) => {
                report.failed += 1;
                tracing::warn!(container = %key, error = %e, "load-model fit failed");
            }
        }
    }
    report
}
