//! Requests and limits of every container of a pod spec (app containers, init containers
//! and native sidecars alike): one container and resource at a time by precedence
//! (`resources::resolve`), then the Pod-level checks on the effective totals, then the
//! `rightsizer.io/sized` and `rightsizer.io/recommendation` records.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::cluster::quota_scope::{best_effort, newly_counted_refusal, PodTraits};
use crate::object::{View, RECOMMENDATION_ANNOTATION, SIZED_ANNOTATION};
use crate::policy::schema::{ContainerValues, Mode, Policy};
use crate::policy::sizing::SizingPolicy;
use crate::quantity::{PerResource, Resource};
use crate::recommendation::ContainerRecommendation;
use crate::rules::Sizes;
use crate::sizing::containers::{self, container_name, Declared, Lists};
use crate::sizing::explicit::{defaults_for, overrides_for, parse_overrides_annotation};
use crate::sizing::field::Field;
use crate::sizing::jvm::Heap;
use crate::sizing::load::{self as load, Prediction};
use crate::sizing::record::{
    self, set_annotation, Applied, AppliedPair, ContainersRecord, RecommendationRecord,
    RecommendedPair, SizedRecord,
};
use crate::sizing::resources::{self, Candidates, Resolved, Source};
use crate::sizing::{control, limits, nodes, pod, Context};

/// What every container's sizing reads.
struct Inputs<'a> {
    view: &'a View,
    policy: &'a Policy,
    recs: &'a BTreeMap<String, ContainerRecommendation>,
    ctx: &'a Context<'a>,
    enforce: bool,
    annotation_overrides: BTreeMap<String, ContainerValues>,
    predictions: BTreeMap<String, Prediction>,
    /// How many Pods the object stands for (the quota check).
    pods: pod::Pods,
    /// What quota scopes select on, as received.
    traits: PodTraits,
    /// The policy's `sizing:` section.
    sizing: std::borrow::Cow<'a, SizingPolicy>,
    /// The largest allocatable of the nodes the Pod can land on (the node cap).
    room: Option<PerResource<u64>>,
}

/// One container and resource, sized.
struct Sized {
    resolved: Resolved,
    template: Sizes,
    recommended: Option<Sizes>,
    /// The node cap held a raise back.
    capped: bool,
}

/// The writers [`size_resources`] runs (see [`crate::sizing::written`]).
pub(super) const STEP_WRITES: &[&[Field]] = &[containers::WRITES, record::WRITES];

