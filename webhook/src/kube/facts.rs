//! `ClusterFacts` from the watched state: namespace labels, LimitRanges, ResourceQuotas,
//! PriorityClasses, owner chains, HPAs and workload labels and annotations. Admission
//! and the analyzer's policy selection read these mirrors; they never call the API.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::LimitRangeSpec;
use kube::api::ObjectMeta;

use rightsizer_core::cluster::tolerations::TolerationRestriction;
use rightsizer_core::cluster::{
    ClassSource, ClusterFacts, NamespaceFacts, NodeInfo, Nodes, PriorityClasses, QuotaRoom,
};
use rightsizer_core::policy::schema::PriorityClassInfo;
use rightsizer_core::quantity::Resource;
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::resolve::{controller, OwnerFacts, OwnerRef};
use rightsizer_core::workload::WorkloadKey;

use crate::kube::bare_pods::BarePods;
use crate::kube::committed::ContainerCommits;
use crate::kube::mirror::Mirror;
use rightsizer_core::workload::kind::{OwnerTable, ScaledKinds};

mod index;
pub use index::{FactIndex, NamespaceSources};

/// Namespace and name.
pub type NsName = (String, String);

/// The controlling owner of a ReplicaSet or Job, when it has one.
use rightsizer_core::workload::resolve::Owner;

/// What an HPA scales and on which resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpaTarget {
    pub kind: String,
    pub name: String,
    pub resources: Vec<Resource>,
}

/// The parts of a workload's metadata rightsizer uses.
#[derive(Debug, Clone, Default)]
pub struct WorkloadMeta {
    pub uid: Option<String>,
    /// `rightsizer.io/*` annotations except the legacy committed values.
    pub annotations: Arc<BTreeMap<String, String>>,
    /// The workload's own labels (policy selection).
    pub labels: Arc<BTreeMap<String, String>>,
    /// Its pod template's labels (policy selection, as admission sees them on its Pods).
    pub template_labels: Arc<BTreeMap<String, String>>,
    /// Parsed legacy `rightsizer.io/committed`, by container: only read to import it
    /// once into Rightsizings (`kube::store::migrate`).
    pub legacy_committed: Arc<BTreeMap<String, ContainerCommits>>,
    /// `spec.replicas` where the kind has one (the updater's last-replica rule).
    pub replicas: Option<u32>,
}

/// What admission reads from a Namespace: its labels (policy selection, the opt-in) and
/// PodTolerationRestriction's annotations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamespaceMeta {
    pub labels: BTreeMap<String, String>,
    pub tolerations: TolerationRestriction,
}

impl NamespaceMeta {
    pub fn of(meta: &ObjectMeta) -> Self {
        NamespaceMeta {
            labels: meta.labels.clone().unwrap_or_default(),
            tolerations: TolerationRestriction::from_annotations(
                meta.annotations.as_ref().unwrap_or(&BTreeMap::new()),
            ),
        }
    }
}

/// Every mirror the watchers fill.
pub struct KubeFacts {
    pub(crate) namespaces: Arc<Mirror<String, NamespaceMeta>>,
    pub(crate) limit_ranges: Arc<Mirror<NsName, LimitRangeSpec>>,
    pub(crate) quotas: Arc<Mirror<NsName, QuotaRoom>>,
    pub(crate) priority_classes: Arc<Mirror<String, PriorityClassInfo>>,
    /// The node cap's facts.
    pub(crate) nodes: Arc<Mirror<String, NodeInfo>>,
    pub(crate) replica_sets: Arc<Mirror<NsName, Option<Owner>>>,
    pub(crate) jobs: Arc<Mirror<NsName, Option<Owner>>>,
    pub(crate) hpas: Arc<Mirror<NsName, HpaTarget>>,
    pub(crate) workloads: HashMap<WorkloadKind, Arc<Mirror<NsName, WorkloadMeta>>>,
    /// Live bare Pods, the owners of bare-Pod workloads' Rightsizings.
    pub(crate) bare_pods: Arc<BarePods>,
    /// The scaled controllers discovery found (`discovery::scaled`).
    pub(crate) scaled: ScaledKinds,
    /// What admission reads, indexed when the mirrors change rather than per review.
    pub(crate) index: FactIndex,
}

