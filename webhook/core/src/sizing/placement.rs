//! Where Pods run: the GPU section for GPU Pods, the first matching placement rule for the
//! others (selected by workload and by the Pod's effective CPU request), and the priority
//! class.
//! Terms are merged into what the pod spec has; nothing the user wrote is replaced.

use serde_json::Value;

use crate::cluster::quota_scope::{newly_counted_refusal, PodTraits};
use crate::object::View;
use crate::policy::schema::{PlacementRule, Policy};
use crate::policy::select::Subject;
use crate::quantity::Resource;
use crate::sizing::containers::Lists;
use crate::sizing::field::Field;
use crate::sizing::pod::{self, Pods};
use crate::sizing::{gpu, priority, Context};
use crate::workload::kind::WorkloadKind;

/// The first placement rule that selects this workload at this CPU request.
pub fn rule_for<'p>(policy: &'p Policy, subject: &Subject, cpu: u64) -> Option<&'p PlacementRule> {
    policy
        .placement
        .iter()
        .find(|r| r.selector.matches(subject) && r.min_cpu.is_none_or(|m| cpu >= m.0))
}

/// The writers [`apply_placement`] runs (see [`crate::sizing::written`]).
pub(super) const STEP_WRITES: &[&[Field]] = &[gpu::WRITES, priority::WRITES];

pub(super) fn apply_placement(
    out: &mut Value,
    view: &View,
    policy: &Policy,
    ctx: &Context,
    pods: Pods,
    warnings: &mut Vec<String>,
) {
    let Some(spec) = out.pointer_mut(view.pod_spec) else {
        return;
    };
    let tolerations_before = spec.get("tolerations").cloned();
    let gpu = policy.gpu.as_ref().is_some_and(|g| gpu::wants_gpu(spec, g));
    if gpu {
        if let Some(g) = &policy.gpu {
            gpu::merge(spec, g);
        }
    }
    let subject = Subject {
        key: &view.identity,
        labels: &view.labels,
        namespace_labels: ctx.namespace_labels,
    };
    // The scheduler's figure: init containers and sidecars count as it counts them.
    let cpu = Lists::read(spec).effective(Resource::Cpu).request;
    // A GPU Pod's placement is the GPU section's: a rule's instance types would have no GPU.
    if let Some(rule) = rule_for(policy, &subject, cpu).filter(|_| !gpu) {
        gpu::merge_terms(
            spec,
            &rule.required_node_affinity,
            &rule.preferred_node_affinity,
            &rule.tolerations,
        );
    }
    keep_admitted_tolerations(spec, tolerations_before, ctx, warnings);
    if let Some(class) = priority::choose(policy, &subject, cpu, gpu) {
        if let Some(why) = class_refusal(spec, class, ctx, pods) {
            warnings.push(format!("priority class {class:?} not set: {why}"));
            return;
        }
        let is_pod = view.kind == WorkloadKind::Pod;
        warnings.extend(priority::apply(
            spec,
            class,
            is_pod,
            ctx.priority_classes,
            policy,
        ));
    }
}

/// Why setting `class` would get the Pod refused by a scoped ResourceQuota that does not
/// count it without the class (e.g. one scoped to that class with `pods: 0`).
fn class_refusal(spec: &Value, class: &str, ctx: &Context, pods: Pods) -> Option<String> {
    let before = PodTraits::of(spec);
    if !before.class.is_empty() {
        return None; // a user-set class is never replaced (`priority::apply`)
    }
    let after = PodTraits {
        class: class.to_string(),
        ..before.clone()
    };
    newly_counted_refusal(
        ctx.quotas,
        &before,
        &after,
        &pod::usage(&Lists::read(spec)),
        pod::newly_counted_pods(pods),
    )
}

/// Take back the tolerations just added that the namespace's PodTolerationRestriction
/// whitelist does not cover (the plugin would refuse the Pod), with a warning.
fn keep_admitted_tolerations(
    spec: &mut Value,
    before: Option<Value>,
    ctx: &Context,
    warnings: &mut Vec<String>,
) {
    let had: Vec<Value> = before
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(list) = spec.get_mut("tolerations").and_then(Value::as_array_mut) else {
        return;
    };
    let mut refused = Vec::new();
    list.retain(|t| {
        let keep = had.contains(t) || ctx.tolerations.admits(t);
        if !keep {
            refused.push(
                t.get("key")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            );
        }
        keep
    });
    if refused.is_empty() {
        return;
    }
    if list.is_empty() && before.is_none() {
        if let Some(m) = spec.as_object_mut() {
            m.remove("tolerations");
        }
    }
    warnings.push(format!(
        "tolerations {refused:?} not added: the namespace's PodTolerationRestriction whitelist ({}) does not allow them",
        crate::cluster::tolerations::WHITELIST_ANNOTATION
    ));
}
