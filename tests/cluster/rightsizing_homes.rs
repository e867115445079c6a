//! Every workload has one home for its state (issue 22): a bare Pod (known through the
//! Pod watch, or on the base install through kube-state-metrics' `kube_pod_info`) and a
//! Knative Service (where its CRD is served) get a Rightsizing owned by themselves,
//! like a Deployment's, and kube-controller-manager's garbage collector removes it with
//! them.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject};
use rightsizer::analyzer::ksm::WorkloadFacts;
use rightsizer_core::recommendation::ContainerKey;
use serde_json::json;

use crate::cluster::{ControlPlane, WEBHOOK_USER};
use crate::kube_watch::{
    cluster_analyzer, fed, mem, namespace, policy_cm, policy_precedence, quick_lease, replica,
    rightsizing, sa_replica, saved, setup, until, until_async, H,
};
use crate::prometheus::TestProm;
use crate::scenario;

/// (kind, name, apiVersion, uid) of a Rightsizing's one owner.
fn owner(o: &DynamicObject) -> (String, String, String, String) {
    let refs = o.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(refs.len(), 1, "{refs:?}");
    let r = &refs[0];
    (
        r.kind.clone(),
        r.name.clone(),
        r.api_version.clone(),
        r.uid.clone(),
    )
}

