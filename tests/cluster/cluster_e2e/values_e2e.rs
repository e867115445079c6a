//! Values against the cluster's own facts, on the real apiserver: the node cap (Node objects
//! made on the control plane without a kubelet, `status.allocatable` set through the status
//! subresource) and a `globalDefault` PriorityClass (which the apiserver fills in before
//! webhooks run). Both change every Pod of the cluster while they exist, so each test
//! removes what it made, under the shared lock.

use super::*;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DeleteParams, Patch, PatchParams};

const GI: u64 = 1024 * MI;

/// Deletes cluster-scoped objects the test made, however it ends.
struct Remove<'a> {
    plane: &'a ControlPlane,
    objects: Vec<(&'static str, String)>,
}

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        for (kind, name) in &self.objects {
            self.plane.kubectl(
                &["delete", kind, name, "--ignore-not-found", "--wait=false"],
                None,
            );
        }
    }
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// Create (as a server-side dry run) until `done` holds for the stored Pod; the webhook's
/// watches see a new object within moments, not at once.
async fn until(
    client: &kube::Client,
    ns: &str,
    p: &Pod,
    what: &str,
    done: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = create_in_time(client, ns, &dry_run(), p)
            .await
            .expect("dry-run create");
        if done(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 20 s; last: {:?}",
            got.spec
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn a_raise_is_capped_at_the_largest_node_allocatable() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    // The snapshot commits 3Gi/6Gi for this Pod, declared 1Gi/2Gi.
    let big = pod("big", vec![container("app", "1Gi", "2Gi")]);
    let before = create_in_time(&client, "e2e-nodes", &dry_run(), &big)
        .await
        .expect("dry run");
    assert_eq!(
        memory(&before, "app"),
        (Some(3 * GI), Some(6 * GI)),
        "with no Node known nothing is capped"
    );

    let _remove = Remove {
        plane: &env.plane,
        objects: vec![("node", "e2e-small".into())],
    };
    env.apply(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: e2e-small\n  labels:\n    pool: e2e\n",
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let status = json!({"status": {
        "capacity": {"memory": "4Gi", "cpu": "2", "pods": "110"},
        "allocatable": {"memory": "2Gi", "cpu": "2", "pods": "110"}
    }});
    nodes
        .patch_status("e2e-small", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status patched");

    let capped = until(&client, "e2e-nodes", &big, "the cap", |p| {
        memory(p, "app").0 == Some(2 * GI)
    })
    .await;
    assert_eq!(memory(&capped, "app"), (Some(2 * GI), Some(2 * GI)));
    // Stored under a generated name (same workload, `big`): the dry runs keep the name free.
    let mut named = big.clone();
    named.metadata.name = None;
    named.metadata.generate_name = Some("big-".into());
    let stored = create_pod(&client, "e2e-nodes", &named)
        .await
        .expect("capped pod admitted");
    assert_eq!(memory(&stored, "app"), (Some(2 * GI), Some(2 * GI)));
    let sized = annotation(&stored, "rightsizer.io/sized").unwrap_or_default();
    assert!(sized.contains(r#""nodeCap":"2Gi""#), "{sized}");
    let metrics = env.metrics().await;
    assert!(
        counter_sum(
            &metrics,
            "rightsizer_admission_node_capped_total",
            &[("resource", "memory")]
        ) >= 1.0,
        "{metrics}"
    );

    // A nodeSelector no node matches counts every node: still capped, never refused.
    let mut elsewhere = pod("big", vec![container("app", "1Gi", "2Gi")]);
    elsewhere.spec.as_mut().unwrap().node_selector =
        Some([("pool".to_string(), "gpu".to_string())].into());
    let got = create_in_time(&client, "e2e-nodes", &dry_run(), &elsewhere)
        .await
        .expect("dry run");
    assert_eq!(memory(&got, "app"), (Some(2 * GI), Some(2 * GI)));

    nodes
        .delete("e2e-small", &DeleteParams::default())
        .await
        .expect("node deleted");
    until(
        &client,
        "e2e-nodes",
        &big,
        "no cap once the Node is gone",
        |p| memory(p, "app").0 == Some(3 * GI),
    )
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn a_global_default_class_gives_way_to_the_policy_class() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    let _remove = Remove {
        plane: &env.plane,
        objects: vec![("priorityclass", "e2e-global".into())],
    };
    env.apply(
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: e2e-global\nvalue: 5\nglobalDefault: true\n",
    );
    // The namespace's rule gives e2e-batch (1000). The apiserver's Priority admission runs
    // before webhooks: it fills in e2e-global, which the webhook takes as no class once its
    // watch knows that class is the global default.
    let p = pod("defaulted", vec![container("app", "64Mi", "128Mi")]);
    until(&client, "e2e-priority", &p, "the policy class", |p| {
        p.spec.as_ref().unwrap().priority_class_name.as_deref() == Some("e2e-batch")
    })
    .await;
    let stored = create_pod(&client, "e2e-priority", &p)
        .await
        .expect("the class and priority the webhook set are accepted after Priority admission");
    let spec = stored.spec.as_ref().unwrap();
    assert_eq!(spec.priority_class_name.as_deref(), Some("e2e-batch"));
    assert_eq!(spec.priority, Some(1000));
    assert_eq!(
        spec.preemption_policy.as_deref(),
        Some("PreemptLowerPriority")
    );

    // Where no rule applies, the global default stays as the apiserver set it.
    let plain = create_pod(
        &client,
        "e2e-calls",
        &pod("plain", vec![container("app", "64Mi", "128Mi")]),
    )
    .await
    .expect("pod admitted");
    let spec = plain.spec.as_ref().unwrap();
    assert_eq!(spec.priority_class_name.as_deref(), Some("e2e-global"));
    assert_eq!(spec.priority, Some(5));

    // At its own stage the Priority plugin refuses a priority that contradicts the class:
    // which is why the webhook, running after it, writes the class's value with the class.
    let mut wrong = pod("wrong", vec![container("app", "64Mi", "128Mi")]);
    let s = wrong.spec.as_mut().unwrap();
    s.priority_class_name = Some("e2e-user".into());
    s.priority = Some(3);
    let refused = create_pod(&client, "e2e-calls", &wrong).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403),
        "{refused:?}"
    );

    let classes: Api<PriorityClass> = Api::all(client.clone());
    classes
        .delete("e2e-global", &DeleteParams::default())
        .await
        .expect("class deleted");
}
