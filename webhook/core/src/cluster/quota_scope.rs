//! Which ResourceQuotas count a Pod, and whether one that did not count it before
//! (because the webhook set a priority class, or requests that end its BestEffort QoS)
//! would refuse it. Quota admission runs after the webhooks, so `failurePolicy: Ignore`
//! does not help: the Pod is refused `exceeded quota`. The rule is the brief's: a change
//! is made only when it is known not to get the Pod refused; a scope or operator not
//! modelled here means "may count it".

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cluster::QuotaRoom;
use crate::quantity::Resource;

/// One term of a quota's scope (`spec.scopes`, `spec.scopeSelector.matchExpressions`);
/// a quota counts a Pod only when every term matches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeTerm {
    Terminating,
    NotTerminating,
    BestEffort,
    NotBestEffort,
    PriorityClass {
        op: ClassOp,
        values: Vec<String>,
    },
    /// A scope or operator not modelled (e.g. `CrossNamespacePodAffinity`, newer than
    /// v1.20): whether the quota counts a Pod is not known.
    Unknown(String),
}

/// The operators of a `PriorityClass` scope selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl ScopeTerm {
    /// A term from its scope name, operator (`None`: from `spec.scopes`, which the quota
    /// evaluator reads as `Exists`) and values.
    pub fn parse(scope: &str, operator: Option<&str>, values: &[String]) -> ScopeTerm {
        let op = operator.unwrap_or("Exists");
        let plain = |t: ScopeTerm| {
            if op == "Exists" {
                t
            } else {
                ScopeTerm::Unknown(format!("{scope} {op}"))
            }
        };
        match scope {
            "Terminating" => plain(ScopeTerm::Terminating),
            "NotTerminating" => plain(ScopeTerm::NotTerminating),
            "BestEffort" => plain(ScopeTerm::BestEffort),
            "NotBestEffort" => plain(ScopeTerm::NotBestEffort),
            "PriorityClass" => {
                let op = match op {
                    "In" => ClassOp::In,
                    "NotIn" => ClassOp::NotIn,
                    "Exists" => ClassOp::Exists,
                    "DoesNotExist" => ClassOp::DoesNotExist,
                    other => return ScopeTerm::Unknown(format!("PriorityClass {other}")),
                };
                ScopeTerm::PriorityClass {
                    op,
                    values: values.to_vec(),
                }
            }
            other => ScopeTerm::Unknown(other.to_string()),
        }
    }

    /// The terms of a ResourceQuota's `spec` (JSON).
    pub fn of_spec(spec: Option<&Value>) -> Vec<ScopeTerm> {
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let mut out: Vec<ScopeTerm> = strings(spec.and_then(|s| s.get("scopes")))
            .iter()
            .map(|s| ScopeTerm::parse(s, None, &[]))
            .collect();
        let exprs = spec
            .and_then(|s| s.pointer("/scopeSelector/matchExpressions"))
            .and_then(Value::as_array);
        for e in exprs.into_iter().flatten() {
            let name = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
            let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
            out.push(ScopeTerm::parse(name, Some(op), &strings(e.get("values"))));
        }
        out
    }
}

/// What quota scopes select on, for one Pod (or one template's Pods).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTraits {
    /// `spec.priorityClassName` (empty: none).
    pub class: String,
    /// QoS BestEffort: no non-zero CPU or memory request or limit in any container;
    /// `None` when a quantity cannot be read.
    pub best_effort: Option<bool>,
    /// `spec.activeDeadlineSeconds` set.
    pub terminating: bool,
}

impl PodTraits {
    pub fn of(spec: &Value) -> PodTraits {
        PodTraits {
            class: spec
                .get("priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            best_effort: best_effort(containers(spec)),
            terminating: spec
                .get("activeDeadlineSeconds")
                .is_some_and(|v| !v.is_null()),
        }
    }
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .filter_map(|k| spec.get(k).and_then(Value::as_array))
        .flatten()
}

/// QoS BestEffort of a Pod with these (app and init) containers; `None` when a quantity
/// cannot be read.
pub fn best_effort<'a>(containers: impl Iterator<Item = &'a Value>) -> Option<bool> {
    for c in containers {
        for side in ["requests", "limits"] {
            for r in Resource::ALL {
                match c
                    .pointer(&format!("/resources/{side}/{}", r.as_str()))
                    .filter(|v| !v.is_null())
                {
                    None => {}
                    Some(Value::String(s)) => match r.parse(s) {
                        Ok(0) => {}
                        Ok(_) => return Some(false),
                        Err(_) => return None,
                    },
                    Some(_) => return None,
                }
            }
        }
    }
    Some(true)
}

/// Whether a quota counts a Pod, three-valued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    Yes,
    No,
    Maybe,
}