/// Wait (up to 90 s: the garbage collector discovers new resources within its 30 s
/// resync) for a Rightsizing to be collected.
async fn collected(plane: &ControlPlane, ns: &str, name: &str) {
    let t = Instant::now();
    let gone = until_async(Duration::from_secs(90), || async {
        rightsizing(plane, ns, name).await.is_none().then_some(())
    })
    .await;
    eprintln!("owner deleted -> {name} collected after {:?}", t.elapsed());
    assert!(gone.is_some(), "{name} outlived its owner");
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn a_bare_pod_owns_its_rightsizing_and_takes_it_along() {
    let (_g, plane) = setup().await;
    let (sys, ns) = ("home-pod-sys", "home-pod");
    namespace(plane, sys, &[]);
    namespace(plane, ns, &[]);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&pod.to_string()));
    let uid = Api::<Pod>::namespaced(plane.client().await, ns)
        .get("debug")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();

    let a = replica(plane, sys, "home-pod-a", quick_lease()).await;
    until(Duration::from_secs(5), || {
        a.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("the replica leads");
    // The Pod watch (the pod-watch component's) feeds the analyzer, and so tells the
    // store the bare Pod's uid.
    assert!(a.handles.pods.ready(Duration::from_secs(20)).await);
    let key = ContainerKey::parse(&format!("{ns}/Pod/debug/app")).unwrap();
    until(Duration::from_secs(5), || {
        fed(&a.handles.pods, ns);
        a.handles.writer.target(&key.workload).ok()?.uid
    })
    .await
    .expect("the Pod watch knows the bare Pod");
    a.handles
        .commit_store()
        .save(vec![saved(
            &key,
            mem(64, 128, 1_700_000_000, "p95 rose"),
            &[],
            None,
        )])
        .await
        .unwrap();

    let obj = rightsizing(plane, ns, "pod-debug")
        .await
        .expect("a Rightsizing pod-debug");
    assert_eq!(
        owner(&obj),
        ("Pod".into(), "debug".into(), "v1".into(), uid)
    );
    assert_eq!(obj.data["status"]["workload"], "Pod/debug");
    let table = plane.kubectl_ok(&["-n", ns, "get", "rsz"], None);
    eprintln!("{table}");
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("pod-debug") && row.contains("Pod/debug") && row.contains("app=64Mi/128Mi"),
        "{row}"
    );
    // A restarted replica reads it back: no longer one process's memory.
    a.handles.shutdown().await.unwrap();
    let b = replica(plane, sys, "home-pod-b", quick_lease()).await;
    let (state, _) = until(Duration::from_secs(5), || {
        b.handles
            .commit_store()
            .load()
            .containers
            .get(&key)
            .cloned()
    })
    .await
    .expect("the new replica reads the bare Pod's state");
    assert_eq!(state.memory.map(|c| c.sizes.limit), Some(Some(128 << 20)));

    // No kubelet here: the unscheduled Pod goes at once, and its Rightsizing with it.
    Api::<Pod>::namespaced(plane.client().await, ns)
        .delete("debug", &DeleteParams::background())
        .await
        .unwrap();
    collected(plane, ns, "pod-debug").await;
    b.handles.shutdown().await.unwrap();
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn on_the_base_install_kube_state_metrics_gives_a_bare_pod_its_rightsizing() {
    let (_g, plane) = setup().await;
    let ns = "home-ksm";
    namespace(plane, ns, &[("rightsizer.io/enabled", "true")]);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&pod.to_string()));
    let uid = Api::<Pod>::namespaced(plane.client().await, ns)
        .get("debug")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    // The base install's identity may not read Pods: the uid can only come from
    // kube-state-metrics.
    let can = plane.kubectl(
        &[
            "auth",
            "can-i",
            "list",
            "pods",
            "-n",
            ns,
            "--as",
            WEBHOOK_USER,
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&can.stdout).trim(), "no", "{can:?}");

    // A day of the Pod's usage, its `<none>` owner row, and kube_pod_info with the uid,
    // as kube-state-metrics v2 exports them.
    let t0 = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 3 * H;
        now - now % 60
    };
    let (start, end) = (t0 - 26 * H, t0 + 2 * H);
    let mut history = scenario::Cluster::new(t0);
    let spec = scenario::PodSpec {
        ns,
        pod: "debug",
        owner_kind: "<none>",
        owner_name: "<none>",
        from: start,
        to: end,
    };
    history.pod(&spec, &format!("{ns}/Pod/debug")).container(
        "app",
        |t| if (t / 60) % 10 == 0 { 300.0 } else { 200.0 },
        |_| 100.0,
        (Some(128), Some(256)),
        None,
    );
    history.constant(
        "kube_pod_info",
        &format!(
            r#"namespace="{ns}",pod="debug",uid="{uid}",created_by_kind="<none>",created_by_name="<none>",node="n1""#
        ),
        1.0,
        start,
        end,
    );
    let prom = TestProm::start_with(&history.om);
    let policy = format!("precedence: 5\nmode: enforce\nselector:\n  namespaces: [{ns}]\n");
    let cm = policy_cm("home-ksm", "rightsizer-system", &policy);
    plane.kubectl_ok(
        &["-n", "rightsizer-system", "apply", "-f", "-"],
        Some(&serde_json::to_string(&cm).unwrap()),
    );

    // The webhook's ServiceAccount, the analyzer reading kube-state-metrics only
    // (`RIGHTSIZER_KUBE_STATE_METRICS=always`, as `serve` wires it: no Pod watch).
    let a = sa_replica(plane, "home-ksm-a").await;
    until(Duration::from_secs(5), || {
        (a.handles.leader.is_leader() && policy_precedence(&a.policies, "home-ksm") == Some(5))
            .then_some(())
    })
    .await
    .expect("a leads with the policy loaded");
    cluster_analyzer(&a, &prom.url())
        .cycle(t0)
        .await
        .expect("a cycle");

    let obj = rightsizing(plane, ns, "pod-debug")
        .await
        .expect("a Rightsizing pod-debug");
    assert_eq!(
        owner(&obj),
        ("Pod".into(), "debug".into(), "v1".into(), uid)
    );
    assert_eq!(obj.data["status"]["workload"], "Pod/debug");
    let committed = &obj.data["status"]["containers"][0]["memory"]["committed"];
    assert_eq!(committed["source"], "enforced", "{obj:?}");

    Api::<Pod>::namespaced(plane.client().await, ns)
        .delete("debug", &DeleteParams::background())
        .await
        .unwrap();
    collected(plane, ns, "pod-debug").await;
    a.handles.shutdown().await.unwrap();
    plane.kubectl_ok(
        &["-n", "rightsizer-system", "delete", "configmap", "home-ksm"],
        None,
    );
}