impl KubeFacts {
    /// Wait until every watcher has delivered its first complete list.
    pub async fn synced(&self) {
        self.namespaces.synced().await;
        self.limit_ranges.synced().await;
        self.quotas.synced().await;
        self.priority_classes.synced().await;
        self.nodes.synced().await;
        self.replica_sets.synced().await;
        self.jobs.synced().await;
        self.hpas.synced().await;
        for m in self.workloads.values() {
            m.synced().await;
        }
    }

    /// The uid of a scaled controller, from its ReplicaSets' controller references.
    pub fn scaled_uid(&self, key: &WorkloadKey) -> Option<String> {
        let api_kind = key.kind.info().api_kind;
        self.replica_sets.read().iter().find_map(|((ns, _), o)| {
            let o = o.as_ref()?;
            (ns == &key.namespace && o.kind == api_kind && o.name == key.name)
                .then(|| o.uid.clone())
                .flatten()
        })
    }

    /// Resources the HPAs targeting this workload scale on.
    pub fn hpa_resources(&self, key: &WorkloadKey) -> Vec<Resource> {
        self.index.hpa_resources(&self.hpas, key)
    }

    /// The watched metadata of a workload.
    pub fn workload(&self, key: &WorkloadKey) -> Option<WorkloadMeta> {
        self.workloads
            .get(&key.kind)?
            .read()
            .get(&(key.namespace.clone(), key.name.clone()))
            .cloned()
    }

    /// Every watched workload that still carries the legacy committed annotation.
    pub fn legacy_committed(&self) -> Vec<(WorkloadKey, Arc<BTreeMap<String, ContainerCommits>>)> {
        let mut out = Vec::new();
        for (kind, m) in &self.workloads {
            for ((ns, name), meta) in m.read().iter() {
                if !meta.legacy_committed.is_empty() {
                    let key = WorkloadKey {
                        namespace: ns.clone(),
                        kind: *kind,
                        name: name.clone(),
                    };
                    out.push((key, meta.legacy_committed.clone()));
                }
            }
        }
        out
    }

    /// Objects held, by resource (also in `rightsizer_watch_objects`).
    pub fn sizes(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::from([
            ("namespaces", self.namespaces.len()),
            ("limitranges", self.limit_ranges.len()),
            ("resourcequotas", self.quotas.len()),
            ("priorityclasses", self.priority_classes.len()),
            ("nodes", self.nodes.len()),
            ("replicasets", self.replica_sets.len()),
            ("jobs", self.jobs.len()),
            ("horizontalpodautoscalers", self.hpas.len()),
        ]);
        for (kind, m) in &self.workloads {
            out.insert(workload_resource(*kind), m.len());
        }
        out
    }
}

/// The plural resource name of a watched workload kind.
pub fn workload_resource(kind: WorkloadKind) -> &'static str {
    kind.info().plural
}

/// The ReplicaSet and Job mirrors as owner facts: the links of owner chains the
/// watchers know (the analyzer's Pod watch feeds the same rows).
pub struct OwnerMirrors<'a> {
    pub replica_sets: &'a HashMap<NsName, Option<Owner>>,
    pub jobs: &'a HashMap<NsName, Option<Owner>>,
}

impl OwnerMirrors<'_> {
    /// The mirror that stands in for an owner table.
    pub fn table(&self, table: OwnerTable) -> &HashMap<NsName, Option<Owner>> {
        match table {
            OwnerTable::ReplicaSets => self.replica_sets,
            OwnerTable::Jobs => self.jobs,
        }
    }
}

