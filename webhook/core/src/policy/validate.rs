//! Turn a written policy into a checked one. Every error names the field path,
//! e.g. `rules.memory.request.min` or `gpu.tolerations[0].operator`.

use crate::policy::error::PolicyError;
use crate::policy::schema::{
    ContainerValues, KnativePolicy, Pair, PlacementRule, Policy, PolicySpec, PriorityPolicy,
};
use crate::rules::{Amount, ResourceRules, Rules};
use crate::selector::Selector;

struct Ctx<'a> {
    source: &'a str,
}

impl Ctx<'_> {
    fn err(&self, path: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            source_name: self.source.to_string(),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Deep-merge `patch` over `base` (objects merge key by key; anything else replaces).
fn merge_json(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(slot) if v.is_object() && slot.is_object() => merge_json(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn build_rules(ctx: &Ctx, patch: Option<&serde_json::Value>) -> Result<Rules, PolicyError> {
    let Some(patch) = patch else {
        return Ok(Rules::default());
    };
    if !patch.is_object() {
        return Err(ctx.err("rules", "must be a mapping"));
    }
    let mut base = serde_json::to_value(Rules::default())
        .map_err(|e| ctx.err("rules", format!("internal: {e}")))?;
    merge_json(&mut base, patch);
    let rules: Rules = serde_path_to_error::deserialize(base).map_err(|e| {
        let path = e.path().to_string();
        ctx.err(format!("rules.{path}"), e.into_inner().to_string())
    })?;
    check_resource_rules(ctx, "rules.memory", &rules.memory)?;
    check_resource_rules(ctx, "rules.cpu", &rules.cpu)?;
    let s = &rules.safeguards;
    if !(s.max_step_ratio > 0.0 && s.max_step_ratio.is_finite()) {
        return Err(ctx.err("rules.safeguards.maxStepRatio", "must be a positive number"));
    }
    if !(rules.oom.factor >= 1.0 && rules.oom.factor.is_finite()) {
        return Err(ctx.err("rules.oom.factor", "must be at least 1"));
    }
    if let Err((field, message)) = rules.knative.check() {
        return Err(ctx.err(format!("rules.knative.{field}"), message));
    }
    Ok(rules)
}

fn positive(ctx: &Ctx, path: String, v: f64) -> Result<(), PolicyError> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(ctx.err(path, format!("must be a positive number, got {v}")))
    }
}

fn check_resource_rules<Q: Amount>(
    ctx: &Ctx,
    at: &str,
    r: &ResourceRules<Q>,
) -> Result<(), PolicyError> {
    positive(ctx, format!("{at}.request.p95Factor"), r.request.p95_factor)?;
    if !(r.request.avg_factor >= 0.0 && r.request.avg_factor.is_finite()) {
        return Err(ctx.err(format!("{at}.request.avgFactor"), "must be 0 or more"));
    }
    if r.request.min.get() > r.request.max.get() {
        return Err(ctx.err(
            format!("{at}.request.min"),
            "must not be larger than request.max",
        ));
    }
    if let Some(l) = &r.limit {
        positive(ctx, format!("{at}.limit.maxFactor"), l.max_factor)?;
        if !(l.request_factor >= 1.0 && l.request_factor.is_finite()) {
            return Err(ctx.err(
                format!("{at}.limit.requestFactor"),
                "must be at least 1 (a limit below the request is invalid)",
            ));
        }
        if l.min.get() > l.max.get() {
            return Err(ctx.err(
                format!("{at}.limit.min"),
                "must not be larger than limit.max",
            ));
        }
        if l.max.get() < r.request.max.get() {
            return Err(ctx.err(
                format!("{at}.limit.max"),
                "must not be smaller than request.max",
            ));
        }
    }
    if !(r.hysteresis.ratio >= 0.0 && r.hysteresis.ratio.is_finite()) {
        return Err(ctx.err(format!("{at}.hysteresis.ratio"), "must be 0 or more"));
    }
    Ok(())
}

fn check_glob(ctx: &Ctx, path: String, g: &str) -> Result<(), PolicyError> {
    if g.is_empty() {
        return Err(ctx.err(path, "must not be empty"));
    }
    Ok(())
}

fn check_selector(ctx: &Ctx, at: &str, s: &Selector) -> Result<(), PolicyError> {
    for (i, g) in s.namespaces.iter().enumerate() {
        check_glob(ctx, format!("{at}.namespaces[{i}]"), g)?;
    }
    for (i, g) in s.names.iter().enumerate() {
        check_glob(ctx, format!("{at}.names[{i}]"), g)?;
    }
    for (i, g) in s.containers.iter().enumerate() {
        check_glob(ctx, format!("{at}.containers[{i}]"), g)?;
    }
    for (i, g) in s.exclude_containers.iter().enumerate() {
        check_glob(ctx, format!("{at}.excludeContainers[{i}]"), g)?;
    }
    Ok(())
}

fn check_pair(
    ctx: &Ctx,
    at: String,
    p: Option<(Option<u64>, Option<u64>)>,
) -> Result<(), PolicyError> {
    if let Some((Some(req), Some(lim))) = p {
        if req > lim {
            return Err(ctx.err(at, "request must not be larger than limit"));
        }
    }
    Ok(())
}

fn pair_u64<Q: Amount>(p: &Option<Pair<Q>>) -> Option<(Option<u64>, Option<u64>)> {
    p.as_ref()
        .map(|p| (p.request.map(Amount::get), p.limit.map(Amount::get)))
}

/// Check one container's explicit values (also used for the overrides annotation).
pub fn check_values(source: &str, at: &str, v: &ContainerValues) -> Result<(), PolicyError> {
    let ctx = Ctx { source };
    check_pair(&ctx, format!("{at}.memory"), pair_u64(&v.memory))?;
    check_pair(&ctx, format!("{at}.cpu"), pair_u64(&v.cpu))?;
    Ok(())
}

fn check_priority(ctx: &Ctx, p: &PriorityPolicy) -> Result<(), PolicyError> {
    for (name, c) in &p.classes {
        if let Some(pp) = &c.preemption_policy {
            if pp != "PreemptLowerPriority" && pp != "Never" {
                return Err(ctx.err(
                    format!("priority.classes.{name}.preemptionPolicy"),
                    "must be PreemptLowerPriority or Never",
                ));
            }
        }
        if c.value > 1_000_000_000 {
            return Err(ctx.err(
                format!("priority.classes.{name}.value"),
                "user classes may not exceed 1000000000",
            ));
        }
    }
    for (i, r) in p.rules.iter().enumerate() {
        if r.class_name.is_empty() {
            return Err(ctx.err(
                format!("priority.rules[{i}].className"),
                "must not be empty",
            ));
        }
        check_selector(ctx, &format!("priority.rules[{i}].selector"), &r.selector)?;
    }
    Ok(())
}

/// The policy's `knative` section, or an override's `knative` block at `at`.
fn check_knative(ctx: &Ctx, at: &str, k: &KnativePolicy) -> Result<(), PolicyError> {
    if let Some(t) = k.target {
        if !(t >= 0.01 && t.is_finite()) {
            return Err(ctx.err(format!("{at}.target"), "must be at least 0.01"));
        }
    }
    if let Some(u) = k.target_utilization_percentage {
        if !(1.0..=100.0).contains(&u) {
            return Err(ctx.err(
                format!("{at}.targetUtilizationPercentage"),
                "must be between 1 and 100",
            ));
        }
    }
    if let Some(c) = k.container_concurrency {
        if c > 1000 {
            return Err(ctx.err(
                format!("{at}.containerConcurrency"),
                "must be between 0 and 1000",
            ));
        }
    }
    for (path, v) in [("minScale", k.min_scale), ("maxScale", k.max_scale)] {
        if v.is_some_and(|v| i32::try_from(v).is_err()) {
            return Err(ctx.err(
                format!("{at}.{path}"),
                "must be at most 2147483647 (Knative reads an int32)",
            ));
        }
    }
    if let (Some(lo), Some(hi)) = (k.min_scale, k.max_scale) {
        if hi != 0 && lo > hi {
            return Err(ctx.err(format!("{at}.minScale"), "must not be larger than maxScale"));
        }
    }
    if let Some(m) = &k.metric {
        if !["concurrency", "rps", "cpu", "memory"].contains(&m.as_str()) {
            return Err(ctx.err(
                format!("{at}.metric"),
                "must be one of concurrency, rps, cpu, memory",
            ));
        }
    }
    Ok(())
}

fn check_gpu(ctx: &Ctx, g: &crate::policy::schema::GpuPolicy) -> Result<(), PolicyError> {
    if g.resources.is_empty() {
        return Err(ctx.err("gpu.resources", "must name at least one resource"));
    }
    check_node_terms(
        ctx,
        "gpu",
        &g.required_node_affinity,
        &g.preferred_node_affinity,
        &g.tolerations,
    )
}

fn check_placement(ctx: &Ctx, rules: &[PlacementRule]) -> Result<(), PolicyError> {
    for (i, r) in rules.iter().enumerate() {
        let at = format!("placement[{i}]");
        check_selector(ctx, &format!("{at}.selector"), &r.selector)?;
        if r.required_node_affinity.is_empty()
            && r.preferred_node_affinity.is_empty()
            && r.tolerations.is_empty()
        {
            return Err(ctx.err(
                at,
                "must add requiredNodeAffinity, preferredNodeAffinity or tolerations",
            ));
        }
        check_node_terms(
            ctx,
            &at,
            &r.required_node_affinity,
            &r.preferred_node_affinity,
            &r.tolerations,
        )?;
    }
    Ok(())
}

/// Node affinity terms and tolerations, by the apiserver's own rules (`sizing::gpu`, which
/// also leaves out, at admission, any term that would fail them).
fn check_node_terms(
    ctx: &Ctx,
    at: &str,
    required: &[k8s_openapi::api::core::v1::NodeSelectorRequirement],
    preferred: &[k8s_openapi::api::core::v1::PreferredSchedulingTerm],
    tolerations: &[k8s_openapi::api::core::v1::Toleration],
) -> Result<(), PolicyError> {
    use crate::policy::apiserver::{requirement_error, term_error, toleration_error};
    let field_err = |at: String, e: String| {
        let (field, message) = e.split_once(": ").unwrap_or(("", &e));
        let path = if field.is_empty() {
            at
        } else {
            format!("{at}.{field}")
        };
        ctx.err(path, message.to_string())
    };
    for (i, r) in required.iter().enumerate() {
        if let Some(e) = requirement_error(r) {
            return Err(field_err(format!("{at}.requiredNodeAffinity[{i}]"), e));
        }
    }
    for (i, t) in preferred.iter().enumerate() {
        if !(1..=100).contains(&t.weight) {
            return Err(ctx.err(
                format!("{at}.preferredNodeAffinity[{i}].weight"),
                "must be between 1 and 100",
            ));
        }
        if let Some(e) = term_error(&t.preference) {
            return Err(field_err(
                format!("{at}.preferredNodeAffinity[{i}].preference"),
                e,
            ));
        }
    }
    for (i, t) in tolerations.iter().enumerate() {
        if let Some(e) = toleration_error(t) {
            return Err(field_err(format!("{at}.tolerations[{i}]"), e));
        }
    }
    Ok(())
}

/// Check a written policy and produce the policy admission uses. Every section is
/// checked, so all its errors are reported at once (the first of each item).
pub fn validate(source: &str, default_name: &str, spec: PolicySpec) -> Result<Policy, PolicyError> {
    let ctx = Ctx { source };
    let mut errors = Vec::new();
    let mut keep = |r: Result<(), PolicyError>| {
        if let Err(e) = r {
            errors.push(e);
        }
    };
    let name = spec
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default_name.to_string());
    keep(check_selector(&ctx, "selector", &spec.selector));
    if let Some(crate::policy::schema::Inherit::Only(list)) = &spec.inherit {
        for (i, s) in list.iter().enumerate() {
            if !crate::policy::schema::is_section(s) {
                keep(Err(ctx.err(
                    format!("inherit[{i}]"),
                    format!(
                        "unknown section {s:?}; sections: {}",
                        crate::policy::schema::SECTIONS.join(", ")
                    ),
                )));
            }
        }
    }
    let recommender = spec
        .recommender
        .clone()
        .unwrap_or_else(|| crate::strategy::DEFAULT.into());
    if crate::strategy::by_name(&recommender).is_none() {
        keep(Err(ctx.err(
            "recommender",
            format!(
                "unknown recommender {recommender:?}; known: {}",
                crate::strategy::names().collect::<Vec<_>>().join(", ")
            ),
        )));
    }
    let rules = build_rules(&ctx, spec.rules.as_ref());
    if let Some(d) = &spec.defaults {
        keep(check_values(source, "defaults", d));
    }
    for (i, o) in spec.overrides.iter().flatten().enumerate() {
        if o.workload.name.is_empty() {
            keep(Err(ctx.err(
                format!("overrides[{i}].workload.name"),
                "must not be empty",
            )));
        }
        for (c, v) in &o.containers {
            keep(check_values(
                source,
                &format!("overrides[{i}].containers.{c}"),
                v,
            ));
        }
        if let Some(k) = &o.knative {
            keep(check_knative(&ctx, &format!("overrides[{i}].knative"), k));
        }
    }
    if let Some(g) = &spec.gpu {
        keep(check_gpu(&ctx, g));
    }
    keep(check_placement(
        &ctx,
        spec.placement.as_deref().unwrap_or_default(),
    ));
    if let Some(p) = &spec.priority {
        keep(check_priority(&ctx, p));
    }
    if let Some(k) = &spec.knative {
        keep(check_knative(&ctx, "knative", k));
    }
    let load_models = spec.load_models.clone().unwrap_or_default();
    for (i, m) in load_models.iter().enumerate() {
        keep(check_selector(
            &ctx,
            &format!("loadModels[{i}].selector"),
            &m.selector,
        ));
    }
    keep(
        crate::loadmodel::validate::check("loadModels", &load_models)
            .map_err(|(path, message)| ctx.err(path, message)),
    );
    if let Some(s) = &spec.sizing {
        keep(
            s.check()
                .map_err(|(path, message)| ctx.err(format!("sizing.{path}"), message)),
        );
    }
    if let Some(u) = &spec.update {
        keep(
            u.check()
                .map_err(|(path, message)| ctx.err(format!("update.{path}"), message)),
        );
    }
    let rules = match rules {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    if let Some(e) = PolicyError::all(source, errors) {
        return Err(e);
    }
    let decided_by = spec
        .written()
        .into_iter()
        .map(|section| (section, name.clone()))
        .collect();
    Ok(Policy {
        name,
        source: source.to_string(),
        precedence: spec.precedence,
        selector: spec.selector.clone(),
        mode: spec.mode.unwrap_or_default(),
        target: spec.target.unwrap_or_default(),
        recommender,
        rules: rules.unwrap_or_default(),
        enforcement: spec.enforcement.unwrap_or_default(),
        defaults: spec.defaults,
        overrides: spec.overrides.clone().unwrap_or_default(),
        gpu: spec.gpu.clone(),
        placement: spec.placement.clone().unwrap_or_default(),
        priority: spec.priority.clone(),
        knative: spec.knative.clone(),
        load_models,
        sizing: spec.sizing.clone(),
        update: spec.update.clone().unwrap_or_default(),
        spec,
        decided_by,
    })
}
