//! Knative autoscaling settings. They belong on `spec.template.metadata.annotations`
//! (Knative refuses them elsewhere) and `spec.template.spec.containerConcurrency`.
//! Values the user set are never replaced; values rightsizer set (recorded in
//! `rightsizer.io/sized`) are revised with each new recommendation; values are kept within
//! Knative's ranges.
//!
//! Rule: nothing the webhook adds may get the object refused. Knative's webhook checks
//! each value's range, min-scale <= max-scale across what the user set and what is
//! added, and the metric against the autoscaler class; a value that would fail is left
//! out with a warning.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::policy::schema::KnativePolicy;
use crate::recommendation::KnativeRecommendation;
use crate::rules::knative::KnativeRules;
use crate::sizing::field::Field;

pub const TARGET: &str = "autoscaling.knative.dev/target";
pub const UTILIZATION: &str = "autoscaling.knative.dev/target-utilization-percentage";
pub const MIN_SCALE: &str = "autoscaling.knative.dev/min-scale";
pub const MAX_SCALE: &str = "autoscaling.knative.dev/max-scale";
pub const METRIC: &str = "autoscaling.knative.dev/metric";
/// Older spellings that also count as user-set.
const OLD_MIN_SCALE: &str = "autoscaling.knative.dev/minScale";
const OLD_MAX_SCALE: &str = "autoscaling.knative.dev/maxScale";
const OLD_UTILIZATION: &str = "autoscaling.knative.dev/targetUtilizationPercentage";
pub const CLASS: &str = "autoscaling.knative.dev/class";
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
    let rec = rec.filter(|_| policy.uses_recommendations());
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

/// The short name a setting is recorded under in `rightsizer.io/sized`.
fn short(key: &str) -> &str {
    key.strip_prefix("autoscaling.knative.dev/").unwrap_or(key)
}

const CONCURRENCY: &str = "containerConcurrency";

/// What [`apply_pinned`] writes: the autoscaling annotations of the template and its
/// concurrency bound, beside the containers (see [`crate::sizing::written`]).
pub const WRITES: &[Field] = &[Field::PodAnnotations, Field::Spec(CONCURRENCY)];

