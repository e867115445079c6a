//! Checks every mutated object must pass: it still decodes as its strict Kubernetes
//! type, and the apiserver's resource rules hold (request ≤ limit, valid quantities,
//! LimitRange bounds).

#![allow(dead_code)]

use k8s_openapi::api::core::v1::LimitRangeSpec;
use rightsizer_core::object::View;
use rightsizer_core::quantity::Resource;
use rightsizer_core::sizing::written::Written;
use rightsizer_core::workload::kind::kind_of_manifest;
use rightsizer_core::workload::kind::WorkloadKind;
use serde_json::Value;

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> Result<(), String> {
    let typed: T =
        serde_json::from_value(obj.clone()).map_err(|e| format!("does not decode: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    if strip_nulls(&back) != strip_nulls(obj) {
        return Err(format!(
            "does not round-trip through its typed form (unknown or misplaced field)\n got: {}\nwant: {}",
            serde_json::to_string(&strip_nulls(obj)).unwrap(),
            serde_json::to_string(&strip_nulls(&back)).unwrap()
        ));
    }
    Ok(())
}

/// Every change is inside a field some writer of the merge declares
/// (`sizing::written::WRITERS`): a writer that wrote anything else would replace the
/// user's value there whole.
pub fn declared_writes(before: &Value, after: &Value) -> Result<(), String> {
    if before == after {
        return Ok(());
    }
    let kind = kind_of_manifest(before).ok_or("an object of no handled kind changed")?;
    let view = View::new(kind, "default", before).map_err(|e| e.to_string())?;
    match Written::of(before, &view).undeclared_change(before, after) {
        Some(at) => Err(format!("{at} changed, and no writer declares it")),
        None => Ok(()),
    }
}

/// The object decodes as its strict k8s-openapi type and round-trips unchanged.
pub fn strict_type(obj: &Value) -> Result<(), String> {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
    let Some(kind) = kind_of_manifest(obj) else {
        return Ok(());
    };
    match kind {
        WorkloadKind::Pod => roundtrip::<core::Pod>(obj),
        WorkloadKind::Deployment => roundtrip::<apps::Deployment>(obj),
        WorkloadKind::StatefulSet => roundtrip::<apps::StatefulSet>(obj),
        WorkloadKind::DaemonSet => roundtrip::<apps::DaemonSet>(obj),
        WorkloadKind::ReplicaSet => roundtrip::<apps::ReplicaSet>(obj),
        WorkloadKind::Job => roundtrip::<batch::Job>(obj),
        WorkloadKind::CronJob => roundtrip::<batch::CronJob>(obj),
        WorkloadKind::KnativeService | WorkloadKind::KnativeConfiguration => {
            // No upstream Rust type: check the revision template's pod-spec parts.
            let spec = obj
                .pointer("/spec/template/spec")
                .ok_or("no spec.template.spec")?;
            for c in spec
                .get("containers")
                .and_then(Value::as_array)
                .ok_or("no containers")?
            {
                if let Some(r) = c.get("resources") {
                    roundtrip::<core::ResourceRequirements>(r)?;
                }
            }
            if let Some(a) = spec.get("affinity") {
                return Err(format!("Knative templates refuse affinity: {a}"));
            }
            if let Some(cc) = spec.get("containerConcurrency") {
                let n = cc.as_u64().ok_or("containerConcurrency is not a number")?;
                if n > 1000 {
                    return Err("containerConcurrency above 1000".into());
                }
            }
            Ok(())
        }
        // Never mutated (`kind_of_manifest` gives only table kinds anyway).
        WorkloadKind::Scaled(_) => Ok(()),
    }
}

/// Request ≤ limit, quantities valid, LimitRange bounds kept, for every container.
pub fn resource_rules(obj: &Value, limit_ranges: &[LimitRangeSpec]) -> Result<(), String> {
    let Some(kind) = kind_of_manifest(obj) else {
        return Ok(());
    };
    let (spec_ptr, _) = kind.pod_paths();
    let Some(containers) = obj
        .pointer(&format!("{spec_ptr}/containers"))
        .and_then(Value::as_array)
    else {
        return Ok(());
    };
    for c in containers {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("user-container");
        for r in Resource::ALL {
            let get = |side: &str| -> Result<Option<u64>, String> {
                match c.pointer(&format!("/resources/{side}/{}", r.as_str())) {
                    None => Ok(None),
                    Some(Value::String(s)) => {
                        r.parse(s).map(Some).map_err(|e| format!("{name}: {e}"))
                    }
                    Some(other) => Err(format!("{name}: {r} {side} is not a string: {other}")),
                }
            };
            let (req, lim) = (get("requests")?, get("limits")?);
            if let (Some(q), Some(l)) = (req, lim) {
                if q > l {
                    return Err(format!("{name}: {r} request {q} > limit {l}"));
                }
            }
            for item in limit_ranges
                .iter()
                .flat_map(|s| s.limits.iter())
                .filter(|i| i.type_ == "Container")
            {
                let b = |m: &Option<
                    std::collections::BTreeMap<
                        String,
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                    >,
                >| {
                    m.as_ref()
                        .and_then(|m| m.get(r.as_str()))
                        .and_then(|q| r.parse(&q.0).ok())
                };
                let lim_eff = lim.or(b(&item.default)).or(b(&item.max));
                let req_eff = req.or(b(&item.default_request)).or(lim_eff);
                if let (Some(max), Some(l)) = (b(&item.max), lim_eff) {
                    if l > max {
                        return Err(format!("{name}: {r} limit {l} above LimitRange max {max}"));
                    }
                }
                if let (Some(min), Some(q)) = (b(&item.min), req_eff) {
                    if q < min {
                        return Err(format!(
                            "{name}: {r} request {q} below LimitRange min {min}"
                        ));
                    }
                }
                if let (Some(ratio), Some(q), Some(l)) = (
                    item.max_limit_request_ratio
                        .as_ref()
                        .and_then(|m| m.get(r.as_str()))
                        .and_then(|q| rightsizer_core::quantity::parse_millicores(&q.0).ok()),
                    req_eff,
                    lim_eff,
                ) {
                    if (l as u128) * 1000 > (q as u128) * ratio as u128 {
                        return Err(format!(
                            "{name}: {r} limit/request {l}/{q} above ratio {}",
                            ratio as f64 / 1000.0
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Every value a patch writes for memory/CPU is a canonical quantity.
pub fn canonical_patch(patch: &json_patch::Patch) -> Result<(), String> {
    let v = serde_json::to_value(patch).map_err(|e| e.to_string())?;
    for op in v.as_array().into_iter().flatten() {
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        check_canonical(path, op.get("value").unwrap_or(&Value::Null))?;
    }
    Ok(())
}

fn check_canonical(path: &str, v: &Value) -> Result<(), String> {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                check_canonical(&format!("{path}/{k}"), x)?;
            }
            Ok(())
        }
        Value::String(s) if path.contains("/resources/") => {
            let r = if path.ends_with("/memory") {
                Resource::Memory
            } else if path.ends_with("/cpu") {
                Resource::Cpu
            } else {
                return Ok(());
            };
            let n = r.parse(s).map_err(|e| format!("{path}: {e}"))?;
            if r.format(n) != *s {
                return Err(format!("{path}: {s:?} is not canonical ({})", r.format(n)));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

type Quantities =
    std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;

fn quantity(m: Option<&Quantities>, r: Resource) -> Option<u64> {
    m?.get(r.as_str()).and_then(|q| r.parse(&q.0).ok())
}

/// A container's (request, limit) of one resource as the apiserver ends up with them:
/// a missing request defaults to the declared limit (Pod defaulting), then the first
/// LimitRange's defaultRequest/default fill what is still missing (LimitRanger), with
/// the LimitRange's own defaulting (default from max; request from default, then min).
fn effective(
    c: &Value,
    r: Resource,
    ranges: &[LimitRangeSpec],
) -> Result<(Option<u64>, Option<u64>), String> {
    let get = |side: &str| -> Result<Option<u64>, String> {
        match c
            .get("resources")
            .and_then(|v| v.get(side))
            .and_then(|v| v.get(r.as_str()))
        {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => r.parse(s).map(Some).map_err(|e| e.to_string()),
            Some(other) => Err(format!("{r} {side} is not a string: {other}")),
        }
    };
    let (dl, dr) = ranges
        .iter()
        .flat_map(|s| s.limits.iter())
        .find(|i| i.type_ == "Container")
        .map_or((None, None), |i| {
            let dl = quantity(i.default.as_ref(), r).or(quantity(i.max.as_ref(), r));
            let dr = quantity(i.default_request.as_ref(), r)
                .or(dl)
                .or(quantity(i.min.as_ref(), r));
            (dl, dr)
        });
    let (req, lim) = (get("requests")?, get("limits")?);
    Ok((req.or(lim).or(dr), lim.or(dl)))
}

/// Why the apiserver (Pod validation and the LimitRanger) would refuse the Pods of this
/// object's pod spec, if it would: request <= limit, and every LimitRange item's
/// min/max/maxLimitRequestRatio for Containers and for the Pod's sums.
pub fn limit_range_refusal(obj: &Value, ranges: &[LimitRangeSpec]) -> Option<String> {
    let kind = kind_of_manifest(obj)?;
    let (spec_ptr, _) = kind.pod_paths();
    let containers = obj.pointer(&format!("{spec_ptr}/containers"))?.as_array()?;
    let bound = |m: &Option<Quantities>, r: Resource| quantity(m.as_ref(), r);
    let ratio = |i: &k8s_openapi::api::core::v1::LimitRangeItem, r: Resource| -> Option<u64> {
        let q = i.max_limit_request_ratio.as_ref()?.get(r.as_str())?;
        rightsizer_core::quantity::parse_millicores(&q.0).ok()
    };
    let check = |what: &str,
                 item: &k8s_openapi::api::core::v1::LimitRangeItem,
                 r: Resource,
                 req: Option<u64>,
                 lim: Option<u64>|
     -> Option<String> {
        if let Some(min) = bound(&item.min, r) {
            match req {
                Some(q) if q >= min => {}
                _ => return Some(format!("{what}: {r} request {req:?} below min {min}")),
            }
        }
        if let Some(max) = bound(&item.max, r) {
            match lim {
                Some(l) if l <= max => {}
                _ => return Some(format!("{what}: {r} limit {lim:?} above max {max}")),
            }
        }
        if let Some(ratio) = ratio(item, r) {
            match (req, lim) {
                (Some(q), Some(l))
                    if q > 0 && (l as u128) * 1000 <= (q as u128) * ratio as u128 => {}
                _ => {
                    return Some(format!(
                        "{what}: {r} limit/request {lim:?}/{req:?} above ratio {ratio}m"
                    ))
                }
            }
        }
        None
    };
    let items: Vec<_> = ranges.iter().flat_map(|s| s.limits.iter()).collect();
    for r in Resource::ALL {
        // The LimitRanger sums what the containers have; none at all is "not specified".
        let (mut sum_req, mut sum_lim) = (None::<u64>, None::<u64>);
        for c in containers {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("user-container");
            let Ok((req, lim)) = effective(c, r, ranges) else {
                return Some(format!("{name}: {r} unreadable"));
            };
            if let (Some(q), Some(l)) = (req, lim) {
                if q > l {
                    return Some(format!("{name}: {r} request {q} > limit {l}"));
                }
            }
            for item in items.iter().filter(|i| i.type_ == "Container") {
                if let Some(e) = check(name, item, r, req, lim) {
                    return Some(e);
                }
            }
            let add = |sum: Option<u64>, v: Option<u64>| match (sum, v) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                (a, b) => a.or(b),
            };
            sum_req = add(sum_req, req);
            sum_lim = add(sum_lim, lim);
        }
        for item in items.iter().filter(|i| i.type_ == "Pod") {
            if let Some(e) = check("Pod", item, r, sum_req, sum_lim) {
                return Some(e);
            }
        }
    }
    None
}

/// A Pod's QoS class, as the kubelet derives it from the containers' CPU and memory
/// (init containers included): `BestEffort` with no request or limit anywhere,
/// `Guaranteed` when every container has both limits and each request is absent (the
/// apiserver sets it to the limit) or equal to its limit, `Burstable` otherwise. `None`
/// when a quantity cannot be read, or the object has no pod spec.
pub fn qos_class(obj: &Value) -> Option<&'static str> {
    let kind = kind_of_manifest(obj)?;
    let (spec_ptr, _) = kind.pod_paths();
    let spec = obj.pointer(spec_ptr)?;
    let containers = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten();
    let (mut any, mut guaranteed) = (false, true);
    for c in containers {
        for r in Resource::ALL {
            let get = |side: &str| -> Result<Option<u64>, ()> {
                match c.pointer(&format!("/resources/{side}/{}", r.as_str())) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => r.parse(s).map(Some).map_err(|_| ()),
                    Some(_) => Err(()),
                }
            };
            let (req, lim) = (get("requests").ok()?, get("limits").ok()?);
            any |= req.is_some_and(|v| v > 0) || lim.is_some_and(|v| v > 0);
            match lim {
                Some(l) if req.is_none_or(|q| q == l) => {}
                _ => guaranteed = false,
            }
        }
    }
    Some(match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    })
}

/// The QoS class is kept: a Guaranteed Pod stays Guaranteed and a Pod with a request or a
/// limit never becomes BestEffort, unless explicit overrides (`explicit`) say otherwise.
pub fn qos_kept(before: &Value, after: &Value, explicit: bool) -> Result<(), String> {
    let (Some(b), Some(a)) = (qos_class(before), qos_class(after)) else {
        return Ok(());
    };
    let lost = (b == "Guaranteed" && a != "Guaranteed") || (b != "BestEffort" && a == "BestEffort");
    if lost && !explicit {
        return Err(format!("QoS class changed from {b} to {a}"));
    }
    Ok(())
}
