//! The merge: a pure function from (object, policy, recommendations, cluster facts) to
//! the object as it should be. The caller diffs the two into a JSONPatch. One module per
//! kind of change: resources, LimitRange fitting, GPU placement, priority, Knative.

pub mod gpu;
pub mod knative;
pub mod limits;
pub mod priority;
pub mod record;
pub mod resources;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LimitRangeSpec;
use serde_json::{json, Map, Value};

use crate::object::{
    is_knative, View, MODE_ANNOTATION, OVERRIDES_ANNOTATION, RECOMMENDATION_ANNOTATION,
    SIZED_ANNOTATION,
};
use crate::policy::schema::{ContainerValues, Mode, Policy, Target};
use crate::policy::select::Subject;
use crate::quantity::Resource;
use crate::recommendation::{ContainerRecommendation, WorkloadKind};
use crate::rules::Sizes;
use record::{Applied, AppliedPair, RecommendationRecord, RecommendedPair, SizedRecord};
use resources::{Candidates, Resolved};

/// Facts about the cluster and namespace the merge needs.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub limit_ranges: &'a [LimitRangeSpec],
    /// ResourceQuota room in the namespace (Pods only: quota counts Pods).
    pub quotas: &'a [crate::cluster::QuotaRoom],
    /// PriorityClasses known to exist, and how that is known.
    pub priority_classes: &'a crate::cluster::PriorityClasses,
    /// `RIGHTSIZER_ENFORCEMENT=true`: enforce mode may apply values.
    pub enforcement: bool,
}

/// The outcome of the merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The object as it should be (equal to the input when nothing changes).
    pub object: Value,
    /// Things the user should know (sent as admission warnings).
    pub warnings: Vec<String>,
    /// The effective mode.
    pub mode: Mode,
}

/// Effective mode: the policy's, narrowed by the workload annotation, and capped at
/// observe unless enforcement is switched on globally.
fn effective_mode(policy: &Policy, view: &View, ctx: &Context, warnings: &mut Vec<String>) -> Mode {
    let mut mode = policy.mode;
    if let Some(a) = view.annotation(MODE_ANNOTATION) {
        match Mode::parse(a) {
            Some(m) => mode = mode.min(m),
            None => warnings.push(format!(
                "{MODE_ANNOTATION}: {a:?} is not off, observe or enforce; ignored"
            )),
        }
    }
    if mode == Mode::Enforce && !ctx.enforcement {
        mode = Mode::Observe;
    }
    mode
}

fn container_name(c: &Value, knative: bool) -> Option<String> {
    match c.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => Some(n.to_string()),
        // Knative names an unnamed serving container `user-container`.
        _ if knative => Some("user-container".into()),
        _ => None,
    }
}

fn read_side(c: &Value, side: &str, r: Resource) -> Result<Option<u64>, String> {
    // Plain lookups: a JSON pointer here (format, then unescape every token) was the
    // largest cost of a review in the profile.
    match c
        .get("resources")
        .and_then(|v| v.get(side))
        .and_then(|v| v.get(r.as_str()))
    {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => r.parse(s).map(Some).map_err(|e| e.to_string()),
        Some(Value::Number(n)) => r.parse(&n.to_string()).map(Some).map_err(|e| e.to_string()),
        Some(other) => Err(format!("invalid quantity {other}")),
    }
}

fn read_sizes(c: &Value, r: Resource) -> Result<Sizes, String> {
    Ok(Sizes {
        request: read_side(c, "requests", r)?,
        limit: read_side(c, "limits", r)?,
    })
}

fn ensure_object<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut()
}

fn write_side(c: &mut Value, side: &str, r: Resource, v: u64) {
    if let Some(m) = c.as_object_mut() {
        if let Some(res) = ensure_object(m, "resources") {
            if let Some(s) = ensure_object(res, side) {
                s.insert(r.as_str().to_string(), json!(r.format(v)));
            }
        }
    }
}

