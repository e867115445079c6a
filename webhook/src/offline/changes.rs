//! The rows of `mutate -o table` besides resources: Knative settings on a revision
//! template, and a Pod's priority class, node affinity and tolerations. Each row is a
//! change (a value the same before and after is not shown).

use serde_json::Value;

use crate::offline::preview::PreviewRow;

/// The prefix of Knative's autoscaling annotations.
const AUTOSCALING: &str = "autoscaling.knative.dev/";

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn row(resource: &str, before: Option<String>, after: Option<String>, source: &str) -> PreviewRow {
    PreviewRow {
        container: "-".into(),
        resource: resource.into(),
        before,
        after,
        source: Some(source.into()),
    }
}

/// Knative settings of a Service's or Configuration's revision template (`before` and
/// `after` are the whole objects): autoscaling annotations and `containerConcurrency`.
pub fn knative_rows(before: &Value, after: &Value) -> Vec<PreviewRow> {
    let annotations = |o: &Value| -> std::collections::BTreeMap<String, String> {
        o.pointer("/spec/template/metadata/annotations")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(AUTOSCALING))
            .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
            .collect()
    };
    let (b, a) = (annotations(before), annotations(after));
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        if b.get(key) != a.get(key) {
            out.push(row(
                key,
                b.get(key).cloned(),
                a.get(key).cloned(),
                "knative",
            ));
        }
    }
    let cc = |o: &Value| {
        o.pointer("/spec/template/spec/containerConcurrency")
            .and_then(text)
    };
    if cc(before) != cc(after) {
        out.push(row(
            "containerConcurrency",
            cc(before),
            cc(after),
            "knative",
        ));
    }
    out
}

fn requirement(r: &Value) -> String {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
    let values: Vec<&str> = r
        .get("values")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!("{} {} {}", s("key"), s("operator"), values.join(","))
        .trim_end()
        .to_string()
}

fn term(t: &Value) -> String {
    t.get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(requirement)
        .collect::<Vec<_>>()
        .join(" & ")
}

fn list(items: Vec<String>) -> Option<String> {
    (!items.is_empty()).then(|| items.join(" | "))
}

/// A Pod's placement and priority (`before` and `after` are pod specs).
pub fn pod_rows(before: &Value, after: &Value) -> Vec<PreviewRow> {
    let node = "/affinity/nodeAffinity";
    let required = |s: &Value| {
        list(
            s.pointer(&format!(
                "{node}/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms"
            ))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(term)
            .collect(),
        )
    };
    let preferred = |s: &Value| {
        list(
            s.pointer(&format!(
                "{node}/preferredDuringSchedulingIgnoredDuringExecution"
            ))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                let w = p.get("weight").and_then(text).unwrap_or_default();
                format!("{w}: {}", term(p.get("preference").unwrap_or(&Value::Null)))
            })
            .collect(),
        )
    };
    let tolerations = |s: &Value| {
        list(
            s.get("tolerations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|t| {
                    let f = |k: &str| t.get(k).and_then(text).unwrap_or_default();
                    let value = f("value");
                    let op = f("operator");
                    let effect = f("effect");
                    [f("key"), op, value, effect]
                        .into_iter()
                        .filter(|x| !x.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect(),
        )
    };
    let class = |s: &Value| s.get("priorityClassName").and_then(text);
    let mut out = Vec::new();
    type Read<'a> = &'a dyn Fn(&Value) -> Option<String>;
    let fields: [(&str, Read, &str); 4] = [
        ("priorityClassName", &class, "priority"),
        ("required node affinity", &required, "placement"),
        ("preferred node affinity", &preferred, "placement"),
        ("tolerations", &tolerations, "placement"),
    ];
    for (name, read, source) in fields {
        let (b, a) = (read(before), read(after));
        if b != a {
            out.push(row(name, b, a, source));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shown(rows: Vec<PreviewRow>) -> Vec<String> {
        rows.into_iter()
            .map(|r| {
                format!(
                    "{}: {} -> {} ({})",
                    r.resource,
                    r.before.unwrap_or_else(|| "-".into()),
                    r.after.unwrap_or_else(|| "-".into()),
                    r.source.unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn knative_rows_show_each_changed_setting() {
        let before = json!({"spec": {"template": {"metadata": {"annotations": {"autoscaling.knative.dev/target": "10"}},
            "spec": {"containers": []}}}});
        let after = json!({"spec": {"template": {"metadata": {"annotations": {
            "autoscaling.knative.dev/target": "10", "autoscaling.knative.dev/min-scale": "1"}},
            "spec": {"containerConcurrency": 100, "containers": []}}}});
        assert_eq!(
            shown(knative_rows(&before, &after)),
            [
                "autoscaling.knative.dev/min-scale: - -> 1 (knative)",
                "containerConcurrency: - -> 100 (knative)",
            ]
        );
    }

    #[test]
    fn pod_rows_show_priority_affinity_and_tolerations() {
        let before = json!({"containers": [], "tolerations": [{"key": "a", "operator": "Exists"}]});
        let after = json!({"containers": [], "priorityClassName": "gpu-workload",
            "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["true"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "preference": {"matchExpressions": [{"key": "t", "operator": "In", "values": ["x", "y"]}]}}]}}});
        assert_eq!(
            shown(pod_rows(&before, &after)),
            [
                "priorityClassName: - -> gpu-workload (priority)",
                "required node affinity: - -> gpu In true (placement)",
                "preferred node affinity: - -> 50: t In x,y (placement)",
                "tolerations: a Exists -> a Exists | nvidia.com/gpu Exists NoSchedule (placement)",
            ]
        );
    }
}