/// Size the containers of the pod spec at `view.pod_spec` in `out`, the writable parts
/// of `received` (the containers are read from `received`, and copied only where they
/// change).
#[allow(clippy::too_many_arguments)]
pub(super) fn size_resources(
    received: &Value,
    out: &mut Value,
    view: &View,
    policy: &Policy,
    recs: &BTreeMap<String, ContainerRecommendation>,
    ctx: &Context,
    mode: Mode,
    node_capped: &mut Vec<Resource>,
) -> Vec<String> {
    let mut said = Vec::new();
    let warnings = &mut said;
    let knative = view.identity.kind.is_knative();
    let Some(received_spec) = received.pointer(view.pod_spec) else {
        return said;
    };
    let before = Lists::read(received_spec);
    let existing = SizedRecord::parse(
        view.pod_annotations
            .get(SIZED_ANNOTATION)
            .map(String::as_str),
    );
    // Already sized (by an earlier pass, or through the template): leave it.
    let current = |name: &str, r: Resource| {
        before
            .find(name, knative)
            .and_then(|slot| before.declared(slot)[r].sizes().ok())
            .map(|s| (s.request, s.limit))
    };
    if record::still_applied(&existing, current) {
        return said;
    }
    let inputs = Inputs {
        view,
        policy,
        recs,
        ctx,
        enforce: mode == Mode::Enforce,
        annotation_overrides: parse_overrides_annotation(view, warnings),
        predictions: load::predictions(policy, view, ctx.namespace_labels, recs, warnings),
        // From the received object: the copy holds only the writable parts.
        pods: pod::pods_of(view.kind, received),
        traits: PodTraits::of(received_spec),
        sizing: policy.sizing(),
        room: received
            .pointer(view.pod_spec)
            .filter(|_| ctx.nodes.known)
            .and_then(|spec| nodes::room(&ctx.nodes.nodes, spec)),
    };
    let Some(mut after) = out
        .pointer_mut(view.pod_spec)
        .map(|spec| Lists::take(spec, &before))
    else {
        return said;
    };
    let mut sized = ContainersRecord::new();
    let mut recommended = RecommendationRecord::new();
    let mut touched = BTreeSet::new();
    for (slot, _, c) in before.entries() {
        let Some(name) = container_name(c, knative && !slot.init) else {
            continue;
        };
        if !policy.selector.sizes_container(&name) {
            continue;
        }
        let qos = guaranteed(before.declared(slot));
        let heap = crate::sizing::jvm::heap(c).filter(|_| inputs.sizing.jvm.enabled);
        for r in Resource::ALL {
            let declared = &before.declared(slot)[r];
            let Some(s) = size_one(&inputs, declared, &name, r, qos, heap, warnings) else {
                continue;
            };
            if s.capped && !node_capped.contains(&r) {
                node_capped.push(r);
            }
            if let Some(p) = s.recommended {
                recommended.entry(name.clone()).or_default().insert(
                    r,
                    RecommendedPair {
                        request: p.request.map(|v| r.format(v)),
                        limit: p.limit.map(|v| r.format(v)),
                    },
                );
            }
            if after.write(slot, r, &s.resolved, s.template) {
                touched.insert(r);
                let load = inputs.predictions.get(&name).map(|p| p.load.as_str());
                let mut a = applied(r, &s.resolved, load);
                if s.capped {
                    a.node_cap = inputs.room.map(|room| r.format(room[r]));
                }
                sized.entry(name.clone()).or_default().insert(r, a);
            }
        }
    }
    for r in touched {
        let unschedulable = node_violation(&inputs, r, &before, &after);
        if unschedulable.is_some() && !node_capped.contains(&r) {
            node_capped.push(r);
        }
        if let Some(msg) =
            unschedulable.or_else(|| pod_violation(&inputs, r, &before, &after, warnings))
        {
            warnings.push(format!("{r}: {msg}; {r} left as declared"));
            undo(r, &before, &mut after, &mut sized);
        }
    }
    let changed = match out.pointer_mut(view.pod_spec) {
        Some(spec) => after.write_back(&before, spec),
        None => false,
    };
    // Sizing on a template writes its record in the template (so Pods inherit it and are
    // left alone); the recommendation goes on the object's own metadata for workloads,
    // because a template change would roll the workload out.
    if changed && !sized.is_empty() {
        let record = SizedRecord {
            containers: sized,
            ..existing
        };
        if let Ok(text) = serde_json::to_string(&record) {
            set_annotation(out, view.pod_meta, SIZED_ANNOTATION, text);
        }
    }
    if !recommended.is_empty() {
        if let Ok(text) = serde_json::to_string(&recommended) {
            // The object's own metadata (a Pod's is its pod metadata).
            set_annotation(out, "/metadata", RECOMMENDATION_ANNOTATION, text);
        }
    }
    said
}

/// A container the manifest makes Guaranteed (QoS): a memory and a CPU limit, each request
/// absent (the apiserver sets it to the limit) or equal to its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Guaranteed {
    /// Its CPU is whole cores (the static CPU manager gives such containers exclusive cores).
    whole_cpu: bool,
}

fn guaranteed(d: &PerResource<Declared>) -> Option<Guaranteed> {
    let mut whole_cpu = false;
    for r in Resource::ALL {
        let s = d[r].sizes().ok()?;
        let limit = s.limit?;
        if s.request.is_some_and(|q| q != limit) {
            return None;
        }
        if r == Resource::Cpu {
            whole_cpu = limit > 0 && limit % 1000 == 0;
        }
    }
    Some(Guaranteed { whole_cpu })
}

