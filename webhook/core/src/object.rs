//! One view over every kind rightsizer handles: where the pod spec and the pod
//! metadata live inside the object, and which workload it belongs to (the key
//! recommendations are stored under).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::recommendation::{WorkloadKey, WorkloadKind};

/// Annotation: narrow the mode for one workload.
pub const MODE_ANNOTATION: &str = "rightsizer.io/mode";
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

/// The kind for an API group and kind, if rightsizer handles it.
pub fn kind_for(group: &str, kind: &str) -> Option<WorkloadKind> {
    Some(match (group, kind) {
        ("", "Pod") => WorkloadKind::Pod,
        ("apps", "Deployment") => WorkloadKind::Deployment,
        ("apps", "StatefulSet") => WorkloadKind::StatefulSet,
        ("apps", "DaemonSet") => WorkloadKind::DaemonSet,
        ("apps", "ReplicaSet") => WorkloadKind::ReplicaSet,
        ("batch", "Job") => WorkloadKind::Job,
        ("batch", "CronJob") => WorkloadKind::CronJob,
        ("serving.knative.dev", "Service") => WorkloadKind::KnativeService,
        ("serving.knative.dev", "Configuration") => WorkloadKind::KnativeConfiguration,
        _ => return None,
    })
}

/// The kind of a manifest from its `apiVersion` and `kind`.
pub fn kind_of_manifest(obj: &Value) -> Option<WorkloadKind> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    kind_for(group, kind)
}

/// JSON pointers to the pod spec and pod metadata of a kind.
pub fn pod_paths(kind: WorkloadKind) -> (&'static str, &'static str) {
    match kind {
        WorkloadKind::Pod => ("/spec", "/metadata"),
        WorkloadKind::CronJob => (
            "/spec/jobTemplate/spec/template/spec",
            "/spec/jobTemplate/spec/template/metadata",
        ),
        _ => ("/spec/template/spec", "/spec/template/metadata"),
    }
}

/// Whether the kind is a Knative resource.
pub fn is_knative(kind: WorkloadKind) -> bool {
    matches!(
        kind,
        WorkloadKind::KnativeService | WorkloadKind::KnativeConfiguration
    )
}

/// Check that the object decodes as its strict Kubernetes type (Knative: the template's
/// pod spec shape), so we never patch something the apiserver would not store.
pub fn check_decodes(kind: WorkloadKind, raw: &Value) -> Result<(), ObjectError> {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
    // Decoded from the already parsed tree: the text is parsed once per review.
    fn de<T: serde::de::DeserializeOwned>(
        kind: WorkloadKind,
        raw: &Value,
    ) -> Result<(), ObjectError> {
        T::deserialize(raw)
            .map(|_| ())
            .map_err(|e| ObjectError::Decode {
                kind,
                message: e.to_string(),
            })
    }
    match kind {
        WorkloadKind::Pod => de::<core::Pod>(kind, raw),
        WorkloadKind::Deployment => de::<apps::Deployment>(kind, raw),
        WorkloadKind::StatefulSet => de::<apps::StatefulSet>(kind, raw),
        WorkloadKind::DaemonSet => de::<apps::DaemonSet>(kind, raw),
        WorkloadKind::ReplicaSet => de::<apps::ReplicaSet>(kind, raw),
        WorkloadKind::Job => de::<batch::Job>(kind, raw),
        WorkloadKind::CronJob => de::<batch::CronJob>(kind, raw),
        WorkloadKind::KnativeService | WorkloadKind::KnativeConfiguration => {
            knative_shape::Tpl::deserialize(raw)
                .map(|_| ())
                .map_err(|e| ObjectError::Decode {
                    kind,
                    message: e.to_string(),
                })
        }
    }
}