/// A stand-in for Knative's Service CRD: the group, version, kind and plural only.
fn knative_service_crd() -> serde_json::Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "services.serving.knative.dev"},
        "spec": {"group": "serving.knative.dev", "scope": "Namespaced",
            "names": {"plural": "services", "singular": "service", "kind": "Service", "listKind": "ServiceList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn a_knative_service_owns_its_rightsizing_where_knative_is_served() {
    let (_g, plane) = setup().await;
    let ns = "home-kn";
    namespace(plane, ns, &[]);
    plane.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&knative_service_crd().to_string()),
    );
    plane.kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/services.serving.knative.dev",
        ],
        None,
    );
    let svc = json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {"template": {"spec": {"containers": [{"image": "hello"}]}}}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&svc.to_string()));

    // Discovery finds Services served (Configurations are not: not watched, no error);
    // the shipped RBAC lets the webhook's ServiceAccount watch them.
    let a = sa_replica(plane, "home-kn-a").await;
    until(Duration::from_secs(15), || {
        a.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("the replica leads");
    let key = ContainerKey::parse(&format!("{ns}/KnativeService/hello/user-container")).unwrap();
    let (uid, _) = until(Duration::from_secs(5), || {
        a.handles.facts.workload(&key.workload)?.uid
    })
    .await
    .expect("the Knative Service is watched");
    a.handles
        .commit_store()
        .save(vec![saved(
            &key,
            mem(96, 192, 1_700_000_000, "p95 rose"),
            &[],
            None,
        )])
        .await
        .unwrap();
    let obj = rightsizing(plane, ns, "knativeservice-hello")
        .await
        .expect("a Rightsizing knativeservice-hello");
    assert_eq!(
        owner(&obj),
        (
            "Service".into(),
            "hello".into(),
            "serving.knative.dev/v1".into(),
            uid
        )
    );
    assert_eq!(obj.data["status"]["workload"], "KnativeService/hello");

    plane.kubectl_ok(
        &["-n", ns, "delete", "services.serving.knative.dev", "hello"],
        None,
    );
    collected(plane, ns, "knativeservice-hello").await;
    a.handles.shutdown().await.unwrap();
    // Later tests' replicas run without Knative, as before.
    plane.kubectl_ok(&["delete", "crd", "services.serving.knative.dev"], None);
}

/// A Rollout-like CRD (`rollouts.argoproj.io`) serving `/scale`, as Argo Rollouts' does;
/// without `scale`, another kind for the case discovery says no.
fn rollout_crd(group: &str, kind: &str, scale: bool) -> serde_json::Value {
    let plural = format!("{}s", kind.to_lowercase());
    let mut version = json!({"name": "v1alpha1", "served": true, "storage": true,
        "schema": {"openAPIV3Schema": {"type": "object",
            "x-kubernetes-preserve-unknown-fields": true}}});
    if scale {
        version["subresources"] = json!({"scale": {"specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas"}});
    }
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind,
                "listKind": format!("{kind}List")},
            "versions": [version]}})
}

/// A revision's ReplicaSet controlled by `roll` (`apiVersion`, kind, uid), and a Pod of it
/// as admission sees it.
fn revision(api_version: &str, kind: &str, uid: &str) -> (serde_json::Value, serde_json::Value) {
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "roll-7d9f8", "ownerReferences": [{"apiVersion": api_version,
            "kind": kind, "name": "roll", "uid": uid, "controller": true}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "roll"}},
            "template": {"metadata": {"labels": {"app": "roll"}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}});
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "roll-7d9f8-", "labels": {"app": "roll"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "roll-7d9f8", "uid": "u", "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}});
    (rs, pod)
}

