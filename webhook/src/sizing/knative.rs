//! Knative autoscaling settings. They belong on `spec.template.metadata.annotations`
//! (Knative refuses them elsewhere) and `spec.template.spec.containerConcurrency`.
//! Values the user set are never replaced; values are kept within Knative's ranges.

use serde_json::{json, Value};

use crate::policy::schema::KnativePolicy;
use crate::recommendation::KnativeRecommendation;

pub const TARGET: &str = "autoscaling.knative.dev/target";
pub const UTILIZATION: &str = "autoscaling.knative.dev/target-utilization-percentage";
pub const MIN_SCALE: &str = "autoscaling.knative.dev/min-scale";
pub const MAX_SCALE: &str = "autoscaling.knative.dev/max-scale";
pub const METRIC: &str = "autoscaling.knative.dev/metric";
/// Older spellings that also count as user-set.
const OLD_MIN_SCALE: &str = "autoscaling.knative.dev/minScale";
const OLD_MAX_SCALE: &str = "autoscaling.knative.dev/maxScale";

fn number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The values to write, from the policy and (when allowed) the analyzer's proposal.
pub fn desired(
    policy: &KnativePolicy,
    rec: Option<&KnativeRecommendation>,
) -> (Vec<(&'static str, String)>, Option<u64>) {
    let rec = rec.filter(|_| policy.apply_recommendations);
    let target = rec
        .and_then(|r| r.target)
        .or(policy.target)
        .map(|t| t.max(0.01));
    let mut ann = Vec::new();
    if let Some(t) = target {
        ann.push((TARGET, number(t)));
    }
    if let Some(u) = policy.target_utilization_percentage {
        ann.push((UTILIZATION, number(u.clamp(1.0, 100.0))));
    }
    if let Some(v) = policy.min_scale {
        ann.push((MIN_SCALE, v.to_string()));
    }
    if let Some(v) = policy.max_scale {
        ann.push((MAX_SCALE, v.to_string()));
    }
    if let Some(m) = &policy.metric {
        ann.push((METRIC, m.clone()));
    }
    let cc = rec
        .and_then(|r| r.container_concurrency)
        .or(policy.container_concurrency)
        .map(|c| c.min(1000));
    (ann, cc)
}

/// Write the values into a Knative Service/Configuration where the user set none.
pub fn apply(
    obj: &mut Value,
    policy: &KnativePolicy,
    rec: Option<&KnativeRecommendation>,
) -> Vec<String> {
    let (ann, cc) = desired(policy, rec);
    let mut notes = Vec::new();
    let Some(template) = obj
        .pointer_mut("/spec/template")
        .and_then(Value::as_object_mut)
    else {
        return notes;
    };
    if !ann.is_empty() {
        let meta = template.entry("metadata").or_insert_with(|| json!({}));
        if meta.is_null() {
            *meta = json!({});
        }
        if let Some(meta) = meta.as_object_mut() {
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if annotations.is_null() {
                *annotations = json!({});
            }
            if let Some(a) = annotations.as_object_mut() {
                for (k, v) in ann {
                    let user_set = a.contains_key(k)
                        || (k == MIN_SCALE && a.contains_key(OLD_MIN_SCALE))
                        || (k == MAX_SCALE && a.contains_key(OLD_MAX_SCALE));
                    if !user_set {
                        notes.push(format!("{k}={v}"));
                        a.insert(k.to_string(), json!(v));
                    }
                }
            }
        }
    }
    if let Some(cc) = cc {
        if let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) {
            if !spec.contains_key("containerConcurrency") {
                notes.push(format!("containerConcurrency={cc}"));
                spec.insert("containerConcurrency".into(), json!(cc));
            }
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_values_are_kept_and_ranges_hold() {
        let p = KnativePolicy {
            target: Some(0.001),
            target_utilization_percentage: Some(150.0),
            container_concurrency: Some(5000),
            min_scale: Some(1),
            ..Default::default()
        };
        let mut obj = json!({"spec": {"template": {"metadata": {"annotations": {"autoscaling.knative.dev/minScale": "3"}}, "spec": {"containers": [{}]}}}});
        apply(&mut obj, &p, None);
        let a = &obj["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(a[TARGET], "0.01");
        assert_eq!(a[UTILIZATION], "100");
        assert!(
            a.get(MIN_SCALE).is_none(),
            "old spelling counts as user-set"
        );
        assert_eq!(
            obj["spec"]["template"]["spec"]["containerConcurrency"],
            1000
        );
        let again = obj.clone();
        assert!(apply(&mut obj, &p, None).is_empty());
        assert_eq!(obj, again);
    }

    #[test]
    fn recommendation_used_only_when_allowed() {
        let rec = KnativeRecommendation {
            target: Some(42.0),
            container_concurrency: Some(50),
            reasons: vec![],
        };
        let mut p = KnativePolicy {
            target: Some(100.0),
            ..Default::default()
        };
        assert_eq!(desired(&p, Some(&rec)).0, vec![(TARGET, "100".to_string())]);
        p.apply_recommendations = true;
        assert_eq!(
            desired(&p, Some(&rec)),
            (vec![(TARGET, "42".to_string())], Some(50))
        );
    }
}
