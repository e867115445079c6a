//! GPU placement: node affinity and tolerations merged into what the pod spec has (also
//! used by placement rules). User terms are never replaced; nothing is added twice.
//!
//! Rule: nothing the webhook adds may get the object refused. The apiserver validates
//! node-selector requirements and tolerations; the checks below are its rules, applied
//! when a policy is loaded (so the user hears of it) and again before anything is added.

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, PreferredSchedulingTerm, Toleration};
use serde_json::{json, Map, Value};

use crate::policy::schema::GpuPolicy;
use crate::sizing::field::Field;

use crate::policy::apiserver::{requirement_error, term_error, toleration_error};

/// Whether any container (init containers too: they run on the same node) asks for one of
/// the GPU resources (limits or requests > 0).
pub fn wants_gpu(pod_spec: &Value, gpu: &GpuPolicy) -> bool {
    let list = |key: &str| pod_spec.get(key).and_then(Value::as_array);
    let containers = list("containers").into_iter().chain(list("initContainers"));
    containers.flatten().any(|c| {
        ["limits", "requests"].iter().any(|side| {
            gpu.resources.iter().any(|r| {
                c.get("resources")
                    .and_then(|v| v.get(side))
                    .and_then(|m| m.get(r))
                    .and_then(quantity_positive)
                    .unwrap_or(false)
            })
        })
    })
}

fn quantity_positive(v: &Value) -> Option<bool> {
    match v {
        Value::String(s) => crate::quantity::parse_millicores(s).ok().map(|m| m > 0),
        Value::Number(n) => n.as_f64().map(|f| f > 0.0),
        _ => None,
    }
}

fn object<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let slot = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut()
}

fn array<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Vec<Value>> {
    let slot = m.entry(key.to_string()).or_insert_with(|| json!([]));
    if slot.is_null() {
        *slot = json!([]);
    }
    slot.as_array_mut()
}

/// Tolerations compare with the apiserver's default operator filled in.
fn normalized_toleration(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(m) = t.as_object_mut() {
        m.entry("operator").or_insert_with(|| json!("Equal"));
        m.retain(|_, v| !v.is_null() && v.as_str() != Some(""));
    }
    t
}

/// What [`merge`] and [`merge_terms`] write (see [`crate::sizing::written`]).
pub const WRITES: &[Field] = &[Field::Spec("affinity"), Field::Spec("tolerations")];

/// Merge the policy's GPU placement into the pod spec. Returns notes for what was added.
pub fn merge(pod_spec: &mut Value, gpu: &GpuPolicy) -> Vec<String> {
    merge_terms(
        pod_spec,
        &gpu.required_node_affinity,
        &gpu.preferred_node_affinity,
        &gpu.tolerations,
    )
}