impl OwnerFacts for OwnerMirrors<'_> {
    fn controller(&self, namespace: &str, kind: &str, name: &str) -> Option<Option<Owner>> {
        self.table(OwnerTable::of_api_kind(kind)?)
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

impl OwnerFacts for KubeFacts {
    fn controller(&self, namespace: &str, kind: &str, name: &str) -> Option<Option<Owner>> {
        OwnerMirrors {
            replica_sets: &self.replica_sets.read(),
            jobs: &self.jobs.read(),
        }
        .controller(namespace, kind, name)
    }

    fn scaled(&self, api_kind: &str) -> Option<WorkloadKind> {
        self.scaled.by_kind(api_kind)
    }
}

/// What an analyzer cycle tells the watched state, and asks of it.
impl crate::analyzer::ksm::HomeFacts for KubeFacts {
    fn refresh_bare_pods(&self, namespace: Option<&str>, live: &[(String, String, String)]) {
        let live = live
            .iter()
            .map(|(ns, pod, uid)| (ns.as_str(), pod.as_str(), uid.as_str()));
        self.bare_pods.refresh(namespace, live);
    }

    fn scaled(&self) -> ScaledKinds {
        self.scaled.clone()
    }
}

impl ClusterFacts for KubeFacts {
    fn namespace(&self, name: &str) -> Arc<NamespaceFacts> {
        let src = NamespaceSources {
            labels: &self.namespaces,
            limit_ranges: &self.limit_ranges,
            quotas: &self.quotas,
        };
        self.index.namespace(&src, name)
    }

    fn priority_classes(&self) -> PriorityClasses {
        // Until the first list is in, an empty mirror would not mean "no classes".
        let source = if self.priority_classes.is_synced() {
            ClassSource::Cluster
        } else {
            ClassSource::Unknown
        };
        PriorityClasses {
            source,
            classes: self.index.priority_classes(&self.priority_classes),
        }
    }

    fn owners(&self) -> &dyn OwnerFacts {
        self
    }

    fn nodes(&self) -> Nodes {
        Nodes {
            known: self.nodes.is_synced(),
            nodes: self.index.nodes(&self.nodes),
        }
    }

    fn workload_annotations(&self, key: &WorkloadKey) -> Option<Arc<BTreeMap<String, String>>> {
        self.workload(key).map(|w| w.annotations)
    }

    fn workload_labels(&self, key: &WorkloadKey) -> Option<Arc<BTreeMap<String, String>>> {
        self.workload(key).map(|w| w.labels)
    }

    fn template_labels(&self, key: &WorkloadKey) -> Option<Arc<BTreeMap<String, String>>> {
        self.workload(key).map(|w| w.template_labels)
    }
}

/// The controlling owner in an object's metadata ([`rightsizer_core::workload::resolve::controller`]).
pub fn controller_of(meta: &ObjectMeta) -> Option<Owner> {
    let refs = meta.owner_references.iter().flatten().map(|o| OwnerRef {
        kind: &o.kind,
        name: &o.name,
        api_version: Some(&o.api_version),
        controller: o.controller == Some(true),
    });
    controller(refs).map(|o| Owner {
        kind: o.kind.to_string(),
        name: o.name.to_string(),
        // Kept only for a controller outside the table (a scaled one owns its
        // workload's Rightsizing, and may not be read): the others' come from their watch.
        uid: meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .filter(|r| WorkloadKind::from_kind(Some(&r.api_version), &r.kind).is_none())
            .map(|r| r.uid.clone()),
    })
}

/// Which resources an HPA (autoscaling v2 or v2beta2 JSON; same shape) scales on.
pub fn hpa_target(spec: &serde_json::Value) -> Option<HpaTarget> {
    let target = spec.get("scaleTargetRef")?;
    let kind = target.get("kind")?.as_str()?.to_string();
    let name = target.get("name")?.as_str()?.to_string();
    let mut resources = Vec::new();
    for m in spec
        .get("metrics")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        // Resource metrics name the resource directly; ContainerResource metrics too.
        let field = match m.get("type").and_then(|t| t.as_str()) {
            Some("Resource") => "resource",
            Some("ContainerResource") => "containerResource",
            _ => continue,
        };
        let r = match m
            .get(field)
            .and_then(|r| r.get("name"))
            .and_then(|n| n.as_str())
        {
            Some("memory") => Resource::Memory,
            Some("cpu") => Resource::Cpu,
            _ => continue,
        };
        if !resources.contains(&r) {
            resources.push(r);
        }
    }
    if spec.get("metrics").is_none() {
        // No metrics listed: the HPA controller's default is 80% CPU.
        resources.push(Resource::Cpu);
    }
    resources.sort();
    Some(HpaTarget {
        kind,
        name,
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hpa_resources_from_v2_metrics() {
        let spec = json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
            "metrics": [
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}}},
                {"type": "Pods", "pods": {"metric": {"name": "rps"}}},
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}
            ]
        });
        let t = hpa_target(&spec).unwrap();
        assert_eq!(t.kind, "Deployment");
        assert_eq!(t.resources, vec![Resource::Memory, Resource::Cpu]);
        let only_default =
            hpa_target(&json!({"scaleTargetRef": {"kind": "StatefulSet", "name": "db"}})).unwrap();
        assert_eq!(only_default.resources, vec![Resource::Cpu]);
    }
}
