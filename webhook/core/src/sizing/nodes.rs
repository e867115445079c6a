//! The node cap: the largest allocatable memory and CPU of the nodes a Pod could land
//! on. A request above it leaves the Pod Pending for good, so no raise goes above it.
//! Which nodes: schedulable ones that match the pod spec's `nodeSelector` and required
//! node affinity and whose NoSchedule/NoExecute taints it tolerates; when none does
//! (selectors the webhook reads differently, nodes still to come), every schedulable node.

use serde_json::Value;

use crate::cluster::NodeInfo;
use crate::quantity::PerResource;

/// The largest allocatable per resource of the nodes `pod_spec` could land on; `None`
/// without nodes (nothing known: nothing capped).
pub fn room(nodes: &[NodeInfo], pod_spec: &Value) -> Option<PerResource<u64>> {
    let open: Vec<&NodeInfo> = nodes.iter().filter(|n| !n.unschedulable).collect();
    let fits: Vec<&NodeInfo> = open
        .iter()
        .copied()
        .filter(|n| selected(n, pod_spec) && tolerated(n, pod_spec))
        .collect();
    let pool = if fits.is_empty() { open } else { fits };
    if pool.is_empty() {
        return None;
    }
    Some(PerResource::from_fn(|r| {
        pool.iter().map(|n| n.allocatable[r]).max().unwrap_or(0)
    }))
}

fn str_list(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// `nodeSelector` and required node affinity (terms ORed, requirements ANDed).
fn selected(n: &NodeInfo, spec: &Value) -> bool {
    let by_selector = spec
        .get("nodeSelector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| n.labels.get(k).map(String::as_str) == v.as_str());
    let terms = spec.pointer(
        "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
    );
    let by_affinity = match terms.and_then(Value::as_array) {
        None => true,
        Some(terms) => terms.iter().any(|t| term_matches(n, t)),
    };
    by_selector && by_affinity
}

fn term_matches(n: &NodeInfo, term: &Value) -> bool {
    let exprs = term.get("matchExpressions").and_then(Value::as_array);
    let fields = term.get("matchFields").and_then(Value::as_array);
    let all = exprs.into_iter().flatten().map(|e| (e, false));
    let all = all.chain(fields.into_iter().flatten().map(|e| (e, true)));
    let mut any = false;
    for (e, field) in all {
        any = true;
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let value = if field {
            (key == "metadata.name").then_some(n.name.as_str())
        } else {
            n.labels.get(key).map(String::as_str)
        };
        let values = str_list(e.get("values"));
        let num = |s: &str| s.parse::<i64>().ok();
        let ok = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => value.is_some_and(|v| values.contains(&v)),
            "NotIn" => value.is_none_or(|v| !values.contains(&v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" => {
                matches!((value.and_then(num), values.first().and_then(|s| num(s))), (Some(a), Some(b)) if a > b)
            }
            "Lt" => {
                matches!((value.and_then(num), values.first().and_then(|s| num(s))), (Some(a), Some(b)) if a < b)
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    // An empty term selects no node.
    any
}

/// Every NoSchedule/NoExecute taint of the node has a toleration.
fn tolerated(n: &NodeInfo, spec: &Value) -> bool {
    let tolerations: Vec<&Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    n.taints
        .iter()
        .filter(|(_, _, effect)| effect == "NoSchedule" || effect == "NoExecute")
        .all(|(key, value, effect)| {
            tolerations.iter().any(|t| {
                let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("");
                let effect_ok = s("effect").is_empty() || s("effect") == effect;
                let key_ok = s("key").is_empty() || s("key") == key;
                let value_ok = match s("operator") {
                    "Exists" => true,
                    "" | "Equal" => !s("key").is_empty() && s("value") == value,
                    _ => false,
                };
                effect_ok && key_ok && value_ok
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::{GI, MI};
    use rstest::rstest;
    use serde_json::json;

    fn node(name: &str, mem_gi: u64, cpu: u64, labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            allocatable: PerResource {
                memory: mem_gi * GI,
                cpu: cpu * 1000,
            },
            ..Default::default()
        }
    }

    fn cluster() -> Vec<NodeInfo> {
        let mut gpu = node("gpu", 64, 32, &[("pool", "gpu")]);
        gpu.taints = vec![("nvidia.com/gpu".into(), "".into(), "NoSchedule".into())];
        let mut cordoned = node("cordoned", 128, 64, &[("pool", "general")]);
        cordoned.unschedulable = true;
        vec![
            node("small", 4, 2, &[("pool", "general"), ("zone", "a")]),
            node("big", 16, 8, &[("pool", "general"), ("zone", "b")]),
            gpu,
            cordoned,
        ]
    }

    /// (pod spec) -> largest allocatable memory (GiB) and CPU (cores).
    #[rstest]
    // No selectors: the tainted GPU node is out (not tolerated), the cordoned one too.
    #[case::any(json!({}), (16, 8))]
    #[case::node_selector(json!({"nodeSelector": {"zone": "a"}}), (4, 2))]
    #[case::affinity_in(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}), (4, 2))]
    #[case::affinity_terms_ored(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["big"]}]}]}}}}), (16, 8))]
    #[case::affinity_not_in(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["b"]}]}]}}}}), (4, 2))]
    // Tolerating the GPU taint opens the GPU node.
    #[case::tolerated(json!({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}), (64, 32))]
    #[case::tolerate_all(json!({"tolerations": [{"operator": "Exists"}]}), (64, 32))]
    #[case::equal_value_mismatch(json!({"tolerations": [{"key": "nvidia.com/gpu", "value": "x", "effect": "NoSchedule"}]}), (16, 8))]
    // Nothing matches: every schedulable node (tainted ones included).
    #[case::nothing_matches(json!({"nodeSelector": {"zone": "mars"}}), (64, 32))]
    fn room_table(#[case] spec: Value, #[case] want: (u64, u64)) {
        let got = room(&cluster(), &spec).unwrap();
        assert_eq!((got.memory / GI, got.cpu / 1000), want);
    }

    #[test]
    fn no_nodes_caps_nothing() {
        assert_eq!(room(&[], &json!({})), None);
        let mut only = node("x", 1, 1, &[]);
        only.unschedulable = true;
        assert_eq!(room(&[only], &json!({})), None);
    }

    #[test]
    fn node_from_object() {
        let n = NodeInfo::from_object(&json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}], "unschedulable": true},
            "status": {"allocatable": {"memory": "3800Mi", "cpu": "1930m", "pods": "110"}}
        }))
        .unwrap();
        assert_eq!(n.allocatable.memory, 3800 * MI);
        assert_eq!(n.allocatable.cpu, 1930);
        assert_eq!(n.taints, vec![("k".into(), "".into(), "NoSchedule".into())]);
        assert!(n.unschedulable);
    }
}
