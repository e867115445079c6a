//! Never blocked by what runs after the webhook (issue 20): a scoped ResourceQuota and
//! PodTolerationRestriction on the real apiserver (up.sh enables both plugins). The
//! shared policy (`cluster_e2e::policy_configmap`) gives Pods labelled `tier=critical`
//! in `e2e-tier` the class `high-priority`, and adds the tolerations `spot` and
//! `dedicated` in `e2e-tolerate`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Toleration};

use crate::cluster_e2e::{container, create_pod, pod, setup, Env};

/// The objects these tests need, applied with the shared fixtures.
pub(crate) fn fixtures() -> String {
    r#"apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: high-priority
value: 100000
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: no-high-priority
  namespace: e2e-tier
spec:
  hard:
    pods: "0"
  scopeSelector:
    matchExpressions:
      - scopeName: PriorityClass
        operator: In
        values: [high-priority]
---
apiVersion: v1
kind: Namespace
metadata:
  name: e2e-tolerate
  labels:
    rightsizer.io/enabled: "true"
  annotations:
    scheduler.alpha.kubernetes.io/tolerationsWhitelist: '[{"key": "dedicated", "operator": "Exists"}, {"key": "node.kubernetes.io/not-ready", "operator": "Exists"}, {"key": "node.kubernetes.io/unreachable", "operator": "Exists"}, {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists"}]'
"#
    .to_string()
}

fn labelled(name: &str, labels: &[(&str, &str)]) -> Pod {
    let mut p = pod(name, vec![container("app", "64Mi", "128Mi")]);
    p.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    p
}

/// Reviews in which a change was withheld for `plugin`.
async fn withheld(env: &Env, plugin: &str) -> f64 {
    let series = format!("rightsizer_admission_withheld_total{{plugin=\"{plugin}\"}}");
    env.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Quota admission refuses Pods a quota counts until the quota controller has filled in
/// its status.
async fn quota_synced(env: &Env, ns: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let args = [
        "-n",
        ns,
        "get",
        "resourcequota",
        name,
        "-o",
        "jsonpath={.status.hard}",
    ];
    while env.plane.kubectl_ok(&args, None).trim().is_empty() {
        assert!(Instant::now() < deadline, "quota status never synced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn a_class_a_scoped_quota_would_refuse_is_not_set() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    quota_synced(env, "e2e-tier", "no-high-priority").await;
    // The quota is in force: a Pod that names the class itself is refused.
    let mut own = labelled("names-the-class", &[]);
    own.spec.as_mut().unwrap().priority_class_name = Some("high-priority".into());
    let refused = create_pod(&client, "e2e-tier", &own).await;
    let e = refused.expect_err("the quota admitted a high-priority Pod");
    assert!(e.to_string().contains("exceeded quota"), "{e}");

    let (reviews, before) = (env.reviews().await, withheld(env, "resourcequota").await);
    // Before issue 20 the rule set the class and this Pod was refused `exceeded quota:
    // no-high-priority`.
    let stored = create_pod(
        &client,
        "e2e-tier",
        &labelled("critical", &[("tier", "critical")]),
    )
    .await
    .unwrap_or_else(|e| panic!("refused: {e}\nlog:\n{}", env.webhook_log()));
    assert!(
        env.reviews().await > reviews,
        "the webhook was not consulted"
    );
    let spec = stored.spec.as_ref().unwrap();
    assert_eq!(spec.priority_class_name, None);
    assert_eq!(withheld(env, "resourcequota").await, before + 1.0);
}

fn tolerates(p: &Pod, key: &str) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .any(|t: &Toleration| t.key.as_deref() == Some(key))
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn a_toleration_outside_the_namespace_whitelist_is_not_added() {
    let (_serial, env) = setup().await;
    let client = env.plane.client().await;
    // The whitelist is in force: a Pod tolerating `spot` itself is refused.
    let mut own = labelled("tolerates-spot", &[]);
    own.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
        key: Some("spot".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    let e = create_pod(&client, "e2e-tolerate", &own)
        .await
        .expect_err("PodTolerationRestriction admitted a toleration outside the whitelist");
    assert!(e.to_string().contains("whitelist"), "{e}");

    let before = withheld(env, "podtolerationrestriction").await;
    let stored = create_pod(&client, "e2e-tolerate", &labelled("placed", &[]))
        .await
        .unwrap_or_else(|e| panic!("refused: {e}\nlog:\n{}", env.webhook_log()));
    assert!(
        tolerates(&stored, "dedicated"),
        "the allowed toleration was added"
    );
    assert!(!tolerates(&stored, "spot"));
    assert_eq!(
        withheld(env, "podtolerationrestriction").await,
        before + 1.0
    );
}
