//! rightsizer's Kubernetes side against a real kube-apiserver v1.20.2 (with
//! kube-controller-manager and etcd) on loopback: watchers, policy ConfigMaps, owner
//! chains, committed state in Rightsizing objects (written by the leader, read by a second
//! replica, garbage-collected with the workload, migrated from the legacy annotation), the
//! analyzer's commits and a failover as the webhook's ServiceAccount, Events, and Lease
//! hand-over. Every assertion reads what the apiserver
//! stored or what rightsizer's stores hold after the apiserver told them.
//!
//! One control plane serves the whole binary; tests take a lock and run one at a time,
//! each in namespaces of its own. Without the control plane binaries libtest reports the
//! tests ignored with the reason (tests/build.rs sets `has_control_plane`), except under
//! `CI=true`, where that is a failure (run `tests/cluster/build.sh`).

use crate::cluster;
use crate::prometheus;
use crate::scenario;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{admin_status, ControlPlane};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use prometheus::TestProm;
use prometheus_client::registry::Registry;
use rightsizer::admission::{AdmitConfig, Admitter};
use rightsizer::analyzer::ksm::{FactsSink, KsmMode, WorkloadFacts};
use rightsizer::analyzer::policies::{DefaultPolicy, PoliciesLookup};
use rightsizer::analyzer::prom::PromConfig;
use rightsizer::analyzer::{Analyzer, AnalyzerConfig};
use rightsizer::kube::committed::COMMITTED_ANNOTATION;
use rightsizer::kube::events::{EventLimits, Published, Recorder};
use rightsizer::kube::events::{EventType, Target};
use rightsizer::kube::leader::{LeaseTimings, LEASE_NAME};
use rightsizer::kube::pods::PodWatch;
use rightsizer::kube::rightsizing;
use rightsizer::kube::{KubeHandles, KubeOptions};
use rightsizer::policies::store::PolicyStore;
use rightsizer_core::analysis::container_state::{ContainerState, OomHold, Saved};
use rightsizer_core::analysis::queries::QueryConfig;
use rightsizer_core::cluster::ClusterFacts;
use rightsizer_core::quantity::Resource;
use rightsizer_core::recommendation::{
    Committed, ContainerKey, NoRecommendations, RecommendationSource,
};
use rightsizer_core::rules::Sizes;
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::WorkloadKey;
use serde_json::{json, Value};

mod knative_writer;
mod updater;

static PLANE: tokio::sync::OnceCell<Result<ControlPlane, (bool, String)>> =
    tokio::sync::OnceCell::const_new();
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn init() -> Result<ControlPlane, (bool, String)> {
    if let Some(reason) = cluster::missing_prerequisite() {
        return Err((true, reason));
    }
    let plane = ControlPlane::start().map_err(|e| (false, e))?;
    // The Rightsizing CRD (the store's watch needs it) and the shipped RBAC.
    plane.install_shipped();
    eprintln!(
        "kube_watch: control plane up in {:.1} s ({})",
        plane.startup.as_secs_f64(),
        plane.dir.display()
    );
    Ok(plane)
}

/// The shared plane and the lock that runs tests one at a time. A missing prerequisite is a
/// failure here: skipping is the job of each test's `cfg_attr(not(has_control_plane), ignore)`.
pub(crate) async fn setup() -> (tokio::sync::MutexGuard<'static, ()>, &'static ControlPlane) {
    let guard = SERIAL.lock().await;
    match PLANE.get_or_init(init).await {
        Ok(p) => (guard, p),
        Err((true, reason)) => {
            panic!("the control plane cannot run here: {reason} (tests/build.rs found it)")
        }
        Err((false, e)) => panic!("control plane setup failed: {e}"),
    }
}

/// One rightsizer replica's Kubernetes side.
pub(crate) struct Replica {
    pub(crate) handles: KubeHandles,
    pub(crate) policies: Arc<PolicyStore>,
    registry: Registry,
}

pub(crate) async fn replica(
    plane: &ControlPlane,
    ns: &str,
    identity: &str,
    lease: LeaseTimings,
) -> Replica {
    let policies = Arc::new(PolicyStore::new());
    let mut registry = Registry::default();
    policies.register_metrics(&mut registry);
    let options = KubeOptions {
        identity: identity.to_string(),
        lease,
        events: EventLimits::default(),
    };
    let handles = rightsizer::kube::start_with(
        plane.client().await,
        ns,
        policies.clone(),
        &mut registry,
        options,
    )
    .await
    .expect("kube side starts");
    let t = Instant::now();
    handles
        .wait_synced(Duration::from_secs(20))
        .await
        .expect("watchers list everything");
    eprintln!("{identity}: watchers synced {:?} after start", t.elapsed());
    Replica {
        handles,
        policies,
        registry,
    }
}

pub(crate) fn quick_lease() -> LeaseTimings {
    LeaseTimings {
        lease_duration: Duration::from_secs(3),
        retry_period: Duration::from_millis(300),
    }
}

fn metrics(registry: &Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, registry).unwrap();
    s
}

/// Poll `f` every 20 ms until it gives Some or `timeout` passes.
pub(crate) async fn until<T>(
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some((v, start.elapsed()));
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `until` for async checks (API reads).
pub(crate) async fn until_async<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn namespace(plane: &ControlPlane, name: &str, labels: &[(&str, &str)]) {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels}});
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&ns.to_string()));
}

pub(crate) fn policy_cm(name: &str, ns: &str, policy: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"rightsizer.io/policy": "true"}},
        "data": {"policy.yaml": policy}
    }))
    .unwrap()
}

pub(crate) fn policy_precedence(store: &PolicyStore, name: &str) -> Option<i32> {
    store
        .current()
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.precedence)
}

async fn events_on(plane: &ControlPlane, ns: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(plane.client().await, ns);
    api.list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
}