fn set_annotation(obj: &mut Value, meta_ptr: &str, key: &str, value: String) {
    let Some(meta) = obj.pointer_mut(meta_ptr) else {
        // Templates may lack metadata; create it under the parent.
        let (parent, last) = meta_ptr.rsplit_once('/').unwrap_or(("", meta_ptr));
        if let Some(p) = obj.pointer_mut(parent).and_then(Value::as_object_mut) {
            p.insert(last.to_string(), json!({"annotations": {key: value}}));
        }
        return;
    };
    if !meta.is_object() {
        *meta = json!({});
    }
    if let Some(m) = meta.as_object_mut() {
        if let Some(a) = ensure_object(m, "annotations") {
            a.insert(key.to_string(), json!(value));
        }
    }
}

/// Explicit values for a container: the policy's per-workload overrides first, then the
/// `rightsizer.io/overrides` annotation for anything they leave open.
fn overrides_for(
    policy: &Policy,
    view: &View,
    annotation: &BTreeMap<String, ContainerValues>,
    container: &str,
    r: Resource,
) -> Sizes {
    let id = &view.identity;
    let mut out = Sizes::default();
    let mut fill = |v: &ContainerValues| {
        let (req, lim) = match r {
            Resource::Memory => v.memory.map_or((None, None), |p| {
                (p.request.map(|q| q.0), p.limit.map(|q| q.0))
            }),
            Resource::Cpu => v.cpu.map_or((None, None), |p| {
                (p.request.map(|q| q.0), p.limit.map(|q| q.0))
            }),
        };
        out.request = out.request.or(req);
        out.limit = out.limit.or(lim);
    };
    for o in &policy.overrides {
        let w = &o.workload;
        if w.name == id.name
            && w.namespace.as_ref().is_none_or(|n| *n == id.namespace)
            && w.kind.is_none_or(|k| k == id.kind)
        {
            if let Some(v) = o.containers.get(container) {
                fill(v);
            }
            if let Some(v) = o.containers.get("*") {
                fill(v);
            }
        }
    }
    if let Some(v) = annotation.get(container) {
        fill(v);
    }
    out
}

fn defaults_for(policy: &Policy, r: Resource) -> Sizes {
    let Some(d) = &policy.defaults else {
        return Sizes::default();
    };
    match r {
        Resource::Memory => d.memory.map_or_else(Sizes::default, |p| Sizes {
            request: p.request.map(|q| q.0),
            limit: p.limit.map(|q| q.0),
        }),
        Resource::Cpu => d.cpu.map_or_else(Sizes::default, |p| Sizes {
            request: p.request.map(|q| q.0),
            limit: p.limit.map(|q| q.0),
        }),
    }
}

fn parse_overrides_annotation(
    view: &View,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, ContainerValues> {
    let Some(text) = view.annotation(OVERRIDES_ANNOTATION) else {
        return BTreeMap::new();
    };
    let parsed: Result<BTreeMap<String, ContainerValues>, String> =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text))
            .map_err(|e| format!("{}: {}", e.path(), e.inner()));
    match parsed {
        Ok(map) => {
            for (c, v) in &map {
                if let Err(e) = crate::policy::validate::check_values(OVERRIDES_ANNOTATION, c, v) {
                    warnings.push(format!("{e}; annotation ignored"));
                    return BTreeMap::new();
                }
            }
            map
        }
        Err(e) => {
            warnings.push(format!("{OVERRIDES_ANNOTATION}: {e}; annotation ignored"));
            BTreeMap::new()
        }
    }
}

/// Where each kind of change goes for this object.
struct Placement {
    resources: bool,
    placement: bool,
    knative: bool,
}

