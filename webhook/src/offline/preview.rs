//! The Pod a workload's controller would create, for `mutate --pods` and `-o table`.
//!
//! Under `target: pods` (the default) a workload's template is left alone and its Pods
//! are sized when they are admitted, so a dry run of the workload alone shows nothing.
//! This builds the Pod the controller would send to the apiserver (template metadata and
//! spec, the controller's labels and owner reference) from the workload as admission left
//! it, so admitting that Pod gives what the Pods would get under either target.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use rightsizer_core::cluster::{ClusterFacts, NamespaceFacts, StaticFacts};
use rightsizer_core::object::SIZED_ANNOTATION;
use rightsizer_core::quantity::Resource;
use rightsizer_core::sizing::record::SizedRecord;
use rightsizer_core::workload::kind::PodName;
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::WorkloadKey;

/// The CronJob-created Job a preview Pod belongs to: `<cronjob>-<scheduled minutes>`.
const CRON_MINUTES: &str = "29000000";
/// The fields of a Knative revision spec that are not Pod spec fields.
const REVISION_ONLY: &[&str] = &[
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
];
/// Owner references need a uid; a preview has none.
const PREVIEW_UID: &str = "00000000-0000-0000-0000-000000000000";

/// FNV-1a 32 of the template, spelled as Kubernetes spells `pod-template-hash`.
fn template_hash(template: &Value) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in template.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    rightsizer_core::workload::names::safe_encode(&h.to_string())
}

/// The Pod the controller of `kind` would create from `workload` (None for a Pod), as
/// the kind table describes it ([`WorkloadKind::made_pod`]).
pub fn controller_pod(kind: WorkloadKind, namespace: &str, workload: &Value) -> Option<Value> {
    let made = kind.made_pod()?;
    let (spec_ptr, meta_ptr) = kind.pod_paths();
    let mut spec = workload.pointer(spec_ptr)?.clone();
    if kind.is_knative() {
        // Revision fields Knative keeps to itself: its Pods' specs do not have them.
        if let Some(s) = spec.as_object_mut() {
            for f in REVISION_ONLY {
                s.remove(*f);
            }
        }
    }
    let template = workload.pointer(spec_ptr.strip_suffix("/spec")?)?;
    let name = workload.pointer("/metadata/name")?.as_str()?;
    let tmeta = workload.pointer(meta_ptr).cloned().unwrap_or(json!({}));
    let mut labels: Map<String, Value> = tmeta
        .get("labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let hash = template_hash(template);
    let fill = |t: &str| {
        t.replace("{name}", name)
            .replace("{hash}", &hash)
            .replace("{minutes}", CRON_MINUTES)
    };
    for (k, v) in made.labels {
        labels.insert(k.to_string(), json!(fill(v)));
    }
    let mut meta = json!({"namespace": namespace});
    match made.name {
        PodName::Name(n) => meta["name"] = json!(fill(n)),
        PodName::Generate(n) => meta["generateName"] = json!(fill(n)),
    }
    let (owner_kind, owner_name) = made.owner;
    let owner = owner_kind.info();
    meta["ownerReferences"] = json!([{"apiVersion": owner.api_version(), "kind": owner.api_kind,
        "name": fill(owner_name), "uid": PREVIEW_UID, "controller": true, "blockOwnerDeletion": true}]);
    if let Some(default) = made.unnamed_container {
        for c in spec
            .get_mut("containers")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if c.get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                c["name"] = json!(default);
            }
        }
    }
    meta["labels"] = Value::Object(labels);
    if let Some(a) = tmeta.get("annotations") {
        meta["annotations"] = a.clone();
    }
    Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}))
}

/// Input facts plus what the cluster's watchers would know about the input's workloads:
/// the annotations on their own metadata (e.g. `rightsizer.io/mode`), which admission
/// reads for their Pods.
pub struct PreviewFacts {
    pub base: StaticFacts,
    pub workload_annotations: BTreeMap<WorkloadKey, Arc<BTreeMap<String, String>>>,
}

impl ClusterFacts for PreviewFacts {
    fn namespace(&self, name: &str) -> Arc<NamespaceFacts> {
        self.base.namespace(name)
    }
    fn priority_classes(&self) -> rightsizer_core::cluster::PriorityClasses {
        self.base.priority_classes()
    }
    fn workload_annotations(&self, key: &WorkloadKey) -> Option<Arc<BTreeMap<String, String>>> {
        self.workload_annotations.get(key).cloned()
    }
}

/// One line of `mutate -o table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewRow {
    pub container: String,
    /// e.g. `memory request`.
    pub resource: String,
    pub before: Option<String>,
    pub after: Option<String>,
    /// From `rightsizer.io/sized`; `template` for a value left as the manifest has it.
    pub source: Option<String>,
}

fn quantity(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .flat_map(move |k| spec.get(k).and_then(Value::as_array).into_iter().flatten())
}

