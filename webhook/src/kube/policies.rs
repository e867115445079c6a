//! Policy ConfigMaps (label `rightsizer.io/policy=true`) in the webhook's namespace,
//! fed into the `PolicyStore` as they change. A refused one keeps its source's last
//! good policies (the store does that) and gets a Warning Event, a log line with the
//! field path and the `rightsizer_policy_rejected` metric.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::kube::events::{EventType, Recorder, Target};
use crate::kube::mirror::{self, Change, Mirror};
use crate::policy::load::POLICY_LABEL;
use crate::policy::PolicyStore;

/// Event reason for a refused policy.
pub const REJECTED_REASON: &str = "PolicyRejected";

/// A policy ConfigMap as the store reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySource {
    pub uid: Option<String>,
    /// The ConfigMap re-serialized as a manifest (what `PolicyStore::apply` parses).
    pub text: String,
}

/// The store's source name for a ConfigMap.
pub fn source_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn derive(cm: &ConfigMap) -> Option<(String, PolicySource)> {
    // Only what the policy parser reads; managedFields and the rest are dropped.
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": cm.metadata.name,
            "namespace": cm.metadata.namespace,
            "labels": cm.metadata.labels,
        },
        "data": cm.data,
    });
    Some((
        cm.name_any(),
        PolicySource {
            uid: cm.metadata.uid.clone(),
            text: manifest.to_string(),
        },
    ))
}

/// Watch the policy ConfigMaps of `namespace` until the task is dropped.
pub async fn run(
    client: Client,
    namespace: String,
    store: Arc<PolicyStore>,
    mirror: Arc<Mirror<String, PolicySource>>,
    recorder: Arc<Recorder>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&format!("{POLICY_LABEL}=true"));
    let stream = watcher(api, config).default_backoff();
    let (tx, mut rx) = mpsc::unbounded_channel::<(Target, String)>();
    // Events are posted off the watch loop so a slow apiserver does not delay policies.
    let poster = tokio::spawn(async move {
        while let Some((target, message)) = rx.recv().await {
            if let Err(e) = recorder
                .publish(&target, EventType::Warning, REJECTED_REASON, &message)
                .await
            {
                tracing::warn!(error = %e, "could not post the PolicyRejected Event");
            }
        }
    });
    let ns = namespace.clone();
    let first_sync = mirror.clone();
    let on_change = |change: Change<'_, String, PolicySource>| match change {
        Change::Upsert(name, src) => {
            let source = source_name(&ns, name);
            match store.apply(&source, &src.text) {
                Ok(true) => tracing::info!(policy = %source, "policy applied"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(policy = %source, path = e.path().unwrap_or(""), error = %e,
                        "policy refused; the last good one stays");
                    let target = Target {
                        api_version: "v1".into(),
                        kind: "ConfigMap".into(),
                        namespace: ns.clone(),
                        name: name.clone(),
                        uid: src.uid.clone(),
                    };
                    let _ = tx.send((target, format!("{e}; the last good policy stays in force")));
                }
            }
        }
        Change::Remove(name, _) => {
            let source = source_name(&ns, name);
            if store.remove(&source) {
                tracing::info!(policy = %source, "policy removed");
            }
        }
    };
    let watch = mirror::run("policy-configmaps", stream, mirror, derive, on_change);
    let ready = async {
        first_sync.synced().await;
        // Policies from the cluster are in: admission may serve.
        store.mark_ready();
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = watch => {}
        _ = ready => {}
    }
    poster.abort();
}
