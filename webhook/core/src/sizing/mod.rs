//! The merge: a pure function from (object, policy, recommendations, cluster facts) to
//! the object's writable parts as they should be (`written`). The caller diffs those
//! parts with the object into a JSONPatch. One module per
//! kind of change: container resources (`resize`, by precedence in `resources`, explicit
//! values in `explicit`, Pod-level checks in `pod`), LimitRange fitting, placement (GPU,
//! placement rules, priority), Knative.

pub(crate) mod containers;
pub(crate) mod control;
pub(crate) mod explicit;
pub mod field;
pub(crate) mod gpu;
pub mod jvm;
pub(crate) mod knative;
pub mod knative_writes;
pub(crate) mod limits;
pub mod load;
pub mod nodes;
pub(crate) mod placement;
pub(crate) mod pod;
pub(crate) mod priority;
pub mod record;
pub(crate) mod resize;
pub mod resources;
pub mod written;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LimitRangeSpec;
use serde_json::Value;

use crate::object::{View, MODE_ANNOTATION, SIZED_ANNOTATION};
use crate::policy::schema::{Mode, Policy, WriteTarget};
use crate::recommendation::ContainerRecommendation;
use crate::workload::kind::WorkloadKind;
use field::Field;
use record::SizedRecord;
use written::Written;

/// Facts about the cluster and namespace the merge needs.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub limit_ranges: &'a [LimitRangeSpec],
    /// ResourceQuota room in the namespace (quota counts Pods: templates are checked for
    /// the Pods they make).
    pub quotas: &'a [crate::cluster::QuotaRoom],
    /// PodTolerationRestriction's namespace whitelist.
    pub tolerations: &'a crate::cluster::tolerations::TolerationRestriction,
    /// PriorityClasses known to exist, and how that is known.
    pub priority_classes: &'a crate::cluster::PriorityClasses,
    /// `RIGHTSIZER_ENFORCEMENT=true`: enforce mode may apply values.
    pub enforcement: bool,
    /// The cluster's nodes: no raise goes above what the largest the Pod fits allocates.
    pub nodes: &'a crate::cluster::Nodes,
}

/// The outcome of the merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The object's writable parts as they should be (equal to the input's when nothing
    /// changes).
    pub object: Written,
    /// Things the user should know (sent as admission warnings).
    pub warnings: Vec<String>,
    /// The effective mode.
    pub mode: Mode,
    /// Resources whose raise the node cap held back (the shell counts and logs them).
    pub node_capped: Vec<crate::quantity::Resource>,
}

/// Effective mode: the policy's, narrowed by the workload annotation, and capped at
/// observe unless enforcement is switched on globally.
fn effective_mode(policy: &Policy, view: &View, ctx: &Context, warnings: &mut Vec<String>) -> Mode {
    let mut mode = annotated_mode(policy.mode, view.annotation(MODE_ANNOTATION), warnings);
    if mode == Mode::Enforce && !ctx.enforcement {
        mode = Mode::Observe;
    }
    mode
}

/// The policy's mode narrowed by a `rightsizer.io/mode` annotation (admission and the
/// analyzer both use this).
pub fn annotated_mode(policy: Mode, annotation: Option<&str>, warnings: &mut Vec<String>) -> Mode {
    match annotation.map(|a| (a, Mode::parse(a))) {
        Some((_, Some(m))) => policy.min(m),
        Some((a, None)) => {
            warnings.push(format!(
                "{MODE_ANNOTATION}: {a:?} is not off, observe or enforce; ignored"
            ));
            policy
        }
        None => policy,
    }
}

/// Where each kind of change goes for this object.
struct Placement {
    resources: bool,
    placement: bool,
    knative: bool,
}

fn routes(view: &View, policy: &Policy) -> Placement {
    let knative_identity = view.identity.kind.is_knative();
    if view.kind == WorkloadKind::Pod {
        let pods = policy.target == WriteTarget::Pods || !view.controlled;
        Placement {
            resources: pods,
            // Knative's webhook refuses affinity and priority in templates by default.
            placement: pods || knative_identity,
            knative: false,
        }
    } else {
        let templates = policy.target == WriteTarget::Templates;
        Placement {
            resources: templates,
            placement: templates && !view.kind.is_knative(),
            knative: view.kind.is_knative(),
        }
    }
}