/// What each container's resources were in the manifest (`before`, a pod spec) and are in
/// the admitted Pod (`after`), with the source rightsizer recorded.
pub fn rows(before: &Value, after: &Value) -> Vec<PreviewRow> {
    let sized = SizedRecord::parse(
        after
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(SIZED_ANNOTATION))
            .and_then(Value::as_str),
    );
    let mut out = Vec::new();
    for c in containers(after.get("spec").unwrap_or(&Value::Null)) {
        let Some(name) = c.get("name").and_then(Value::as_str) else {
            continue;
        };
        let old = containers(before)
            .find(|o| o.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or(&Value::Null);
        for r in [Resource::Memory, Resource::Cpu] {
            for (side, field) in [("request", "requests"), ("limit", "limits")] {
                let at = |c: &Value| {
                    c.pointer(&format!("/resources/{field}/{}", r.as_str()))
                        .and_then(quantity)
                };
                let (b, a) = (at(old), at(c));
                if b.is_none() && a.is_none() {
                    continue;
                }
                let applied = sized
                    .containers
                    .get(name)
                    .and_then(|m| m.get(&r))
                    .and_then(|p| {
                        if side == "request" {
                            p.request.as_ref()
                        } else {
                            p.limit.as_ref()
                        }
                    });
                let source = match applied {
                    Some(x) => Some(x.source.as_str().to_string()),
                    None if b.is_some() && b == a => Some("template".to_string()),
                    None => None,
                };
                out.push(PreviewRow {
                    container: name.to_string(),
                    resource: format!("{r} {side}"),
                    before: b,
                    after: a,
                    source,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(kind: &str, api: &str, spec_at: &str) -> Value {
        let tpl = json!({"metadata": {"labels": {"app": "web"}, "annotations": {"a": "1"}},
                         "spec": {"containers": [{"name": "app", "image": "i"}]}});
        let mut w = json!({"apiVersion": api, "kind": kind, "metadata": {"name": "web", "namespace": "shop"}});
        let mut cur = &mut w;
        for part in spec_at.split('/').filter(|p| !p.is_empty()) {
            cur = &mut cur[part];
        }
        *cur = tpl;
        w
    }

    #[rstest::rstest]
    #[case::deployment(
        WorkloadKind::Deployment,
        "apps/v1",
        "/spec/template",
        WorkloadKind::Deployment,
        "web"
    )]
    #[case::statefulset(
        WorkloadKind::StatefulSet,
        "apps/v1",
        "/spec/template",
        WorkloadKind::StatefulSet,
        "web"
    )]
    #[case::daemonset(
        WorkloadKind::DaemonSet,
        "apps/v1",
        "/spec/template",
        WorkloadKind::DaemonSet,
        "web"
    )]
    #[case::replicaset(
        WorkloadKind::ReplicaSet,
        "apps/v1",
        "/spec/template",
        WorkloadKind::ReplicaSet,
        "web"
    )]
    #[case::job(
        WorkloadKind::Job,
        "batch/v1",
        "/spec/template",
        WorkloadKind::Job,
        "web"
    )]
    #[case::cronjob(
        WorkloadKind::CronJob,
        "batch/v1",
        "/spec/jobTemplate/spec/template",
        WorkloadKind::CronJob,
        "web"
    )]
    #[case::knative(
        WorkloadKind::KnativeService,
        "serving.knative.dev/v1",
        "/spec/template",
        WorkloadKind::KnativeService,
        "web"
    )]
    fn the_controllers_pod_is_keyed_to_its_workload(
        #[case] kind: WorkloadKind,
        #[case] api: &str,
        #[case] at: &str,
        #[case] want_kind: WorkloadKind,
        #[case] want_name: &str,
    ) {
        let w = workload(kind.as_str(), api, at);
        let pod = controller_pod(kind, "shop", &w).unwrap();
        assert!(
            rightsizer_core::object::check_decodes(WorkloadKind::Pod, &pod).is_ok(),
            "{pod}"
        );
        let v = rightsizer_core::object::View::new(WorkloadKind::Pod, "shop", &pod).unwrap();
        assert_eq!(
            (v.identity.kind, v.identity.name.as_str()),
            (want_kind, want_name)
        );
        assert!(v.controlled);
        assert_eq!(v.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(v.annotation("a"), Some("1"));
        assert_eq!(
            pod["spec"],
            json!({"containers": [{"name": "app", "image": "i"}]})
        );
    }

    #[test]
    fn an_unnamed_knative_container_is_the_user_container() {
        let w = json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "hello", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [{"image": "hello:1"}]}}}});
        let pod = controller_pod(WorkloadKind::KnativeService, "shop", &w).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["name"], "user-container");
        assert!(rightsizer_core::object::check_decodes(WorkloadKind::Pod, &pod).is_ok());
    }

    #[test]
    fn rows_name_the_source_of_each_value() {
        let before = json!({"containers": [{"name": "app", "resources": {"requests": {"memory": "1Gi", "cpu": "500m"}}}]});
        let after = json!({"metadata": {"annotations": {SIZED_ANNOTATION:
            r#"{"app":{"memory":{"request":{"value":"720Mi","source":"recommendation"},"limit":{"value":"1440Mi","source":"recommendation"}}}}"#}},
            "spec": {"containers": [{"name": "app", "resources": {"requests": {"memory": "720Mi", "cpu": "500m"}, "limits": {"memory": "1440Mi"}}}]}});
        let got: Vec<String> = rows(&before, &after)
            .into_iter()
            .map(|r| {
                format!(
                    "{} {} {:?} {:?} {:?}",
                    r.container, r.resource, r.before, r.after, r.source
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                r#"app memory request Some("1Gi") Some("720Mi") Some("recommendation")"#,
                r#"app memory limit None Some("1440Mi") Some("recommendation")"#,
                r#"app cpu request Some("500m") Some("500m") Some("template")"#,
            ]
        );
    }
}
