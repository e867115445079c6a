//! Facts about the cluster that admission needs and cannot read from the object:
//! namespace labels, LimitRanges and PriorityClasses. In the cluster they come from
//! watchers; offline from objects in the input. Admission only reads them.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use k8s_openapi::api::core::v1::LimitRangeSpec;

use crate::policy::schema::PriorityClassInfo;
use crate::workload::WorkloadKey;

pub mod opt_in;
pub mod quota_scope;
pub mod tolerations;

use quota_scope::ScopeTerm;
use tolerations::TolerationRestriction;

/// What is known about one namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamespaceFacts {
    pub labels: BTreeMap<String, String>,
    pub limit_ranges: Vec<LimitRangeSpec>,
    /// ResourceQuotas: what each still allows.
    pub quotas: Vec<QuotaRoom>,
    /// PodTolerationRestriction's namespace annotations.
    pub tolerations: TolerationRestriction,
}

/// Room left in one ResourceQuota (hard minus used), per quota key such as
/// `requests.memory`, `limits.memory`, `requests.cpu`, `limits.cpu` (memory in bytes,
/// CPU in millicores). `memory`/`cpu` alone mean requests, as in ResourceQuota.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaRoom {
    pub name: String,
    pub room: BTreeMap<String, u64>,
    /// Which Pods it counts (empty: all).
    pub scopes: Vec<ScopeTerm>,
    /// Pods it still admits (`pods` or `count/pods` hard minus used), when it caps them.
    pub pods_left: Option<u64>,
    /// A hard key has no `status.used` yet: quota admission refuses a Pod it counts
    /// ("status unknown for quota").
    pub unknown_usage: bool,
    /// A hard key that counts Pods but is not modelled here (ephemeral storage,
    /// hugepages, extended resources): a Pod it starts counting may not fit.
    pub unmodelled: Option<String>,
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
        let mut pods_left: Option<u64> = None;
        let mut unknown_usage = false;
        let mut unmodelled = None;
        for (key, h) in hard {
            unknown_usage |= !used.contains_key(key);
            if key == "pods" || key == "count/pods" {
                let count = |s: &str| s.trim().parse::<u64>().ok();
                // Unreadable: no room known, so none is assumed.
                let left = match (count(h), used.get(key).map_or(Some(0), |u| count(u))) {
                    (Some(h), Some(u)) => h.saturating_sub(u),
                    _ => 0,
                };
                pods_left = Some(pods_left.map_or(left, |p| p.min(left)));
                continue;
            }
            let resource = match key.as_str() {
                "memory" | "requests.memory" | "limits.memory" => Resource::Memory,
                "cpu" | "requests.cpu" | "limits.cpu" => Resource::Cpu,
                k if k.starts_with("requests.")
                    || k.starts_with("limits.")
                    || k.starts_with("hugepages-")
                    || k == "ephemeral-storage" =>
                {
                    unmodelled.get_or_insert_with(|| k.to_string());
                    continue;
                }
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
            scopes: Vec::new(),
            pods_left,
            unknown_usage,
            unmodelled,
        }
    }

    /// From a ResourceQuota object (JSON): `spec.hard`, `status.used` and the scopes.
    /// The watcher and offline runs both read quotas through this.
    pub fn from_object(obj: &serde_json::Value) -> Self {
        let map = |ptr: &str| -> BTreeMap<String, String> {
            obj.pointer(ptr)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default()
        };
        let name = obj
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        QuotaRoom {
            scopes: ScopeTerm::of_spec(obj.get("spec")),
            ..QuotaRoom::from_quantities(name, &map("/spec/hard"), &map("/status/used"))
        }
    }
}

/// Which admission plugin after the webhooks made the merge hold a change back, read
/// from its warnings (the messages `quota_scope`, `tolerations` and the quota room check
/// write name the plugin): `resourcequota`, `podtolerationrestriction`. Metric labels.
pub fn withheld_by(warnings: &[String]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (marker, label) in [
        ("ResourceQuota", "resourcequota"),
        ("PodTolerationRestriction", "podtolerationrestriction"),
    ] {
        if warnings.iter().any(|w| w.contains(marker)) {
            out.push(label);
        }
    }
    out
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

/// A node as the node cap needs it (see `sizing::nodes`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// (key, value, effect) of each taint.
    pub taints: Vec<(String, String, String)>,
    /// `status.allocatable` in bytes and millicores (0: not reported).
    pub allocatable: crate::quantity::PerResource<u64>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
}

impl NodeInfo {
    /// From a Node object (as the API serves it); `None` without a name.
    pub fn from_object(obj: &serde_json::Value) -> Option<NodeInfo> {
        use crate::quantity::{PerResource, Resource};
        let name = obj.pointer("/metadata/name")?.as_str()?.to_string();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        let text = |t: &serde_json::Value, k: &str| {
            t.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let taints = obj
            .pointer("/spec/taints")
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
            .map(|t| (text(t, "key"), text(t, "value"), text(t, "effect")))
            .collect();
        let allocatable = PerResource::from_fn(|r: Resource| {
            obj.pointer(&format!("/status/allocatable/{}", r.as_str()))
                .and_then(|q| q.as_str())
                .and_then(|q| r.parse(q).ok())
                .unwrap_or(0)
        });
        let unschedulable = obj
            .pointer("/spec/unschedulable")
            .and_then(|u| u.as_bool())
            .unwrap_or(false);
        Some(NodeInfo {
            name,
            labels,
            taints,
            allocatable,
            unschedulable,
        })
    }
}

/// The cluster's nodes; `known: false` (no cluster view, or before the first list) caps
/// nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nodes {
    pub known: bool,
    pub nodes: Arc<Vec<NodeInfo>>,
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
    /// The cluster's nodes (the node cap); unknown by default.
    fn nodes(&self) -> Nodes {
        Nodes::default()
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
    /// Nodes in the input (offline `mutate` caps raises at them when there are any).
    pub nodes: Vec<NodeInfo>,
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
                let map = |k: &str| -> BTreeMap<String, String> {
                    meta.and_then(|m| m.get(k))
                        .and_then(|l| serde_json::from_value(l.clone()).ok())
                        .unwrap_or_default()
                };
                let entry = Arc::make_mut(self.namespaces.entry(name.to_string()).or_default());
                entry.labels = map("labels");
                entry.tolerations = TolerationRestriction::from_annotations(&map("annotations"));
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
                let room = QuotaRoom::from_object(obj);
                let entry = self.namespaces.entry(ns.to_string()).or_default();
                Arc::make_mut(entry).quotas.push(room);
                true
            }
            "Node" => match NodeInfo::from_object(obj) {
                Some(n) => {
                    self.nodes.push(n);
                    true
                }
                None => false,
            },
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
                    global_default: obj
                        .get("globalDefault")
                        .and_then(|g| g.as_bool())
                        .unwrap_or(false),
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
    fn nodes(&self) -> Nodes {
        Nodes {
            known: !self.nodes.is_empty(),
            nodes: Arc::new(self.nodes.clone()),
        }
    }
    fn priority_classes(&self) -> PriorityClasses {
        PriorityClasses {
            source: self.class_source,
            classes: self.priority_classes.clone(),
        }
    }
}
