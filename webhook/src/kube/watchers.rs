//! Starting the watchers through one generic arm (`Watches::mirror`: watch, mirror,
//! metrics, readiness), and the fact watchers. Metadata-only watches where the metadata
//! suffices (namespaces, ReplicaSets, Jobs), so specs never cross the wire. Workloads are
//! watched whole, since policy selection reads their pod template's labels too; each is
//! cut down to [`WorkloadMeta`] as it arrives.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, Node, ResourceQuota};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DynamicObject, ObjectMeta, PartialObjectMeta};
use kube::discovery::ApiResource;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use rightsizer_core::cluster::{NodeInfo, QuotaRoom};
use rightsizer_core::policy::schema::PriorityClassInfo;
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::resolve::Owner;

use crate::kube::committed::{parse_annotation, COMMITTED_ANNOTATION};
use crate::kube::discovery::WorkloadApis;
use crate::kube::facts::{
    controller_of, hpa_target, workload_resource, KubeFacts, NamespaceMeta, NsName, WorkloadMeta,
};
use crate::kube::mirror::{self, Change, Mirror};
use crate::kube::sync::WatchBoard;

/// Starts watches: one generic arm for every watcher, each tracked on the board
/// (sizes, errors, first list) and each a task ended by `KubeHandles::shutdown`.
pub(crate) struct Watches {
    pub client: Client,
    pub board: Arc<WatchBoard>,
    pub tasks: Vec<JoinHandle<()>>,
}

impl Watches {
    /// An empty mirror sized on the board as `resource`.
    pub fn new_mirror<Key: Eq + Hash, V>(&self, resource: &'static str) -> Arc<Mirror<Key, V>> {
        Mirror::new(self.board.size(resource))
    }

    /// Watch `api` into `mirror` (see [`mirror::run`]), gating readiness on its first
    /// complete list; failed calls are counted and retried with backoff.
    pub fn mirror<K, Key, V>(
        &mut self,
        resource: &'static str,
        api: Api<K>,
        config: watcher::Config,
        mirror: Arc<Mirror<Key, V>>,
        derive: impl Fn(&K) -> Option<(Key, V)> + Send + 'static,
        on_change: impl FnMut(Change<'_, Key, V>) + Send + 'static,
    ) where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
        Key: Eq + Hash + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let errors = self.board.errors(resource);
        let stream = watcher(api, config).default_backoff().inspect(move |r| {
            if r.is_err() {
                errors.inc();
            }
        });
        let first_list = self.board.track(resource, &mirror);
        let watch = mirror::run(resource, stream, mirror, derive, on_change);
        self.tasks.push(tokio::spawn(async move {
            futures::join!(watch, first_list);
        }));
    }
}

