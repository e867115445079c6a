//! One view over every kind rightsizer handles: where the pod spec and the pod
//! metadata live inside the object, and which workload it belongs to (the key
//! recommendations are stored under).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::workload::kind::WorkloadKind;
use crate::workload::resolve::{resolve_pod, NoOwners, OwnerFacts, PodRef};
use crate::workload::WorkloadKey;

/// Annotation: narrow the mode for one workload.
pub const MODE_ANNOTATION: &str = "rightsizer.io/mode";
/// Namespace label that opts a namespace in (`"true"`; the webhook's namespaceSelector).
pub const OPT_IN_LABEL: &str = "rightsizer.io/enabled";
/// Annotation: explicit per-container values.
pub const OVERRIDES_ANNOTATION: &str = "rightsizer.io/overrides";
/// Annotation written on mutated objects: what was applied and from where.
pub const SIZED_ANNOTATION: &str = "rightsizer.io/sized";
/// Annotation written on mutated objects: the current recommendation.
pub const RECOMMENDATION_ANNOTATION: &str = "rightsizer.io/recommendation";
/// Annotation: declared load for load-model sizing.
pub const EXPECTED_LOAD_ANNOTATION: &str = "rightsizer.io/expected-load";

/// Why an object cannot be handled (it is admitted unchanged with a warning).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("{kind} does not decode: {message}")]
    Decode { kind: WorkloadKind, message: String },
    #[error("object has no {0}")]
    Missing(&'static str),
}

/// Check that the object decodes as its strict Kubernetes type (Knative: the template's
/// pod spec shape), so we never patch something the apiserver would not store.
pub fn check_decodes(kind: WorkloadKind, raw: &Value) -> Result<(), ObjectError> {
    kind.decode()(raw).map_err(|message| ObjectError::Decode { kind, message })
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The parsed view of an admitted object.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The kind of the object itself.
    pub kind: WorkloadKind,
    /// Whose recommendations apply (a Pod's Deployment, a Job's CronJob...).
    pub identity: WorkloadKey,
    /// Pointer to the pod spec.
    pub pod_spec: &'static str,
    /// Pointer to the pod metadata (the Pod's own, or the template's).
    pub pod_meta: &'static str,
    /// For Pods: created by a workload controller (so its template may already be sized).
    pub controlled: bool,
    /// Labels used for selection: the workload's, overlaid by the pod template's.
    pub labels: BTreeMap<String, String>,
    /// Annotations of the object itself.
    pub annotations: BTreeMap<String, String>,
    /// Annotations of the pod metadata (for a Pod, the same as `annotations`).
    pub pod_annotations: BTreeMap<String, String>,
}

impl View {
    /// Build the view with no owner facts (a Pod's workload from its names alone).
    pub fn new(kind: WorkloadKind, namespace: &str, obj: &Value) -> Result<View, ObjectError> {
        View::with_owners(kind, namespace, obj, &NoOwners)
    }

    /// Build the view. `namespace` is the request's namespace (Pods of a ReplicaSet
    /// arrive with no name and sometimes no namespace in metadata); `owners` is what the
    /// watchers know of owner chains.
    pub fn with_owners(
        kind: WorkloadKind,
        namespace: &str,
        obj: &Value,
        owners: &dyn OwnerFacts,
    ) -> Result<View, ObjectError> {
        let meta = obj
            .get("metadata")
            .ok_or(ObjectError::Missing("metadata"))?;
        let (pod_spec, pod_meta) = kind.pod_paths();
        if obj.pointer(pod_spec).is_none() {
            return Err(ObjectError::Missing("pod spec"));
        }
        let annotations = string_map(meta.get("annotations"));
        let pod_m = obj.pointer(pod_meta);
        let pod_annotations = if kind == WorkloadKind::Pod {
            annotations.clone()
        } else {
            string_map(pod_m.and_then(|m| m.get("annotations")))
        };
        let mut labels = string_map(meta.get("labels"));
        if kind != WorkloadKind::Pod {
            labels.extend(string_map(pod_m.and_then(|m| m.get("labels"))));
        }
        let ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(namespace)
            .to_string();
        let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
        let (identity, controlled) = if kind == WorkloadKind::Pod {
            let r = resolve_pod(&PodRef::from_meta(&ns, meta), owners);
            (r.key, r.controlled)
        } else {
            (
                WorkloadKey {
                    namespace: ns,
                    kind,
                    name: name.to_string(),
                },
                false,
            )
        };
        Ok(View {
            kind,
            identity,
            pod_spec,
            pod_meta,
            controlled,
            labels,
            annotations,
            pod_annotations,
        })
    }

    /// An annotation looked up on the pod metadata first, then the object.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.pod_annotations
            .get(key)
            .or_else(|| self.annotations.get(key))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::kind::kind_of_manifest;
    use serde_json::json;

    fn pod(meta: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}})
    }

    #[test]
    fn a_pods_identity_uses_the_owners_given() {
        // A ReplicaSet whose name does not say it belongs to a Deployment.
        struct Watched;
        impl OwnerFacts for Watched {
            fn controller(
                &self,
                _: &str,
                kind: &str,
                name: &str,
            ) -> Option<Option<crate::workload::resolve::Owner>> {
                (kind == "ReplicaSet" && name == "api-live").then(|| {
                    Some(crate::workload::resolve::Owner {
                        kind: "Deployment".into(),
                        name: "api".into(),
                        uid: None,
                    })
                })
            }
        }
        let p = pod(json!({"generateName": "api-live-",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-live", "controller": true, "uid": "x"}]}));
        let alone = View::new(WorkloadKind::Pod, "shop", &p).unwrap();
        assert_eq!(
            (alone.identity.to_string(), alone.controlled),
            ("shop/ReplicaSet/api-live".into(), true)
        );
        let watched = View::with_owners(WorkloadKind::Pod, "shop", &p, &Watched).unwrap();
        assert_eq!(watched.identity.to_string(), "shop/Deployment/api");
        let bare = View::new(
            WorkloadKind::Pod,
            "shop",
            &pod(json!({"generateName": "runner-"})),
        )
        .unwrap();
        assert_eq!(
            (bare.identity.to_string(), bare.controlled),
            ("shop/Pod/runner".into(), false)
        );
    }

    #[test]
    fn workload_paths_and_labels() {
        let obj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": "ops", "labels": {"a": "1"}},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
                "metadata": {"labels": {"b": "2"}, "annotations": {"rightsizer.io/mode": "off"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}}}});
        assert_eq!(kind_of_manifest(&obj), Some(WorkloadKind::CronJob));
        let v = View::new(WorkloadKind::CronJob, "", &obj).unwrap();
        assert_eq!(v.identity.to_string(), "ops/CronJob/nightly");
        assert_eq!(v.labels.get("b").map(String::as_str), Some("2"));
        assert_eq!(v.annotation(MODE_ANNOTATION), Some("off"));
        assert!(check_decodes(WorkloadKind::CronJob, &obj).is_ok());
    }

    #[test]
    fn decode_failure_is_reported() {
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"containers": "nope"}});
        assert!(matches!(
            check_decodes(WorkloadKind::Pod, &bad),
            Err(ObjectError::Decode { .. })
        ));
    }
}
