//! rightsizer's Kubernetes side against a real kube-apiserver v1.20.2 (with
//! kube-controller-manager and etcd) on loopback: watchers, policy ConfigMaps, owner
//! chains, committed values written with server-side apply and read by a second
//! replica, Events, and Lease hand-over. Every assertion reads what the apiserver
//! stored or what rightsizer's stores hold after the apiserver told them.
//!
//! One control plane serves the whole binary; tests take a lock and run one at a time,
//! each in namespaces of its own. Without the control plane binaries the tests skip with
//! a reason, except under `CI=true` (run `tests/cluster/build.sh`).

#[path = "support/cluster.rs"]
mod cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::ControlPlane;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use prometheus_client::registry::Registry;
use rightsizer::cluster::ClusterFacts;
use rightsizer::kube::events::{EventType, Target};
use rightsizer::kube::{
    CommitError, EventLimits, KubeHandles, KubeOptions, LeaseTimings, Published, Recorder,
    COMMITTED_ANNOTATION, FIELD_MANAGER, LEASE_NAME,
};
use rightsizer::policy::PolicyStore;
use rightsizer::quantity::Resource;
use rightsizer::recommendation::{
    Committed, ContainerKey, NoRecommendations, RecommendationSource, WorkloadKey, WorkloadKind,
};
use rightsizer::rules::Sizes;
use serde_json::{json, Value};

/// Live heap bytes of this test binary, for the store-memory benchmark (the System
/// allocator plus a counter).
struct Counting;
static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(
            new as isize - l.size() as isize,
            std::sync::atomic::Ordering::Relaxed,
        );
        std::alloc::System.realloc(p, l, new)
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

static PLANE: tokio::sync::OnceCell<Result<ControlPlane, (bool, String)>> =
    tokio::sync::OnceCell::const_new();
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn init() -> Result<ControlPlane, (bool, String)> {
    if let Some(reason) = cluster::missing_prerequisite() {
        return Err((true, reason));
    }
    let plane = ControlPlane::start().map_err(|e| (false, e))?;
    eprintln!(
        "kube_watch: control plane up in {:.1} s ({})",
        plane.startup.as_secs_f64(),
        plane.dir.display()
    );
    Ok(plane)
}

/// The shared plane and the lock that runs tests one at a time, or None (skip).
async fn setup() -> Option<(tokio::sync::MutexGuard<'static, ()>, &'static ControlPlane)> {
    let guard = SERIAL.lock().await;
    match PLANE.get_or_init(init).await {
        Ok(p) => Some((guard, p)),
        Err((true, reason)) if !cluster::in_ci() => {
            eprintln!("SKIPPED (no control plane here): {reason}");
            None
        }
        Err((true, reason)) => panic!("CI=true and the control plane cannot run: {reason}"),
        Err((false, e)) => panic!("control plane setup failed: {e}"),
    }
}

macro_rules! plane_or_skip {
    () => {
        match setup().await {
            Some(x) => x,
            None => return,
        }
    };
}

/// One rightsizer replica's Kubernetes side.
struct Replica {
    handles: KubeHandles,
    policies: Arc<PolicyStore>,
    registry: Registry,
}

async fn replica(plane: &ControlPlane, ns: &str, identity: &str, lease: LeaseTimings) -> Replica {
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

fn quick_lease() -> LeaseTimings {
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
async fn until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
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
async fn until_async<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
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

fn namespace(plane: &ControlPlane, name: &str, labels: &[(&str, &str)]) {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels}});
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&ns.to_string()));
}

fn policy_cm(name: &str, ns: &str, policy: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"rightsizer.io/policy": "true"}},
        "data": {"policy.yaml": policy}
    }))
    .unwrap()
}