fn placement(view: &View, policy: &Policy) -> Placement {
    let knative_identity = is_knative(view.identity.kind);
    if view.kind == WorkloadKind::Pod {
        let pods = policy.target == Target::Pods || !view.controlled;
        Placement {
            resources: pods,
            // Knative's webhook refuses affinity and priority in templates by default.
            placement: pods || knative_identity,
            knative: false,
        }
    } else {
        let templates = policy.target == Target::Templates;
        Placement {
            resources: templates,
            placement: templates && !is_knative(view.kind),
            knative: is_knative(view.kind),
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
) -> Decision {
    let mut warnings = Vec::new();
    let mode = effective_mode(policy, view, ctx, &mut warnings);
    let mut out = obj.clone();
    if mode == Mode::Off {
        return Decision {
            object: out,
            warnings,
            mode,
        };
    }
    let place = placement(view, policy);
    if place.resources {
        size_resources(&mut out, view, policy, recs, ctx, mode, &mut warnings);
    }
    if place.placement {
        apply_placement(&mut out, view, policy, ctx, &mut warnings);
    }
    if place.knative {
        if let Some(k) = &policy.knative {
            let rec = recs
                .values()
                .find_map(|r| r.knative.as_ref())
                .filter(|_| mode == Mode::Enforce);
            warnings.extend(knative::apply(&mut out, k, rec));
        }
    }
    Decision {
        object: out,
        warnings,
        mode,
    }
}

#[allow(clippy::too_many_arguments)]
fn size_resources(
    out: &mut Value,
    view: &View,
    policy: &Policy,
    recs: &BTreeMap<String, ContainerRecommendation>,
    ctx: &Context,
    mode: Mode,
    warnings: &mut Vec<String>,
) {
    let knative = is_knative(view.identity.kind);
    let containers_ptr = format!("{}/containers", view.pod_spec);
    let Some(containers) = out
        .pointer(&containers_ptr)
        .and_then(Value::as_array)
        .cloned()
    else {
        return;
    };
    // Already sized (by an earlier pass, or through the template): leave it.
    if let Some(text) = view.pod_annotations.get(SIZED_ANNOTATION) {
        if let Ok(record) = serde_json::from_str::<SizedRecord>(text) {
            let current = |name: &str, r: Resource| {
                containers
                    .iter()
                    .find(|c| container_name(c, knative).as_deref() == Some(name))
                    .and_then(|c| read_sizes(c, r).ok())
                    .map(|s| (s.request, s.limit))
            };
            if record::still_applied(&record, current) {
                return;
            }
        }
    }
    let annotation_overrides = parse_overrides_annotation(view, warnings);
    let predictions =
        crate::loadmodel::admit::predictions(policy, view, ctx.namespace_labels, recs, warnings);
    let mut sized = SizedRecord::new();
    let mut recommended = RecommendationRecord::new();
    let mut new_containers = containers.clone();
    let mut changed_any = false;
    let mut touched: BTreeMap<Resource, bool> = BTreeMap::new();
    for (i, c) in containers.iter().enumerate() {
        let Some(name) = container_name(c, knative) else {
            continue;
        };
        if !policy.selector.sizes_container(&name) {
            continue;
        }
        let rec = recs.get(&name);
        for r in Resource::ALL {
            let template = match read_sizes(c, r) {
                Ok(s) => s,
                Err(e) => {
                    warnings.push(format!("container {name}: {r}: {e}; left unchanged"));
                    continue;
                }
            };
            let rr = rec.and_then(|x| x.resource(r));
            let hpa = rec.is_some_and(|x| x.hpa_resources.contains(&r));
            let proposal = rr.and_then(|rr| resources::proposal(&policy.rules, r, rr));
            // Load-model prediction (memory only): joins the recommendation level.
            let predicted = predictions
                .get(&name)
                .filter(|_| r == Resource::Memory)
                .map(|p| p.sizes);
            if let Some(p) = crate::loadmodel::admit::larger(proposal, predicted) {
                recommended.entry(name.clone()).or_default().insert(
                    r,
                    RecommendedPair {
                        request: p.request.map(|v| r.format(v)),
                        limit: p.limit.map(|v| r.format(v)),
                    },
                );
            }
            let enforce = mode == Mode::Enforce;
            let mut enforced = rr
                .and_then(|x| x.committed.as_ref())
                .filter(|_| enforce)
                .map(|c| c.sizes)
                .unwrap_or_default();
            let mut recommendation = match proposal {
                Some(p)
                    if enforce
                        && enforced == Sizes::default()
                        && policy.enforcement.apply_recommendations =>
                {
                    let p95 = rr.and_then(|x| x.observed).map(|o| o.p95);
                    resources::guarded(&policy.rules, r, p, template, p95)
                }
                _ => Sizes::default(),
            };
            let mut load_model = match predicted {
                Some(p)
                    if enforce
                        && enforced == Sizes::default()
                        && policy.enforcement.apply_recommendations =>
                {
                    crate::loadmodel::admit::join(p, &mut recommendation, template)
                }
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
            let declared_nothing = template == Sizes::default();
            let candidates = Candidates {
                overrides: overrides_for(policy, view, &annotation_overrides, &name, r),
                enforced,
                load_model,
                recommendation,
                template,
                default: if declared_nothing {
                    defaults_for(policy, r)
                } else {
                    Sizes::default()
                },
            };
            let (mut resolved, mut notes) = resources::resolve(&candidates);
            let bounds = limits::bounds(ctx.limit_ranges, "Container", r);
            limits::fit_container(r, &bounds, &mut resolved, &mut notes);
            for n in notes {
                warnings.push(format!("container {name}: {r}: {n}"));
            }
            let wrote = write_resolved(&mut new_containers[i], r, &resolved, template);
            if wrote {
                changed_any = true;
                touched.insert(r, true);
                sized
                    .entry(name.clone())
                    .or_default()
                    .insert(r, applied(r, &resolved));
            }
        }
    }
    // Rule: nothing the webhook adds may get the object refused. The LimitRanger checks
    // container and Pod min/max/maxLimitRequestRatio after this webhook (fitted above per
    // container); the ResourceQuota admission checks room left. Pod-level LimitRange: sums
    // over containers. Where our changes break it, undo them.
    for (r, _) in touched {
        if let Some(msg) = pod_bounds_violation(ctx.limit_ranges, r, &new_containers, knative) {
            warnings.push(format!("{r}: {msg}; {r} left as declared"));
            for (i, c) in containers.iter().enumerate() {
                restore_resource(&mut new_containers[i], c, r);
            }
            for m in sized.values_mut() {
                m.remove(&r);
            }
            sized.retain(|_, m| !m.is_empty());
        }
    }
    // ResourceQuota: the apiserver refuses a Pod whose requests or limits exceed what a
    // quota has left. Never let sizing be the reason: undo raises that do not fit.
    if view.kind == WorkloadKind::Pod {
        for r in Resource::ALL {
            if let Some(msg) = quota_violation(ctx.quotas, r, &containers, &new_containers, knative)
            {
                warnings.push(format!("{r}: {msg}; {r} left as declared"));
                for (i, c) in containers.iter().enumerate() {
                    restore_resource(&mut new_containers[i], c, r);
                }
                for m in sized.values_mut() {
                    m.remove(&r);
                }
                sized.retain(|_, m| !m.is_empty());
            }
        }
    }
    changed_any = changed_any && new_containers != containers;
    if changed_any {
        if let Some(slot) = out.pointer_mut(&containers_ptr) {
            *slot = Value::Array(new_containers);
        }
    }
    // Sizing on a template writes its record in the template (so Pods inherit it and are
    // left alone); the recommendation goes on the object's own metadata for workloads,
    // because a template change would roll the workload out.
    if changed_any && !sized.is_empty() {
        if let Ok(text) = serde_json::to_string(&sized) {
            set_annotation(out, view.pod_meta, SIZED_ANNOTATION, text);
        }
    }
    if !recommended.is_empty() {
        if let Ok(text) = serde_json::to_string(&recommended) {
            let meta = if view.kind == WorkloadKind::Pod {
                view.pod_meta
            } else {
                "/metadata"
            };
            set_annotation(out, meta, RECOMMENDATION_ANNOTATION, text);
        }
    }
}

fn applied(r: Resource, resolved: &Resolved) -> AppliedPair {
    let a = |s: Option<resources::Side>| {
        s.map(|s| Applied {
            value: r.format(s.value),
            source: s.source,
        })
    };
    AppliedPair {
        request: a(resolved.request),
        limit: a(resolved.limit),
    }
}

/// Write the sides that differ from the template. Returns whether anything was written.
fn write_resolved(c: &mut Value, r: Resource, resolved: &Resolved, template: Sizes) -> bool {
    let mut wrote = false;
    if let Some(s) = resolved.request {
        if Some(s.value) != template.request {
            write_side(c, "requests", r, s.value);
            wrote = true;
        }
    }
    if let Some(s) = resolved.limit {
        if Some(s.value) != template.limit {
            write_side(c, "limits", r, s.value);
            wrote = true;
        }
    }
    wrote
}

fn restore_resource(new: &mut Value, old: &Value, r: Resource) {
    for side in ["requests", "limits"] {
        let ptr = format!("/resources/{side}");
        let old_v = old.pointer(&ptr).and_then(|m| m.get(r.as_str())).cloned();
        if let Some(m) = new.pointer_mut(&ptr).and_then(Value::as_object_mut) {
            match old_v {
                Some(v) => {
                    m.insert(r.as_str().into(), v);
                }
                None => {
                    m.remove(r.as_str());
                }
            }
        }
    }
}

fn pod_bounds_violation(
    ranges: &[LimitRangeSpec],
    r: Resource,
    containers: &[Value],
    knative: bool,
) -> Option<String> {
    let b = limits::bounds(ranges, "Pod", r);
    if b.max.is_none() && b.min.is_none() && b.ratio.is_none() {
        return None;
    }
    let defaults = limits::bounds(ranges, "Container", r);
    let mut req = 0u64;
    let mut lim = 0u64;
    for c in containers {
        if container_name(c, knative).is_none() {
            continue;
        }
        // Unsure is not fine: an unreadable quantity means the sums cannot be checked.
        let Ok(s) = read_sizes(c, r) else {
            return Some(
                "a quantity is unreadable, so the Pod LimitRange cannot be checked".into(),
            );
        };
        // The sums the LimitRanger checks include the container defaults it fills in.
        let q = s.request.or(s.limit).or(defaults.default_request);
        req = req.saturating_add(q.unwrap_or(0));
        lim = lim.saturating_add(s.limit.or(defaults.default_limit).unwrap_or(0));
    }
    if let Some(max) = b.max {
        if lim > max || req > max {
            return Some(format!(
                "the Pod total would exceed the LimitRange Pod max {}",
                r.format(max)
            ));
        }
    }
    if let Some(min) = b.min {
        if req < min {
            return Some(format!(
                "the Pod total would be below the LimitRange Pod min {}",
                r.format(min)
            ));
        }
    }
    if let Some(ratio) = b.ratio {
        if lim > 0 && limits::above_ratio(lim, req, ratio) {
            return Some(format!(
                "the Pod total would exceed the LimitRange Pod maxLimitRequestRatio {ratio}"
            ));
        }
    }
    None
}

/// Whether the sized containers need more of a quota than it has left.
fn quota_violation(
    quotas: &[crate::cluster::QuotaRoom],
    r: Resource,
    before: &[Value],
    after: &[Value],
    knative: bool,
) -> Option<String> {
    // Sides are read one by one: an unreadable request must not hide a readable limit.
    let total = |cs: &[Value]| -> (u64, u64) {
        cs.iter()
            .filter(|c| container_name(c, knative).is_some())
            .fold((0u64, 0u64), |(q, l), c| {
                let req = read_side(c, "requests", r).ok().flatten();
                let lim = read_side(c, "limits", r).ok().flatten();
                (
                    q.saturating_add(req.or(lim).unwrap_or(0)),
                    l.saturating_add(lim.unwrap_or(0)),
                )
            })
    };
    let (req_after, lim_after) = total(after);
    if (req_after, lim_after) == total(before) {
        return None;
    }
    for q in quotas {
        for (side, need) in [("requests", req_after), ("limits", lim_after)] {
            let key = format!("{side}.{}", r.as_str());
            if let Some(room) = q.room.get(&key) {
                if need > *room {
                    return Some(format!(
                        "the Pod would need {} of {key} but ResourceQuota {} has {} left",
                        r.format(need),
                        q.name,
                        r.format(*room)
                    ));
                }
            }
        }
    }
    None
}

fn total_cpu_request(pod_spec: &Value) -> u64 {
    pod_spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| read_sizes(c, Resource::Cpu).ok())
        .map(|s| s.request.or(s.limit).unwrap_or(0))
        // Saturating: huge CPU quantities overflowed (fuzz seed 1592615230).
        .fold(0u64, u64::saturating_add)
}

fn apply_placement(
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
    let cpu = total_cpu_request(spec);
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