/// Keep a Guaranteed container Guaranteed: request and limit move together, to the larger
/// of the two (whole cores for a container with whole CPUs; a value from the analyzer no
/// higher than the policy's request max). Explicit overrides are left as written: they may
/// change the class.
fn keep_guaranteed(
    resolved: &mut Resolved,
    r: Resource,
    g: Guaranteed,
    bounds: resources::Bounds,
    notes: &mut Vec<String>,
) {
    let (Some(lim), req) = (resolved.limit, resolved.request) else {
        return;
    };
    if [resolved.request, resolved.limit]
        .iter()
        .flatten()
        .any(|s| s.source == Source::Override)
    {
        return;
    }
    // An absent request is the limit (the apiserver's defaulting) and stays absent.
    let had_request = req.is_some();
    let req = req.unwrap_or(lim);
    // The larger side; on a tie, the one of higher precedence (a commit over the template).
    let top = match req.value.cmp(&lim.value) {
        std::cmp::Ordering::Greater => req,
        std::cmp::Ordering::Less => lim,
        std::cmp::Ordering::Equal if req.source < lim.source => req,
        std::cmp::Ordering::Equal => lim,
    };
    let mut value = top.value;
    if r == Resource::Cpu && g.whole_cpu {
        value = crate::quantity::round_up(value, 1000);
    }
    let whole = value != top.value;
    // A value from the analyzer stays within the policy's request bounds on both sides.
    if matches!(
        top.source,
        Source::Enforced | Source::LoadModel | Source::Recommendation
    ) {
        if let Some((_, max)) = bounds.request {
            value = value.min(max);
        }
    }
    let both = resources::Side { value, ..top };
    if resolved.limit == Some(both) && (!had_request || resolved.request == Some(both)) {
        return;
    }
    if req.value != lim.value || value != top.value {
        notes.push(format!(
            "request and limit kept equal at {} so the container stays Guaranteed (QoS){}",
            r.format(value),
            if whole { ", in whole cores" } else { "" }
        ));
    }
    if had_request {
        resolved.request = Some(both);
    }
    resolved.limit = Some(both);
}

