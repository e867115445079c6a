//! Whether this identity may list and watch Pods cluster-wide, asked of the apiserver
//! with a SelfSubjectAccessReview (reads no Pod). The shipped base grants no Pod access:
//! the Pod watch (`--kube-state-metrics never|auto` without kube-state-metrics) comes
//! with its own RBAC (deploy/components/pod-watch, chart `kubeStateMetrics`), and a
//! process configured to watch Pods without it says so in its log and `/readyz`.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use std::sync::Arc;

use kube::api::{Api, PostParams};
use kube::Client;

use super::pods::PodWatch;
use crate::analyzer::ksm::KsmMode;
use crate::server::readiness::Readiness;

/// The verbs the Pod watch needs, all namespaces.
const VERBS: [&str; 2] = ["list", "watch"];

/// `Ok(None)` when every verb is allowed, `Ok(Some(verb))` naming the first refused one.
pub async fn refused_pod_verb(client: &Client) -> Result<Option<&'static str>, kube::Error> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    for verb in VERBS {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    resource: Some("pods".into()),
                    verb: Some(verb.into()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = api.create(&PostParams::default(), &review).await?;
        if !answer.status.is_some_and(|s| s.allowed) {
            return Ok(Some(verb));
        }
    }
    Ok(None)
}

/// What `/readyz` and the log say when the Pod watch is configured but forbidden.
pub fn forbidden_message(verb: &str, mode: &str) -> String {
    format!(
        "configured to watch Pods (--kube-state-metrics {mode}) but this ServiceAccount may not {verb} pods: \
         grant it (deploy/components/pod-watch, or the chart's kubeStateMetrics: never|auto) \
         or run with --kube-state-metrics always"
    )
}

/// With the Pod watch configured (`mode` not `always`), a readiness check that fails when
/// this identity may not list/watch Pods: always with `never` (the analyzer has no other
/// source), with `auto` once the watch has been started (no kube-state-metrics series
/// were found). Logged once at start.
pub async fn gate(mode: KsmMode, client: &Client, pods: Arc<PodWatch>) -> Option<Readiness> {
    let name = match mode {
        KsmMode::Always => return None,
        KsmMode::Never => "never",
        KsmMode::Auto => "auto",
    };
    let verb = match refused_pod_verb(client).await {
        Ok(None) => return None,
        Ok(Some(verb)) => verb,
        Err(e) => {
            tracing::warn!(error = %e, "could not ask whether Pods may be watched");
            return None;
        }
    };
    let msg = forbidden_message(verb, name);
    if mode == KsmMode::Never {
        tracing::error!("{msg}");
    } else {
        tracing::warn!("{msg} (needed only if Prometheus has no kube-state-metrics series)");
    }
    Some(Readiness::from_fn(move || {
        if mode == KsmMode::Never || pods.is_started() {
            Err(msg.clone())
        } else {
            Ok(())
        }
    }))
}