/// Whether a quota with these terms counts a Pod with these traits.
pub fn counts(terms: &[ScopeTerm], pod: &PodTraits) -> Counts {
    let yes = |b: bool| if b { Counts::Yes } else { Counts::No };
    let mut out = Counts::Yes;
    for t in terms {
        let c = match t {
            ScopeTerm::Terminating => yes(pod.terminating),
            ScopeTerm::NotTerminating => yes(!pod.terminating),
            ScopeTerm::BestEffort => pod.best_effort.map_or(Counts::Maybe, yes),
            ScopeTerm::NotBestEffort => pod.best_effort.map_or(Counts::Maybe, |b| yes(!b)),
            ScopeTerm::PriorityClass { op, values } => {
                let named = values.contains(&pod.class);
                match op {
                    ClassOp::In => yes(named),
                    ClassOp::NotIn => yes(!named),
                    ClassOp::Exists => yes(!pod.class.is_empty()),
                    // The evaluator matches a label set that always has the key (empty
                    // for no class), so whether this ever matches is not relied on.
                    ClassOp::DoesNotExist if pod.class.is_empty() => Counts::Maybe,
                    ClassOp::DoesNotExist => Counts::No,
                }
            }
            ScopeTerm::Unknown(_) => Counts::Maybe,
        };
        out = match (out, c) {
            (Counts::No, _) | (_, Counts::No) => Counts::No,
            (Counts::Maybe, _) | (_, Counts::Maybe) => Counts::Maybe,
            _ => Counts::Yes,
        };
    }
    out
}

/// What a Pod would add to a quota that starts counting it: its effective totals by
/// quota key, and whether every container states each (quota admission refuses a Pod
/// with a container that leaves a quota-tracked CPU or memory request or limit unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// `requests.cpu`, `limits.memory`, ... (memory in bytes, CPU in millicores).
    pub totals: BTreeMap<String, u64>,
    /// Keys some container leaves unset.
    pub unset: Vec<String>,
}

/// How many Pods a newly counted object adds: `None` for none (zero replicas).
pub fn newly_counted_refusal(
    quotas: &[QuotaRoom],
    before: &PodTraits,
    after: &PodTraits,
    usage: &PodUsage,
    pods: u64,
) -> Option<String> {
    if pods == 0 {
        return None;
    }
    for q in quotas {
        let now = counts(&q.scopes, after);
        let was = counts(&q.scopes, before);
        if now == Counts::No || was == Counts::Yes {
            continue;
        }
        let verb = if now == Counts::Yes { "would" } else { "may" };
        if let Some(why) = refusal(q, usage, pods, verb) {
            return Some(why);
        }
    }
    None
}

