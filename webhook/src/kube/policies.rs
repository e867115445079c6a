//! Policy ConfigMaps (label `rightsizer.io/policy=true`) in the webhook's namespace,
//! fed into the `PolicyStore` as they change. A refused one keeps its source's last
//! good policies (the store does that) and gets a Warning Event, a log line with the
//! field path and the `rightsizer_policy_rejected` metric.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::kube::events::{EventType, Recorder, Target};
use crate::kube::mirror::{Change, Mirror};
use crate::kube::watchers::Watches;
use crate::policies::load::POLICY_LABEL;
use crate::policies::store::PolicyStore;

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

/// Watch the policy ConfigMaps of `namespace` into `store`; the store is marked ready
/// at the first complete list.
pub(crate) fn watch(
    w: &mut Watches,
    namespace: String,
    store: Arc<PolicyStore>,
    recorder: Arc<Recorder>,
) {
    let api: Api<ConfigMap> = Api::namespaced(w.client.clone(), &namespace);
    let config = watcher::Config::default().labels(&format!("{POLICY_LABEL}=true"));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Target, String)>();
    // Events are posted off the watch loop so a slow apiserver does not delay policies;
    // the poster ends when the watch (holding `tx`) does.
    w.tasks.push(tokio::spawn(async move {
        while let Some((target, message)) = rx.recv().await {
            if let Err(e) = recorder
                .publish(&target, EventType::Warning, REJECTED_REASON, &message)
                .await
            {
                tracing::warn!(error = %e, "could not post the PolicyRejected Event");
            }
        }
    }));
    let mirror: Arc<Mirror<String, PolicySource>> = w.new_mirror("policyconfigmaps");
    let ns = namespace.clone();
    let applied = store.clone();
    let on_change = move |change: Change<'_, String, PolicySource>| match change {
        Change::Upsert(name, src) => {
            let source = source_name(&ns, name);
            match applied.apply(&source, &src.text) {
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
            if applied.remove(&source) {
                tracing::info!(policy = %source, "policy removed");
            }
        }
    };
    let first_list = mirror.clone();
    w.mirror("policyconfigmaps", api, config, mirror, derive, on_change);
    w.tasks.push(tokio::spawn(async move {
        first_list.synced().await;
        // Policies from the cluster are in: admission may serve.
        store.mark_ready();
    }));
}
