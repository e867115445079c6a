//! Priority classes by policy rule. A user-set class is never replaced. On Pods the
//! apiserver has already resolved `spec.priority` before webhooks run, so the value
//! (and preemption policy) must be set to match the class.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::policy::schema::{Policy, PriorityClassInfo};
use crate::policy::select::Subject;

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

/// Set the class on a pod spec. `is_pod`: also set priority and preemptionPolicy.
/// Returns a note, or a warning when the class is unknown.
pub fn apply(
    pod_spec: &mut Value,
    class: &str,
    is_pod: bool,
    cluster: &BTreeMap<String, PriorityClassInfo>,
    policy: &Policy,
) -> Result<Option<String>, String> {
    let Some(m) = pod_spec.as_object_mut() else {
        return Ok(None);
    };
    if m.get("priorityClassName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Ok(None);
    }
    let info = cluster
        .get(class)
        .or_else(|| policy.priority.as_ref().and_then(|p| p.classes.get(class)));
    let Some(info) = info else {
        return Err(format!(
            "priority class {class:?} is not known (not in the cluster or the policy's priority.classes); not set"
        ));
    };
    m.insert("priorityClassName".into(), json!(class));
    if is_pod {
        m.insert("priority".into(), json!(info.value));
        m.insert(
            "preemptionPolicy".into(),
            json!(info
                .preemption_policy
                .as_deref()
                .unwrap_or("PreemptLowerPriority")),
        );
    }
    Ok(Some(format!("priority class {class} set")))
}