/// Merge node affinity terms and tolerations (the GPU section's or a placement rule's)
/// into the pod spec. Returns notes for what was added.
pub fn merge_terms(
    pod_spec: &mut Value,
    required: &[NodeSelectorRequirement],
    preferred: &[PreferredSchedulingTerm],
    tolerations: &[Toleration],
) -> Vec<String> {
    let mut notes = Vec::new();
    // Loaded policies passed these checks; anything else is left out, never added.
    let required: Vec<Value> = required
        .iter()
        .filter(|r| requirement_error(r).is_none())
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect();
    let preferred: Vec<Value> = preferred
        .iter()
        .filter(|p| (1..=100).contains(&p.weight) && term_error(&p.preference).is_none())
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    if !required.is_empty() || !preferred.is_empty() {
        let Some(node_affinity) = object(pod_spec, "affinity").and_then(|a| {
            let slot = a.entry("nodeAffinity").or_insert_with(|| json!({}));
            if slot.is_null() {
                *slot = json!({});
            }
            slot.as_object_mut()
        }) else {
            return notes;
        };
        if !required.is_empty() {
            // Terms are ORed, expressions inside a term ANDed: the requirement must be
            // added to every term, or the user's other terms would bypass it.
            let req = node_affinity
                .entry("requiredDuringSchedulingIgnoredDuringExecution")
                .or_insert_with(|| json!({"nodeSelectorTerms": []}));
            if let Some(terms) = req
                .as_object_mut()
                .and_then(|m| array(m, "nodeSelectorTerms"))
            {
                if terms.is_empty() {
                    terms.push(json!({"matchExpressions": []}));
                }
                let mut added = false;
                for term in terms.iter_mut() {
                    if let Some(exprs) = term
                        .as_object_mut()
                        .and_then(|m| array(m, "matchExpressions"))
                    {
                        for r in &required {
                            if !exprs.contains(r) {
                                exprs.push(r.clone());
                                added = true;
                            }
                        }
                    }
                }
                if added {
                    notes.push("node affinity added".into());
                }
            }
        }
        if !preferred.is_empty() {
            if let Some(list) = array(
                node_affinity,
                "preferredDuringSchedulingIgnoredDuringExecution",
            ) {
                let before = list.len();
                for p in &preferred {
                    if !list.contains(p) {
                        list.push(p.clone());
                    }
                }
                if list.len() > before {
                    notes.push("preferred node affinity added".into());
                }
            }
        }
    }
    if !tolerations.is_empty() {
        if let Some(list) = pod_spec
            .as_object_mut()
            .and_then(|m| array(m, "tolerations"))
        {
            let have: Vec<Value> = list.iter().map(normalized_toleration).collect();
            let before = list.len();
            for t in tolerations.iter().filter(|t| toleration_error(t).is_none()) {
                let Ok(v) = serde_json::to_value(t) else {
                    continue;
                };
                if !have.contains(&normalized_toleration(&v)) {
                    list.push(v);
                }
            }
            if list.len() > before {
                notes.push("tolerations added".into());
            }
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> GpuPolicy {
        serde_json::from_value(json!({
            "resources": ["nvidia.com/gpu"],
            "requiredNodeAffinity": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}],
            "preferredNodeAffinity": [{"weight": 50, "preference": {"matchExpressions": [{"key": "gpu-type", "operator": "In", "values": ["a100"]}]}}],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        }))
        .unwrap()
    }

    #[test]
    fn detects_gpu_in_limits() {
        let spec = json!({"containers": [{"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]});
        assert!(wants_gpu(&spec, &policy()));
        let spec = json!({"containers": [{"name": "a", "resources": {"limits": {"nvidia.com/gpu": "0"}}}]});
        assert!(!wants_gpu(&spec, &policy()));
        let spec = json!({"containers": [{"name": "a"}]});
        assert!(!wants_gpu(&spec, &policy()));
        let spec = json!({"containers": [{"name": "a"}], "initContainers": [{"name": "warm", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]});
        assert!(wants_gpu(&spec, &policy()), "an init container on a GPU");
    }

    #[test]
    fn merges_into_every_user_term_without_duplicates() {
        let mut spec = json!({
            "containers": [],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}
            ]}}},
            "tolerations": [{"key": "nvidia.com/gpu", "effect": "NoSchedule", "operator": "Exists"}]
        });
        let notes = merge(&mut spec, &policy());
        let terms = spec.pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms").unwrap().as_array().unwrap();
        assert_eq!(terms.len(), 2, "user terms kept");
        for t in terms {
            let exprs = t["matchExpressions"].as_array().unwrap();
            assert_eq!(exprs.len(), 2);
            assert_eq!(exprs[1]["key"], "nvidia.com/gpu.present");
        }
        assert_eq!(
            spec["tolerations"].as_array().unwrap().len(),
            1,
            "no duplicate toleration"
        );
        assert_eq!(notes.len(), 2);
        let again = spec.clone();
        assert!(merge(&mut spec, &policy()).is_empty());
        assert_eq!(spec, again, "second merge changes nothing");
    }

    #[test]
    fn apiserver_rules_for_added_terms() {
        let req = |v: Value| serde_json::from_value::<NodeSelectorRequirement>(v).unwrap();
        let tol = |v: Value| serde_json::from_value::<Toleration>(v).unwrap();
        for (r, ok) in [
            (
                json!({"key": "gpu", "operator": "In", "values": ["a"]}),
                true,
            ),
            (
                json!({"key": "gpu", "operator": "Gt", "values": ["3"]}),
                true,
            ),
            (
                json!({"key": "gpu", "operator": "Gt", "values": ["x"]}),
                false,
            ),
            (json!({"key": "gpu", "operator": "In", "values": []}), false),
            (
                json!({"key": "Bad_Prefix.io/x", "operator": "Exists"}),
                false,
            ),
            (
                json!({"key": "gpu", "operator": "In", "values": ["not valid!"]}),
                false,
            ),
        ] {
            assert_eq!(requirement_error(&req(r.clone())).is_none(), ok, "{r}");
        }
        for (t, ok) in [
            (
                json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
                true,
            ),
            (json!({"operator": "Exists"}), true),
            (json!({"operator": "Equal", "value": "x"}), false),
            (
                json!({"key": "a", "operator": "Exists", "value": "x"}),
                false,
            ),
            (
                json!({"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}),
                false,
            ),
            (json!({"key": "a", "effect": "Sometimes"}), false),
        ] {
            assert_eq!(toleration_error(&tol(t.clone())).is_none(), ok, "{t}");
        }
    }

    #[test]
    fn creates_affinity_when_absent() {
        let mut spec = json!({"containers": []});
        merge(&mut spec, &policy());
        assert_eq!(
            spec.pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0/key"),
            Some(&json!("nvidia.com/gpu.present"))
        );
        assert_eq!(
            spec.pointer(
                "/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution/0/weight"
            ),
            Some(&json!(50))
        );
        assert_eq!(spec["tolerations"][0]["operator"], "Exists");
    }
}