/// One container and resource by precedence, fitted to the LimitRange's container bounds.
/// `None` when the declared value cannot be read (left unchanged, with a warning).
#[allow(clippy::too_many_arguments)]
fn size_one(
    inputs: &Inputs,
    declared: &Declared,
    name: &str,
    r: Resource,
    qos: Option<Guaranteed>,
    heap: Option<Heap>,
    warnings: &mut Vec<String>,
) -> Option<Sized> {
    let policy = inputs.policy;
    let template = match declared.sizes() {
        Ok(s) => s,
        Err(e) => {
            warnings.push(format!("container {name}: {r}: {e}; left unchanged"));
            return None;
        }
    };
    let rec = inputs.recs.get(name);
    let rr = rec.and_then(|x| x.resource(r));
    let hpa = rec.is_some_and(|x| x.hpa_resources.contains(&r));
    let proposal = rr.and_then(|rr| resources::proposal(&policy.rules, &policy.recommender, r, rr));
    // Load-model prediction (memory only): joins the recommendation level.
    let prediction = inputs
        .predictions
        .get(name)
        .filter(|_| r == Resource::Memory);
    let predicted = prediction.map(|p| p.sizes);
    let sizing = &inputs.sizing;
    // A resource the policy does not control is sized from nothing usage-based.
    let enforce = inputs.enforce && sizing.controlled_resources.contains(&r);
    // The policy in force now bounds what came from the analyzer, whoever produced it (a
    // value cached before the policy changed, a snapshot): the committed value, and the
    // recommendation before a step walks towards it.
    let mut bound_notes = Vec::new();
    let mut enforced = rr
        .and_then(|x| x.committed.as_ref())
        .filter(|_| enforce)
        .map(|c| resources::bound(c.sizes, &policy.rules, r, "committed", &mut bound_notes))
        .unwrap_or_default();
    let may_recommend =
        enforce && enforced == Sizes::default() && policy.enforcement.apply_recommendations;
    let mut recommendation = match proposal {
        Some(p) if may_recommend => {
            let p95 = rr.and_then(|x| x.observed).map(|o| o.p95);
            let p = resources::bound(p, &policy.rules, r, "recommended", &mut bound_notes);
            policy.rules.guarded_step(r, template, p, p95)
        }
        _ => Sizes::default(),
    };
    let mut load_model = match predicted {
        Some(p) if may_recommend => load::join(p, &mut recommendation, template),
        _ => Sizes::default(),
    };
    // An HPA on this resource's utilization divides usage by the request: changing
    // the request would change the HPA's behaviour. The limit is not part of it.
    if hpa
        && (enforced.request.is_some()
            || recommendation.request.is_some()
            || load_model.request.is_some())
    {
        warnings.push(format!(
            "container {name}: an HPA scales on {r} utilization; the {r} request is left alone"
        ));
        enforced.request = None;
        recommendation.request = None;
        load_model.request = None;
    }
    let candidates = Candidates {
        overrides: overrides_for(policy, inputs.view, &inputs.annotation_overrides, name, r),
        enforced,
        load_model,
        recommendation,
        template,
        default: if template == Sizes::default() {
            defaults_for(policy, r)
        } else {
            Sizes::default()
        },
    };
    let (mut resolved, mut notes) = resources::resolve(&candidates);
    // Bounds are worth a word where the bounded value is used.
    let used = |side: Option<resources::Side>| {
        side.is_some_and(|s| matches!(s.source, Source::Enforced | Source::Recommendation))
    };
    let bound_notes = bound_notes.into_iter().filter_map(|(side, n)| {
        let resolved_side = if side == "request" {
            resolved.request
        } else {
            resolved.limit
        };
        used(resolved_side).then_some(n)
    });
    notes.splice(0..0, bound_notes);
    if let Some(p) = prediction {
        notes.extend(load::notes(p, &policy.rules, &resolved, template));
    }
    let bounds = resources::Bounds::of(&policy.rules, r);
    let ruled = control::apply_limit_rule(
        &mut resolved,
        sizing.limit_rule.of(r),
        template,
        policy.rules.round_to(r),
        bounds.limit.map(|(_, max)| max),
    );
    if ruled {
        // The limit rule decided the limit: what `resolve` did to it no longer holds.
        notes.retain(|n| !n.starts_with("limit raised to the request"));
    }
    // While an OOM floor holds, enforce mode raises memory to it whatever won above: the
    // step limit and hysteresis never hold a raise to the floor back; the policy's max does.
    let oom_floor = rr
        .and_then(|x| x.oom_floor)
        .filter(|_| enforce && r == Resource::Memory);
    if let Some(floor) = oom_floor {
        resources::raise_to_oom_floor(&mut resolved, floor, bounds, !hpa, &mut notes);
    }
    control::requests_only(
        &mut resolved,
        sizing.controlled_values,
        template,
        r,
        &mut notes,
    );
    if let Some(h) = heap.filter(|_| r == Resource::Memory) {
        control::jvm_bound(
            &mut resolved,
            h,
            sizing.jvm.non_heap.0,
            template,
            &mut notes,
        );
    }
    if let Some(g) = qos {
        keep_guaranteed(&mut resolved, r, g, bounds, &mut notes);
    }
    let capped = inputs
        .room
        .is_some_and(|room| control::cap_at_node(&mut resolved, room[r], template, r, &mut notes));
    let bounds = limits::bounds(inputs.ctx.limit_ranges, "Container", r);
    limits::fit_container(r, &bounds, &mut resolved, &mut notes);
    // A value that would make a Guaranteed container Burstable is not applied.
    let explicit = [resolved.request, resolved.limit]
        .iter()
        .flatten()
        .any(|s| s.source == Source::Override);
    let equal = match (resolved.request, resolved.limit) {
        (Some(q), Some(l)) => q.value == l.value,
        (None, Some(_)) => true,
        _ => false,
    };
    if qos.is_some() && !explicit && !equal {
        notes.push(
            "the values would make the container Burstable (QoS Guaranteed before); left as declared"
                .into(),
        );
        resolved = as_declared(template);
    }
    let capped = capped && resolved != as_declared(template);
    for n in notes {
        warnings.push(format!("container {name}: {r}: {n}"));
    }
    Some(Sized {
        resolved,
        template,
        recommended: load::larger(proposal, predicted)
            .map(|p| resources::bounded(p, &policy.rules, r)),
        capped,
    })
}

