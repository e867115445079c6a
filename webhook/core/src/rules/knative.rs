//! The thresholds of the Knative concurrency rules (`rules.knative` of a policy); the
//! rules themselves are `analysis::knative`. Here, below `analysis`, because
//! `Rules` holds them.

use serde::{Deserialize, Serialize};

/// The numbers of the Knative rules.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KnativeRules {
    /// Max working set at or above this fraction of the limit counts as "near the limit".
    pub near_limit: f64,
    /// Lower the target by this fraction when memory is near the limit (10–25%).
    pub lower_by: f64,
    /// Max working set at or below this fraction of the limit counts as ample headroom.
    pub ample_headroom: f64,
    /// Queue depth p95 at or above this counts as queueing.
    pub queue_depth_high: f64,
    /// Raise the target by at most this fraction.
    pub raise_by: f64,
    /// Knative's target utilization, used to derive a containerConcurrency bound.
    pub target_utilization: f64,
    /// Target assumed when the revision reports none (Knative's default).
    pub default_target: f64,
}

impl KnativeRules {
    /// The first rule broken, as (field, message): thresholds must describe "near the
    /// limit" above "ample headroom", and steps that keep the target positive.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        let fraction = |v: f64| v > 0.0 && v <= 1.0;
        if !fraction(self.near_limit) {
            return Err(("nearLimit", "must be above 0 and at most 1"));
        }
        if !(self.ample_headroom >= 0.0 && self.ample_headroom < self.near_limit) {
            return Err(("ampleHeadroom", "must be 0 or more and below nearLimit"));
        }
        if !(self.lower_by > 0.0 && self.lower_by < 1.0) {
            return Err(("lowerBy", "must be above 0 and below 1"));
        }
        if !(self.raise_by > 0.0 && self.raise_by.is_finite()) {
            return Err(("raiseBy", "must be a positive number"));
        }
        if !(self.queue_depth_high >= 0.0 && self.queue_depth_high.is_finite()) {
            return Err(("queueDepthHigh", "must be 0 or more"));
        }
        if !fraction(self.target_utilization) {
            return Err(("targetUtilization", "must be above 0 and at most 1"));
        }
        if !(self.default_target >= 0.01 && self.default_target.is_finite()) {
            return Err(("defaultTarget", "must be at least 0.01"));
        }
        Ok(())
    }

    /// The containerConcurrency that lets `target` work at the target utilization.
    pub fn concurrency_for(&self, target: f64) -> u64 {
        (target / self.target_utilization).ceil().max(1.0) as u64
    }
}

impl Default for KnativeRules {
    fn default() -> Self {
        KnativeRules {
            near_limit: 0.9,
            lower_by: 0.2,
            ample_headroom: 0.5,
            queue_depth_high: 1.0,
            raise_by: 0.2,
            target_utilization: 0.7,
            default_target: 100.0,
        }
    }
}