pub(crate) fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "busybox",
                    "resources": {"requests": {"memory": "64Mi"}}}]}
            }
        }
    })
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn namespaces_limitranges_and_priorityclasses_reach_cluster_facts() {
    let (_g, plane) = setup().await;
    let ns = "kw-facts";
    namespace(
        plane,
        ns,
        &[("rightsizer.io/enabled", "true"), ("team", "shop")],
    );
    let r = replica(plane, "kw-facts-sys", "facts-a", LeaseTimings::default()).await;
    let facts = r.handles.facts.clone();
    assert_eq!(
        facts.namespace(ns).labels.get("team").map(String::as_str),
        Some("shop"),
        "labels present at start come with the first list"
    );

    plane.kubectl_ok(&["label", "namespace", ns, "tier=gold"], None);
    let lr = json!({"apiVersion": "v1", "kind": "LimitRange",
        "metadata": {"name": "bounds", "namespace": ns},
        "spec": {"limits": [{"type": "Container",
            "max": {"memory": "1Gi"}, "min": {"memory": "16Mi"},
            "maxLimitRequestRatio": {"memory": "4"}}]}});
    let pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "kw-batch-low"}, "value": 1234,
        "preemptionPolicy": "Never", "description": "test"});
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&lr.to_string()));
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&pc.to_string()));

    let (nf, took) = until(Duration::from_secs(5), || {
        let nf = facts.namespace(ns);
        (nf.labels.get("tier").map(String::as_str) == Some("gold") && !nf.limit_ranges.is_empty())
            .then_some(nf)
    })
    .await
    .expect("namespace label and LimitRange reach the facts");
    eprintln!("label + LimitRange -> facts: {took:?}");
    let item = &nf.limit_ranges[0].limits[0];
    assert_eq!(item.type_, "Container");
    assert_eq!(item.max.as_ref().unwrap()["memory"].0, "1Gi");
    assert_eq!(
        item.max_limit_request_ratio.as_ref().unwrap()["memory"].0,
        "4"
    );

    let (pcs, _) = until(Duration::from_secs(5), || {
        let pcs = facts.priority_classes();
        pcs.contains_key("kw-batch-low").then_some(pcs)
    })
    .await
    .expect("PriorityClass reaches the facts");
    let info = &pcs["kw-batch-low"];
    assert_eq!(info.value, 1234);
    assert_eq!(info.preemption_policy.as_deref(), Some("Never"));
    // The apiserver's built-in classes are there too.
    assert_eq!(pcs["system-cluster-critical"].value, 2_000_000_000);

    // A ResourceQuota: the room left follows the quota controller's count of usage.
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "team-quota", "namespace": ns},
        "spec": {"hard": {"requests.memory": "1Gi", "limits.cpu": "2"}}});
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&quota.to_string()));
    until(Duration::from_secs(5), || {
        let q = facts.namespace(ns).quotas.first()?.clone();
        (q.name == "team-quota" && q.room.get("requests.memory") == Some(&(1 << 30))).then_some(())
    })
    .await
    .expect("the quota reaches the facts");
    // The quota controller's first count must be in before a Pod is charged to it.
    until_async(Duration::from_secs(20), || async {
        let used = plane.kubectl_ok(
            &[
                "-n",
                ns,
                "get",
                "resourcequota",
                "team-quota",
                "-o",
                "jsonpath={.status.used}",
            ],
            None,
        );
        (!used.trim().is_empty()).then_some(())
    })
    .await
    .expect("the quota controller counts usage");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user", "namespace": ns},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"memory": "100Mi"}, "limits": {"cpu": "500m", "memory": "100Mi"}}}]}});
    let created = until_async(Duration::from_secs(20), || async {
        plane
            .kubectl(&["apply", "-f", "-"], Some(&pod.to_string()))
            .status
            .success()
            .then_some(())
    })
    .await;
    assert!(created.is_some(), "the pod is admitted");
    let (room, took) = until(Duration::from_secs(10), || {
        let q = facts.namespace(ns).quotas.first()?.clone();
        (q.room.get("requests.memory") == Some(&((1 << 30) - (100 << 20)))).then_some(q.room)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "used quota never reached the facts: {:?}\nstored: {}",
            facts.namespace(ns).quotas,
            plane.kubectl_ok(&["-n", ns, "get", "resourcequota,pods", "-o", "json"], None)
        )
    });
    eprintln!("pod created -> quota room in facts: {took:?}");
    assert_eq!(room.get("limits.cpu"), Some(&1500));

    // Deleting takes them away again.
    plane.kubectl_ok(&["-n", ns, "delete", "limitrange", "bounds"], None);
    plane.kubectl_ok(&["delete", "priorityclass", "kw-batch-low"], None);
    until(Duration::from_secs(5), || {
        (facts.namespace(ns).limit_ranges.is_empty()
            && !facts.priority_classes().contains_key("kw-batch-low"))
        .then_some(())
    })
    .await
    .expect("deletions reach the facts");

    let text = metrics(&r.registry);
    for resource in [
        "namespaces",
        "limitranges",
        "resourcequotas",
        "priorityclasses",
        "nodes",
        "replicasets",
        "jobs",
        "horizontalpodautoscalers",
        "deployments",
        "cronjobs",
        "policyconfigmaps",
    ] {
        assert!(
            text.contains(&format!(
                "rightsizer_watch_objects{{resource=\"{resource}\"}}"
            )),
            "{resource} missing in:\n{text}"
        );
    }
    let sizes = facts.sizes();
    assert!(sizes["namespaces"] >= 5, "{sizes:?}");
    eprintln!("store sizes: {sizes:?}");
    r.handles.shutdown().await.unwrap();
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn owner_chains_resolve_replicasets_and_jobs_exactly() {
    let (_g, plane) = setup().await;
    let ns = "kw-owners";
    namespace(plane, ns, &[]);
    let r = replica(plane, "kw-owners-sys", "owners-a", LeaseTimings::default()).await;
    let facts = r.handles.facts.clone();
    let key = |kind, name: &str| WorkloadKey {
        namespace: ns.to_string(),
        kind,
        name: name.to_string(),
    };
    // The workload of a ReplicaSet or Job once the watchers know it (None before).
    let resolve = |kind: &str, name: &str| {
        use rightsizer_core::workload::resolve::{resolve_owner, OwnerFacts, OwnerRef};
        facts.controller(ns, kind, name)?;
        let owner = OwnerRef {
            kind,
            name,
            api_version: None,
            controller: true,
        };
        resolve_owner(ns, owner, None, &*facts)
    };

    // A Deployment whose ReplicaSet the real controller creates. Its name is chosen so
    // that name-based guessing ("strip the last dash segment") would get it wrong.
    plane.kubectl_ok(
        &["-n", ns, "apply", "-f", "-"],
        Some(&deployment("web-api").to_string()),
    );
    let rs_api: Api<ReplicaSet> = Api::namespaced(plane.client().await, ns);
    let rs = until_async(Duration::from_secs(20), || async {
        rs_api
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await
    .expect("the ReplicaSet controller creates a ReplicaSet");
    let rs_name = rs.metadata.name.clone().unwrap();
    let (owner, took) = until(Duration::from_secs(5), || resolve("ReplicaSet", &rs_name))
        .await
        .expect("the ReplicaSet resolves");
    eprintln!("ReplicaSet {rs_name} -> {owner} after {took:?}");
    assert_eq!(owner, key(WorkloadKind::Deployment, "web-api"));
    // A ReplicaSet without an owner is its own workload.
    let bare = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "bare-rs"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "bare"}},
            "template": {"metadata": {"labels": {"app": "bare"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&bare.to_string()));
    let (owner, _) = until(Duration::from_secs(5), || resolve("ReplicaSet", "bare-rs"))
        .await
        .unwrap();
    assert_eq!(owner, key(WorkloadKind::ReplicaSet, "bare-rs"));
    assert_eq!(resolve("ReplicaSet", "never-seen"), None);

    // A CronJob (batch/v1beta1 on this apiserver) and a Job it owns. The controller would
    // create the Job only at the schedule; the Job is created as it would, with a
    // controller ownerReference to the CronJob's uid.
    cronjob_with_job(
        plane,
        ns,
        "nightly-report",
        json!({"rightsizer.io/mode": "observe"}),
        "nightly-report-27000000",
        "report",
    );
    let (owner, _) = until(Duration::from_secs(5), || {
        resolve("Job", "nightly-report-27000000")
    })
    .await
    .expect("the Job resolves");
    assert_eq!(owner, key(WorkloadKind::CronJob, "nightly-report"));
    // The CronJob's own annotations are known for its Pods.
    let (ann, _) = until(Duration::from_secs(5), || {
        facts.workload_annotations(&key(WorkloadKind::CronJob, "nightly-report"))
    })
    .await
    .expect("CronJob metadata is watched through v1beta1");
    assert_eq!(
        ann.get("rightsizer.io/mode").map(String::as_str),
        Some("observe")
    );
    // A Job nobody owns is its own workload.
    let lone = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "one-off-migrate"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "m", "image": "busybox"}]}}}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&lone.to_string()));
    let (owner, _) = until(Duration::from_secs(5), || resolve("Job", "one-off-migrate"))
        .await
        .unwrap();
    assert_eq!(owner, key(WorkloadKind::Job, "one-off-migrate"));

    // An HPA (autoscaling/v2beta2 on this apiserver) scaling the Deployment on memory.
    let hpa = json!({"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web-api"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-api"},
            "minReplicas": 1, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "Utilization", "averageUtilization": 75}}}]}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&hpa.to_string()));
    let web = key(WorkloadKind::Deployment, "web-api");
    let (res, _) = until(Duration::from_secs(5), || {
        let r = facts.hpa_resources(&web);
        (!r.is_empty()).then_some(r)
    })
    .await
    .expect("the HPA reaches the facts");
    assert_eq!(res, vec![Resource::Memory]);
    assert!(facts
        .hpa_resources(&key(WorkloadKind::CronJob, "nightly-report"))
        .is_empty());
    r.handles.shutdown().await.unwrap();
}

/// One container's stored state with `memory` committed (and an OOM hold when given).
pub(crate) fn saved(
    key: &ContainerKey,
    memory: Committed,
    history: &[Committed],
    oom: Option<OomHold>,
) -> Saved {
    let mut state = ContainerState::default();
    for c in history {
        state.record(Resource::Memory, c.clone());
    }
    state.record(Resource::Memory, memory);
    state.oom = oom;
    Saved {
        key: key.clone(),
        state,
        rec: None,
        strategy: "seed".into(),
        cooldown_seconds: 1800,
    }
}

pub(crate) fn mem(request_mi: u64, limit_mi: u64, at: u64, reason: &str) -> Committed {
    Committed {
        sizes: Sizes {
            request: Some(request_mi << 20),
            limit: Some(limit_mi << 20),
        },
        at,
        reason: reason.into(),
    }
}

