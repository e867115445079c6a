//! Reading policies out of ConfigMap manifests (files or, later, the API).

use std::path::Path;

use serde::Deserialize;

use rightsizer_core::policy::error::PolicyError;
use rightsizer_core::policy::schema::{Policy, PolicySpec};
use rightsizer_core::policy::validate::validate;

/// The label that marks a policy ConfigMap.
pub const POLICY_LABEL: &str = "rightsizer.io/policy";
/// The data key holding the policy document.
pub const POLICY_KEY: &str = "policy.yaml";

/// Parse one policy document (the `policy.yaml` text).
pub fn parse_policy(source: &str, default_name: &str, text: &str) -> Result<Policy, PolicyError> {
    let de = serde_norway::Deserializer::from_str(text);
    let spec: PolicySpec = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            PolicyError::Syntax {
                source_name: source.to_string(),
                message: format!("{POLICY_KEY}: {inner}"),
            }
        } else {
            // The YAML parser's message may start with the path, or with that of an
            // enclosing mapping (`defaults.memory: invalid quantity`): the error names the
            // full path once.
            let message = without_path_prefix(&path, &inner.to_string());
            PolicyError::Invalid {
                source_name: source.to_string(),
                path,
                message,
            }
        }
    })?;
    validate(source, default_name, spec)
}

/// `message` without a leading `P: ` where `P` is `path` or a path enclosing it.
fn without_path_prefix(path: &str, message: &str) -> String {
    if let Some((head, rest)) = message.split_once(": ") {
        let encloses = path == head
            || path
                .strip_prefix(head)
                .is_some_and(|r| r.starts_with('.') || r.starts_with('['));
        if encloses {
            return rest.to_string();
        }
    }
    message.to_string()
}

/// A ConfigMap as far as policies care.
#[derive(Debug, Deserialize)]
struct ConfigMapDoc {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    data: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// Whether a ConfigMap's labels mark it as a policy.
pub fn is_policy_configmap(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels.get(POLICY_LABEL).map(String::as_str) == Some("true")
}

/// Policies in one manifest text (multi-document YAML or JSON). Documents that are not
/// policy ConfigMaps are ignored; each policy ConfigMap must be valid (every refused one
/// is reported).
pub fn parse_manifests(source: &str, text: &str) -> Result<Vec<Policy>, PolicyError> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_norway::Value::deserialize(doc).map_err(|e| PolicyError::Syntax {
            source_name: source.to_string(),
            message: format!("document {}: {e}", i + 1),
        })?;
        if value.is_null() {
            continue;
        }
        let Ok(cm) = serde_norway::from_value::<ConfigMapDoc>(value) else {
            continue;
        };
        if cm.kind.as_deref() != Some("ConfigMap") || !is_policy_configmap(&cm.metadata.labels) {
            continue;
        }
        let name = cm.metadata.name.clone().unwrap_or_default();
        let where_ = match &cm.metadata.namespace {
            Some(ns) => format!("{source} (ConfigMap {ns}/{name})"),
            None => format!("{source} (ConfigMap {name})"),
        };
        let Some(text) = cm.data.get(POLICY_KEY) else {
            errors.push(PolicyError::Invalid {
                source_name: where_,
                path: format!("data.{POLICY_KEY}"),
                message: "missing".into(),
            });
            continue;
        };
        match parse_policy(&where_, &name, text) {
            Ok(p) => out.push(p),
            Err(e) => errors.push(e),
        }
    }
    match PolicyError::all(source, errors) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Read every `*.yaml`, `*.yml` and `*.json` file of a folder, in name order.
pub fn read_dir_sources(dir: &Path) -> Result<Vec<(String, String)>, PolicyError> {
    let io = |e| PolicyError::Io {
        source_name: dir.display().to_string(),
        error: e,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for p in files {
        let text = std::fs::read_to_string(&p).map_err(|e| PolicyError::Io {
            source_name: p.display().to_string(),
            error: e,
        })?;
        out.push((p.display().to_string(), text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::top_level("mode: sideways\n", "mode", "p.yaml: mode: unknown variant `sideways`")]
    #[case::nested(
        "rules:\n  memory:\n    request: {floor: lots}\n",
        "rules.memory.request.floor",
        "p.yaml: rules.memory.request.floor: "
    )]
    #[case::enclosing_path_in_the_message(
        "defaults: {memory: {request: lots}}\n",
        "defaults.memory.request",
        "p.yaml: defaults.memory.request: invalid quantity"
    )]
    #[case::in_a_list(
        "overrides:\n  - workload: {kind: Widget, name: a}\n",
        "overrides[0].workload.kind",
        "p.yaml: overrides[0].workload.kind: unknown variant `Widget`"
    )]
    fn a_refused_field_is_named_once(#[case] text: &str, #[case] path: &str, #[case] starts: &str) {
        let e = parse_policy("p.yaml", "p", text).unwrap_err();
        assert_eq!(e.path(), Some(path));
        let shown = e.to_string();
        assert!(shown.starts_with(starts), "{shown}");
        assert_eq!(shown.matches(&format!("{path}:")).count(), 1, "{shown}");
    }

    /// Every refused field of every policy ConfigMap in a file, each path once.
    #[test]
    fn all_errors_at_once() {
        let cm = |name: &str, body: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{rightsizer.io/policy: \"true\"}}}}\ndata:\n  policy.yaml: |\n{body}")
        };
        let text = [
            cm(
                "a",
                "    recommender: nope\n    gpu: {resources: []}\n    knative: {target: 0}\n",
            ),
            cm("b", "    defaults: {memory: {request: lots}}\n"),
        ]
        .join("---\n");
        let e = parse_manifests("f.yaml", &text).unwrap_err();
        assert_eq!(
            e.paths(),
            [
                "(ConfigMap a) recommender",
                "(ConfigMap a) gpu.resources",
                "(ConfigMap a) knative.target",
                "(ConfigMap b) defaults.memory.request",
            ]
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with("f.yaml: (ConfigMap a) recommender: unknown recommender"),
            "{shown}"
        );
        assert_eq!(shown.matches("f.yaml").count(), 1, "{shown}");
        assert_eq!(shown.matches("defaults.memory").count(), 1, "{shown}");
    }
}