async fn uid_of(plane: &ControlPlane, ns: &str, resource: &str, name: &str) -> String {
    let out = plane.kubectl_ok(
        &[
            "-n",
            ns,
            "get",
            resource,
            name,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    );
    out.trim().to_string()
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn pods_of_a_controller_serving_scale_are_keyed_to_it_and_it_owns_their_rightsizing() {
    use rightsizer_core::cluster::ClusterFacts;
    use rightsizer_core::object::View;
    use rightsizer_core::workload::kind::WorkloadKind;

    let (_g, plane) = setup().await;
    let ns = "home-roll";
    namespace(plane, ns, &[]);
    // A Rollout served with /scale; a Canary without it.
    for (group, kind, scale) in [
        ("argoproj.io", "Rollout", true),
        ("example.com", "Canary", false),
    ] {
        let crd = rollout_crd(group, kind, scale);
        plane.kubectl_ok(&["apply", "-f", "-"], Some(&crd.to_string()));
        let name = format!("crd/{}s.{group}", kind.to_lowercase());
        plane.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                &name,
            ],
            None,
        );
    }
    let roll = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "roll"}, "spec": {"replicas": 0}});
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&roll.to_string()));
    let uid = uid_of(plane, ns, "rollouts.argoproj.io", "roll").await;
    let (rs, pod) = revision("argoproj.io/v1alpha1", "Rollout", &uid);
    plane.kubectl_ok(&["-n", ns, "apply", "-f", "-"], Some(&rs.to_string()));
    // The Canary in a namespace of its own (the same names).
    let ns_other = "home-roll-noscale";
    namespace(plane, ns_other, &[]);
    let other = json!({"apiVersion": "example.com/v1alpha1", "kind": "Canary",
        "metadata": {"name": "roll"}, "spec": {"replicas": 0}});
    plane.kubectl_ok(
        &["-n", ns_other, "apply", "-f", "-"],
        Some(&other.to_string()),
    );
    let other_uid = uid_of(plane, ns_other, "canarys.example.com", "roll").await;
    let (other_rs, _) = revision("example.com/v1alpha1", "Canary", &other_uid);
    plane.kubectl_ok(
        &["-n", ns_other, "apply", "-f", "-"],
        Some(&other_rs.to_string()),
    );

    // The webhook's ServiceAccount: discovery (open to every user) finds rollouts/scale;
    // no access to Rollouts themselves is needed.
    let a = sa_replica(plane, "home-roll-a").await;
    until(Duration::from_secs(15), || {
        a.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("the replica leads");
    let facts = a.handles.facts.clone();
    let rollout = WorkloadKind::parse("Rollout.argoproj.io").expect("discovery registered it");
    // Admission: the Pod of the revision's ReplicaSet, as the apiserver sends it.
    let key_in = |ns: &str| {
        let facts = facts.clone();
        let pod = pod.clone();
        let ns = ns.to_string();
        move || {
            let v = View::with_owners(WorkloadKind::Pod, &ns, &pod, facts.owners()).ok()?;
            // Until the ReplicaSet watch has it, the name alone decides.
            (!v.identity.to_string().contains("Deployment")).then(|| v.identity.to_string())
        }
    };
    let (got, _) = until(Duration::from_secs(10), key_in(ns))
        .await
        .expect("admission resolves the Pod");
    assert_eq!(got, format!("{ns}/Rollout.argoproj.io/roll"));
    let (got, _) = until(Duration::from_secs(10), key_in(ns_other))
        .await
        .expect("admission resolves the Pod");
    assert_eq!(
        got,
        format!("{ns_other}/ReplicaSet/roll-7d9f8"),
        "no /scale: the revision's ReplicaSet stays the workload"
    );

    // Its Rightsizing, owned by the Rollout (uid from the ReplicaSet's reference).
    let key = ContainerKey::parse(&format!("{ns}/Rollout.argoproj.io/roll/app")).unwrap();
    assert_eq!(key.workload.kind, rollout);
    a.handles
        .commit_store()
        .save(vec![saved(
            &key,
            mem(80, 160, 1_700_000_000, "p95 rose"),
            &[],
            None,
        )])
        .await
        .unwrap();
    let obj = rightsizing(plane, ns, "rollout.argoproj.io-roll")
        .await
        .expect("a Rightsizing rollout.argoproj.io-roll");
    assert_eq!(
        owner(&obj),
        (
            "Rollout".into(),
            "roll".into(),
            "argoproj.io/v1alpha1".into(),
            uid
        )
    );
    assert_eq!(obj.data["status"]["workload"], "Rollout.argoproj.io/roll");
    // A restarted replica reads it back under the same key.
    a.handles.shutdown().await.unwrap();
    let b = sa_replica(plane, "home-roll-b").await;
    let (state, _) = until(Duration::from_secs(5), || {
        b.handles
            .commit_store()
            .load()
            .containers
            .get(&key)
            .cloned()
    })
    .await
    .expect("the new replica reads the Rollout's state");
    assert_eq!(state.memory.map(|c| c.sizes.limit), Some(Some(160 << 20)));

    // Deleting the Rollout takes the Rightsizing along.
    plane.kubectl_ok(&["-n", ns, "delete", "rollouts.argoproj.io", "roll"], None);
    collected(plane, ns, "rollout.argoproj.io-roll").await;
    b.handles.shutdown().await.unwrap();
    for crd in ["rollouts.argoproj.io", "canarys.example.com"] {
        plane.kubectl_ok(&["delete", "crd", crd], None);
    }
}
