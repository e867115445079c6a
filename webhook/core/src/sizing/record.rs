//! The two annotations rightsizer writes: `rightsizer.io/sized` (what was applied,
//! from where) and `rightsizer.io/recommendation` (what the analyzer proposes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::quantity::Resource;
use crate::sizing::field::Field;
use crate::sizing::resources::Source;

/// One applied value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub value: String,
    pub source: Source,
}

/// Applied values of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppliedPair {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Applied>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Applied>,
    /// When a side has `source: load-model`: the declared load it was predicted for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<String>,
    /// When a raise was capped at the largest allocatable of the nodes the Pod can run on:
    /// that allocatable.
    #[serde(default, rename = "nodeCap", skip_serializing_if = "Option::is_none")]
    pub node_cap: Option<String>,
}

/// container -> resource -> applied values.
pub type ContainersRecord = BTreeMap<String, BTreeMap<Resource, AppliedPair>>;

/// The key of the Knative part of `rightsizer.io/sized`; never a container name (those
/// are DNS labels, without dots).
pub const KNATIVE_KEY: &str = "autoscaling.knative.dev";

/// `rightsizer.io/sized`: per container and resource what was applied, and on Knative
/// templates which autoscaling settings rightsizer wrote (annotation name after
/// `autoscaling.knative.dev/`, or `containerConcurrency`) with their values: a setting
/// that still has the recorded value is rightsizer's to revise; any other is the user's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SizedRecord {
    #[serde(
        default,
        rename = "autoscaling.knative.dev",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub knative: BTreeMap<String, String>,
    #[serde(flatten)]
    pub containers: ContainersRecord,
}

impl SizedRecord {
    /// The record in an annotation's text; an unreadable one counts as none.
    pub fn parse(text: Option<&str>) -> SizedRecord {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.knative.is_empty() && self.containers.is_empty()
    }
}

/// What [`set_annotation`] writes: `rightsizer.io/sized` in the pod metadata,
/// `rightsizer.io/recommendation` in the object's own (see [`crate::sizing::written`]).
pub const WRITES: &[Field] = &[Field::PodAnnotations, Field::Annotations];

/// Set an annotation in the metadata at `meta_ptr` (created when missing).
pub fn set_annotation(obj: &mut Value, meta_ptr: &str, key: &str, value: String) {
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
        if let Some(a) = crate::sizing::containers::ensure_object(m, "annotations") {
            a.insert(key.to_string(), json!(value));
        }
    }
}

/// A recommended pair, as quantities.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecommendedPair {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// container -> resource -> recommended values.
pub type RecommendationRecord = BTreeMap<String, BTreeMap<Resource, RecommendedPair>>;

/// Whether every value recorded in a `sized` annotation is what the object still has:
/// then the object was sized already (by us, or through its template) and is left alone.
pub fn still_applied(
    record: &SizedRecord,
    current: impl Fn(&str, Resource) -> Option<(Option<u64>, Option<u64>)>,
) -> bool {
    !record.containers.is_empty()
        && record.containers.iter().all(|(container, resources)| {
            resources.iter().all(|(r, pair)| {
                let Some((req, lim)) = current(container, *r) else {
                    return false;
                };
                let same = |want: &Option<Applied>, have: Option<u64>| match want {
                    Some(a) => r.parse(&a.value).ok() == have,
                    None => true,
                };
                same(&pair.request, req) && same(&pair.limit, lim)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knative_part_and_containers_share_the_annotation() {
        let text = r#"{"autoscaling.knative.dev":{"target":"80"},"app":{"memory":{"request":{"value":"64Mi","source":"default"}}}}"#;
        let r = SizedRecord::parse(Some(text));
        assert_eq!(r.knative.get("target").map(String::as_str), Some("80"));
        assert!(r.containers.contains_key("app"));
        assert!(!r.containers.contains_key(KNATIVE_KEY));
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
        // Records written before the Knative part existed still read.
        let old = r#"{"app":{"memory":{"limit":{"value":"1Gi","source":"override"}}}}"#;
        assert!(SizedRecord::parse(Some(old)).knative.is_empty());
    }
}
