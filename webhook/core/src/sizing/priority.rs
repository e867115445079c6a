//! Priority classes by policy rule. A user-set class is never replaced. On Pods the
//! apiserver has already resolved `spec.priority` before webhooks run, so the value
//! (and preemption policy) must be set to match the class.

use serde_json::{json, Value};

use crate::cluster::{ClassSource, PriorityClasses};
use crate::policy::schema::Policy;
use crate::policy::select::Subject;
use crate::sizing::field::Field;

/// The class a workload should get, if any: the GPU class for GPU pods, else the first
/// matching rule, else the policy's default class.
pub fn choose<'p>(
    policy: &'p Policy,
    subject: &Subject,
    total_cpu_request: u64,
    gpu: bool,
) -> Option<&'p str> {
    if gpu {
        if let Some(c) = policy
            .gpu
            .as_ref()
            .and_then(|g| g.priority_class_name.as_deref())
        {
            return Some(c);
        }
    }
    let p = policy.priority.as_ref()?;
    p.rules
        .iter()
        .find(|r| r.selector.matches(subject) && r.min_cpu.is_none_or(|m| total_cpu_request >= m.0))
        .map(|r| r.class_name.as_str())
        .or(p.default_class_name.as_deref())
}

/// What [`apply`] writes (see [`crate::sizing::written`]).
pub const WRITES: &[Field] = &[
    Field::Spec("priorityClassName"),
    Field::Spec("priority"),
    Field::Spec("preemptionPolicy"),
];

/// Whether a Pod's class is the one the apiserver filled in: the cluster's `globalDefault`
/// class with its value. The Priority admission plugin runs before mutating webhooks and
/// gives that class to every Pod that names none, so a webhook cannot tell it from one the
/// user named; a Pod naming the global default is taken as naming none (README, "Priority
/// classes"). Templates are never defaulted so.
fn defaulted(name: &str, priority: Option<&Value>, is_pod: bool, known: &PriorityClasses) -> bool {
    is_pod
        && known.get(name).is_some_and(|info| {
            info.global_default
                && priority.is_none_or(|p| p.is_null() || p.as_i64() == Some(i64::from(info.value)))
        })
}

/// Set the class on a pod spec. `is_pod`: also set priority and preemptionPolicy.
/// Returns a warning when the class is not set, or is set only on the policy's word.
///
/// Rule: nothing the webhook adds may get the object refused. The apiserver refuses a
/// Pod whose class does not exist, or whose `priority`/`preemptionPolicy` differ from
/// what its class gives; so a class is set only when the cluster is known to have it
/// (watched), never with no view of the cluster, and never over a value it contradicts.
pub fn apply(
    pod_spec: &mut Value,
    class: &str,
    is_pod: bool,
    known: &PriorityClasses,
    policy: &Policy,
) -> Option<String> {
    let m = pod_spec.as_object_mut()?;
    let named = m
        .get("priorityClassName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if let Some(name) = named {
        if name == class || !defaulted(name, m.get("priority"), is_pod, known) {
            return None;
        }
    }
    let mut warning = None;
    let info = match known.source {
        ClassSource::Unknown => {
            return Some(format!(
                "priority class {class:?} not set: the cluster's PriorityClasses are not known (no cluster connection)"
            ))
        }
        ClassSource::Cluster => known.get(class),
        ClassSource::Offline => known.get(class).or_else(|| {
            let declared = policy.priority.as_ref().and_then(|p| p.classes.get(class));
            if declared.is_some() {
                warning = Some(format!(
                    "priority class {class:?} set from the policy's priority.classes (offline): the cluster must have it, or its Pods are refused"
                ));
            }
            declared
        }),
    };
    let Some(info) = info else {
        let where_ = match known.source {
            ClassSource::Offline => "is neither in the input nor in the policy's priority.classes",
            _ => "does not exist in the cluster",
        };
        return Some(format!("priority class {class:?} {where_}; not set"));
    };
    let preemption = info
        .preemption_policy
        .as_deref()
        .unwrap_or("PreemptLowerPriority");
    // On a Pod the apiserver has already filled these in from the (absent) class, so they
    // are replaced; on a template they are the user's, and must agree with the class.
    if !is_pod {
        let priority = m.get("priority").filter(|v| !v.is_null());
        let policy_set = m
            .get("preemptionPolicy")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty());
        if priority.is_some_and(|p| p.as_i64() != Some(i64::from(info.value)))
            || policy_set.is_some_and(|p| p != preemption)
        {
            return Some(format!(
                "priority class {class:?} not set: the template's priority or preemptionPolicy differs from the class's"
            ));
        }
    }
    m.insert("priorityClassName".into(), json!(class));
    if is_pod {
        m.insert("priority".into(), json!(info.value));
        m.insert("preemptionPolicy".into(), json!(preemption));
    }
    warning
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::schema::PriorityClassInfo;
    use rstest::rstest;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn known() -> PriorityClasses {
        let class = |value, global_default| PriorityClassInfo {
            value,
            preemption_policy: None,
            global_default,
        };
        PriorityClasses {
            source: ClassSource::Cluster,
            classes: Arc::new(BTreeMap::from([
                ("cluster-default".to_string(), class(10, true)),
                ("high-priority".to_string(), class(900, false)),
                ("user-class".to_string(), class(7, false)),
            ])),
        }
    }

    fn policy() -> Policy {
        crate::policy::validate::validate("t", "t", serde_json::from_value(json!({})).unwrap())
            .unwrap()
    }

    /// (pod spec, Pod or template) -> the class and priority after `apply`.
    #[rstest]
    // No class: set, with the class's priority.
    #[case::unset(json!({}), true, (Some("high-priority"), Some(900)))]
    // The apiserver filled in the global default (class and value): taken as unset.
    #[case::global_default_filled(json!({"priorityClassName": "cluster-default", "priority": 10}), true, (Some("high-priority"), Some(900)))]
    // A class the user named is kept.
    #[case::user_class(json!({"priorityClassName": "user-class", "priority": 7}), true, (Some("user-class"), Some(7)))]
    // The global default with another value was not filled in by the apiserver: kept.
    #[case::global_default_other_value(json!({"priorityClassName": "cluster-default", "priority": 3}), true, (Some("cluster-default"), Some(3)))]
    // Templates are never defaulted: a template naming the global default named it.
    #[case::template_names_global_default(json!({"priorityClassName": "cluster-default"}), false, (Some("cluster-default"), None))]
    fn global_default_table(
        #[case] mut spec: Value,
        #[case] is_pod: bool,
        #[case] want: (Option<&str>, Option<i64>),
    ) {
        apply(&mut spec, "high-priority", is_pod, &known(), &policy());
        assert_eq!(
            (
                spec.get("priorityClassName").and_then(Value::as_str),
                spec.get("priority").and_then(Value::as_i64)
            ),
            want
        );
    }

    #[test]
    fn a_missing_class_leaves_the_global_default() {
        let mut spec = json!({"priorityClassName": "cluster-default", "priority": 10});
        let w = apply(&mut spec, "absent", true, &known(), &policy());
        assert!(w.is_some_and(|w| w.contains("does not exist")));
        assert_eq!(spec["priorityClassName"], "cluster-default");
        assert_eq!(spec["priority"], 10);
    }
}