/// Write the values into a Knative Service/Configuration where the user set none, or
/// where the value there is the one rightsizer recorded in `own` (so it is rightsizer's
/// to revise). Returns what rightsizer owns afterwards: the settings it wrote now, and the
/// ones it wrote before that still have their recorded value. A value that differs from
/// the record is the user's and is never touched. A value Knative would refuse is left
/// out, with a warning pushed to `warnings`.
///
/// `pinned`: the policy's containerConcurrency is the workload's own (a policy
/// override), written as it is (not raised to follow the target).
pub fn apply_pinned(
    obj: &mut Value,
    policy: &KnativePolicy,
    rules: &KnativeRules,
    rec: Option<&KnativeRecommendation>,
    own: &BTreeMap<String, String>,
    pinned: bool,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let (ann, cc) = desired(policy, rec);
    let tuned = rec.is_some() && policy.uses_recommendations() && !pinned;
    let mut owned = BTreeMap::new();
    let Some(template) = obj
        .pointer_mut("/spec/template")
        .and_then(Value::as_object_mut)
    else {
        return owned;
    };
    let mine = |key: &str, have: &str| own.get(key).is_some_and(|v| v == have);
    let mut target_now = None;
    let meta = template.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    if let Some(a) = meta.as_object_mut().and_then(|m| {
        let annotations = m.entry("annotations").or_insert_with(|| json!({}));
        if annotations.is_null() {
            *annotations = json!({});
        }
        annotations.as_object_mut()
    }) {
        // Settings written before and still as written stay rightsizer's.
        for (k, v) in a.iter().filter(|(k, _)| short(k) != k.as_str()) {
            if let Some(s) = v.as_str().filter(|s| mine(short(k), s)) {
                owned.insert(short(k).to_string(), s.to_string());
            }
        }
        for (k, v) in ann {
            let have = a.get(k).and_then(Value::as_str);
            let user_set = match have {
                Some(h) => !mine(short(k), h),
                None => user_value(a, k).is_some(),
            };
            if user_set {
                continue;
            }
            match refusal(a, k, &v) {
                Some(why) => warnings.push(format!("{k}={v} not set: {why}")),
                None => {
                    a.insert(k.to_string(), json!(v));
                    owned.insert(short(k).to_string(), v);
                }
            }
        }
        target_now = a
            .get(TARGET)
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<f64>().ok());
    }
    let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
        return owned;
    };
    let present = spec.get(CONCURRENCY).is_some_and(|v| !v.is_null());
    let have = spec.get(CONCURRENCY).and_then(Value::as_u64);
    // A value there that is not the one rightsizer recorded is the user's, 0 (unbounded)
    // included.
    let ours = have.is_some_and(|h| mine(CONCURRENCY, &h.to_string()));
    if !present || ours {
        let mut want = cc.or(have.filter(|h| ours && *h > 0));
        // A bound rightsizer tunes must let a raised target work.
        if let (Some(w), Some(t), true) = (want, target_now, tuned) {
            want = Some(w.max(rules.concurrency_for(t)).min(1000));
        }
        match want.filter(|w| *w > 0) {
            Some(w) => {
                spec.insert(CONCURRENCY.into(), json!(w));
                owned.insert(CONCURRENCY.into(), w.to_string());
            }
            // Left out: Knative's defaulting writes its default there, 0 (unbounded), which
            // stays rightsizer's to bound on a later revision (a 0 the user writes into a
            // template without this record is the user's).
            None => {
                owned.insert(CONCURRENCY.into(), "0".into());
            }
        }
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apply_pinned` with the policy's own containerConcurrency not pinned.
    fn apply(
        obj: &mut Value,
        policy: &KnativePolicy,
        rules: &KnativeRules,
        rec: Option<&KnativeRecommendation>,
        own: &BTreeMap<String, String>,
        warnings: &mut Vec<String>,
    ) -> BTreeMap<String, String> {
        apply_pinned(obj, policy, rules, rec, own, false, warnings)
    }

    fn apply_plain(obj: &mut Value, p: &KnativePolicy) -> BTreeMap<String, String> {
        apply(
            obj,
            p,
            &KnativeRules::default(),
            None,
            &BTreeMap::new(),
            &mut Vec::new(),
        )
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
            let mut warnings = Vec::new();
            apply(
                &mut obj,
                &p,
                &KnativeRules::default(),
                None,
                &BTreeMap::new(),
                &mut warnings,
            );
            assert_eq!(
                obj["spec"]["template"]["metadata"]["annotations"], want,
                "{user}"
            );
            assert!(!warnings.is_empty(), "{user}: every omission is explained");
        }
    }

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
        let own = apply_plain(&mut obj, &p);
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
        assert_eq!(own.len(), 3, "{own:?}");
        let again = obj.clone();
        assert_eq!(
            apply(
                &mut obj,
                &p,
                &KnativeRules::default(),
                None,
                &own,
                &mut Vec::new()
            ),
            own
        );
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
        p.apply_recommendations = Some(true);
        assert_eq!(
            desired(&p, Some(&rec)),
            (vec![(TARGET, "42".to_string())], Some(50))
        );
    }

    fn service(annotations: Value, cc: Option<u64>) -> Value {
        let mut spec = json!({"containers": [{"image": "hello"}]});
        if let Some(cc) = cc {
            spec["containerConcurrency"] = json!(cc);
        }
        json!({"spec": {"template": {"metadata": {"annotations": annotations}, "spec": spec}}})
    }

    fn rec(target: f64, cc: Option<u64>) -> KnativeRecommendation {
        KnativeRecommendation {
            target: Some(target),
            container_concurrency: cc,
            reasons: vec![],
        }
    }

    /// (target annotation, containerConcurrency) of a service.
    fn settings(obj: &Value) -> (Option<&str>, Option<u64>) {
        (
            obj.pointer("/spec/template/metadata/annotations/autoscaling.knative.dev~1target")
                .and_then(Value::as_str),
            obj.pointer("/spec/template/spec/containerConcurrency")
                .and_then(Value::as_u64),
        )
    }

    #[test]
    fn three_revisions_follow_the_recommendation() {
        let p = KnativePolicy {
            apply_recommendations: Some(true),
            ..Default::default()
        };
        let rules = KnativeRules::default();
        // No containerConcurrency yet.
        let mut obj = service(json!({}), None);
        let mut own = BTreeMap::new();
        let revisions = [
            // near the limit: 100 -> 80, a finite bound where it was 0
            (rec(80.0, Some(115)), (Some("80"), Some(115))),
            // still near the limit: 80 -> 64, rightsizer's own values revised
            (rec(64.0, Some(92)), (Some("64"), Some(92))),
            // headroom and queueing: 64 -> 76.8; the bound rightsizer set follows the target
            (rec(76.8, None), (Some("76.8"), Some(110))),
        ];
        for (i, (r, want)) in revisions.iter().enumerate() {
            own = apply(&mut obj, &p, &rules, Some(r), &own, &mut Vec::new());
            assert_eq!(settings(&obj), *want, "revision {}", i + 1);
            assert_eq!(own.get("target").map(String::as_str), want.0);
        }
    }

    #[test]
    fn a_users_value_is_never_touched() {
        let p = KnativePolicy {
            apply_recommendations: Some(true),
            ..Default::default()
        };
        let rules = KnativeRules::default();
        // The user wrote target 30 and containerConcurrency 20.
        let mut obj = service(json!({"autoscaling.knative.dev/target": "30"}), Some(20));
        let own = apply(
            &mut obj,
            &p,
            &rules,
            Some(&rec(24.0, Some(35))),
            &BTreeMap::new(),
            &mut Vec::new(),
        );
        assert_eq!(settings(&obj), (Some("30"), Some(20)));
        assert!(own.is_empty(), "{own:?}");
        // The user wrote containerConcurrency 0 (unbounded): kept, whatever is proposed or
        // the policy says.
        let mut obj = service(json!({}), Some(0));
        let policy_cc = KnativePolicy {
            container_concurrency: Some(100),
            ..p.clone()
        };
        let own = apply(
            &mut obj,
            &policy_cc,
            &rules,
            Some(&rec(40.0, Some(58))),
            &BTreeMap::new(),
            &mut Vec::new(),
        );
        assert_eq!(settings(&obj), (Some("40"), Some(0)));
        assert_eq!(own.get(CONCURRENCY), None);
        // rightsizer set 80 before; the user changed it to 50 since: now it is the user's.
        let mut obj = service(json!({"autoscaling.knative.dev/target": "50"}), None);
        let before = BTreeMap::from([("target".to_string(), "80".to_string())]);
        let own = apply(
            &mut obj,
            &p,
            &rules,
            Some(&rec(40.0, Some(58))),
            &before,
            &mut Vec::new(),
        );
        // The bound it adds lets the target in force work: ceil(50 / 0.7) = 72.
        assert_eq!(settings(&obj), (Some("50"), Some(72)));
        assert_eq!(own.get("target"), None);
    }
}
