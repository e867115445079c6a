//! The one place the updater's decisions are carried out: an eviction or a resize,
//! then an Event on the Pod and on the workload, a counter, and a line in the
//! workload's Rightsizing status.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use rightsizer_core::update::{Decision, Why};
use rightsizer_core::workload::WorkloadKey;

use crate::clock::unix_now;
use crate::kube::events::{EventType, Recorder, Target};
use crate::kube::rightsizing::rfc3339;
use crate::kube::store::KubeStore;
use crate::kube::writer::KubeWriter;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// `rightsizer_updater_evictions_total` and `rightsizer_updater_resizes_total`.
#[derive(Clone, Default)]
pub struct UpdaterMetrics {
    evictions: Family<OutcomeLabel, Counter>,
    resizes: Family<OutcomeLabel, Counter>,
}

impl UpdaterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = UpdaterMetrics::default();
        registry.register(
            "rightsizer_updater_evictions",
            "Evictions the updater asked for, by outcome (evicted, refused_by_budget, forbidden, gone, failed)",
            m.evictions.clone(),
        );
        registry.register(
            "rightsizer_updater_resizes",
            "In-place resizes the updater asked for, by outcome (resized, forbidden, gone, failed)",
            m.resizes.clone(),
        );
        m
    }
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// 429: a PodDisruptionBudget refused it; tried again on a later pass.
    RefusedByBudget,
    /// 403: this identity lacks the permission.
    Forbidden,
    /// 404: the Pod went away meanwhile.
    Gone,
    Failed,
}

impl Outcome {
    fn label(self, done: &'static str) -> &'static str {
        match self {
            Outcome::Done => done,
            Outcome::RefusedByBudget => "refused_by_budget",
            Outcome::Forbidden => "forbidden",
            Outcome::Gone => "gone",
            Outcome::Failed => "failed",
        }
    }

    fn of(r: Result<Value, kube::Error>) -> (Outcome, String) {
        match r {
            Ok(_) => (Outcome::Done, String::new()),
            Err(kube::Error::Api(s)) => {
                let o = match s.code {
                    429 => Outcome::RefusedByBudget,
                    403 => Outcome::Forbidden,
                    404 => Outcome::Gone,
                    _ => Outcome::Failed,
                };
                (o, s.message)
            }
            Err(e) => (Outcome::Failed, e.to_string()),
        }
    }
}

pub struct Executor {
    pub client: Client,
    pub recorder: std::sync::Arc<Recorder>,
    pub writer: std::sync::Arc<KubeWriter>,
    pub store: std::sync::Arc<KubeStore>,
    pub metrics: UpdaterMetrics,
    /// `policy/v1` or `policy/v1beta1`.
    pub eviction_version: &'static str,
}

impl Executor {
    /// Carry out one decision (`Nothing` does nothing). Returns the outcome of an action.
    pub async fn execute(&self, w: &WorkloadKey, d: &Decision) -> Option<Outcome> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &w.namespace);
        let (pod, why, verb, outcome, detail) = match d {
            Decision::Nothing(_) => return None,
            Decision::Evict { pod, why } => {
                let body = json!({
                    "apiVersion": self.eviction_version,
                    "kind": "Eviction",
                    "metadata": {"name": pod, "namespace": w.namespace},
                });
                let r = pods
                    .create_subresource::<Value, Value>(
                        "eviction",
                        pod,
                        &PostParams::default(),
                        &body,
                    )
                    .await;
                let (o, detail) = Outcome::of(r);
                self.metrics
                    .evictions
                    .get_or_create(&OutcomeLabel {
                        outcome: o.label("evicted"),
                    })
                    .inc();
                (pod, why, "evict", o, detail)
            }
            Decision::Resize { pod, body, why } => {
                let r = pods
                    .patch_subresource(
                        "resize",
                        pod,
                        &PatchParams::default(),
                        &Patch::Strategic(body),
                    )
                    .await
                    .map(|p| serde_json::to_value(p).unwrap_or_default());
                let (o, detail) = Outcome::of(r);
                self.metrics
                    .resizes
                    .get_or_create(&OutcomeLabel {
                        outcome: o.label("resized"),
                    })
                    .inc();
                (pod, why, "resize", o, detail)
            }
        };
        self.report(w, pod, why, verb, outcome, &detail).await;
        Some(outcome)
    }

    async fn report(
        &self,
        w: &WorkloadKey,
        pod: &str,
        why: &Why,
        verb: &str,
        o: Outcome,
        detail: &str,
    ) {
        let (type_, reason, what) = match (verb, o) {
            ("evict", Outcome::Done) => (EventType::Normal, "Evicted", "evicted"),
            ("evict", Outcome::RefusedByBudget) => (
                EventType::Normal,
                "EvictionDeferred",
                "eviction refused by a PodDisruptionBudget (tried again later) for",
            ),
            (_, Outcome::Done) => (EventType::Normal, "Resized", "resized in place"),
            (_, Outcome::Forbidden) => (
                EventType::Warning,
                "UpdateForbidden",
                "not permitted to update",
            ),
            (_, Outcome::Gone) => return,
            _ => (EventType::Warning, "UpdateFailed", "could not update"),
        };
        let mut msg = format!("{what} Pod {pod}: {why}");
        if !detail.is_empty() && o != Outcome::Done {
            msg.push_str(&format!(" ({detail})"));
        }
        tracing::info!(workload = %w, pod, outcome = ?o, "updater: {msg}");
        let pod_target = Target {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: w.namespace.clone(),
            name: pod.to_string(),
            uid: None,
        };
        for t in [Some(pod_target), self.writer.target(w).ok()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = self.recorder.publish(&t, type_, reason, &msg).await {
                tracing::warn!(error = %e, "posting the updater's Event");
            }
        }
        let line = format!("{} {msg}", rfc3339(unix_now()).unwrap_or_default());
        if let Err(e) = self.store.note_update(w, line).await {
            tracing::warn!(workload = %w, error = %e, "writing the updater's line to the Rightsizing");
        }
    }
}
