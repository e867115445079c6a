//! What the analyzer knows about a container, as the admission path reads it.
//!
//! Recommendations are keyed by `namespace/kind/name/container`, where kind/name is the
//! top-level workload (a Deployment, not its ReplicaSet; a CronJob, not its Job). The
//! same JSON is served by `GET /recommendations` and read by `mutate --recommendations`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::quantity::Resource;
use crate::rules::{Observed, Sizes};

pub mod fit;

use crate::workload::kind::WorkloadKind;
use crate::workload::WorkloadKey;

/// A workload's container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerKey {
    pub workload: WorkloadKey,
    pub container: String,
}

impl ContainerKey {
    pub fn new(workload: WorkloadKey, container: impl Into<String>) -> Self {
        ContainerKey {
            workload,
            container: container.into(),
        }
    }

    /// Parse `namespace/kind/name/container`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.splitn(4, '/');
        let namespace = it.next()?.to_string();
        let kind = WorkloadKind::parse(it.next()?)?;
        let name = it.next()?.to_string();
        let container = it.next()?.to_string();
        if namespace.is_empty() || name.is_empty() || container.is_empty() {
            return None;
        }
        Some(ContainerKey {
            workload: WorkloadKey {
                namespace,
                kind,
                name,
            },
            container,
        })
    }
}

impl fmt::Display for ContainerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.workload, self.container)
    }
}

impl Serialize for ContainerKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContainerKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContainerKey::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid key {s:?}: expected namespace/kind/name/container with kind one of Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, KnativeService, KnativeConfiguration"
            ))
        })
    }
}

/// A committed (enforced) value and why it was set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Committed {
    #[serde(flatten)]
    pub sizes: Sizes,
    /// Unix seconds of the commit.
    #[serde(default)]
    pub at: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Everything known about one resource of one container.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRecommendation {
    /// Observed usage (memory: the larger of working set and RSS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
    /// What the analyzer recommends now (after its hysteresis, cooldown and OOM rules).
    /// When absent, admission computes it from `observed` with the policy's rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended: Option<Sizes>,
    /// The committed value that enforce mode applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<Committed>,
    /// Minimum memory after a recent OOM kill (bytes), enforced until `oomHoldUntil`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_floor: Option<u64>,
    /// Why the value is what it is (e.g. "oom", "hpa", "not enough data").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// Everything known about one container.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecommendation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ResourceRecommendation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<ResourceRecommendation>,
    /// Unix seconds of the last analyzer update.
    #[serde(default)]
    pub updated_at: u64,
    /// Set when the analyzer could not refresh this entry on its last cycle.
    #[serde(default)]
    pub stale: bool,
    /// Resources an HPA scales this workload on; their requests are left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hpa_resources: Vec<Resource>,
    /// Knative concurrency proposal (on the serving container of a Knative workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knative: Option<KnativeRecommendation>,
    /// The load model fitted for this container (memory against load), with its gate verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_model: Option<fit::FitReport>,
}

/// Knative autoscaling values the analyzer proposes; applied only where the user set none.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnativeRecommendation {
    /// `autoscaling.knative.dev/target` (soft concurrency target, >= 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// `spec.template.spec.containerConcurrency` (hard bound, 0..=1000; 0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl ContainerRecommendation {
    pub fn resource(&self, r: Resource) -> Option<&ResourceRecommendation> {
        match r {
            Resource::Memory => self.memory.as_ref(),
            Resource::Cpu => self.cpu.as_ref(),
        }
    }

    pub fn resource_mut(&mut self, r: Resource) -> &mut Option<ResourceRecommendation> {
        match r {
            Resource::Memory => &mut self.memory,
            Resource::Cpu => &mut self.cpu,
        }
    }
}

/// Read access to recommendations. Admission calls this once per container; it must
/// not block on I/O.
pub trait RecommendationSource: Send + Sync {
    fn get(&self, key: &ContainerKey) -> Option<ContainerRecommendation>;
    /// The recommendations of some containers of one workload, in `containers` order (one
    /// review's lookups). Sources that find the workload first override this to find it
    /// once rather than once per container.
    fn get_workload(
        &self,
        workload: &WorkloadKey,
        containers: &[&str],
    ) -> Vec<Option<ContainerRecommendation>> {
        let mut key = ContainerKey::new(workload.clone(), "");
        containers
            .iter()
            .map(|c| {
                (*c).clone_into(&mut key.container);
                self.get(&key)
            })
            .collect()
    }
    /// A copy of everything, for `GET /recommendations`.
    fn snapshot(&self) -> Snapshot;
    /// Every servable entry, without copying them all first (the metrics collector).
    fn visit(&self, f: &mut dyn FnMut(&ContainerKey, &ContainerRecommendation)) {
        for (k, r) in &self.snapshot().recommendations {
            f(k, r);
        }
    }
}

