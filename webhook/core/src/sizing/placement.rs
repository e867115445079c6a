//! Where Pods run: the GPU section for GPU Pods, the first matching placement rule for the
//! others (selected by workload and by the Pod's effective CPU request), and the priority
//! class.
//! Terms are merged into what the pod spec has; nothing the user wrote is replaced.

use serde_json::Value;

use crate::object::View;
use crate::policy::schema::{PlacementRule, Policy};
use crate::policy::select::Subject;
use crate::quantity::Resource;
use crate::sizing::containers::Lists;
use crate::sizing::field::Field;
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
    warnings: &mut Vec<String>,
) {
    let Some(spec) = out.pointer_mut(view.pod_spec) else {
        return;
    };
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
    if let Some(class) = priority::choose(policy, &subject, cpu, gpu) {
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
