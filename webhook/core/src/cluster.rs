//! Facts about the cluster that admission needs and cannot read from the object:
//! namespace labels, LimitRanges and PriorityClasses. In the cluster they come from
//! watchers; offline from objects in the input. Admission only reads them.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use k8s_openapi::api::core::v1::LimitRangeSpec;

use crate::policy::schema::PriorityClassInfo;
use crate::workload::WorkloadKey;

/// What is known about one namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamespaceFacts {
    pub labels: BTreeMap<String, String>,
    pub limit_ranges: Vec<LimitRangeSpec>,
    /// ResourceQuotas: what each still allows.
    pub quotas: Vec<QuotaRoom>,
}

/// Room left in one ResourceQuota (hard minus used), per quota key such as
/// `requests.memory`, `limits.memory`, `requests.cpu`, `limits.cpu` (memory in bytes,
/// CPU in millicores). `memory`/`cpu` alone mean requests, as in ResourceQuota.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaRoom {
    pub name: String,
    pub room: BTreeMap<String, u64>,
}

impl QuotaRoom {
    /// From a quota's `spec.hard` and `status.used` quantity strings.
    pub fn from_quantities(
        name: &str,
        hard: &BTreeMap<String, String>,
        used: &BTreeMap<String, String>,
    ) -> Self {
        use crate::quantity::Resource;
        let mut room = BTreeMap::new();
        for (key, h) in hard {
            let resource = match key.as_str() {
                "memory" | "requests.memory" | "limits.memory" => Resource::Memory,
                "cpu" | "requests.cpu" | "limits.cpu" => Resource::Cpu,
                _ => continue,
            };
            let Ok(h) = resource.parse(h) else { continue };
            let u = used
                .get(key)
                .and_then(|u| resource.parse(u).ok())
                .unwrap_or(0);
            let key = match key.as_str() {
                "memory" => "requests.memory",
                "cpu" => "requests.cpu",
                k => k,
            };
            let left = h.saturating_sub(u);
            room.entry(key.to_string())
                .and_modify(|v: &mut u64| *v = (*v).min(left))
                .or_insert(left);
        }
        QuotaRoom {
            name: name.to_string(),
            room,
        }
    }
}

/// How much is known about the cluster's PriorityClasses. A Pod naming a class the
/// cluster lacks is refused, so this decides whether a class may be set at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassSource {
    /// No view of the cluster (serve without kube, or before the watch's first list):
    /// no class is set.
    #[default]
    Unknown,
    /// The cluster's classes as watched: only these exist.
    Cluster,
    /// Offline (`mutate`): the input's classes, then the policy's declared ones,
    /// labelled as such in a warning (the cluster may not have them).
    Offline,
}

/// The known PriorityClasses by name and where that knowledge comes from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriorityClasses {
    pub source: ClassSource,
    pub classes: Arc<BTreeMap<String, PriorityClassInfo>>,
}

impl Deref for PriorityClasses {
    type Target = BTreeMap<String, PriorityClassInfo>;
    fn deref(&self) -> &Self::Target {
        &self.classes
    }
}

/// Read access to cluster facts; must not block.
pub trait ClusterFacts: Send + Sync {
    fn namespace(&self, name: &str) -> Arc<NamespaceFacts>;
    /// The PriorityClasses known to exist (see `ClassSource`).
    fn priority_classes(&self) -> PriorityClasses;
    /// What the cluster knows of owner chains (a ReplicaSet's Deployment, a Job's
    /// CronJob), for [`crate::workload::resolve::resolve_pod`]; nothing by default.
    fn owners(&self) -> &dyn crate::workload::resolve::OwnerFacts {
        &crate::workload::resolve::NoOwners
    }
    /// Annotations on a workload's own metadata (e.g. `rightsizer.io/mode` on a
    /// Deployment, seen when its Pods are admitted), when known.
    fn workload_annotations(&self, _key: &WorkloadKey) -> Option<Arc<BTreeMap<String, String>>> {
        None
    }
    /// Labels on a workload's own metadata (policy selection), when known.
    fn workload_labels(&self, _key: &WorkloadKey) -> Option<Arc<BTreeMap<String, String>>> {
        None
    }
    /// Labels on a workload's pod template (the analyzer's policy selection, which sees
    /// no Pod), when known.
    fn template_labels(&self, _key: &WorkloadKey) -> Option<Arc<BTreeMap<String, String>>> {
        None
    }
}

