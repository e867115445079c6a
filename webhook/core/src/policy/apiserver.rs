//! What the apiserver accepts in node-selector terms and tolerations. Policies are
//! checked against it when loaded (so the user hears of it) and the GPU placement
//! again before it adds anything (`sizing::gpu`): nothing added may get the object
//! refused.

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Toleration};

/// A label value: empty, or at most 63 alphanumerics with `-_.` inside.
pub fn label_value_error(v: &str) -> Option<String> {
    let inner_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ends_ok = v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if v.is_empty() || (v.len() <= 63 && ends_ok && v.chars().all(inner_ok)) {
        None
    } else {
        Some(format!("{v:?} is not a valid label value"))
    }
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain, the name a label value.
pub fn label_key_error(k: &str) -> Option<String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let subdomain_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    };
    if name.is_empty() || label_value_error(name).is_some() || !prefix.is_none_or(subdomain_ok) {
        Some(format!("{k:?} is not a valid label key"))
    } else {
        None
    }
}

/// The apiserver's rules for a node-selector requirement (and the scheduler's for Gt/Lt).
pub fn requirement_error(r: &NodeSelectorRequirement) -> Option<String> {
    if let Some(e) = label_key_error(&r.key) {
        return Some(format!("key: {e}"));
    }
    let values = r.values.as_deref().unwrap_or_default();
    let count_ok = match r.operator.as_str() {
        "In" | "NotIn" => !values.is_empty(),
        "Exists" | "DoesNotExist" => values.is_empty(),
        "Gt" | "Lt" => values.len() == 1 && values[0].parse::<i64>().is_ok(),
        other => {
            return Some(format!(
                "operator: must be In, NotIn, Exists, DoesNotExist, Gt or Lt, got {other:?}"
            ))
        }
    };
    if !count_ok {
        return Some(format!(
            "values: wrong number or form of values for operator {}",
            r.operator
        ));
    }
    values
        .iter()
        .find_map(|v| label_value_error(v).map(|e| format!("values: {e}")))
}

/// A node-selector term: valid expressions; fields only `metadata.name` In/NotIn one value.
pub fn term_error(t: &NodeSelectorTerm) -> Option<String> {
    for (i, r) in t.match_expressions.iter().flatten().enumerate() {
        if let Some(e) = requirement_error(r) {
            return Some(format!("matchExpressions[{i}].{e}"));
        }
    }
    for (i, f) in t.match_fields.iter().flatten().enumerate() {
        let ok = f.key == "metadata.name"
            && matches!(f.operator.as_str(), "In" | "NotIn")
            && f.values.as_ref().is_some_and(|v| v.len() == 1);
        if !ok {
            return Some(format!(
                "matchFields[{i}]: only metadata.name with In or NotIn and one value"
            ));
        }
    }
    None
}

/// The apiserver's rules for a toleration.
pub fn toleration_error(t: &Toleration) -> Option<String> {
    let key = t.key.as_deref().unwrap_or_default();
    let value = t.value.as_deref().unwrap_or_default();
    let effect = t.effect.as_deref().unwrap_or_default();
    if !key.is_empty() {
        if let Some(e) = label_key_error(key) {
            return Some(format!("key: {e}"));
        }
    }
    match t.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            if key.is_empty() {
                return Some("operator: must be Exists when the key is empty".into());
            }
            if let Some(e) = label_value_error(value) {
                return Some(format!("value: {e}"));
            }
        }
        "Exists" => {
            if !value.is_empty() {
                return Some("value: must be empty when operator is Exists".into());
            }
        }
        other => return Some(format!("operator: must be Equal or Exists, got {other:?}")),
    }
    if !["", "NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Some("effect: must be NoSchedule, PreferNoSchedule or NoExecute".into());
    }
    if t.toleration_seconds.is_some() && effect != "NoExecute" {
        return Some("tolerationSeconds: only with effect NoExecute".into());
    }
    None
}
