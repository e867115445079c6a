//! Knative autoscaling settings. They belong on `spec.template.metadata.annotations`
//! (Knative refuses them elsewhere) and `spec.template.spec.containerConcurrency`.
//! Values the user set are never replaced; values are kept within Knative's ranges.
//!
//! Rule: nothing the webhook adds may get the object refused. Knative's webhook checks
//! each value's range, min-scale <= max-scale across what the user set and what is
//! added, and the metric against the autoscaler class; a value that would fail is left
//! out with a warning.

use serde_json::{json, Value};

use crate::policy::schema::KnativePolicy;
use crate::recommendation::KnativeRecommendation;

pub const TARGET: &str = "autoscaling.knative.dev/target";
pub const UTILIZATION: &str = "autoscaling.knative.dev/target-utilization-percentage";
pub const MIN_SCALE: &str = "autoscaling.knative.dev/min-scale";
pub const MAX_SCALE: &str = "autoscaling.knative.dev/max-scale";
pub const METRIC: &str = "autoscaling.knative.dev/metric";
pub const CLASS: &str = "autoscaling.knative.dev/class";
/// Older spellings that also count as user-set.
const OLD_MIN_SCALE: &str = "autoscaling.knative.dev/minScale";
const OLD_MAX_SCALE: &str = "autoscaling.knative.dev/maxScale";
const OLD_UTILIZATION: &str = "autoscaling.knative.dev/targetUtilizationPercentage";
/// Knative's default autoscaler class, which accepts only these metrics.
const KPA: &str = "kpa.autoscaling.knative.dev";
const KPA_METRICS: [&str; 2] = ["concurrency", "rps"];

/// The annotation under any of its spellings.
fn user_value<'a>(a: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    let old = match key {
        MIN_SCALE => Some(OLD_MIN_SCALE),
        MAX_SCALE => Some(OLD_MAX_SCALE),
        UTILIZATION => Some(OLD_UTILIZATION),
        _ => None,
    };
    a.get(key).or_else(|| old.and_then(|o| a.get(o)))
}

/// Why Knative would refuse `key=value` next to the annotations already there, if it would.
fn refusal(a: &serde_json::Map<String, Value>, key: &str, value: &str) -> Option<String> {
    // A scale bound as Knative reads it: absent is 0 (max: unlimited); unreadable is unknown.
    let bound = |k: &str| -> Option<i64> {
        match user_value(a, k) {
            None => Some(0),
            Some(v) => v.as_str()?.parse::<i32>().ok().map(i64::from),
        }
    };
    match key {
        MIN_SCALE | MAX_SCALE => {
            let v = value.parse::<i32>().ok().filter(|v| *v >= 0)?;
            let (min, max) = if key == MIN_SCALE {
                (Some(i64::from(v)), bound(MAX_SCALE))
            } else {
                (bound(MIN_SCALE), Some(i64::from(v)))
            };
            match (min, max) {
                (Some(min), Some(max)) if max == 0 || max >= min => None,
                (Some(min), Some(max)) => Some(format!("max-scale {max} < min-scale {min}")),
                _ => Some("the other scale bound is unreadable".into()),
            }
        }
        METRIC => {
            let class = a.get(CLASS).and_then(Value::as_str).unwrap_or(KPA);
            (class == KPA && !KPA_METRICS.contains(&value))
                .then(|| format!("the {class} autoscaler class does not accept it"))
        }
        _ => None,
    }
}

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
    // Knative reads scale bounds as int32.
    if let Some(v) = policy.min_scale.filter(|v| i32::try_from(*v).is_ok()) {
        ann.push((MIN_SCALE, v.to_string()));
    }
    if let Some(v) = policy.max_scale.filter(|v| i32::try_from(*v).is_ok()) {
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
/// Returns warnings for values left out because Knative would refuse them.
pub fn apply(
    obj: &mut Value,
    policy: &KnativePolicy,
    rec: Option<&KnativeRecommendation>,
) -> Vec<String> {
    let (ann, cc) = desired(policy, rec);
    let mut warnings = Vec::new();
    let Some(template) = obj
        .pointer_mut("/spec/template")
        .and_then(Value::as_object_mut)
    else {
        return warnings;
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
                    if user_value(a, k).is_some() {
                        continue;
                    }
                    match refusal(a, k, &v) {
                        Some(why) => warnings.push(format!("{k}={v} not set: {why}")),
                        None => {
                            a.insert(k.to_string(), json!(v));
                        }
                    }
                }
            }
        }
    }
    if let Some(cc) = cc {
        if let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) {
            if !spec.contains_key("containerConcurrency") {
                spec.insert("containerConcurrency".into(), json!(cc));
            }
        }
    }
    warnings
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

    fn annotated(a: Value) -> Value {
        json!({"spec": {"template": {"metadata": {"annotations": a}, "spec": {"containers": [{}]}}}})
    }

    #[test]
    fn values_knative_would_refuse_are_left_out() {
        let p = KnativePolicy {
            min_scale: Some(5),
            max_scale: Some(3),
            metric: Some("cpu".into()),
            ..Default::default()
        };
        // (user annotations, what may be added)
        let cases = [
            // The user's max 2 is below our min 5; the KPA class refuses cpu.
            (json!({MAX_SCALE: "2"}), json!({MAX_SCALE: "2"})),
            (
                json!({OLD_MIN_SCALE: "1"}),
                json!({OLD_MIN_SCALE: "1", MAX_SCALE: "3"}),
            ),
            (json!({MAX_SCALE: "x"}), json!({MAX_SCALE: "x"})),
            (
                json!({CLASS: "hpa.autoscaling.knative.dev"}),
                json!({CLASS: "hpa.autoscaling.knative.dev", MIN_SCALE: "5", METRIC: "cpu"}),
            ),
        ];
        for (user, want) in cases {
            let mut obj = annotated(user.clone());
            let warnings = apply(&mut obj, &p, None);
            assert_eq!(
                obj["spec"]["template"]["metadata"]["annotations"], want,
                "{user}"
            );
            assert!(!warnings.is_empty(), "{user}: every omission is explained");
        }
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