/// Why quota `q` would refuse `pods` Pods with `usage` it starts counting.
/// (`verb`: "would" or "may" count it.)
fn refusal(q: &QuotaRoom, usage: &PodUsage, pods: u64, verb: &str) -> Option<String> {
    let name = &q.name;
    if q.unknown_usage {
        return Some(format!(
            "ResourceQuota {name} {verb} count it and its usage is not known yet"
        ));
    }
    if let Some(key) = &q.unmodelled {
        return Some(format!(
            "ResourceQuota {name} {verb} count it and tracks {key}, which is not checked here"
        ));
    }
    if let Some(left) = q.pods_left {
        if pods > left {
            return Some(format!(
                "ResourceQuota {name} {verb} count it and has room for {left} more Pods"
            ));
        }
    }
    for (key, &left) in &q.room {
        if usage.unset.contains(key) {
            return Some(format!(
                "ResourceQuota {name} {verb} count it and tracks {key}, which a container leaves unset"
            ));
        }
        let need = usage
            .totals
            .get(key)
            .copied()
            .unwrap_or(0)
            .saturating_mul(pods);
        if need > left {
            return Some(format!(
                "ResourceQuota {name} {verb} count it and has {left} of {key} left, {need} needed"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn quota(spec: Value, hard: &[(&str, &str)], used: &[(&str, &str)]) -> QuotaRoom {
        let map = |kv: &[(&str, &str)]| -> Value {
            kv.iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let mut spec = spec;
        spec["hard"] = map(hard);
        QuotaRoom::from_object(&json!({
            "metadata": {"name": "q"},
            "spec": spec,
            "status": {"used": map(used)}
        }))
    }

    fn traits(class: &str, best_effort: bool) -> PodTraits {
        PodTraits {
            class: class.into(),
            best_effort: Some(best_effort),
            terminating: false,
        }
    }

    fn class_sel(op: &str, values: &[&str]) -> Value {
        json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": op, "values": values}
        ]}})
    }

    /// Setting class `high-priority` on a Pod (no class before, 100m CPU requested).
    #[rstest]
    #[case::scoped_to_the_class_with_no_pods_left(class_sel("In", &["high-priority"]), &[("pods", "0")], &[("pods", "0")], false)]
    #[case::scoped_to_the_class_with_room(class_sel("In", &["high-priority"]), &[("pods", "5")], &[("pods", "1")], true)]
    #[case::count_pods_key(class_sel("In", &["high-priority"]), &[("count/pods", "2")], &[("count/pods", "2")], false)]
    #[case::scoped_to_another_class(class_sel("In", &["low"]), &[("pods", "0")], &[("pods", "0")], true)]
    #[case::not_in_other_classes_counted_before(class_sel("NotIn", &["low"]), &[("pods", "0")], &[("pods", "0")], true)]
    #[case::not_in_the_class_no_longer_counts(class_sel("NotIn", &["high-priority"]), &[("pods", "0")], &[("pods", "0")], true)]
    #[case::exists(class_sel("Exists", &[]), &[("pods", "0")], &[("pods", "0")], false)]
    #[case::unscoped_counts_before_and_after(json!({}), &[("pods", "0")], &[("pods", "0")], true)]
    #[case::unknown_scope_with_room(json!({"scopes": ["CrossNamespacePodAffinity"]}), &[("pods", "9")], &[("pods", "0")], true)]
    #[case::unknown_scope_with_no_room(json!({"scopes": ["CrossNamespacePodAffinity"], "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high-priority"]}]}}), &[("pods", "0")], &[("pods", "0")], false)]
    #[case::unknown_operator(json!({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "Matches", "values": []}]}}), &[("pods", "0")], &[("pods", "0")], false)]
    #[case::usage_not_counted_yet(class_sel("In", &["high-priority"]), &[("pods", "9")], &[], false)]
    #[case::cpu_room_left(class_sel("In", &["high-priority"]), &[("requests.cpu", "1")], &[("requests.cpu", "500m")], true)]
    #[case::cpu_room_spent(class_sel("In", &["high-priority"]), &[("requests.cpu", "1")], &[("requests.cpu", "950m")], false)]
    #[case::unmodelled_resource(class_sel("In", &["high-priority"]), &[("requests.nvidia.com/gpu", "8")], &[("requests.nvidia.com/gpu", "0")], false)]
    #[case::tracks_a_limit_the_pod_leaves_unset(class_sel("In", &["high-priority"]), &[("limits.cpu", "8")], &[("limits.cpu", "0")], false)]
    fn setting_a_class(
        #[case] spec: Value,
        #[case] hard: &[(&str, &str)],
        #[case] used: &[(&str, &str)],
        #[case] admitted: bool,
    ) {
        let q = quota(spec, hard, used);
        let usage = PodUsage {
            totals: BTreeMap::from([("requests.cpu".into(), 100)]),
            unset: vec!["limits.cpu".into()],
        };
        let got = newly_counted_refusal(
            &[q],
            &traits("", false),
            &traits("high-priority", false),
            &usage,
            1,
        );
        assert_eq!(got.is_none(), admitted, "{got:?}");
    }

    #[rstest]
    #[case::not_best_effort_quota_full(json!({"scopes": ["NotBestEffort"]}), false)]
    #[case::best_effort_quota_stops_counting(json!({"scopes": ["BestEffort"]}), true)]
    #[case::terminating_only(json!({"scopes": ["NotBestEffort", "Terminating"]}), true)]
    fn ending_best_effort(#[case] spec: Value, #[case] admitted: bool) {
        let q = quota(spec, &[("pods", "0")], &[("pods", "0")]);
        let got = newly_counted_refusal(
            &[q],
            &traits("", true),
            &traits("", false),
            &PodUsage::default(),
            1,
        );
        assert_eq!(got.is_none(), admitted, "{got:?}");
    }

    #[test]
    fn every_replica_of_a_template_is_counted() {
        let q = quota(
            class_sel("In", &["high-priority"]),
            &[("pods", "3")],
            &[("pods", "0")],
        );
        let go = |n| {
            newly_counted_refusal(
                std::slice::from_ref(&q),
                &traits("", false),
                &traits("high-priority", false),
                &PodUsage::default(),
                n,
            )
        };
        assert!(go(3).is_none());
        assert!(go(4).is_some());
        assert!(go(0).is_none(), "no Pods, nothing counted");
    }

    #[test]
    fn traits_of_a_pod_spec() {
        let t = PodTraits::of(&json!({
            "priorityClassName": "x",
            "activeDeadlineSeconds": 30,
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "0"}}}]
        }));
        assert_eq!(
            t,
            PodTraits {
                class: "x".into(),
                best_effort: Some(true),
                terminating: true
            }
        );
        let burstable = PodTraits::of(
            &json!({"containers": [{"name": "a", "resources": {"limits": {"memory": "1Mi"}}}]}),
        );
        assert_eq!(burstable.best_effort, Some(false));
        let unreadable = PodTraits::of(
            &json!({"containers": [{"name": "a", "resources": {"limits": {"memory": "lots"}}}]}),
        );
        assert_eq!(unreadable.best_effort, None);
    }
}