/// A point-in-time copy of recommendations: the JSON format of `GET /recommendations`
/// and of `mutate --recommendations FILE`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Unix seconds when the snapshot was taken.
    #[serde(default)]
    pub generated_at: u64,
    #[serde(deserialize_with = "packed_map")]
    pub recommendations: BTreeMap<ContainerKey, ContainerRecommendation>,
}

/// Read the entries into a list, then build the map from it in one go. Inserted one by
/// one in key order (as a JSON object arrives), the map's nodes stay about half full:
/// with 100k entries that was a third of the webhook's memory.
fn packed_map<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct Entries<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> serde::de::Visitor<'de> for Entries<K, V> {
        type Value = Vec<(K, V)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of recommendations")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut v = Vec::with_capacity(m.size_hint().unwrap_or(0));
            while let Some(entry) = m.next_entry()? {
                v.push(entry);
            }
            Ok(v)
        }
    }
    // Later duplicates win, as with inserting one by one.
    Ok(d.deserialize_map(Entries(std::marker::PhantomData))?
        .into_iter()
        .collect())
}

impl RecommendationSource for Snapshot {
    fn get(&self, key: &ContainerKey) -> Option<ContainerRecommendation> {
        self.recommendations.get(key).cloned()
    }
    fn snapshot(&self) -> Snapshot {
        self.clone()
    }
    fn visit(&self, f: &mut dyn FnMut(&ContainerKey, &ContainerRecommendation)) {
        for (k, r) in &self.recommendations {
            f(k, r);
        }
    }
}

/// No recommendations at all (no Prometheus configured).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRecommendations;

impl RecommendationSource for NoRecommendations {
    fn get(&self, _key: &ContainerKey) -> Option<ContainerRecommendation> {
        None
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip() {
        let k = ContainerKey::parse("shop/Deployment/api/app").unwrap();
        assert_eq!(k.workload.kind, WorkloadKind::Deployment);
        assert_eq!(k.to_string(), "shop/Deployment/api/app");
        assert!(ContainerKey::parse("shop/Widget/api/app").is_none());
        assert!(ContainerKey::parse("shop/Deployment/api").is_none());
    }

    #[test]
    fn snapshot_map_sorted_and_later_duplicate_wins() {
        let snap: Snapshot = serde_json::from_str(
            r#"{"recommendations": {
                "b/Pod/x/c": {"updatedAt": 1},
                "a/Pod/x/c": {"updatedAt": 2},
                "b/Pod/x/c": {"updatedAt": 3}}}"#,
        )
        .unwrap();
        let got: Vec<_> = snap
            .recommendations
            .iter()
            .map(|(k, r)| (k.to_string(), r.updated_at))
            .collect();
        assert_eq!(
            got,
            [("a/Pod/x/c".to_string(), 2), ("b/Pod/x/c".to_string(), 3)]
        );
    }

    #[test]
    fn snapshot_reads_quantities_in_bytes() {
        let j = r#"{"recommendations":{"shop/Deployment/api/app":{
            "memory":{"observed":{"avg":1,"p95":2,"max":3,"samples":10,"historySeconds":60},
                      "committed":{"request":100,"limit":200,"at":5,"reason":"r"}}}}}"#;
        let s: Snapshot = serde_json::from_str(j).unwrap();
        let k = ContainerKey::parse("shop/Deployment/api/app").unwrap();
        let r = s.get(&k).unwrap();
        let m = r.memory.unwrap();
        assert_eq!(m.observed.unwrap().p95, 2.0);
        assert_eq!(m.committed.unwrap().sizes.limit, Some(200));
        let back = serde_json::to_string(&s).unwrap();
        assert!(back.contains("\"shop/Deployment/api/app\""));
    }
}