fn policy_precedence(store: &PolicyStore, name: &str) -> Option<i32> {
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

fn deployment(name: &str) -> Value {
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
async fn policy_configmaps_apply_within_2s_and_broken_edits_are_refused() {
    let (_g, plane) = plane_or_skip!();
    let ns = "kw-policies";
    namespace(plane, ns, &[]);
    let r = replica(plane, ns, "policies-a", LeaseTimings::default()).await;
    assert!(
        r.policies.is_ready(),
        "ready once the ConfigMaps are listed"
    );
    let api: Api<ConfigMap> = Api::namespaced(plane.client().await, ns);

    // Created with the API: in force within 2 s.
    let good =
        "precedence: 1\nmode: observe\ndefaults:\n  memory: {request: 128Mi, limit: 256Mi}\n";
    let t = Instant::now();
    api.create(&PostParams::default(), &policy_cm("team", ns, good))
        .await
        .unwrap();
    let (_, _) = until(Duration::from_secs(2), || {
        (policy_precedence(&r.policies, "team") == Some(1)).then_some(())
    })
    .await
    .expect("a created policy ConfigMap is in force within 2 s");
    eprintln!(
        "policy created -> in force: {:?} from the create call",
        t.elapsed()
    );

    // Edited: the new content replaces the old within 2 s.
    let edited = good.replace("precedence: 1", "precedence: 7");
    let t = Instant::now();
    api.replace("team", &PostParams::default(), &{
        let mut cm = api.get("team").await.unwrap();
        cm.data = policy_cm("team", ns, &edited).data;
        cm
    })
    .await
    .unwrap();
    until(Duration::from_secs(2), || {
        (policy_precedence(&r.policies, "team") == Some(7)).then_some(())
    })
    .await
    .expect("an edited policy is in force within 2 s");
    eprintln!(
        "policy edited -> in force: {:?} from the read-modify-write",
        t.elapsed()
    );

    // A broken edit: refused, the last good one stays, an Event names the field path.
    let broken = edited.replace("request: 128Mi", "request: lots");
    let patch = json!({"data": {"policy.yaml": broken}});
    api.patch("team", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    until(Duration::from_secs(2), || {
        (!r.policies.errors().is_empty()).then_some(())
    })
    .await
    .expect("the broken edit is seen and refused within 2 s");
    assert_eq!(
        policy_precedence(&r.policies, "team"),
        Some(7),
        "last good policy stays in force"
    );
    let errors = r.policies.errors();
    assert_eq!(errors[0].0, format!("{ns}/team"));
    assert!(
        errors[0].1.contains("defaults.memory.request"),
        "{errors:?}"
    );
    assert!(metrics(&r.registry).contains("rightsizer_policy_rejected 1"));
    let ev = until_async(Duration::from_secs(5), || async {
        events_on(plane, ns, "team")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("PolicyRejected"))
    })
    .await
    .expect("a PolicyRejected Event on the ConfigMap");
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.involved_object.kind.as_deref(), Some("ConfigMap"));
    assert!(ev.involved_object.uid.is_some());
    let msg = ev.message.unwrap_or_default();
    assert!(msg.contains("defaults.memory.request"), "{msg}");

    // Fixed again, then deleted: gone from the store.
    let patch = json!({"data": {"policy.yaml": edited.replace("precedence: 7", "precedence: 3")}});
    api.patch("team", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    until(Duration::from_secs(2), || {
        (policy_precedence(&r.policies, "team") == Some(3) && r.policies.errors().is_empty())
            .then_some(())
    })
    .await
    .expect("a fixed policy clears the refusal");
    assert!(metrics(&r.registry).contains("rightsizer_policy_rejected 0"));
    // Unlabelled ConfigMaps are not policies.
    let mut plain = policy_cm("not-a-policy", ns, good);
    plain.metadata.labels = None;
    api.create(&PostParams::default(), &plain).await.unwrap();
    api.delete("team", &DeleteParams::default()).await.unwrap();
    until(Duration::from_secs(2), || {
        r.policies.current().is_empty().then_some(())
    })
    .await
    .expect("a deleted policy ConfigMap leaves the store");
    r.handles.shutdown().await.unwrap();
}

#[tokio::test]
async fn namespaces_limitranges_and_priorityclasses_reach_cluster_facts() {
    let (_g, plane) = plane_or_skip!();
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
async fn owner_chains_resolve_replicasets_and_jobs_exactly() {
    let (_g, plane) = plane_or_skip!();
    let ns = "kw-owners";
    namespace(plane, ns, &[]);
    let r = replica(plane, "kw-owners-sys", "owners-a", LeaseTimings::default()).await;
    let facts = r.handles.facts.clone();
    let key = |kind, name: &str| WorkloadKey {
        namespace: ns.to_string(),
        kind,
        name: name.to_string(),
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
    let (owner, took) = until(Duration::from_secs(5), || {
        facts.resolve_owner(ns, "ReplicaSet", &rs_name)
    })
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
    let (owner, _) = until(Duration::from_secs(5), || {
        facts.resolve_owner(ns, "ReplicaSet", "bare-rs")
    })
    .await
    .unwrap();
    assert_eq!(owner, key(WorkloadKind::ReplicaSet, "bare-rs"));
    assert_eq!(facts.resolve_owner(ns, "ReplicaSet", "never-seen"), None);

    // A CronJob (batch/v1beta1 on this apiserver) and a Job it owns. The controller would
    // create the Job only at the schedule; the Job is created as it would, with a
    // controller ownerReference to the CronJob's uid.
    let cj = json!({"apiVersion": "batch/v1beta1", "kind": "CronJob",
        "metadata": {"name": "nightly-report", "annotations": {"rightsizer.io/mode": "observe"}},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "report", "image": "busybox"}]}}}}}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&cj.to_string()));
    let uid = plane.kubectl_ok(
        &[
            "-n",
            ns,
            "get",
            "cronjobs.v1beta1.batch",
            "nightly-report",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    );
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "nightly-report-27000000", "ownerReferences": [{
            "apiVersion": "batch/v1beta1", "kind": "CronJob", "name": "nightly-report",
            "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "report", "image": "busybox"}]}}}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&job.to_string()));
    let (owner, _) = until(Duration::from_secs(5), || {
        facts.resolve_owner(ns, "Job", "nightly-report-27000000")
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
    let (owner, _) = until(Duration::from_secs(5), || {
        facts.resolve_owner(ns, "Job", "one-off-migrate")
    })
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

#[tokio::test]
async fn committed_values_written_by_the_leader_are_read_by_another_replica() {
    let (_g, plane) = plane_or_skip!();
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
    let b = replica(plane, sys, "commit-b", quick_lease()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!b.handles.leader.is_leader(), "one leader at a time");

    let dep_api: Api<Deployment> = Api::namespaced(plane.client().await, ns);
    let before = dep_api.get("checkout").await.unwrap();
    let key = ContainerKey::parse(&format!("{ns}/Deployment/checkout/app")).unwrap();
    let first = Committed {
        sizes: Sizes {
            request: Some(200 << 20),
            limit: Some(400 << 20),
        },
        at: 1_700_000_000,
        reason: "p95 rose".into(),
    };
    a.handles
        .commit_sink()
        .commit(&key, Resource::Memory, first.clone())
        .await
        .unwrap();

    // The follower refuses to write.
    let refused = b
        .handles
        .commit_sink()
        .commit(&key, Resource::Memory, first.clone())
        .await;
    assert!(
        matches!(refused, Err(CommitError::NotLeader)),
        "{refused:?}"
    );

    // The follower's overlay serves the committed value from its own watch.
    let overlay_b = b.handles.overlay(Arc::new(NoRecommendations));
    let (rec, took) = until(Duration::from_secs(2), || overlay_b.get(&key))
        .await
        .expect("the second replica reads the committed value");
    eprintln!("commit by leader -> visible on follower: {took:?}");
    let m = rec.memory.unwrap().committed.unwrap();
    assert_eq!(m, first);
    assert!(overlay_b.snapshot().recommendations.contains_key(&key));

    // Stored on the workload's top-level metadata, by field manager rightsizer (Apply),
    // with no rollout: the generation and the pod template are unchanged.
    let after = dep_api.get("checkout").await.unwrap();
    let ann = after.metadata.annotations.clone().unwrap_or_default();
    let doc: Value = serde_json::from_str(&ann[COMMITTED_ANNOTATION]).unwrap();
    assert_eq!(doc["app"]["memory"]["request"], "200Mi");
    assert_eq!(doc["app"]["memory"]["limit"], "400Mi");
    assert_eq!(doc["app"]["memory"]["reason"], "p95 rose");
    // (Deployments count annotation changes in `generation`, but without a template
    // change the controller makes no new ReplicaSet.)
    assert_eq!(
        serde_json::to_value(&after.spec.as_ref().unwrap().template).unwrap(),
        serde_json::to_value(&before.spec.as_ref().unwrap().template).unwrap()
    );
    let managers = after.metadata.managed_fields.clone().unwrap_or_default();
    let ours = managers
        .iter()
        .find(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
        .expect("a rightsizer field manager");
    assert_eq!(ours.operation.as_deref(), Some("Apply"));
    let owned = serde_json::to_string(&ours.fields_v1).unwrap();
    assert!(
        owned.contains("rightsizer.io/committed") && !owned.contains("f:spec"),
        "{owned}"
    );

    // A second commit keeps the first in the history; the follower sees the new value.
    let second = Committed {
        sizes: Sizes {
            request: Some(256 << 20),
            limit: Some(512 << 20),
        },
        at: 1_700_000_600,
        reason: "oom".into(),
    };
    a.handles
        .commit_sink()
        .commit(&key, Resource::Memory, second.clone())
        .await
        .unwrap();
    until(Duration::from_secs(2), || {
        (overlay_b.get(&key)?.memory?.committed? == second).then_some(())
    })
    .await
    .expect("the follower follows the new commit");
    let after = dep_api.get("checkout").await.unwrap();
    let doc: Value =
        serde_json::from_str(&after.metadata.annotations.unwrap()[COMMITTED_ANNOTATION]).unwrap();
    assert_eq!(doc["app"]["memory"]["history"][0]["request"], "200Mi");

    // Each commit posted a Committed Event with before/after on the Deployment.
    let events = until_async(Duration::from_secs(5), || async {
        let e: Vec<Event> = events_on(plane, ns, "checkout")
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Committed"))
            .collect();
        (e.len() == 2).then_some(e)
    })
    .await
    .expect("two Committed Events");
    assert!(events.iter().any(|e| e.message.as_deref()
        == Some("memory of container app: request 200Mi -> 256Mi, limit 400Mi -> 512Mi (oom)")));
    assert!(events
        .iter()
        .all(|e| e.involved_object.uid == after.metadata.uid));

    // CronJobs carry them too, through the version the server serves (v1beta1 here).
    let cj = json!({"apiVersion": "batch/v1beta1", "kind": "CronJob",
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "report", "image": "busybox"}]}}}}}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&cj.to_string()));
    let cj_key = ContainerKey::parse(&format!("{ns}/CronJob/nightly/report")).unwrap();
    let cpu = Committed {
        sizes: Sizes {
            request: Some(250),
            limit: None,
        },
        at: 1_700_000_900,
        reason: "cpu p95".into(),
    };
    until_async(Duration::from_secs(5), || async {
        a.handles
            .commit_sink()
            .commit(&cj_key, Resource::Cpu, cpu.clone())
            .await
            .ok()
    })
    .await
    .expect("a CronJob commit");
    let (rec, _) = until(Duration::from_secs(2), || overlay_b.get(&cj_key))
        .await
        .expect("the follower reads the CronJob's committed value");
    assert_eq!(rec.cpu.unwrap().committed.unwrap(), cpu);
    assert!(rec.memory.is_none());
    let stored = plane.kubectl_ok(
        &[
            "-n",
            ns,
            "get",
            "cronjobs.v1beta1.batch",
            "nightly",
            "-o",
            "jsonpath={.metadata.annotations.rightsizer\\.io/committed}",
        ],
        None,
    );
    let doc: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(doc["report"]["cpu"]["request"], "250m");

    // A commit for a kind that cannot carry the annotation is refused, not misplaced.
    let pod_key = ContainerKey::parse(&format!("{ns}/Pod/p/app")).unwrap();
    assert!(a
        .handles
        .commit_sink()
        .commit(&pod_key, Resource::Memory, second)
        .await
        .is_err());
    a.handles.shutdown().await.unwrap();
    b.handles.shutdown().await.unwrap();
}

