//! What admission reads from the mirrors, indexed once per change of the watched data
//! instead of scanned per review: a namespace's LimitRanges, quotas and labels, the
//! PriorityClasses, and the resources each workload's HPAs scale on. Each index is
//! rebuilt on the first read after its mirrors moved (see `Mirror::generation`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::LimitRangeSpec;

use rightsizer_core::cluster::{NamespaceFacts, NodeInfo, QuotaRoom};
use rightsizer_core::policy::schema::PriorityClassInfo;
use rightsizer_core::quantity::Resource;
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::WorkloadKey;

use super::{HpaTarget, NamespaceMeta, NsName};
use crate::kube::mirror::Mirror;
use crate::lock::RwLockExt;

/// A value derived from mirrors, with the generation it was built at.
struct Derived<T> {
    slot: RwLock<Option<(u64, Arc<T>)>>,
}

impl<T> Default for Derived<T> {
    fn default() -> Self {
        Derived {
            slot: RwLock::new(None),
        }
    }
}

impl<T> Derived<T> {
    /// The value built at `stamp`, building it if the held one is older.
    fn get(&self, stamp: u64, build: impl FnOnce() -> T) -> Arc<T> {
        if let Some((s, v)) = &*self.slot.read_locked() {
            if *s == stamp {
                return v.clone();
            }
        }
        let v = Arc::new(build());
        *self.slot.write_locked() = Some((stamp, v.clone()));
        v
    }
}

/// The indexes over the fact mirrors (held by `KubeFacts`).
#[derive(Default)]
pub struct FactIndex {
    namespaces: Derived<HashMap<String, Arc<NamespaceFacts>>>,
    classes: Derived<BTreeMap<String, PriorityClassInfo>>,
    hpas: Derived<HashMap<WorkloadKey, Vec<Resource>>>,
    nodes: Derived<Vec<NodeInfo>>,
}

/// The mirrors a namespace's facts come from.
pub struct NamespaceSources<'a> {
    pub labels: &'a Mirror<String, NamespaceMeta>,
    pub limit_ranges: &'a Mirror<NsName, LimitRangeSpec>,
    pub quotas: &'a Mirror<NsName, QuotaRoom>,
}

impl FactIndex {
    /// One namespace's facts (empty for a namespace nothing is known about).
    pub fn namespace(&self, src: &NamespaceSources, name: &str) -> Arc<NamespaceFacts> {
        // Generations only grow, so their sum moves whenever one of them does.
        let stamp =
            src.labels.generation() + src.limit_ranges.generation() + src.quotas.generation();
        let all = self.namespaces.get(stamp, || by_namespace(src));
        all.get(name).cloned().unwrap_or_default()
    }

