//! Knative concurrency proposals (seed rules). Admission applies them where the user set
//! no value, or where the value is one rightsizer set itself (so the target keeps
//! following usage, revision after revision); revised together with memory, under the
//! same cooldown. The thresholds are `rules.knative` of a policy (seed values by default).

use crate::recommendation::KnativeRecommendation;

use crate::rules::knative::KnativeRules;

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