/// Nothing known.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFacts;

impl ClusterFacts for NoFacts {
    fn namespace(&self, _name: &str) -> Arc<NamespaceFacts> {
        Arc::new(NamespaceFacts::default())
    }
    fn priority_classes(&self) -> PriorityClasses {
        PriorityClasses::default()
    }
}

/// A fixed set of facts (offline runs and tests).
#[derive(Debug, Default, Clone)]
pub struct StaticFacts {
    pub namespaces: BTreeMap<String, Arc<NamespaceFacts>>,
    pub priority_classes: Arc<BTreeMap<String, PriorityClassInfo>>,
    /// What `priority_classes` stands for: `Offline` for `mutate`, `Cluster` when the
    /// facts describe a whole cluster (tests), `Unknown` by default.
    pub class_source: ClassSource,
}

impl StaticFacts {
    /// Record the facts carried by a manifest: Namespace labels, LimitRange specs and
    /// PriorityClass values. Returns whether the object was such a fact.
    pub fn absorb(&mut self, obj: &serde_json::Value, default_namespace: &str) -> bool {
        let kind = obj.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let meta = obj.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        match kind {
            "Namespace" => {
                let labels = meta
                    .and_then(|m| m.get("labels"))
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                let entry = self.namespaces.entry(name.to_string()).or_default();
                Arc::make_mut(entry).labels = labels;
                true
            }
            "LimitRange" => {
                let ns = meta
                    .and_then(|m| m.get("namespace"))
                    .and_then(|n| n.as_str())
                    .unwrap_or(default_namespace);
                let Some(spec) = obj
                    .get("spec")
                    .and_then(|s| serde_json::from_value::<LimitRangeSpec>(s.clone()).ok())
                else {
                    return false;
                };
                let entry = self.namespaces.entry(ns.to_string()).or_default();
                Arc::make_mut(entry).limit_ranges.push(spec);
                true
            }
            "ResourceQuota" => {
                let ns = meta
                    .and_then(|m| m.get("namespace"))
                    .and_then(|n| n.as_str())
                    .unwrap_or(default_namespace);
                let map = |ptr: &str| -> BTreeMap<String, String> {
                    obj.pointer(ptr)
                        .and_then(|v| serde_json::from_value(v.clone()).ok())
                        .unwrap_or_default()
                };
                let room =
                    QuotaRoom::from_quantities(name, &map("/spec/hard"), &map("/status/used"));
                let entry = self.namespaces.entry(ns.to_string()).or_default();
                Arc::make_mut(entry).quotas.push(room);
                true
            }
            "PriorityClass" => {
                let Some(value) = obj.get("value").and_then(|v| v.as_i64()) else {
                    return false;
                };
                let info = PriorityClassInfo {
                    value: value as i32,
                    preemption_policy: obj
                        .get("preemptionPolicy")
                        .and_then(|p| p.as_str())
                        .map(str::to_string),
                };
                Arc::make_mut(&mut self.priority_classes).insert(name.to_string(), info);
                true
            }
            _ => false,
        }
    }
}

impl ClusterFacts for StaticFacts {
    fn namespace(&self, name: &str) -> Arc<NamespaceFacts> {
        self.namespaces.get(name).cloned().unwrap_or_default()
    }
    fn priority_classes(&self) -> PriorityClasses {
        PriorityClasses {
            source: self.class_source,
            classes: self.priority_classes.clone(),
        }
    }
}