    pub fn priority_classes(
        &self,
        m: &Mirror<String, PriorityClassInfo>,
    ) -> Arc<BTreeMap<String, PriorityClassInfo>> {
        self.classes.get(m.generation(), || {
            m.read()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// The nodes, by name.
    pub fn nodes(&self, m: &Mirror<String, NodeInfo>) -> Arc<Vec<NodeInfo>> {
        self.nodes.get(m.generation(), || {
            let mut v: Vec<NodeInfo> = m.read().values().cloned().collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        })
    }

    /// Resources the HPAs targeting `key` scale on (sorted, no duplicates).
    pub fn hpa_resources(&self, m: &Mirror<NsName, HpaTarget>, key: &WorkloadKey) -> Vec<Resource> {
        self.hpas
            .get(m.generation(), || by_target(&m.read()))
            .get(key)
            .cloned()
            .unwrap_or_default()
    }
}

fn by_namespace(src: &NamespaceSources) -> HashMap<String, Arc<NamespaceFacts>> {
    let mut out: HashMap<String, NamespaceFacts> = HashMap::new();
    for (ns, meta) in src.labels.read().iter() {
        let f = out.entry(ns.clone()).or_default();
        f.labels = meta.labels.clone();
        f.tolerations = meta.tolerations.clone();
    }
    // Stable order within a namespace (by object name), whatever the map's.
    let mut ranges: Vec<(&NsName, &LimitRangeSpec)> = Vec::new();
    let lr = src.limit_ranges.read();
    ranges.extend(lr.iter());
    ranges.sort_by(|a, b| a.0.cmp(b.0));
    for ((ns, _), spec) in ranges {
        out.entry(ns.clone())
            .or_default()
            .limit_ranges
            .push(spec.clone());
    }
    let q = src.quotas.read();
    let mut quotas: Vec<(&NsName, &QuotaRoom)> = q.iter().collect();
    quotas.sort_by(|a, b| (&a.0 .0, &a.1.name).cmp(&(&b.0 .0, &b.1.name)));
    for ((ns, _), room) in quotas {
        out.entry(ns.clone()).or_default().quotas.push(room.clone());
    }
    out.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

fn by_target(hpas: &HashMap<NsName, HpaTarget>) -> HashMap<WorkloadKey, Vec<Resource>> {
    let mut out: HashMap<WorkloadKey, Vec<Resource>> = HashMap::new();
    for ((ns, _), t) in hpas {
        let Some(kind) = WorkloadKind::from_kind(None, &t.kind) else {
            continue;
        };
        let key = WorkloadKey {
            namespace: ns.clone(),
            kind,
            name: t.name.clone(),
        };
        out.entry(key)
            .or_default()
            .extend(t.resources.iter().copied());
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    fn key(ns: &str, n: &str) -> NsName {
        (ns.to_string(), n.to_string())
    }

    #[test]
    fn hpas_by_target_workload() {
        let m = Mirror::<NsName, HpaTarget>::new(Gauge::default());
        let ix = FactIndex::default();
        let hpa = |kind: &str, name: &str, r: Vec<Resource>| HpaTarget {
            kind: kind.into(),
            name: name.into(),
            resources: r,
        };
        m.put(
            key("a", "h1"),
            hpa("Deployment", "api", vec![Resource::Memory]),
        );
        m.put(
            key("a", "h2"),
            hpa("Deployment", "api", vec![Resource::Cpu, Resource::Memory]),
        );
        m.put(
            key("b", "h3"),
            hpa("Deployment", "api", vec![Resource::Cpu]),
        );
        let api = |ns: &str| WorkloadKey {
            namespace: ns.into(),
            kind: WorkloadKind::Deployment,
            name: "api".into(),
        };
        assert_eq!(
            ix.hpa_resources(&m, &api("a")),
            vec![Resource::Memory, Resource::Cpu]
        );
        assert_eq!(ix.hpa_resources(&m, &api("b")), vec![Resource::Cpu]);
        assert!(ix.hpa_resources(&m, &api("c")).is_empty());
        // A change after the index was built is seen on the next read.
        m.put(
            key("c", "h4"),
            hpa("Deployment", "api", vec![Resource::Memory]),
        );
        assert_eq!(ix.hpa_resources(&m, &api("c")), vec![Resource::Memory]);
    }

    #[test]
    fn namespace_facts_from_their_own_namespace_only() {
        let labels = Mirror::<String, NamespaceMeta>::new(Gauge::default());
        let limit_ranges = Mirror::<NsName, LimitRangeSpec>::new(Gauge::default());
        let quotas = Mirror::<NsName, QuotaRoom>::new(Gauge::default());
        let src = NamespaceSources {
            labels: &labels,
            limit_ranges: &limit_ranges,
            quotas: &quotas,
        };
        let ix = FactIndex::default();
        labels.put(
            "shop".into(),
            NamespaceMeta {
                labels: BTreeMap::from([("team".into(), "a".into())]),
                ..Default::default()
            },
        );
        let room = |name: &str| QuotaRoom {
            name: name.into(),
            ..Default::default()
        };
        quotas.put(key("shop", "q2"), room("q2"));
        quotas.put(key("shop", "q1"), room("q1"));
        quotas.put(key("other", "q3"), room("q3"));
        let shop = ix.namespace(&src, "shop");
        assert_eq!(shop.labels.get("team").map(String::as_str), Some("a"));
        let names: Vec<&str> = shop.quotas.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["q1", "q2"]);
        assert!(shop.limit_ranges.is_empty());
        limit_ranges.put(key("shop", "lr"), LimitRangeSpec::default());
        assert_eq!(ix.namespace(&src, "shop").limit_ranges.len(), 1);
        assert_eq!(*ix.namespace(&src, "nowhere"), NamespaceFacts::default());
    }
}
