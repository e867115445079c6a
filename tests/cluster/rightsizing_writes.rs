//! How the leader writes Rightsizing statuses (issue 20): nothing when the stored status
//! already says the same (a new leader does not rewrite every status), and fenced: a
//! write is conditional on the version the decision started from, so a deposed leader's
//! late write is refused instead of overwriting the new leader's, and a replica that no
//! longer leads does not write at all. Writes are counted by resourceVersion.

use std::time::Duration;

use kube::api::{Api, DynamicObject, PostParams};
use rightsizer::kube::rightsizing;
use rightsizer_core::recommendation::ContainerKey;

use crate::kube_watch::{
    deployment, mem, namespace, quick_lease, replica, rightsizing, saved, setup, until,
};

fn version(o: &DynamicObject) -> String {
    o.metadata.resource_version.clone().unwrap_or_default()
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn a_new_leader_rewrites_no_status_that_says_the_same() {
    let (_g, plane) = setup().await;
    let (sys, ns) = ("rw-quiet-sys", "rw-quiet");
    namespace(plane, sys, &[]);
    namespace(plane, ns, &[]);
    plane.kubectl_ok(
        &["-n", ns, "apply", "-f", "-"],
        Some(&deployment("checkout").to_string()),
    );
    let key = ContainerKey::parse(&format!("{ns}/Deployment/checkout/app")).unwrap();
    let state = saved(&key, mem(200, 400, 1_700_000_000, "p95 rose"), &[], None);

    let a = replica(plane, sys, "quiet-a", quick_lease()).await;
    until(Duration::from_secs(5), || {
        a.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("the first replica leads");
    let store = a.handles.commit_store();
    store.load();
    store.save(vec![state.clone()]).await.unwrap();
    let written = version(&rightsizing(plane, ns, "deployment-checkout").await.unwrap());
    a.handles.shutdown().await.unwrap();

    // A new leader decides the same from what is stored: no write.
    let b = replica(plane, sys, "quiet-b", quick_lease()).await;
    until(Duration::from_secs(5), || {
        b.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("the second replica leads");
    let store = b.handles.commit_store();
    assert!(store.load().containers.contains_key(&key));
    store.save(vec![state.clone()]).await.unwrap();
    let after = rightsizing(plane, ns, "deployment-checkout").await.unwrap();
    assert_eq!(
        version(&after),
        written,
        "the same status was written again"
    );

    // A change is still written.
    store
        .save(vec![saved(
            &key,
            mem(300, 500, 1_700_010_000, "p95 rose"),
            &[],
            None,
        )])
        .await
        .unwrap();
    let changed = rightsizing(plane, ns, "deployment-checkout").await.unwrap();
    assert_ne!(version(&changed), written);
    b.handles.shutdown().await.unwrap();
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn a_deposed_leaders_write_is_refused() {
    let (_g, plane) = setup().await;
    let (sys, ns) = ("rw-fence-sys", "rw-fence");
    namespace(plane, sys, &[]);
    namespace(plane, ns, &[]);
    plane.kubectl_ok(
        &["-n", ns, "apply", "-f", "-"],
        Some(&deployment("checkout").to_string()),
    );
    let key = ContainerKey::parse(&format!("{ns}/Deployment/checkout/app")).unwrap();
    let a = replica(plane, sys, "fence-a", quick_lease()).await;
    until(Duration::from_secs(5), || {
        a.handles.leader.is_leader().then_some(())
    })
    .await
    .expect("the first replica leads");
    let store = a.handles.commit_store();
    store
        .save(vec![saved(
            &key,
            mem(200, 400, 1_700_000_000, "first"),
            &[],
            None,
        )])
        .await
        .unwrap();
    until(Duration::from_secs(5), || {
        store.load().containers.contains_key(&key).then_some(())
    })
    .await
    .expect("the leader reads its write back");
    // The leader's cycle starts from what it loaded; meanwhile a new leader writes.
    store.load();
    let api: Api<DynamicObject> =
        Api::namespaced_with(plane.client().await, ns, &rightsizing::api_resource());
    let mut theirs = api.get("deployment-checkout").await.unwrap();
    theirs.data["status"]["memoryCommitted"] = "app=written-by-the-new-leader".into();
    let theirs = api
        .replace_status("deployment-checkout", &PostParams::default(), &theirs)
        .await
        .unwrap();
    // Give the old leader's watch time to see it: the fence must not depend on lag.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = store
        .save(vec![saved(
            &key,
            mem(900, 900, 1_700_020_000, "late"),
            &[],
            None,
        )])
        .await;
    let e = late.expect_err("a deposed leader overwrote the new leader's status");
    let e = e.to_string().to_lowercase();
    assert!(e.contains("409") || e.contains("conflict"), "{e}");
    let now = api.get("deployment-checkout").await.unwrap();
    assert_eq!(version(&now), version(&theirs));

    // A replica that does not lead does not write at all.
    let b = replica(plane, sys, "fence-b", quick_lease()).await;
    assert!(!b.handles.leader.is_leader());
    let refused = b
        .handles
        .commit_store()
        .save(vec![saved(
            &key,
            mem(700, 700, 1_700_030_000, "follower"),
            &[],
            None,
        )])
        .await;
    assert!(refused.is_err(), "a follower wrote");
    assert_eq!(
        version(&api.get("deployment-checkout").await.unwrap()),
        version(&theirs)
    );
    b.handles.shutdown().await.unwrap();
    a.handles.shutdown().await.unwrap();
}
