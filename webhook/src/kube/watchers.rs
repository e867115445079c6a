//! Spawning the fact watchers. Metadata-only watches where the metadata suffices
//! (namespaces, ReplicaSets, Jobs, workloads), so specs never cross the wire.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DynamicObject, ObjectMeta, PartialObjectMeta};
use kube::discovery::ApiResource;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use crate::cluster::QuotaRoom;
use crate::kube::committed::{parse_annotation, COMMITTED_ANNOTATION};
use crate::kube::facts::{
    controller_of, hpa_target, workload_resource, KubeFacts, NsName, Owner, WorkloadMeta,
    WATCHED_WORKLOADS,
};
use crate::kube::mirror::{self, Change, Mirror};
use crate::policy::schema::PriorityClassInfo;
use crate::recommendation::WorkloadKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: &'static str,
}

pub(crate) struct Spawned {
    pub facts: Arc<KubeFacts>,
    pub tasks: Vec<JoinHandle<()>>,
    sizes: Family<ResourceLabel, Gauge>,
}

impl Spawned {
    /// The `rightsizer_watch_objects` gauge of one resource.
    pub fn gauge(&self, resource: &'static str) -> Gauge {
        self.sizes
            .get_or_create(&ResourceLabel { resource })
            .clone()
    }
}

fn ns_name(meta: &ObjectMeta) -> NsName {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn ignore<K, V>(_: Change<'_, K, V>) {}

/// The part of a workload's metadata admission, policy selection and the migration read.
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
    }
}

/// Room left in a quota (hard minus used, as the quota controller last counted).
fn quota_room(q: &ResourceQuota) -> QuotaRoom {
    let strings = |m: Option<&BTreeMap<String, Quantity>>| -> BTreeMap<String, String> {
        m.into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    };
    QuotaRoom::from_quantities(
        &q.name_any(),
        &strings(q.spec.as_ref().and_then(|s| s.hard.as_ref())),
        &strings(q.status.as_ref().and_then(|s| s.used.as_ref())),
    )
}

fn owner_of<K>(o: &PartialObjectMeta<K>) -> Option<(NsName, Option<Owner>)> {
    Some((ns_name(&o.metadata), controller_of(&o.metadata)))
}

pub(crate) fn spawn(
    client: Client,
    cronjobs: &ApiResource,
    hpas: &ApiResource,
    registry: &mut Registry,
) -> Spawned {
    let sizes = Family::<ResourceLabel, Gauge>::default();
    registry.register(
        "rightsizer_watch_objects",
        "Objects held by the watchers, by resource",
        sizes.clone(),
    );
    let gauge = |resource: &'static str| sizes.get_or_create(&ResourceLabel { resource }).clone();
    let mut workloads = HashMap::new();
    for kind in WATCHED_WORKLOADS {
        workloads.insert(kind, Mirror::new(gauge(workload_resource(kind))));
    }
    let facts = KubeFacts {
        namespaces: Mirror::new(gauge("namespaces")),
        limit_ranges: Mirror::new(gauge("limitranges")),
        quotas: Mirror::new(gauge("resourcequotas")),
        priority_classes: Mirror::new(gauge("priorityclasses")),
        replica_sets: Mirror::new(gauge("replicasets")),
        jobs: Mirror::new(gauge("jobs")),
        hpas: Mirror::new(gauge("horizontalpodautoscalers")),
        workloads,
        index: Default::default(),
    };
    let mut tasks = Vec::new();
    let cfg = watcher::Config::default;
    let t = &mut tasks;

    t.push(tokio::spawn(mirror::run(
        "namespaces",
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            cfg(),
        )
        .default_backoff(),
        facts.namespaces.clone(),
        |o: &PartialObjectMeta<Namespace>| {
            Some((o.name_any(), o.metadata.labels.clone().unwrap_or_default()))
        },
        ignore,
    )));
    t.push(tokio::spawn(mirror::run(
        "limitranges",
        watcher(Api::<LimitRange>::all(client.clone()), cfg()).default_backoff(),
        facts.limit_ranges.clone(),
        |o: &LimitRange| Some((ns_name(&o.metadata), o.spec.clone().unwrap_or_default())),
        ignore,
    )));
    t.push(tokio::spawn(mirror::run(
        "resourcequotas",
        watcher(Api::<ResourceQuota>::all(client.clone()), cfg()).default_backoff(),
        facts.quotas.clone(),
        |o: &ResourceQuota| Some((ns_name(&o.metadata), quota_room(o))),
        ignore,
    )));
    t.push(tokio::spawn(mirror::run(
        "priorityclasses",
        watcher(Api::<PriorityClass>::all(client.clone()), cfg()).default_backoff(),
        facts.priority_classes.clone(),
        |o: &PriorityClass| {
            Some((
                o.name_any(),
                PriorityClassInfo {
                    value: o.value,
                    preemption_policy: o.preemption_policy.clone(),
                },
            ))
        },
        ignore,
    )));
    t.push(tokio::spawn(mirror::run(
        "replicasets",
        watcher(
            Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()),
            cfg(),
        )
        .default_backoff(),
        facts.replica_sets.clone(),
        owner_of::<ReplicaSet>,
        ignore,
    )));
    t.push(tokio::spawn(mirror::run(
        "jobs",
        watcher(Api::<PartialObjectMeta<Job>>::all(client.clone()), cfg()).default_backoff(),
        facts.jobs.clone(),
        owner_of::<Job>,
        ignore,
    )));
    t.push(tokio::spawn(mirror::run(
        "horizontalpodautoscalers",
        watcher(Api::<DynamicObject>::all_with(client.clone(), hpas), cfg()).default_backoff(),
        facts.hpas.clone(),
        |o: &DynamicObject| Some((ns_name(&o.metadata), hpa_target(o.data.get("spec")?)?)),
        ignore,
    )));
    for (kind, m) in &facts.workloads {
        let m = m.clone();
        let derive = |o: &ObjectMeta| Some((ns_name(o), workload_meta(o)));
        let task = match kind {
            WorkloadKind::Deployment => tokio::spawn(mirror::run(
                "deployments",
                watcher(
                    Api::<PartialObjectMeta<Deployment>>::all(client.clone()),
                    cfg(),
                )
                .default_backoff(),
                m,
                move |o: &PartialObjectMeta<Deployment>| derive(&o.metadata),
                ignore,
            )),
            WorkloadKind::StatefulSet => tokio::spawn(mirror::run(
                "statefulsets",
                watcher(
                    Api::<PartialObjectMeta<StatefulSet>>::all(client.clone()),
                    cfg(),
                )
                .default_backoff(),
                m,
                move |o: &PartialObjectMeta<StatefulSet>| derive(&o.metadata),
                ignore,
            )),
            WorkloadKind::DaemonSet => tokio::spawn(mirror::run(
                "daemonsets",
                watcher(
                    Api::<PartialObjectMeta<DaemonSet>>::all(client.clone()),
                    cfg(),
                )
                .default_backoff(),
                m,
                move |o: &PartialObjectMeta<DaemonSet>| derive(&o.metadata),
                ignore,
            )),
            _ => tokio::spawn(mirror::run(
                "cronjobs",
                watcher(
                    Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), cronjobs),
                    cfg(),
                )
                .default_backoff(),
                m,
                move |o: &PartialObjectMeta<DynamicObject>| derive(&o.metadata),
                ignore,
            )),
        };
        t.push(task);
    }
    Spawned {
        facts: Arc::new(facts),
        tasks,
        sizes,
    }
}