pub(crate) async fn rightsizing(
    plane: &ControlPlane,
    ns: &str,
    name: &str,
) -> Option<DynamicObject> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(plane.client().await, ns, &rightsizing::api_resource());
    api.get_opt(name).await.unwrap()
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn the_leader_writes_one_rightsizing_per_workload_owned_by_it() {
    // (Another replica reading the commit is cluster_e2e's
    // committed_values_stored_by_the_leader_are_read_by_a_second_replica.)
    let (_g, plane) = setup().await;
    let sys = "kw-commit-sys";
    let ns = "kw-commit";
    namespace(plane, sys, &[]);
    namespace(plane, ns, &[]);
    plane.kubectl_ok(
        &["-n", ns, "apply", "-f", "-"],
        Some(&deployment("checkout").to_string()),
    );
    let a = replica(plane, sys, "commit-a", quick_lease()).await;
    until(Duration::from_secs(5), || {
        a.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("the first replica leads");

    let dep_api: Api<Deployment> = Api::namespaced(plane.client().await, ns);
    let before = dep_api.get("checkout").await.unwrap();
    let key = ContainerKey::parse(&format!("{ns}/Deployment/checkout/app")).unwrap();
    let first = mem(200, 400, 1_700_000_000, "p95 rose");
    let hold = OomHold {
        floor: 300 << 20,
        until: 1_700_086_400,
        pod: "checkout-1".into(),
    };
    a.handles
        .commit_store()
        .save(vec![saved(&key, first.clone(), &[], Some(hold.clone()))])
        .await
        .unwrap();

    // The leader's own store reads back what it wrote, hold included.
    let (state, _) = until(Duration::from_secs(2), || {
        a.handles
            .commit_store()
            .load()
            .containers
            .get(&key)
            .cloned()
    })
    .await
    .expect("the committed state is read back");
    assert_eq!(state.memory, Some(first.clone()));
    assert_eq!(state.oom, Some(hold));

    // One Rightsizing named after the workload, owned by it; the Deployment itself is
    // untouched (no annotation, no field manager rightsizer, same template).
    let obj = rightsizing(plane, ns, "deployment-checkout")
        .await
        .expect("a Rightsizing deployment-checkout");
    let owner = &obj.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.api_version.as_str()
        ),
        ("Deployment", "checkout", "apps/v1")
    );
    assert_eq!(Some(&owner.uid), before.metadata.uid.as_ref());
    let status = &obj.data["status"];
    assert_eq!(status["workload"], "Deployment/checkout");
    assert_eq!(
        status["containers"][0]["memory"]["committed"]["request"],
        "200Mi"
    );
    assert_eq!(
        status["containers"][0]["memory"]["committed"]["limit"],
        "400Mi"
    );
    assert_eq!(
        status["containers"][0]["memory"]["committed"]["reason"],
        "p95 rose"
    );
    assert_eq!(status["containers"][0]["oomHold"]["floor"], "300Mi");
    let after = dep_api.get("checkout").await.unwrap();
    assert!(!after
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key(COMMITTED_ANNOTATION));
    assert!(after
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .all(|m| m.manager.as_deref() != Some("rightsizer")));
    assert_eq!(after.metadata.generation, before.metadata.generation);

    // A second commit: the first is in the changes (newest first).
    let second = mem(256, 512, 1_700_000_600, "oom");
    a.handles
        .commit_store()
        .save(vec![saved(
            &key,
            second.clone(),
            std::slice::from_ref(&first),
            None,
        )])
        .await
        .unwrap();
    let obj = rightsizing(plane, ns, "deployment-checkout").await.unwrap();
    let changes = &obj.data["status"]["containers"][0]["memory"]["changes"];
    assert_eq!(changes[0]["request"], "256Mi");
    assert_eq!(changes[1]["request"], "200Mi");
    assert!(obj.data["status"]["containers"][0]["oomHold"].is_null());

    // `kubectl get rsz` prints the columns.
    let table = plane.kubectl_ok(&["-n", ns, "get", "rsz"], None);
    eprintln!("{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "WORKLOAD",
            "CONTAINERS",
            "MEMORY-COMMITTED",
            "RECOMMENDATION",
            "LAST-CHANGE",
            "AGE"
        ]
    );
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("deployment-checkout") && row.contains("Deployment/checkout"),
        "{row}"
    );
    assert!(
        row.contains(" app ") && row.contains("app=256Mi/512Mi"),
        "{row}"
    );

    // CronJobs own theirs through the version the server serves (v1beta1 here).
    let cj = json!({"apiVersion": "batch/v1beta1", "kind": "CronJob",
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "report", "image": "busybox"}]}}}}}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&cj.to_string()));
    let cj_key = ContainerKey::parse(&format!("{ns}/CronJob/nightly/report")).unwrap();
    until_async(Duration::from_secs(5), || async {
        a.handles.facts.workload(&cj_key.workload)?.uid?;
        Some(())
    })
    .await
    .expect("the CronJob is watched");
    a.handles
        .commit_store()
        .save(vec![saved(
            &cj_key,
            mem(64, 128, 1_700_000_900, "cron"),
            &[],
            None,
        )])
        .await
        .unwrap();
    let obj = rightsizing(plane, ns, "cronjob-nightly")
        .await
        .expect("cronjob-nightly");
    assert_eq!(
        obj.metadata.owner_references.unwrap()[0].api_version,
        "batch/v1beta1"
    );

    // A bare Pod the Pod watch has not seen (its owner's uid unknown) gets none
    // (rightsizing_homes has one that has been seen).
    let pod_key = ContainerKey::parse(&format!("{ns}/Pod/p/app")).unwrap();
    a.handles
        .commit_store()
        .save(vec![saved(&pod_key, second, &[], None)])
        .await
        .unwrap();
    assert!(rightsizing(plane, ns, "pod-p").await.is_none());

    // Deleting the workload deletes its Rightsizing (kube-controller-manager's garbage
    // collector; it discovers the new resource within its 30 s resync).
    let t = Instant::now();
    dep_api
        .delete("checkout", &DeleteParams::background())
        .await
        .unwrap();
    let gone = until_async(Duration::from_secs(90), || async {
        rightsizing(plane, ns, "deployment-checkout")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    eprintln!(
        "workload deleted -> Rightsizing collected after {:?}",
        t.elapsed()
    );
    assert!(gone.is_some(), "the Rightsizing outlived its workload");
    assert!(rightsizing(plane, ns, "cronjob-nightly").await.is_some());
    a.handles.shutdown().await.unwrap();
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn legacy_committed_annotations_are_imported_once() {
    let (_g, plane) = setup().await;
    let sys = "kw-migrate-sys";
    let ns = "kw-migrate";
    namespace(plane, sys, &[]);
    namespace(plane, ns, &[]);
    let mut dep = deployment("legacy");
    dep["metadata"]["annotations"] = json!({COMMITTED_ANNOTATION:
        r#"{"app":{"memory":{"request":"300Mi","limit":"600Mi","at":1600000000,"reason":"old step","history":[{"request":"250Mi","at":1500000000}]}}}"#});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&dep.to_string()));
    let a = replica(plane, sys, "migrate-a", quick_lease()).await;
    // Created first, then its status written (the status subresource ignores status on
    // create): wait for the status.
    let obj = until_async(Duration::from_secs(10), || async {
        rightsizing(plane, ns, "deployment-legacy")
            .await
            .filter(|o| !o.data["status"]["containers"][0].is_null())
    })
    .await
    .expect("the leader imports the annotation into a Rightsizing");
    let committed = &obj.data["status"]["containers"][0]["memory"]["committed"];
    assert_eq!(committed["request"], "300Mi");
    assert_eq!(committed["limit"], "600Mi");
    assert_eq!(committed["at"], 1_600_000_000);
    assert_eq!(committed["source"], "migrated");
    assert_eq!(committed["reason"], "old step");
    let key = ContainerKey::parse(&format!("{ns}/Deployment/legacy/app")).unwrap();
    let overlay = a.handles.overlay(Arc::new(NoRecommendations));
    let (rec, _) = until(Duration::from_secs(2), || overlay.get(&key))
        .await
        .unwrap();
    assert_eq!(
        rec.memory.unwrap().committed.unwrap().sizes.request,
        Some(300 << 20)
    );
    let version = obj.metadata.resource_version.clone();
    a.handles.shutdown().await.unwrap();

    // Once: a restarted leader leaves the imported object alone.
    let b = replica(plane, sys, "migrate-b", quick_lease()).await;
    until(Duration::from_secs(5), || {
        b.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("b leads");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = rightsizing(plane, ns, "deployment-legacy").await.unwrap();
    assert_eq!(again.metadata.resource_version, version);
    b.handles.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// The analyzer on Rightsizings, as the webhook's ServiceAccount (impersonated: every
// request is authorized by the shipped RBAC only), against a real Prometheus.

pub(crate) const H: u64 = 3600;
const SHOP: &str = "kw-shop";

/// Four Deployments' usage in `kw-shop`: web, obs and cache carry `tier: gold` (the
/// policy's label selector), plain does not; cache was OOM-killed two hours before t0.
fn shop_history(t0: u64) -> scenario::Cluster {
    let (start, end) = (t0 - 26 * H, t0 + 2 * H);
    let mut c = scenario::Cluster::new(t0);
    for name in ["web", "obs", "cache", "plain"] {
        let rs = format!("{name}-1");
        c.owner(
            "kube_replicaset_owner",
            SHOP,
            "replicaset",
            &rs,
            "Deployment",
            name,
            start,
            end,
        );
        let pod = format!("{rs}-a");
        let spec = scenario::PodSpec {
            ns: SHOP,
            pod: &pod,
            owner_kind: "ReplicaSet",
            owner_name: &rs,
            from: start,
            to: end,
        };
        let (base, high) = if name == "cache" {
            (180.0, 240.0)
        } else {
            (200.0, 300.0)
        };
        c.pod(&spec, &format!("{SHOP}/Deployment/{name}"))
            .container(
                "app",
                move |t| if (t / 60) % 10 == 0 { high } else { base },
                |_| 100.0,
                (Some(128), Some(256)),
                None,
            );
    }
    c.constant(
        "kube_pod_container_status_last_terminated_reason",
        &format!(r#"namespace="{SHOP}",pod="cache-1-a",container="app",reason="OOMKilled""#),
        1.0,
        t0 - 2 * H,
        end,
    );
    c
}

/// `web` carries `tier: gold` on its pod template only: the analyzer (through the watched
/// template labels) and admission select its policy on the same labels.
fn shop_deployment(name: &str, gold: bool, annotations: Value) -> Value {
    let mut d = deployment(name);
    d["spec"]["replicas"] = json!(0);
    if gold {
        if name != "web" {
            d["metadata"]["labels"] = json!({"tier": "gold"});
        }
        d["spec"]["template"]["metadata"]["labels"]["tier"] = json!("gold");
    }
    d["metadata"]["annotations"] = annotations;
    d
}

/// A replica's Kubernetes side as the webhook's ServiceAccount, in its own namespace.
pub(crate) async fn sa_replica(plane: &ControlPlane, identity: &str) -> Replica {
    let policies = Arc::new(PolicyStore::new());
    let mut registry = Registry::default();
    let handles = rightsizer::kube::start_with(
        plane.client_as(cluster::WEBHOOK_USER).await,
        "rightsizer-system",
        policies.clone(),
        &mut registry,
        KubeOptions {
            identity: identity.to_string(),
            lease: quick_lease(),
            events: EventLimits::default(),
        },
    )
    .await
    .expect("kube side starts");
    handles
        .wait_synced(Duration::from_secs(20))
        .await
        .expect("the ServiceAccount may list and watch everything the watchers read");
    Replica {
        handles,
        policies,
        registry,
    }
}

/// An analyzer wired as `serve` wires it in a cluster: policies and facts of `r`, its
/// Rightsizing store, its leadership.
pub(crate) fn cluster_analyzer(r: &Replica, prom: &str) -> Analyzer {
    let mut p = PromConfig::new(prom.to_string());
    p.retries = 0;
    let mut cfg = AnalyzerConfig::new(p);
    cfg.queries = QueryConfig {
        short_window_secs: 900,
        long_window_secs: 24 * H,
        ..QueryConfig::default()
    };
    cfg.enforcement = true;
    let lookup = PoliciesLookup {
        store: r.policies.clone(),
        facts: r.handles.facts.clone(),
        own_namespace: Some("rightsizer-system".into()),
    };
    let mut a = Analyzer::new(cfg, Arc::new(lookup), &mut Registry::default()).unwrap();
    a.set_store(r.handles.commit_store());
    a.set_home_facts(r.handles.facts.clone());
    let leader = r.handles.leader.clone();
    a.set_leader(move || leader.is_leader());
    // As `serve` does: nothing written outside opted-in namespaces.
    a.set_scope(r.handles.opted_in("rightsizer-system"));
    a
}

fn committed_memory(obj: &DynamicObject) -> Value {
    obj.data["status"]["containers"][0]["memory"]["committed"].clone()
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn the_analyzer_commits_to_rightsizings_and_a_new_leader_continues() {
    let (_g, plane) = setup().await;
    let t0 = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 3 * H;
        now - now % 60
    };
    let history = shop_history(t0);
    let prom = TestProm::start_with(&history.om);
    namespace(plane, SHOP, &[]);
    for d in [
        shop_deployment("web", true, json!({})),
        shop_deployment("obs", true, json!({"rightsizer.io/mode": "observe"})),
        shop_deployment("cache", true, json!({})),
        shop_deployment("plain", false, json!({})),
    ] {
        plane.kubectl_ok(&["-n", SHOP, "apply", "-f", "-"], Some(&d.to_string()));
    }
    let policy = "precedence: 5\nmode: enforce\ntarget: templates\nrecommender: seed\nselector:\n  namespaces: [kw-shop]\n  labels: {tier: gold}\n";
    plane.kubectl_ok(
        &["-n", "rightsizer-system", "apply", "-f", "-"],
        Some(&serde_json::to_string(&policy_cm("kw-gold", "rightsizer-system", policy)).unwrap()),
    );

    let a = sa_replica(plane, "analyzer-a").await;
    until(Duration::from_secs(5), || {
        (a.handles.leader.is_leader() && policy_precedence(&a.policies, "kw-gold") == Some(5))
            .then_some(())
    })
    .await
    .expect("a leads with the policy loaded");
    // Not opted in (no `rightsizer.io/enabled=true`): the webhook is not called there,
    // and the analyzer writes nothing there, neither Rightsizings nor Events.
    cluster_analyzer(&a, &prom.url())
        .cycle(t0)
        .await
        .expect("a's cycle");
    let rsz: Api<DynamicObject> =
        Api::namespaced_with(plane.client().await, SHOP, &rightsizing::api_resource());
    let listed = rsz.list(&ListParams::default()).await.unwrap();
    assert!(listed.items.is_empty(), "{:?}", listed.items);
    // Events go out in the background: give them time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events: Api<Event> = Api::namespaced(plane.client().await, SHOP);
    let reasons: Vec<_> = (events.list(&ListParams::default()).await.unwrap().items)
        .into_iter()
        .filter(|e| e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("rightsizer"))
        .map(|e| e.reason)
        .collect();
    assert!(reasons.is_empty(), "{reasons:?}");
    namespace(plane, SHOP, &[("rightsizer.io/enabled", "true")]);
    until(Duration::from_secs(5), || {
        a.handles.opted_in("rightsizer-system")(SHOP).then_some(())
    })
    .await
    .expect("the label is watched");

    let analyzer_a = cluster_analyzer(&a, &prom.url());
    analyzer_a.cycle(t0).await.expect("a's cycle");

    // Enforce mode (selected by label): a Rightsizing with the committed values.
    let web = rightsizing(plane, SHOP, "deployment-web")
        .await
        .expect("web has a Rightsizing");
    let c1 = committed_memory(&web);
    assert_eq!(c1["at"], t0, "{web:?}");
    assert_eq!(c1["source"], "enforced");
    let c1_request = c1["request"].as_str().unwrap().to_string();
    assert_ne!(c1_request, "128Mi", "a step away from what runs");
    let rec = &web.data["status"]["containers"][0]["memory"]["recommendation"];
    assert!(
        rec["p95"].is_string() && rec["samples"].as_u64() > Some(0),
        "{rec}"
    );
    assert_eq!(rec["strategy"], "seed");
    // Observe by annotation: recommended, never committed. No policy: nothing stored.
    let obs = rightsizing(plane, SHOP, "deployment-obs").await;
    assert!(
        obs.as_ref().is_none_or(|o| committed_memory(o).is_null()),
        "{obs:?}"
    );
    assert!(rightsizing(plane, SHOP, "deployment-plain").await.is_none());
    let cache = rightsizing(plane, SHOP, "deployment-cache")
        .await
        .expect("cache has a Rightsizing");
    let hold = cache.data["status"]["containers"][0]["oomHold"].clone();
    let hold_until = hold["until"].as_u64().expect("an OOM hold");
    assert!(hold_until > t0, "{hold}");

    // Same policy, same answer: admission of the same workload (labels through its
    // object) enforces the same committed value; the observe one keeps its values.
    let follower = sa_replica(plane, "analyzer-b").await;
    let overlay = follower.handles.overlay(analyzer_a.cache());
    let admitter = Admitter::new(
        follower.policies.clone(),
        overlay,
        follower.handles.facts.clone(),
        AdmitConfig {
            enforcement: true,
            own_namespace: Some("rightsizer-system".into()),
        },
    );
    until(Duration::from_secs(5), || {
        (policy_precedence(&follower.policies, "kw-gold") == Some(5)).then_some(())
    })
    .await
    .expect("the follower has the policy");
    let admitted_request = |name: &str, annotations: Value| {
        let mut obj = shop_deployment(name, true, annotations);
        obj["metadata"]["namespace"] = json!(SHOP);
        let m = admitter.mutate_object(WorkloadKind::Deployment, SHOP, &obj);
        json_patch::patch(&mut obj, &m.patch).unwrap();
        obj["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"].clone()
    };
    let (_, _) = until(Duration::from_secs(2), || {
        (admitted_request("web", json!({})) == json!(c1_request)).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "admission did not enforce {c1_request}: {}",
            admitted_request("web", json!({}))
        )
    });
    assert_eq!(
        admitted_request("obs", json!({"rightsizer.io/mode": "observe"})),
        "64Mi"
    );

    // The leader stops mid-cooldown; the follower takes over with a fresh analyzer.
    a.handles.shutdown().await.unwrap();
    until(Duration::from_secs(5), || {
        follower.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("b takes over");
    let analyzer_b = cluster_analyzer(&follower, &prom.url());
    analyzer_b.cycle(t0 + 600).await.expect("b's cycle");
    let web = rightsizing(plane, SHOP, "deployment-web").await.unwrap();
    assert_eq!(
        committed_memory(&web),
        c1,
        "the new leader committed inside the cooldown"
    );
    let changes = &web.data["status"]["containers"][0]["memory"]["changes"];
    assert_eq!(changes.as_array().map(Vec::len), Some(1));
    // The OOM hold came through the restart unchanged (a lost hold would restart now).
    let cache = rightsizing(plane, SHOP, "deployment-cache").await.unwrap();
    assert_eq!(cache.data["status"]["containers"][0]["oomHold"], hold);
    let b_cache = analyzer_b
        .cache()
        .get_at(
            &ContainerKey::parse(&format!("{SHOP}/Deployment/cache/app")).unwrap(),
            t0 + 600,
        )
        .unwrap();
    assert!(b_cache.memory.unwrap().oom_floor.is_some());
    eprintln!(
        "failover mid-cooldown: committed {} kept at {}; OOM hold until {} kept",
        c1["request"], c1["at"], hold_until
    );

    // After the cooldown the new leader takes the next step.
    analyzer_b.cycle(t0 + 1860).await.expect("b's later cycle");
    let web = rightsizing(plane, SHOP, "deployment-web").await.unwrap();
    assert_eq!(committed_memory(&web)["at"], t0 + 1860);
    let changes = &web.data["status"]["containers"][0]["memory"]["changes"];
    assert_eq!(changes.as_array().map(Vec::len), Some(2));
    follower.handles.shutdown().await.unwrap();
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn the_webhook_identity_cannot_write_workloads() {
    let (_g, plane) = setup().await;
    let can = |verb: &str, what: &str, ns: &str| {
        let (what, sub) = match what.split_once(':') {
            Some((w, s)) => (w, format!("--subresource={s}")),
            None => (what, "--subresource=".to_string()),
        };
        let out = plane.kubectl(
            &[
                "auth",
                "can-i",
                verb,
                what,
                &sub,
                "-n",
                ns,
                "--as",
                cluster::WEBHOOK_USER,
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for (verb, what, ns, want) in [
        ("patch", "deployments.apps", "kube-system", "no"),
        ("update", "daemonsets.apps", "kube-system", "no"),
        ("create", "pods", "kube-system", "no"),
        ("get", "secrets", "kube-system", "no"),
        ("patch", "deployments.apps", "default", "no"),
        ("patch", "cronjobs.batch", "default", "no"),
        ("watch", "deployments.apps", "kube-system", "yes"),
        ("create", "rightsizings.rightsizer.io", "default", "yes"),
        (
            "update",
            "rightsizings.rightsizer.io:status",
            "default",
            "yes",
        ),
        ("patch", "rightsizings.rightsizer.io", "default", "no"),
        ("delete", "rightsizings.rightsizer.io", "default", "no"),
        ("create", "events", "default", "yes"),
        ("patch", "events", "default", "no"),
        (
            "update",
            "leases.coordination.k8s.io/rightsizer-leader",
            "rightsizer-system",
            "yes",
        ),
        (
            "update",
            "leases.coordination.k8s.io/other",
            "rightsizer-system",
            "no",
        ),
        ("list", "configmaps", "default", "no"),
    ] {
        assert_eq!(can(verb, what, ns), want, "can-i {verb} {what} -n {ns}");
    }
    // The same through the kube client the webhook uses (impersonation in effect).
    let sa = plane.client_as(cluster::WEBHOOK_USER).await;
    let dns: Api<Deployment> = Api::namespaced(sa, "kube-system");
    let refused = dns
        .patch(
            "coredns",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await;
    match refused {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("the webhook identity patched a kube-system Deployment: {other:?}"),
    }
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn a_stalled_leader_steps_down_and_another_leads_after_expiry() {
    // (A leader that releases on SIGTERM is cluster_e2e's
    // leader_lease_hands_over_when_the_leader_stops, through the binary.)
    let (_g, plane) = setup().await;
    let sys = "kw-leader";
    namespace(plane, sys, &[]);
    let b = replica(plane, sys, "leader-b", quick_lease()).await;
    until(Duration::from_secs(5), || {
        b.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("b leads");

    // b stops renewing without releasing (a crash): c takes over only after expiry.
    let c = replica(plane, sys, "leader-c", quick_lease()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!c.handles.leader.is_leader());
    let b_leader = b.handles.leader.clone();
    let t = Instant::now();
    b.handles.abandon();
    assert!(b_leader.is_leader(), "b led until it stalled");
    let (_, took) = until(Duration::from_secs(8), || {
        c.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("c takes over after expiry");
    eprintln!("hand-over after expiry (lease 3 s): {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "not before the lease expired: {took:?}"
    );
    // The stalled replica stepped down by itself before c could take over: never two
    // leaders at once.
    assert!(
        !b_leader.is_leader(),
        "stalled leader still leading {:?} after it stalled",
        t.elapsed()
    );
    let leases: Api<Lease> = Api::namespaced(plane.client().await, sys);
    let spec = leases.get(LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("leader-c"));
    assert!(spec.lease_transitions.unwrap_or(0) >= 1);
    c.handles.shutdown().await.unwrap();
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn events_are_deduplicated_and_rate_limited() {
    let (_g, plane) = setup().await;
    let ns = "kw-events";
    namespace(plane, ns, &[]);
    plane.kubectl_ok(
        &["-n", ns, "apply", "-f", "-"],
        Some(&deployment("cart").to_string()),
    );
    let recorder = Recorder::new(
        plane.client().await,
        "events-test",
        EventLimits {
            dedup_window: Duration::from_secs(600),
            per_minute: 3,
        },
    );
    let target = Target {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: ns.into(),
        name: "cart".into(),
        uid: None,
    };
    let msg = "memory of container app: request 64Mi -> 96Mi, limit unset -> unset (p95 rose)";
    let first = recorder
        .publish(&target, EventType::Normal, "RecommendationChanged", msg)
        .await
        .unwrap();
    let again = recorder
        .publish(&target, EventType::Normal, "RecommendationChanged", msg)
        .await
        .unwrap();
    assert_eq!((first, again), (Published::Posted, Published::Deduplicated));
    let other = recorder
        .publish(
            &target,
            EventType::Normal,
            "RecommendationChanged",
            "another value",
        )
        .await
        .unwrap();
    assert_eq!(other, Published::Posted);
    let third = recorder
        .publish(&target, EventType::Normal, "Committed", "x")
        .await
        .unwrap();
    let capped = recorder
        .publish(&target, EventType::Normal, "Committed", "y")
        .await
        .unwrap();
    assert_eq!((third, capped), (Published::Posted, Published::RateLimited));

    // Ours only (the Deployment controller posts its own).
    let events: Vec<Event> = events_on(plane, ns, "cart")
        .await
        .into_iter()
        .filter(|e| e.reporting_component.as_deref() == Some("rightsizer"))
        .collect();
    let same: Vec<_> = events
        .iter()
        .filter(|e| e.message.as_deref() == Some(msg))
        .collect();
    assert_eq!(same.len(), 1, "one Event for the repeated change");
    assert_eq!(
        same[0].source.as_ref().unwrap().component.as_deref(),
        Some("rightsizer")
    );
    assert_eq!(events.len(), 3, "posted: two changes and one commit");
    assert!(!events.iter().any(|e| e.message.as_deref() == Some("y")));

    // The writer's helper formats before/after and the reason.
    let r = replica(plane, "kw-events-sys", "events-a", LeaseTimings::default()).await;
    let key = ContainerKey::parse(&format!("{ns}/Deployment/cart/app")).unwrap();
    let before = Sizes {
        request: Some(64 << 20),
        limit: None,
    };
    let after = Sizes {
        request: Some(80 << 20),
        limit: Some(160 << 20),
    };
    let p = r
        .handles
        .writer
        .announce_recommendation(
            &key,
            Resource::Memory,
            Some(before),
            after,
            "usage p95 70Mi",
        )
        .await
        .unwrap();
    let p2 = r
        .handles
        .writer
        .announce_recommendation(
            &key,
            Resource::Memory,
            Some(before),
            after,
            "usage p95 70Mi",
        )
        .await
        .unwrap();
    assert_eq!((p, p2), (Published::Posted, Published::Deduplicated));
    let expected =
        "memory of container app: request 64Mi -> 80Mi, limit unset -> 160Mi (usage p95 70Mi)";
    let found: Vec<_> = events_on(plane, ns, "cart")
        .await
        .into_iter()
        .filter(|e| e.message.as_deref() == Some(expected))
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].reason.as_deref(), Some("RecommendationChanged"));
    assert!(found[0].involved_object.uid.is_some(), "uid from the watch");
    r.handles.shutdown().await.unwrap();
}

// ---- Without kube-state-metrics: the Pod watch gives the analyzer the same facts ----

/// The rows the Pod watch feeds the analyzer, as text, to assert on and to print.
#[derive(Default, Debug)]
pub(crate) struct Rows(std::collections::BTreeSet<String>);

impl FactsSink for Rows {
    fn pod_owner(&mut self, _ns: &str, pod: &str, kind: &str, name: &str) {
        self.0.insert(format!("pod {pod} <- {kind}/{name}"));
    }
    fn replicaset_owner(&mut self, _ns: &str, rs: &str, kind: &str, name: &str) {
        self.0.insert(format!("rs {rs} <- {kind}/{name}"));
    }
    fn job_owner(&mut self, _ns: &str, job: &str, kind: &str, name: &str) {
        self.0.insert(format!("job {job} <- {kind}/{name}"));
    }
    fn knative_pod(&mut self, _ns: &str, pod: &str, service: &str, configuration: &str) {
        self.0
            .insert(format!("knative {pod} <- {service}/{configuration}"));
    }
    fn resources(&mut self, _ns: &str, pod: &str, c: &str, r: Resource, s: Sizes) {
        self.0
            .insert(format!("{r:?} {pod}/{c} {:?}/{:?}", s.request, s.limit));
    }
    fn oom_kill(&mut self, _ns: &str, pod: &str, c: &str, limit: u64) {
        self.0.insert(format!("oom {pod}/{c} limit {limit}"));
    }
    fn hpa(&mut self, w: WorkloadKey, r: Resource) {
        self.0.insert(format!("hpa {w} {r:?}"));
    }
}

pub(crate) fn fed(pods: &PodWatch, ns: &str) -> Rows {
    let mut rows = Rows::default();
    pods.feed(0, Some(ns), &mut rows);
    rows
}

/// A one-container Deployment that is replaced all at once on a rollout (its pods never
/// run here: there is no kubelet).
fn ksm_deployment(name: &str, replicas: u32, container: &str, resources: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": container, "image": "busybox",
                    "resources": resources}]}}}})
}

/// Pod name → (owner kind, owner name) ("<none>" for none), from the apiserver.
async fn pod_owners(client: &kube::Client, ns: &str) -> BTreeMap<String, (String, String)> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let o = rightsizer::kube::facts::controller_of(&p.metadata);
            let (k, n) = o.map_or(("<none>".into(), "<none>".into()), |o| (o.kind, o.name));
            (p.metadata.name.unwrap_or_default(), (k, n))
        })
        .collect()
}

fn pods_owned_by<'a>(
    owners: &'a BTreeMap<String, (String, String)>,
    kind: &'a str,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a String)> + 'a {
    owners
        .iter()
        .filter(move |(_, (k, n))| k == kind && n.starts_with(prefix))
        .map(|(p, (_, n))| (p, n))
}

/// What a cycle decided per container, without the observed figures (their last float
/// bit depends on the order pods are folded in).
type Decided = BTreeMap<
    String,
    (
        Option<(Option<Sizes>, Vec<String>, Option<u64>)>,
        Option<(Option<Sizes>, Vec<String>)>,
        Vec<Resource>,
        (Sizes, Sizes),
    ),
>;

fn decided(a: &Analyzer) -> Decided {
    a.cache()
        .entries()
        .into_iter()
        .map(|(k, e)| {
            let m = e
                .rec
                .memory
                .map(|m| (m.recommended, m.reasons, m.oom_floor));
            let c = e.rec.cpu.map(|c| (c.recommended, c.reasons));
            (
                k.to_string(),
                (m, c, e.rec.hpa_resources, (e.current_memory, e.current_cpu)),
            )
        })
        .collect()
}

fn oom_holds(a: &Analyzer) -> Vec<String> {
    a.state()
        .containers
        .iter()
        .filter_map(|(k, c)| c.oom.as_ref().map(|h| format!("{k}: {h:?}")))
        .collect()
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn kube_state_metrics_and_the_pod_watch_give_the_same_recommendations() {
    use scenario::{Cluster, PodSpec, MI};
    const H: u64 = 3600;
    let (_g, plane) = setup().await;
    let ns = "kw-ksm";
    namespace(plane, ns, &[]);
    let r = replica(plane, "kw-ksm-sys", "ksm-a", LeaseTimings::default()).await;
    let pods = r.handles.pods.clone();
    assert!(
        !pods.is_started(),
        "the Pod watch starts only when the analyzer asks for it"
    );
    assert!(
        pods.ready(Duration::from_secs(20)).await,
        "first list of pods"
    );
    let client = plane.client().await;

    // The cluster: workloads of every kind the owner resolution walks through.
    let mem =
        |req: &str, lim: &str| json!({"requests": {"memory": req}, "limits": {"memory": lim}});
    let web_res =
        json!({"requests": {"memory": "128Mi", "cpu": "100m"}, "limits": {"memory": "256Mi"}});
    for d in [
        ksm_deployment("web", 2, "app", web_res),
        ksm_deployment("cache", 1, "redis", mem("128Mi", "256Mi")),
        ksm_deployment("api", 1, "app", mem("1Gi", "2Gi")),
    ] {
        plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&d.to_string()));
    }
    let mut echo = ksm_deployment(
        "echo-00001-deployment",
        1,
        "user-container",
        mem("256Mi", "512Mi"),
    );
    echo["spec"]["template"]["metadata"]["labels"] = json!({"app": "echo-00001-deployment",
        "serving.knative.dev/service": "echo", "serving.knative.dev/configuration": "echo",
        "serving.knative.dev/revision": "echo-00001"});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&echo.to_string()));
    let db = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 1, "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "postgres", "image": "busybox"}]}}}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&db.to_string()));
    cronjob_with_job(plane, ns, "nightly", json!({}), "nightly-1", "batch");
    let hpa = json!({"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "api"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
            "minReplicas": 1, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&hpa.to_string()));
    let lonely = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lonely"},
        "spec": {"containers": [{"name": "app", "image": "busybox",
            "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&lonely.to_string()));

    let all_there = |o: &BTreeMap<String, (String, String)>| o.len() == 8;
    let owners = until_async(Duration::from_secs(30), || async {
        Some(pod_owners(&client, ns).await).filter(all_there)
    })
    .await
    .expect("the controllers create 8 pods");
    let old_web: Vec<(String, String)> = pods_owned_by(&owners, "ReplicaSet", "web-")
        .map(|(p, n)| (p.clone(), n.clone()))
        .collect();
    assert_eq!(old_web.len(), 2, "{owners:?}");

    // A rollout while the watch runs: the old pods are deleted, new ones take over.
    plane.kubectl_ok(
        &[
            "-n",
            ns,
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"template":{"metadata":{"annotations":{"rollout":"2"}}}}}"#,
        ],
        None,
    );
    let owners = until_async(Duration::from_secs(30), || async {
        let o = pod_owners(&client, ns).await;
        let new = pods_owned_by(&o, "ReplicaSet", "web-")
            .filter(|(_, rs)| **rs != old_web[0].1)
            .count();
        (all_there(&o) && new == 2).then_some(o)
    })
    .await
    .expect("the rollout replaces web's pods");
    let new_web: Vec<(String, String)> = pods_owned_by(&owners, "ReplicaSet", "web-")
        .map(|(p, n)| (p.clone(), n.clone()))
        .collect();
    let one = |kind: &str, prefix: &str| -> (String, String) {
        let v: Vec<_> = pods_owned_by(&owners, kind, prefix).collect();
        assert_eq!(v.len(), 1, "{kind} {prefix}: {owners:?}");
        (v[0].0.clone(), v[0].1.clone())
    };
    let (cache_pod, cache_rs) = one("ReplicaSet", "cache-");
    let (api_pod, api_rs) = one("ReplicaSet", "api-");
    let (echo_pod, echo_rs) = one("ReplicaSet", "echo-00001-deployment-");
    let (job_pod, _) = one("Job", "nightly-1");

    // The kernel's OOM kill, as the kubelet reports it, two hours before the cycle.
    let t0 = {
        let now = rightsizer::clock::unix_now() - 3 * H;
        now - now % 60
    };
    let at = |t: u64| {
        k8s_openapi::jiff::Timestamp::from_second(t as i64)
            .unwrap()
            .to_string()
    };
    let status = json!({"status": {"containerStatuses": [{"name": "redis", "image": "busybox",
        "imageID": "", "ready": false, "restartCount": 1,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
            "startedAt": at(t0 - 3 * H), "finishedAt": at(t0 - 2 * H)}}}]}});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(&cache_pod, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the status subresource takes an OOMKilled lastState");

    // What the watch holds: deleted pods keep their owner, lose their current sizes.
    let want_rows = [
        format!("pod {} <- ReplicaSet/{}", old_web[0].0, old_web[0].1),
        format!("oom {cache_pod}/redis limit {}", 256 * MI),
        "pod lonely <- <none>/<none>".to_string(),
        format!("rs {cache_rs} <- Deployment/cache"),
        "job nightly-1 <- CronJob/nightly".to_string(),
        format!("knative {echo_pod} <- echo/echo"),
        format!("Cpu {}/app Some(100)/None", new_web[0].0),
        format!("hpa {ns}/Deployment/api Memory"),
    ];
    let (rows, took) = until(Duration::from_secs(10), || {
        let rows = fed(&pods, ns);
        want_rows.iter().all(|w| rows.0.contains(w)).then_some(rows)
    })
    .await
    .unwrap_or_else(|| panic!("rows {:#?} lack some of {want_rows:#?}", fed(&pods, ns)));
    eprintln!(
        "pod watch rows complete after {took:?}: {} rows",
        rows.0.len()
    );
    assert!(
        !rows
            .0
            .iter()
            .any(|r| r.starts_with(&format!("Memory {}/", old_web[0].0))),
        "a deleted pod has no current sizes: {rows:#?}"
    );

    // The same history, with kube-state-metrics series for what the apiserver holds.
    let history = |ghost: bool| -> Cluster {
        let start = t0 - 2 * 24 * H;
        let end = t0 + 2 * H;
        let mut c = Cluster::new(t0);
        let peak = |t: u64, base: f64, high: f64| if (t / 60) % 10 == 0 { high } else { base };
        let pod = |c: &mut Cluster,
                   pod: &str,
                   kind: &str,
                   owner: &str,
                   from: u64,
                   to: u64,
                   workload: &str,
                   container: &str,
                   ws: (f64, f64),
                   req_lim: (Option<u64>, Option<u64>),
                   cpu: Option<f64>| {
            let spec = PodSpec {
                ns,
                pod,
                owner_kind: kind,
                owner_name: owner,
                from,
                to,
            };
            c.pod(&spec, &format!("{ns}/{workload}")).container(
                container,
                move |t| peak(t, ws.0, ws.1),
                move |_| ws.0 / 2.0,
                req_lim,
                cpu,
            );
        };
        for (i, (p, rs)) in old_web.iter().enumerate() {
            pod(
                &mut c,
                p,
                "ReplicaSet",
                rs,
                start,
                t0 - 12 * H,
                "Deployment/web",
                "app",
                (200.0, 420.0 - 10.0 * i as f64),
                (Some(128), Some(256)),
                Some(0.2113),
            );
        }
        for (i, (p, rs)) in new_web.iter().enumerate() {
            pod(
                &mut c,
                p,
                "ReplicaSet",
                rs,
                t0 - 12 * H,
                end,
                "Deployment/web",
                "app",
                (200.0 + 20.0 * i as f64, 300.0),
                (Some(128), Some(256)),
                Some(0.2113),
            );
        }
        for (p, from, to) in old_web
            .iter()
            .map(|(p, _)| (p, start, t0 - 12 * H))
            .chain(new_web.iter().map(|(p, _)| (p, t0 - 12 * H, end)))
        {
            c.constant("kube_pod_container_resource_requests",
                &format!(r#"namespace="{ns}",pod="{p}",container="app",node="n1",resource="cpu",unit="core""#),
                0.1, from, to);
        }
        c.owner(
            "kube_replicaset_owner",
            ns,
            "replicaset",
            &old_web[0].1,
            "Deployment",
            "web",
            start,
            t0 - 12 * H,
        );
        c.owner(
            "kube_replicaset_owner",
            ns,
            "replicaset",
            &new_web[0].1,
            "Deployment",
            "web",
            t0 - 12 * H,
            end,
        );
        pod(
            &mut c,
            &cache_pod,
            "ReplicaSet",
            &cache_rs,
            start,
            end,
            "Deployment/cache",
            "redis",
            (180.0, 240.0),
            (Some(128), Some(256)),
            None,
        );
        c.owner(
            "kube_replicaset_owner",
            ns,
            "replicaset",
            &cache_rs,
            "Deployment",
            "cache",
            start,
            end,
        );
        c.constant(
            "kube_pod_container_status_last_terminated_reason",
            &format!(r#"namespace="{ns}",pod="{cache_pod}",container="redis",reason="OOMKilled""#),
            1.0,
            t0 - 2 * H,
            end,
        );
        pod(
            &mut c,
            &api_pod,
            "ReplicaSet",
            &api_rs,
            start,
            end,
            "Deployment/api",
            "app",
            (300.0, 360.0),
            (Some(1024), Some(2048)),
            None,
        );
        c.owner(
            "kube_replicaset_owner",
            ns,
            "replicaset",
            &api_rs,
            "Deployment",
            "api",
            start,
            end,
        );
        c.constant("kube_horizontalpodautoscaler_info",
            &format!(r#"namespace="{ns}",horizontalpodautoscaler="api",scaletargetref_api_version="apps/v1",scaletargetref_kind="Deployment",scaletargetref_name="api""#),
            1.0, start, end);
        c.constant("kube_horizontalpodautoscaler_spec_target_metric",
            &format!(r#"namespace="{ns}",horizontalpodautoscaler="api",metric_name="memory",metric_target_type="utilization""#),
            80.0, start, end);
        pod(
            &mut c,
            &echo_pod,
            "ReplicaSet",
            &echo_rs,
            start,
            end,
            "KnativeService/echo",
            "user-container",
            (100.0, 100.0),
            (Some(256), Some(512)),
            None,
        );
        c.owner(
            "kube_replicaset_owner",
            ns,
            "replicaset",
            &echo_rs,
            "Deployment",
            "echo-00001-deployment",
            start,
            end,
        );
        c.constant("kube_pod_labels",
            &format!(r#"namespace="{ns}",pod="{echo_pod}",label_serving_knative_dev_service="echo",label_serving_knative_dev_configuration="echo""#),
            1.0, start, end);
        pod(
            &mut c,
            "db-0",
            "StatefulSet",
            "db",
            start,
            end,
            "StatefulSet/db",
            "postgres",
            (1000.0, 1200.0),
            (None, None),
            None,
        );
        pod(
            &mut c,
            &job_pod,
            "Job",
            "nightly-1",
            t0 - 8 * H,
            t0 - 3 * H,
            "CronJob/nightly",
            "batch",
            (500.0, 640.0),
            (None, None),
            None,
        );
        c.owner(
            "kube_job_owner",
            ns,
            "job_name",
            "nightly-1",
            "CronJob",
            "nightly",
            t0 - 8 * H,
            t0 - 3 * H,
        );
        pod(
            &mut c,
            "lonely",
            "<none>",
            "<none>",
            start,
            end,
            "Pod/lonely",
            "app",
            (90.0, 100.0),
            (Some(64), Some(128)),
            None,
        );
        if ghost {
            // A pod deleted before the watch began: nobody knows its owner any more.
            pod(
                &mut c,
                "gone-5d9f-x",
                "<none>",
                "<none>",
                start,
                t0 - 20 * H,
                "Pod/gone-5d9f-x",
                "app",
                (50.0, 60.0),
                (None, None),
                None,
            );
        }
        c
    };
    let with_ksm = TestProm::start_with(&history(false).om);
    let mut without = history(true).om;
    without.drop_families(|name| name.starts_with("kube_"));
    let without_ksm = TestProm::start_with(&without);

    let analyzer_on = |url: String, mode: Option<KsmMode>| {
        let mut p = PromConfig::new(url);
        p.retries = 0;
        let mut cfg = AnalyzerConfig::new(p);
        cfg.queries = QueryConfig {
            short_window_secs: 900,
            long_window_secs: 24 * H,
            ..QueryConfig::default()
        };
        let mut a = Analyzer::new(
            cfg,
            Arc::new(DefaultPolicy::default()),
            &mut Registry::default(),
        )
        .unwrap();
        if let Some(m) = mode {
            a.set_facts_source(m, pods.clone());
        }
        a
    };
    let ksm = analyzer_on(with_ksm.url(), None);
    let api = analyzer_on(with_ksm.url(), Some(KsmMode::Never));
    let auto = analyzer_on(without_ksm.url(), Some(KsmMode::Auto));
    let (rk, ra, rauto) = (
        ksm.cycle(t0).await.unwrap(),
        api.cycle(t0).await.unwrap(),
        auto.cycle(t0).await.unwrap(),
    );

    // kube-state-metrics' answer covers every kind, and the OOM raises the floor.
    let from_ksm = decided(&ksm);
    let keys: Vec<&str> = from_ksm.keys().map(String::as_str).collect();
    let want: Vec<String> = [
        "CronJob/nightly/batch",
        "Deployment/api/app",
        "Deployment/cache/redis",
        "Deployment/web/app",
        "KnativeService/echo/user-container",
        "Pod/lonely/app",
        "StatefulSet/db/postgres",
    ]
    .iter()
    .map(|k| format!("{ns}/{k}"))
    .collect();
    assert_eq!(keys, want.iter().map(String::as_str).collect::<Vec<_>>());
    let cache = &from_ksm[&format!("{ns}/Deployment/cache/redis")];
    let (_, reasons, floor) = cache.0.clone().unwrap();
    assert_eq!(
        floor,
        Some(368 * MI),
        "max(256Mi × 1.2, 256Mi + 100Mi) ↑16Mi"
    );
    assert!(reasons.iter().any(|r| r == "oom"), "{reasons:?}");
    assert_eq!(
        from_ksm[&format!("{ns}/Deployment/api/app")].2,
        vec![Resource::Memory]
    );
    let web = &from_ksm[&format!("{ns}/Deployment/web/app")];
    assert_eq!(
        web.3,
        (
            Sizes {
                request: Some(128 * MI),
                limit: Some(256 * MI)
            },
            Sizes {
                request: Some(100),
                limit: None
            }
        )
    );
    assert!(web.0.as_ref().unwrap().0.is_some(), "web is sized: {web:?}");

    // The API gives the same decisions, OOM holds and running sizes.
    assert_eq!(decided(&api), from_ksm, "never: from the Pod watch");
    assert_eq!(
        decided(&auto),
        from_ksm,
        "auto without kube_* series: from the Pod watch"
    );
    assert_eq!(oom_holds(&api), oom_holds(&ksm));
    assert_eq!(oom_holds(&auto), oom_holds(&ksm));
    assert_eq!(oom_holds(&ksm).len(), 1, "{:?}", oom_holds(&ksm));
    // `never` leaves the 9 kube-state-metrics queries out; `auto` asks and finds nothing.
    assert_eq!(ra.queries + 9, rk.queries, "{ra:?} {rk:?}");
    assert_eq!(rauto.queries, rk.queries);
    assert_eq!(
        (ra.containers, rauto.containers),
        (rk.containers, rk.containers)
    );
    r.handles.shutdown().await.unwrap();
}

/// A `batch/v1beta1` CronJob (v1.20 serves no other) and a Job it controls, as its
/// controller would make it, both with one busybox container.
fn cronjob_with_job(
    plane: &ControlPlane,
    ns: &str,
    cronjob: &str,
    annotations: Value,
    job: &str,
    container: &str,
) {
    let template = json!({"spec": {"restartPolicy": "Never",
        "containers": [{"name": container, "image": "busybox"}]}});
    let cj = json!({"apiVersion": "batch/v1beta1", "kind": "CronJob",
        "metadata": {"name": cronjob, "annotations": annotations},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&cj.to_string()));
    let uid = plane.kubectl_ok(
        &[
            "-n",
            ns,
            "get",
            "cronjobs.v1beta1.batch",
            cronjob,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    );
    let j = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job, "ownerReferences": [{
            "apiVersion": "batch/v1beta1", "kind": "CronJob", "name": cronjob,
            "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"template": template}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&j.to_string()));
}

// ---------------------------------------------------------------------------------------
// Readiness gated on the watchers' first lists (issue 14): `rightsizer serve` as an
// identity with the shipped RBAC minus one resource stays unready naming that watcher,
// and turns ready once the permission is granted.

const PROBE_NS: &str = "readiness-probe";
const PROBE_SA: &str = "system:serviceaccount:readiness-probe:rightsizer";

/// The shipped ClusterRole and Role, granted to the ServiceAccount `rightsizer` of
/// `PROBE_NS` (the Role in that namespace), without `resource` in any rule.
fn shipped_rbac_without(plane: &ControlPlane, resource: &str) {
    let shipped = |args: &[&str]| -> Value {
        serde_json::from_str(&plane.kubectl_ok(args, None)).expect("kubectl JSON")
    };
    let subject = json!([{"kind": "ServiceAccount", "name": "rightsizer", "namespace": PROBE_NS}]);
    let mut cluster_role = shipped(&["get", "clusterrole", "rightsizer", "-o", "json"]);
    let mut rules = cluster_role["rules"].as_array().expect("rules").clone();
    for rule in &mut rules {
        let kept: Vec<Value> = rule["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter(|r| r.as_str() != Some(resource))
            .cloned()
            .collect();
        rule["resources"] = json!(kept);
    }
    rules.retain(|r| !r["resources"].as_array().unwrap().is_empty());
    cluster_role["rules"] = json!(rules);
    cluster_role["metadata"] = json!({"name": PROBE_NS});
    let mut role = shipped(&[
        "get",
        "role",
        "rightsizer",
        "-n",
        "rightsizer-system",
        "-o",
        "json",
    ]);
    role["metadata"] = json!({"name": "rightsizer", "namespace": PROBE_NS});
    let docs = [
        cluster_role,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": PROBE_NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": PROBE_NS},
            "subjects": subject}),
        role,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "rightsizer", "namespace": PROBE_NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rightsizer"},
            "subjects": subject}),
    ];
    for doc in docs {
        plane.kubectl_ok(&["apply", "-f", "-"], Some(&doc.to_string()));
    }
}

/// Grant list/watch on resourcequotas to the probe's ServiceAccount.
fn grant_quotas(plane: &ControlPlane) {
    let name = format!("{PROBE_NS}-quotas");
    let docs = [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "rightsizer", "namespace": PROBE_NS}]}),
    ];
    for doc in docs {
        plane.kubectl_ok(&["apply", "-f", "-"], Some(&doc.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn readyz_waits_for_every_watchers_first_list() {
    let (_guard, plane) = setup().await;
    namespace(plane, PROBE_NS, &[]);
    shipped_rbac_without(plane, "resourcequotas");
    let dir = plane.dir.join(PROBE_NS);
    std::fs::create_dir_all(&dir).unwrap();
    let tls = cluster::generate_tls(&dir);
    let addr = format!("127.0.0.1:{}", cluster::free_port())
        .parse()
        .unwrap();
    let args = ["--own-namespace", PROBE_NS].map(String::from);
    let webhook = cluster::Webhook::start(
        addr,
        &tls,
        &plane.kubeconfig_as(PROBE_SA),
        &args,
        &[("POD_NAME", PROBE_NS)],
        dir.join("serve.log"),
    )
    .expect("serve starts");
    let admin = webhook.admin;

    // Every other watcher lists; the quota watcher cannot, so /readyz names it alone.
    let only_quotas = r#"{"error":"not ready: waiting for the first list of: resourcequotas"}"#;
    let mut seen = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let r = admin_status(admin, "/readyz").await;
        let done = matches!(&r, Ok((503, body)) if body == only_quotas);
        seen.push(r);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen.last().cloned(),
        Some(Ok((503, only_quotas.to_string()))),
        "answers: {seen:?}\n{}",
        webhook.log_text()
    );
    // It stays so while the permission is missing (the watch keeps retrying).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        admin_status(admin, "/readyz").await,
        Ok((503, only_quotas.to_string()))
    );
    let (_, text) = admin_status(admin, "/metrics").await.expect("/metrics");
    let value = |family: &str, resource: &str| {
        cluster::counter_sum(&text, family, &[("resource", resource)])
    };
    assert_eq!(
        value("rightsizer_watch_synced", "resourcequotas"),
        0.0,
        "{text}"
    );
    assert_eq!(
        value("rightsizer_watch_synced", "limitranges"),
        1.0,
        "{text}"
    );
    assert!(
        value("rightsizer_watch_errors_total", "resourcequotas") >= 1.0,
        "{text}"
    );
    assert_eq!(
        value("rightsizer_watch_errors_total", "limitranges"),
        0.0,
        "{text}"
    );

    grant_quotas(plane);
    let granted = Instant::now();
    let ready = until_async(Duration::from_secs(60), || async {
        matches!(admin_status(admin, "/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
    eprintln!(
        "readyz: 200 {:.1} s after list on resourcequotas was granted",
        granted.elapsed().as_secs_f64()
    );
    let (_, text) = admin_status(admin, "/metrics").await.expect("/metrics");
    let synced = cluster::counter_sum(
        &text,
        "rightsizer_watch_synced",
        &[("resource", "resourcequotas")],
    );
    let log = webhook.log_text();
    drop(webhook);
    for kind in ["clusterrolebinding", "clusterrole"] {
        for name in [PROBE_NS.to_string(), format!("{PROBE_NS}-quotas")] {
            plane.kubectl_ok(&["delete", kind, &name, "--ignore-not-found"], None);
        }
    }
    assert!(
        ready.is_some(),
        "still unready 60 s after the grant:\n{log}"
    );
    assert_eq!(synced, 1.0, "{text}");
}
