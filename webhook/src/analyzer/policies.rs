//! The analyzer's view of the policies in force: which rules apply to a workload and
//! whether its policy enforces.

use std::sync::Arc;

use crate::analyzer::PolicyLookup;
use crate::cluster::ClusterFacts;
use crate::policy::{Mode, PolicyStore, Subject};
use crate::recommendation::WorkloadKey;
use crate::rules::Rules;

/// Looks workloads up in the policy store. Workload labels are not known to the
/// analyzer, so label selectors do not match here (namespace, kind and name do).
pub struct PoliciesLookup {
    pub store: Arc<PolicyStore>,
    pub facts: Arc<dyn ClusterFacts>,
    /// Whether this replica may commit (the Lease holder, or always outside a cluster).
    pub may_commit: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl PoliciesLookup {
    fn with_policy<T>(
        &self,
        w: &WorkloadKey,
        f: impl FnOnce(Option<&crate::policy::Policy>) -> T,
    ) -> T {
        let ns = self.facts.namespace(&w.namespace);
        let labels = Default::default();
        let set = self.store.current();
        let subject = Subject {
            key: w,
            labels: &labels,
            namespace_labels: &ns.labels,
        };
        f(set.select(&subject).map(|p| p.as_ref()))
    }
}

impl PolicyLookup for PoliciesLookup {
    fn rules(&self, w: &WorkloadKey) -> Rules {
        self.with_policy(w, |p| p.map(|p| p.rules).unwrap_or_default())
    }

    /// The policy's `recommender`; without a policy, the seed rules as for `rules`.
    fn recommender(&self, w: &WorkloadKey) -> String {
        self.with_policy(w, |p| {
            p.map_or_else(
                || crate::analyzer::SEED.to_string(),
                |p| p.recommender.clone(),
            )
        })
    }

    fn enforce(&self, w: &WorkloadKey) -> bool {
        (self.may_commit)() && self.with_policy(w, |p| p.is_some_and(|p| p.mode == Mode::Enforce))
    }
}