#[tokio::test]
async fn leadership_hands_over_on_release_and_on_expiry() {
    let (_g, plane) = plane_or_skip!();
    let sys = "kw-leader";
    namespace(plane, sys, &[]);
    let a = replica(plane, sys, "leader-a", quick_lease()).await;
    until(Duration::from_secs(5), || {
        a.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("a leads");
    let b = replica(plane, sys, "leader-b", quick_lease()).await;
    let mut b_changes = b.handles.leader.subscribe();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!b.handles.leader.is_leader());

    // a shuts down and releases: b takes over well before the lease would expire.
    let t = Instant::now();
    a.handles.shutdown().await.unwrap();
    until(Duration::from_secs(2), || {
        b.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("b takes over after a release");
    eprintln!("hand-over after release: {:?}", t.elapsed());
    assert!(*b_changes.borrow_and_update());
    let leases: Api<Lease> = Api::namespaced(plane.client().await, sys);
    let lease = leases.get(LEASE_NAME).await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("leader-b"));
    assert!(spec.lease_transitions.unwrap_or(0) >= 1);

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
    let spec = leases.get(LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("leader-c"));
    c.handles.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_are_deduplicated_and_rate_limited() {
    let (_g, plane) = plane_or_skip!();
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

/// Memory of the watch stores: the derived mirror against kube's reflector of whole
/// objects, for many ReplicaSets with the usual bulky metadata. Prints figures; run with
/// `cargo test --test kube_watch -- --ignored --nocapture bench_`.
#[tokio::test]
#[ignore = "benchmark: prints figures"]
async fn bench_watch_store_memory() {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use kube::api::PartialObjectMeta;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    use rightsizer::kube::facts::controller_of;
    use rightsizer::kube::mirror::{self, Mirror};

    fn live() -> isize {
        LIVE.load(std::sync::atomic::Ordering::Relaxed)
    }

    let (_g, plane) = plane_or_skip!();
    let ns = "kw-bench";
    namespace(plane, ns, &[]);
    let n: usize = std::env::var("BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let bulky = "x".repeat(1500);
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("bench-{i}"),
                    "labels": {"app": format!("bench-{i}"), "pod-template-hash": "5f4c44fcb9"},
                    "annotations": {"deployment.kubernetes.io/revision": "3", "note": bulky}},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": format!("bench-{i}")}},
                    "template": {"metadata": {"labels": {"app": format!("bench-{i}")}},
                        "spec": {"containers": [{"name": "app", "image": "busybox",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "resources": {"requests": {"memory": "64Mi", "cpu": "50m"}}}]}}}})
        })
        .collect();
    let existing = plane.kubectl_ok(&["-n", ns, "get", "rs", "-o", "name"], None);
    if existing.lines().count() < n {
        let t = Instant::now();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        plane.kubectl_ok(&["-n", ns, "create", "-f", "-"], Some(&list.to_string()));
        eprintln!("created {n} ReplicaSets in {:?}", t.elapsed());
    }
    let client = plane.client().await;

    let live0 = live();
    let t = Instant::now();
    let m = Mirror::new(Default::default());
    let stream = watcher(
        Api::<PartialObjectMeta<ReplicaSet>>::namespaced(client.clone(), ns),
        Default::default(),
    )
    .default_backoff();
    let task = tokio::spawn(mirror::run(
        "bench",
        stream,
        m.clone(),
        |o: &PartialObjectMeta<ReplicaSet>| {
            Some((
                (o.metadata.namespace.clone()?, o.metadata.name.clone()?),
                controller_of(&o.metadata),
            ))
        },
        |_| {},
    ));
    m.synced().await;
    let mirror_sync = t.elapsed();
    // Let the list's buffers go before reading the heap.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live1 = live();

    let t = Instant::now();
    let (store, writer) = reflector::store::<ReplicaSet>();
    let refl = reflector(
        writer,
        watcher(
            Api::<ReplicaSet>::namespaced(client, ns),
            Default::default(),
        ),
    )
    .applied_objects();
    let drive = tokio::spawn(async move {
        let mut refl = std::pin::pin!(refl);
        while refl.next().await.is_some() {}
    });
    store.wait_until_ready().await.unwrap();
    let full_sync = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live2 = live();
    let full_json: usize = store
        .state()
        .iter()
        .map(|o| serde_json::to_vec(&**o).unwrap().len())
        .sum();

    println!("watch store memory, {n} ReplicaSets (live heap held after the first list):");
    println!(
        "  rightsizer mirror (metadata watch, owner only): {:>7} KiB total, {:>6.0} B/object, first list {:?}",
        (live1 - live0) / 1024,
        (live1 - live0) as f64 / m.len() as f64,
        mirror_sync
    );
    println!(
        "  kube reflector (whole objects):                 {:>7} KiB total, {:>6.0} B/object, first list {:?}",
        (live2 - live1) / 1024,
        (live2 - live1) as f64 / store.state().len() as f64,
        full_sync
    );
    println!("  whole objects as JSON: {} B/object", full_json / n.max(1));
    task.abort();
    drive.abort();
    plane.kubectl_ok(&["delete", "namespace", ns, "--wait=false"], None);
}