/// The merge.
pub fn plan(
    obj: &Value,
    view: &View,
    policy: &Policy,
    recs: &BTreeMap<String, ContainerRecommendation>,
    ctx: &Context,
) -> Merged {
    let mut warnings = Vec::new();
    let mode = effective_mode(policy, view, ctx, &mut warnings);
    let mut written = Written::of(obj, view);
    if mode == Mode::Off {
        return Merged {
            object: written,
            warnings,
            mode,
            node_capped: Vec::new(),
        };
    }
    let place = routes(view, policy);
    let mut node_capped = Vec::new();
    if place.resources {
        let said = written.write(resize::STEP_WRITES, |out| {
            resize::size_resources(obj, out, view, policy, recs, ctx, mode, &mut node_capped)
        });
        warnings.extend(said);
    }
    if place.placement {
        written.write(placement::STEP_WRITES, |out| {
            let pods = pod::pods_of(view.kind, obj);
            placement::apply_placement(out, view, policy, ctx, pods, &mut warnings)
        });
    }
    if place.knative {
        // The workload's own Knative settings (policy overrides) replace the policy's
        // section field by field, and beat the analyzer's proposal on the fields they set.
        let own = explicit::knative_override_for(policy, view);
        let k = match &own {
            Some(o) => Some(o.clone().or(&policy.knative.clone().unwrap_or_default())),
            None => policy.knative.clone(),
        };
        if let Some(k) = k {
            let rec = recs
                .values()
                .find_map(|r| r.knative.as_ref())
                .filter(|_| mode == Mode::Enforce)
                .map(|r| crate::recommendation::KnativeRecommendation {
                    target: r
                        .target
                        .filter(|_| own.as_ref().is_none_or(|o| o.target.is_none())),
                    container_concurrency: r.container_concurrency.filter(|_| {
                        own.as_ref()
                            .is_none_or(|o| o.container_concurrency.is_none())
                    }),
                    ..r.clone()
                });
            let pinned = own
                .as_ref()
                .is_some_and(|o| o.container_concurrency.is_some());
            written.write(KNATIVE_STEP_WRITES, |out| {
                apply_knative(out, view, &k, policy, rec.as_ref(), pinned, &mut warnings)
            });
        }
    }
    Merged {
        object: written,
        warnings,
        mode,
        node_capped,
    }
}

/// The writers [`apply_knative`] runs (see [`written`]).
const KNATIVE_STEP_WRITES: &[&[Field]] = &[knative::WRITES, record::WRITES];

/// Knative settings, and the record of which of them are rightsizer's (in the template's
/// `rightsizer.io/sized`, beside any container record written just before).
fn apply_knative(
    out: &mut Value,
    view: &View,
    k: &crate::policy::schema::KnativePolicy,
    policy: &Policy,
    rec: Option<&crate::recommendation::KnativeRecommendation>,
    pinned: bool,
    warnings: &mut Vec<String>,
) {
    let now = out
        .pointer(view.pod_meta)
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(SIZED_ANNOTATION))
        .and_then(Value::as_str);
    let mut record = SizedRecord::parse(now);
    let own = knative::apply_pinned(
        out,
        k,
        &policy.rules.knative,
        rec,
        &record.knative,
        pinned,
        warnings,
    );
    if own != record.knative {
        record.knative = own;
        if record.is_empty() {
            // The user took every setting over: nothing left to record.
            if let Some(a) = out
                .pointer_mut(view.pod_meta)
                .and_then(|m| m.get_mut("annotations"))
                .and_then(Value::as_object_mut)
            {
                a.remove(SIZED_ANNOTATION);
            }
        } else if let Ok(text) = serde_json::to_string(&record) {
            record::set_annotation(out, view.pod_meta, SIZED_ANNOTATION, text);
        }
    }
}
