//! The updater against the real v1.20.2 apiserver, as the webhook's ServiceAccount:
//! discovery takes the eviction path (policy/v1beta1, no `pods/resize`), and without the
//! rights of deploy/overlays/updater it says so in its health (what `/readyz` reports),
//! with them it is healthy.

use super::*;

use rightsizer::updater::{self, access, UpdaterOptions};

fn options() -> UpdaterOptions {
    UpdaterOptions {
        interval: Duration::from_secs(3600),
        per_minute: 6,
        enforcement: true,
    }
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn the_updater_takes_the_eviction_path_on_v1_20_and_says_when_it_lacks_the_rights() {
    let (_g, plane) = setup().await;
    let sa = plane.client_as(cluster::WEBHOOK_USER).await;
    let served = access::discover(&sa).await.expect("discovery");
    assert_eq!(served.api.version, (1, 20));
    assert!(!served.api.resize_subresource && !served.api.in_place());
    assert_eq!(served.eviction, Some("policy/v1beta1"));

    let r = sa_replica(plane, "updater-probe").await;
    let lookup = Arc::new(PoliciesLookup {
        store: r.policies.clone(),
        facts: r.handles.facts.clone(),
        own_namespace: Some("rightsizer-system".into()),
    });
    let start = || async {
        let mut registry = Registry::default();
        let (task, health) = updater::start(
            sa.clone(),
            &r.handles,
            lookup.clone(),
            &mut registry,
            options(),
        )
        .await
        .expect("the updater starts");
        task.abort();
        health.check()
    };
    let why = start().await.unwrap_err();
    assert!(
        why.contains("may not list pods or create pods/eviction")
            && why.contains("deploy/overlays/updater"),
        "{why}"
    );

    let rbac = cluster::repo_root().join("deploy/overlays/updater/rbac-updater.yaml");
    let rbac = rbac.to_str().unwrap();
    plane.kubectl_ok(&["apply", "-f", rbac], None);
    // The authorizer sees new bindings through its watch: within moments.
    let mut healthy = start().await;
    for _ in 0..20 {
        if healthy.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        healthy = start().await;
    }
    plane.kubectl_ok(&["delete", "-f", rbac], None);
    r.handles.shutdown().await.unwrap();
    assert_eq!(healthy, Ok(()));
}
