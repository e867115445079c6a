//! Knative concurrency proposals (seed rules). Admission applies them where the user set
//! no value, or where the value is one rightsizer set itself (so the target keeps
//! following usage, revision after revision); revised together with memory, under the
//! same cooldown. The thresholds are `rules.knative` of a policy (seed values by default).

use serde::{Deserialize, Serialize};

use crate::recommendation::KnativeRecommendation;

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

/// What the rules look at for one Knative workload.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KnativeInput {
    pub concurrency_p95: Option<f64>,
    pub target: Option<f64>,
    pub queue_depth_p95: Option<f64>,
    /// Max memory (working set or RSS) and the memory limit, bytes.
    pub memory_max: Option<f64>,
    pub memory_limit: Option<u64>,
}

/// Round to two decimals (Knative accepts fractional targets >= 0.01).
fn cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl KnativeRules {
    pub fn propose(&self, i: &KnativeInput) -> Option<KnativeRecommendation> {
        let conc = i.concurrency_p95?;
        let target = i.target.unwrap_or(self.default_target);
        let (max, limit) = (i.memory_max?, i.memory_limit? as f64);
        if limit <= 0.0 {
            return None;
        }
        let used = max / limit;
        if used >= self.near_limit && conc > target {
            let t = cents((target * (1.0 - self.lower_by)).max(1.0));
            let cc = self.concurrency_for(t);
            return Some(KnativeRecommendation {
                target: Some(t),
                // Only applied where containerConcurrency is unset (unlimited).
                container_concurrency: Some(cc),
                reasons: vec![format!(
                    "memory max at {:.0}% of limit with concurrency p95 {conc:.2} above target {target}: lower target",
                    used * 100.0
                )],
            });
        }
        let queue = i.queue_depth_p95.unwrap_or(0.0);
        if used <= self.ample_headroom && queue >= self.queue_depth_high && conc < target {
            let t = cents(target * (1.0 + self.raise_by));
            return Some(KnativeRecommendation {
                target: Some(t),
                container_concurrency: None,
                reasons: vec![format!(
                    "memory max at {:.0}% of limit, queue depth p95 {queue:.2}, concurrency p95 {conc:.2} below target {target}: raise target",
                    used * 100.0
                )],
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_near_limit_and_raises_with_headroom() {
        let r = KnativeRules::default();
        let near = KnativeInput {
            concurrency_p95: Some(12.0),
            target: Some(10.0),
            queue_depth_p95: None,
            memory_max: Some(95.0),
            memory_limit: Some(100),
        };
        let p = r.propose(&near).unwrap();
        assert_eq!(p.target, Some(8.0));
        assert_eq!(p.container_concurrency, Some(12)); // ceil(8 / 0.7)
        let roomy = KnativeInput {
            concurrency_p95: Some(6.0),
            queue_depth_p95: Some(3.0),
            memory_max: Some(30.0),
            ..near
        };
        assert_eq!(r.propose(&roomy).unwrap().target, Some(12.0));
        let quiet = KnativeInput {
            queue_depth_p95: Some(0.0),
            ..roomy
        };
        assert!(r.propose(&quiet).is_none());
        let tiny = KnativeInput {
            target: Some(1.0),
            concurrency_p95: Some(3.0),
            ..near
        };
        assert_eq!(r.propose(&tiny).unwrap().target, Some(1.0));
    }
}