fn ns_name(meta: &ObjectMeta) -> NsName {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn ignore<K, V>(_: Change<'_, K, V>) {}

/// The part of a workload admission, policy selection and the migration read: its
/// metadata and its pod template's labels (at the kind's template path).
pub(crate) fn workload_facts(kind: WorkloadKind, o: &DynamicObject) -> WorkloadMeta {
    let (_, pod_meta) = kind.pod_paths();
    let template_labels = o
        .data
        .pointer(pod_meta)
        .and_then(|m| m.get("labels"))
        .and_then(|l| serde_json::from_value::<BTreeMap<String, String>>(l.clone()).ok())
        .unwrap_or_default();
    WorkloadMeta {
        template_labels: Arc::new(template_labels),
        replicas: o
            .data
            .pointer("/spec/replicas")
            .and_then(serde_json::Value::as_u64)
            .and_then(|r| u32::try_from(r).ok()),
        ..workload_meta(&o.metadata)
    }
}

fn workload_meta(meta: &ObjectMeta) -> WorkloadMeta {
    let annotations = meta.annotations.as_ref();
    let own: BTreeMap<String, String> = annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("rightsizer.io/") && k.as_str() != COMMITTED_ANNOTATION)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let committed = match annotations.and_then(|a| a.get(COMMITTED_ANNOTATION)) {
        None => BTreeMap::new(),
        Some(text) => match parse_annotation(text) {
            Ok((c, warnings)) => {
                for w in warnings {
                    tracing::warn!(name = ?meta.name, namespace = ?meta.namespace, "{COMMITTED_ANNOTATION}: {w}");
                }
                c
            }
            Err(e) => {
                tracing::warn!(name = ?meta.name, namespace = ?meta.namespace, error = %e, "unreadable {COMMITTED_ANNOTATION}");
                BTreeMap::new()
            }
        },
    };
    WorkloadMeta {
        uid: meta.uid.clone(),
        annotations: Arc::new(own),
        labels: Arc::new(meta.labels.clone().unwrap_or_default()),
        legacy_committed: Arc::new(committed),
        template_labels: Arc::default(),
        replicas: None,
    }
}

/// Room left in a quota (hard minus used, as the quota controller last counted) and
/// the Pods it counts: read as JSON by the one reader offline runs use too.
fn quota_room(q: &ResourceQuota) -> Option<QuotaRoom> {
    serde_json::to_value(q)
        .ok()
        .map(|v| QuotaRoom::from_object(&v))
}

fn owner_of<K>(o: &PartialObjectMeta<K>) -> Option<(NsName, Option<Owner>)> {
    Some((ns_name(&o.metadata), controller_of(&o.metadata)))
}

/// The fact watchers (every `KubeFacts` mirror).
pub(crate) fn spawn(
    w: &mut Watches,
    apis: &WorkloadApis,
    hpas: &ApiResource,
    scaled: rightsizer_core::workload::kind::ScaledKinds,
) -> Arc<KubeFacts> {
    let workloads: HashMap<_, _> = apis
        .keys()
        .map(|&kind| (kind, w.new_mirror(workload_resource(kind))))
        .collect();
    let facts = KubeFacts {
        namespaces: w.new_mirror("namespaces"),
        limit_ranges: w.new_mirror("limitranges"),
        quotas: w.new_mirror("resourcequotas"),
        priority_classes: w.new_mirror("priorityclasses"),
        nodes: w.new_mirror("nodes"),
        replica_sets: w.new_mirror("replicasets"),
        jobs: w.new_mirror("jobs"),
        hpas: w.new_mirror("horizontalpodautoscalers"),
        workloads,
        bare_pods: Default::default(),
        scaled,
        index: Default::default(),
    };
    let cfg = watcher::Config::default;
    let client = w.client.clone();

    w.mirror(
        "namespaces",
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        cfg(),
        facts.namespaces.clone(),
        |o| Some((o.name_any(), NamespaceMeta::of(&o.metadata))),
        ignore,
    );
    w.mirror(
        "limitranges",
        Api::<LimitRange>::all(client.clone()),
        cfg(),
        facts.limit_ranges.clone(),
        |o| Some((ns_name(&o.metadata), o.spec.clone().unwrap_or_default())),
        ignore,
    );
    w.mirror(
        "resourcequotas",
        Api::<ResourceQuota>::all(client.clone()),
        cfg(),
        facts.quotas.clone(),
        |o| Some((ns_name(&o.metadata), quota_room(o)?)),
        ignore,
    );
    w.mirror(
        "priorityclasses",
        Api::<PriorityClass>::all(client.clone()),
        cfg(),
        facts.priority_classes.clone(),
        |o| {
            let info = PriorityClassInfo {
                value: o.value,
                preemption_policy: o.preemption_policy.clone(),
                global_default: o.global_default.unwrap_or(false),
            };
            Some((o.name_any(), info))
        },
        ignore,
    );
    w.mirror(
        "nodes",
        Api::<Node>::all(client.clone()),
        cfg(),
        facts.nodes.clone(),
        // Through the core's one reading of a Node (offline `mutate` reads them too).
        |o| {
            let n = NodeInfo::from_object(&serde_json::to_value(o).ok()?)?;
            Some((n.name.clone(), n))
        },
        ignore,
    );
    w.mirror(
        "replicasets",
        Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()),
        cfg(),
        facts.replica_sets.clone(),
        owner_of,
        ignore,
    );
    w.mirror(
        "jobs",
        Api::<PartialObjectMeta<Job>>::all(client.clone()),
        cfg(),
        facts.jobs.clone(),
        owner_of,
        ignore,
    );
    w.mirror(
        "horizontalpodautoscalers",
        Api::<DynamicObject>::all_with(client.clone(), hpas),
        cfg(),
        facts.hpas.clone(),
        |o| Some((ns_name(&o.metadata), hpa_target(o.data.get("spec")?)?)),
        ignore,
    );
    for (kind, m) in &facts.workloads {
        // Every workload kind through one dynamic type: the kind is in the ApiResource,
        // built from the kind table (at the discovered version).
        let kind = *kind;
        w.mirror(
            workload_resource(kind),
            Api::<DynamicObject>::all_with(client.clone(), &apis[&kind]),
            cfg(),
            m.clone(),
            move |o| Some((ns_name(&o.metadata), workload_facts(kind, o))),
            ignore,
        );
    }
    Arc::new(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watchers keep a workload's template labels, where its kind keeps them.
    #[test]
    fn workload_facts_hold_template_labels() {
        for (kind, object) in [
            (
                WorkloadKind::Deployment,
                serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                    "spec": {"template": {"metadata": {"labels": {"tier": "gold"}}}}}),
            ),
            (
                WorkloadKind::CronJob,
                serde_json::json!({"apiVersion": "batch/v1", "kind": "CronJob",
                    "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                    "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"labels": {"tier": "gold"}}}}}}}),
            ),
        ] {
            let o: DynamicObject = serde_json::from_value(object).unwrap();
            let m = workload_facts(kind, &o);
            let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
            assert_eq!(*m.labels, one("app", "web"), "{kind:?}");
            assert_eq!(*m.template_labels, one("tier", "gold"), "{kind:?}");
        }
    }

    /// `spec.replicas` where written (the updater's last-replica rule); none elsewhere.
    #[test]
    fn workload_facts_hold_spec_replicas() {
        for (spec, want) in [
            (serde_json::json!({"replicas": 1}), Some(1)),
            (serde_json::json!({"replicas": 3}), Some(3)),
            (serde_json::json!({}), None),
        ] {
            let o: DynamicObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": "shop"}, "spec": spec}))
            .unwrap();
            assert_eq!(workload_facts(WorkloadKind::StatefulSet, &o).replicas, want);
        }
    }
}