/// The parts of a Knative Service/Configuration that must decode for us to size it.
/// Only the shape matters: the fields are decoded to be checked, not read.
#[allow(dead_code)]
mod knative_shape {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Tpl {
        spec: TplSpec,
    }
    #[derive(Deserialize)]
    struct TplSpec {
        template: Template,
    }
    #[derive(Deserialize)]
    struct Template {
        #[serde(default)]
        metadata: Option<ObjectMeta>,
        spec: KnSpec,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct KnSpec {
        containers: Vec<KnContainer>,
        #[serde(default)]
        container_concurrency: Option<i64>,
    }
    #[derive(Deserialize)]
    struct KnContainer {
        #[serde(default)]
        resources: Option<core::ResourceRequirements>,
    }
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
    /// For Pods: the controller owner reference (kind, name).
    pub owner: Option<(String, String)>,
}

impl View {
    /// Build the view. `namespace` is the request's namespace (Pods of a ReplicaSet
    /// arrive with no name and sometimes no namespace in metadata).
    pub fn new(kind: WorkloadKind, namespace: &str, obj: &Value) -> Result<View, ObjectError> {
        let meta = obj
            .get("metadata")
            .ok_or(ObjectError::Missing("metadata"))?;
        let (pod_spec, pod_meta) = pod_paths(kind);
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
        let owner = if kind == WorkloadKind::Pod {
            controller_owner(meta).map(|(k, n, _)| (k.to_string(), n.to_string()))
        } else {
            None
        };
        let (identity, controlled) = if kind == WorkloadKind::Pod {
            pod_identity(&ns, meta, &labels)
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
            owner,
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

/// CronJob-created Jobs are named `<cronjob>-<scheduled minutes since epoch>`.
fn cronjob_of_job(job: &str) -> Option<&str> {
    let (base, suffix) = job.rsplit_once('-')?;
    (suffix.len() >= 8 && suffix.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty())
        .then_some(base)
}

/// The controller owner reference (kind, name, apiVersion), else the first owner.
fn controller_owner(meta: &Value) -> Option<(&str, &str, &str)> {
    let owners = meta.get("ownerReferences").and_then(Value::as_array)?;
    let o = owners
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .or_else(|| owners.first())?;
    Some((
        o.get("kind")?.as_str()?,
        o.get("name")?.as_str()?,
        o.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
    ))
}

/// Which workload a Pod belongs to, and whether a controller created it.
fn pod_identity(
    namespace: &str,
    meta: &Value,
    labels: &BTreeMap<String, String>,
) -> (WorkloadKey, bool) {
    let key = |kind, name: &str| WorkloadKey {
        namespace: namespace.to_string(),
        kind,
        name: name.to_string(),
    };
    let owner = controller_owner(meta);
    // Knative pods carry their Service/Configuration in labels; the ReplicaSet owner
    // belongs to a revision and would split history per revision.
    if let Some(s) = labels.get("serving.knative.dev/service") {
        return (key(WorkloadKind::KnativeService, s), true);
    }
    if let Some(c) = labels.get("serving.knative.dev/configuration") {
        return (key(WorkloadKind::KnativeConfiguration, c), true);
    }
    if let Some((kind, name, api_version)) = owner {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        match (group, kind) {
            ("apps", "ReplicaSet") => {
                let deployment = labels
                    .get("pod-template-hash")
                    .and_then(|h| name.strip_suffix(h.as_str()))
                    .and_then(|n| n.strip_suffix('-'))
                    .filter(|n| !n.is_empty());
                return match deployment {
                    Some(d) => (key(WorkloadKind::Deployment, d), true),
                    None => (key(WorkloadKind::ReplicaSet, name), true),
                };
            }
            ("batch", "Job") => {
                return match cronjob_of_job(name) {
                    Some(c) => (key(WorkloadKind::CronJob, c), true),
                    None => (key(WorkloadKind::Job, name), true),
                };
            }
            ("apps", "StatefulSet") => return (key(WorkloadKind::StatefulSet, name), true),
            ("apps", "DaemonSet") => return (key(WorkloadKind::DaemonSet, name), true),
            _ => {}
        }
    }
    // Bare pods (or unknown controllers): by name, else by generateName.
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or_else(|| {
            meta.get("generateName")
                .and_then(Value::as_str)
                .map(|g| g.trim_end_matches('-'))
        })
        .unwrap_or("unnamed");
    (key(WorkloadKind::Pod, name), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn pod(meta: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}})
    }

    #[rstest]
    #[case::deployment(
        json!({"generateName": "api-7d9f8-", "labels": {"pod-template-hash": "7d9f8"},
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f8", "controller": true, "uid": "x"}]}),
        WorkloadKind::Deployment, "api", true)]
    #[case::bare_replicaset(
        json!({"generateName": "rs-", "labels": {},
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "controller": true, "uid": "x"}]}),
        WorkloadKind::ReplicaSet, "rs", true)]
    #[case::cronjob(
        json!({"generateName": "backup-29400000-",
               "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "backup-29400000", "controller": true, "uid": "x"}]}),
        WorkloadKind::CronJob, "backup", true)]
    #[case::plain_job(
        json!({"generateName": "migrate-2-",
               "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "migrate-2", "controller": true, "uid": "x"}]}),
        WorkloadKind::Job, "migrate-2", true)]
    #[case::statefulset(
        json!({"name": "db-0", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": true, "uid": "x"}]}),
        WorkloadKind::StatefulSet, "db", true)]
    #[case::daemonset(
        json!({"generateName": "agent-", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": true, "uid": "x"}]}),
        WorkloadKind::DaemonSet, "agent", true)]
    #[case::knative(
        json!({"generateName": "hello-00001-deployment-5f-", "labels": {"serving.knative.dev/service": "hello", "serving.knative.dev/configuration": "hello", "pod-template-hash": "5f"},
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "hello-00001-deployment-5f", "controller": true, "uid": "x"}]}),
        WorkloadKind::KnativeService, "hello", true)]
    #[case::bare_named(json!({"name": "debug"}), WorkloadKind::Pod, "debug", false)]
    #[case::bare_generated(json!({"generateName": "job-runner-"}), WorkloadKind::Pod, "job-runner", false)]
    #[case::unknown_owner(
        json!({"generateName": "x-", "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "r", "controller": true, "uid": "x"}]}),
        WorkloadKind::Pod, "x", false)]
    fn pod_identity_table(
        #[case] meta: Value,
        #[case] kind: WorkloadKind,
        #[case] name: &str,
        #[case] controlled: bool,
    ) {
        let v = View::new(WorkloadKind::Pod, "shop", &pod(meta)).unwrap();
        assert_eq!(v.identity.kind, kind);
        assert_eq!(v.identity.name, name);
        assert_eq!(v.identity.namespace, "shop");
        assert_eq!(v.controlled, controlled);
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
