//! Explicit values: the policy's per-workload overrides, the `rightsizer.io/overrides`
//! annotation, and the policy defaults for containers that declare nothing.

use std::collections::BTreeMap;

use crate::object::{View, OVERRIDES_ANNOTATION};
use crate::policy::schema::{ContainerValues, KnativePolicy, Policy};
use crate::quantity::Resource;
use crate::rules::Sizes;

/// Explicit values for a container: the policy's per-workload overrides first, then the
/// `rightsizer.io/overrides` annotation for anything they leave open.
pub fn overrides_for(
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
        if o.workload.names(id) {
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

/// The Knative settings of the policy's per-workload overrides that name this workload
/// (earlier entries first), if any names it with a `knative` block.
pub fn knative_override_for(policy: &Policy, view: &View) -> Option<KnativePolicy> {
    let id = &view.identity;
    policy
        .overrides
        .iter()
        .filter(|o| o.workload.names(id))
        .filter_map(|o| o.knative.as_ref())
        .fold(None, |acc: Option<KnativePolicy>, k| {
            Some(match acc {
                Some(a) => a.or(k),
                None => k.clone(),
            })
        })
}

pub fn defaults_for(policy: &Policy, r: Resource) -> Sizes {
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

pub fn parse_overrides_annotation(
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