/// Whether the sized Pod breaks a Pod-level rule for `r`: the LimitRange's Pod bounds,
/// or the room left in a ResourceQuota (for templates, for all the Pods they make).
fn pod_violation(
    inputs: &Inputs,
    r: Resource,
    before: &Lists,
    after: &Lists,
    warnings: &mut Vec<String>,
) -> Option<String> {
    // Rule: nothing the webhook adds may get the object refused. The LimitRanger checks
    // container and Pod min/max/maxLimitRequestRatio after this webhook (containers are
    // fitted one by one before this); ResourceQuota admission checks the room left.
    let ranges = inputs.ctx.limit_ranges;
    let pod_bounds = limits::bounds(ranges, "Pod", r);
    if pod_bounds.max.is_some() || pod_bounds.min.is_some() || pod_bounds.ratio.is_some() {
        // Unsure is not fine: an unreadable quantity means the sums cannot be checked.
        if after.unreadable(r) {
            return Some(
                "a quantity is unreadable, so the Pod LimitRange cannot be checked".into(),
            );
        }
        // The LimitRanger's sums include the container defaults it fills in.
        let c = limits::bounds(ranges, "Container", r);
        let fill = Sizes {
            request: c.default_request,
            limit: c.default_limit,
        };
        if let Some(msg) = pod::bounds_violation(ranges, r, after.effective_filled(r, fill)) {
            return Some(msg);
        }
    }
    if let Some(msg) = qos_change_refusal(inputs, after) {
        return Some(msg);
    }
    let totals = after.effective(r);
    let verdict = pod::quota_check(
        inputs.ctx.quotas,
        r,
        before.effective(r),
        totals,
        inputs.pods,
    );
    if let Some(w) = verdict.warning {
        warnings.push(format!("{r}: {w}"));
    }
    verdict.violation
}

/// Why ending the Pod's BestEffort QoS would get it refused: a quota scoped to
/// NotBestEffort Pods that does not count it now. (PodTolerationRestriction adds its
/// memory-pressure toleration to non-BestEffort Pods before the webhooks run, and does
/// not run again, so the new QoS class does not concern it.)
fn qos_change_refusal(inputs: &Inputs, after: &Lists) -> Option<String> {
    let was = &inputs.traits;
    if was.best_effort != Some(true) {
        return None;
    }
    let now = PodTraits {
        best_effort: best_effort(after.entries().map(|(_, _, c)| c)),
        ..was.clone()
    };
    if now.best_effort == Some(true) {
        return None;
    }
    newly_counted_refusal(
        inputs.ctx.quotas,
        was,
        &now,
        &pod::usage(after),
        pod::newly_counted_pods(inputs.pods),
    )
    .map(|why| format!("the Pod would stop being BestEffort, and {why}"))
}

/// Whether the sized Pod's request of `r` rose above what any node it can land on
/// allocates (the containers were capped one by one; their sum can still be too much).
fn node_violation(inputs: &Inputs, r: Resource, before: &Lists, after: &Lists) -> Option<String> {
    let room = inputs.room?[r];
    let now = after.effective(r).request;
    (now > room && now > before.effective(r).request).then(|| {
        format!(
            "the Pod's request {} is above what any node it can run on allocates ({})",
            r.format(now),
            r.format(room)
        )
    })
}

/// Put resource `r` back as declared in every container and drop it from the record.
fn undo(r: Resource, before: &Lists, after: &mut Lists, sized: &mut ContainersRecord) {
    after.restore(before, r);
    for m in sized.values_mut() {
        m.remove(&r);
    }
    sized.retain(|_, m| !m.is_empty());
}

/// The declared values as resolved ones (nothing to write).
fn as_declared(template: Sizes) -> Resolved {
    let side = |v: Option<u64>| {
        v.map(|value| resources::Side {
            value,
            source: Source::Template,
        })
    };
    Resolved {
        request: side(template.request),
        limit: side(template.limit),
    }
}

fn applied(r: Resource, resolved: &Resolved, load: Option<&str>) -> AppliedPair {
    let a = |s: Option<resources::Side>| {
        s.map(|s| Applied {
            value: r.format(s.value),
            source: s.source,
        })
    };
    let by_model = [resolved.request, resolved.limit]
        .iter()
        .flatten()
        .any(|s| s.source == Source::LoadModel);
    AppliedPair {
        request: a(resolved.request),
        limit: a(resolved.limit),
        load: load.filter(|_| by_model).map(str::to_string),
        node_cap: None,
    }
}
