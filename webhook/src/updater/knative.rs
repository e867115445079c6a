//! The Knative writer (issue 22): applies rightsizer's own Knative values to running
//! Services without waiting for a user's edit. Off unless `serve --knative-writer` (the
//! rights of `deploy/overlays/updater`) AND the policy's `knative.apply: true`; GitOps
//! users keep it off.
//!
//! Each pass, in the leader: every Knative Service in an opted-in namespace is merged as
//! admission would merge it (the one merge, `Admitter::mutate_object`), with the values
//! rightsizer applied before taken out so they are revised, and the settings
//! `rightsizer_core::sizing::knative_writes::plan` picks are sent with server-side apply
//! under the field manager `rightsizer`, never forced: a field another manager holds (the
//! user's) is refused by the apiserver with a conflict, counted, and not tried again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::task::JoinHandle;

use rightsizer_core::sizing::knative_writes::{owned_by, plan, without, MANAGER};
use rightsizer_core::workload::kind::WorkloadKind;

use crate::admission::Admitter;
use crate::kube::error::KubeError;
use crate::kube::events::{EventType, Recorder, Target};
use crate::kube::leader::Leader;
use crate::lock::LockExt;

use super::UpdaterHealth;

const GROUP: &str = "serving.knative.dev";
const API_VERSION: &str = "serving.knative.dev/v1";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// How one Service's apply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Applied,
    /// 409: another manager holds a field; that field is the user's from now on.
    Conflict,
    Forbidden,
    Failed,
}

impl Written {
    fn label(self) -> &'static str {
        match self {
            Written::Applied => "applied",
            Written::Conflict => "conflict",
            Written::Forbidden => "forbidden",
            Written::Failed => "failed",
        }
    }
}

/// What the writer needs from the rest of the process.
pub struct KnativeWriter {
    pub client: Client,
    pub admitter: Arc<Admitter>,
    pub recorder: Arc<Recorder>,
    pub leader: Arc<Leader>,
    /// Whether rightsizer acts on a namespace (`KubeHandles::opted_in`).
    pub opted_in: Box<dyn Fn(&str) -> bool + Send + Sync>,
    writes: Family<OutcomeLabel, Counter>,
    /// Fields a conflict showed to be another manager's, per Service (namespace, name).
    refused: Mutex<BTreeMap<(String, String), BTreeSet<String>>>,
}

fn resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: API_VERSION.into(),
        kind: "Service".into(),
        plural: "services".into(),
    }
}

/// Whether this identity may `verb` Knative Services in every namespace.
async fn may(client: &Client, verb: &str) -> Result<bool, KubeError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(GROUP.into()),
                resource: Some("services".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(KubeError::api(
            "asking the apiserver what this identity may do",
        ))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

impl KnativeWriter {
    pub fn new(
        client: Client,
        admitter: Arc<Admitter>,
        recorder: Arc<Recorder>,
        leader: Arc<Leader>,
        opted_in: Box<dyn Fn(&str) -> bool + Send + Sync>,
        registry: &mut Registry,
    ) -> Self {
        let writes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "rightsizer_knative_writes",
            "Server-side applies of rightsizer's Knative values, by outcome (applied, conflict, forbidden, failed)",
            writes.clone(),
        );
        KnativeWriter {
            client,
            admitter,
            recorder,
            leader,
            opted_in,
            writes,
            refused: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether this identity may list and patch Knative Services: `None` when it may,
    /// otherwise why not (what `/readyz` reports).
    pub async fn check_access(&self) -> Result<Option<String>, KubeError> {
        if may(&self.client, "list").await? && may(&self.client, "patch").await? {
            return Ok(None);
        }
        Ok(Some("knative writer: this identity may not list or patch services.serving.knative.dev (apply deploy/overlays/updater or set the chart value updater.enabled)".into()))
    }

    /// The fields of a Service a conflict showed to be another manager's.
    pub fn refused(&self, namespace: &str, name: &str) -> BTreeSet<String> {
        self.refused
            .locked()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// One pass over every Knative Service: (namespace/name, outcome) of each apply sent.
    pub async fn pass(&self) -> Result<Vec<(String, Written)>, KubeError> {
        let api = Api::<DynamicObject>::all_with(self.client.clone(), &resource());
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            // Knative Serving is not installed (yet): nothing to tune.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Vec::new()),
            Err(e) => return Err(KubeError::api("listing Knative Services")(e)),
        };
        let mut out = Vec::new();
        for svc in list.items {
            let (Some(ns), Some(name)) =
                (svc.metadata.namespace.clone(), svc.metadata.name.clone())
            else {
                continue;
            };
            if !(self.opted_in)(&ns) {
                continue;
            }
            let Ok(mut live) = serde_json::to_value(&svc) else {
                continue;
            };
            live["apiVersion"] = API_VERSION.into();
            live["kind"] = "Service".into();
            if let Some(w) = self.one(&ns, &name, &live).await {
                out.push((format!("{ns}/{name}"), w));
            }
        }
        Ok(out)
    }

    async fn one(&self, ns: &str, name: &str, live: &Value) -> Option<Written> {
        let owned = owned_by(live, MANAGER);
        let m =
            self.admitter
                .mutate_object(WorkloadKind::KnativeService, ns, &without(live, &owned));
        let on = m
            .policy
            .as_ref()
            .and_then(|p| p.knative.as_ref())
            .and_then(|k| k.apply)
            .unwrap_or(false);
        let sized = m.sized.filter(|_| on)?;
        let refused = self.refused(ns, name);
        let apply = plan(live, sized.value(), &owned, &refused)?;
        let body = apply.body(API_VERSION, ns, name);
        let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &resource());
        // No force: a field another manager holds is refused, never taken over.
        let params = PatchParams::apply(MANAGER);
        let r = api.patch(name, &params, &Patch::Apply(&body)).await;
        let changed = apply
            .fields
            .iter()
            .filter(|(f, _)| apply.changed.contains(f))
            .map(|(f, v)| format!("{f}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (written, msg, type_) = match r {
            Ok(_) => (
                Written::Applied,
                format!("applied {changed} (server-side apply, field manager {MANAGER})"),
                EventType::Normal,
            ),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let theirs = apply.conflicts(&s.message);
                let fields = theirs.iter().cloned().collect::<Vec<_>>().join(", ");
                self.refused
                    .locked()
                    .entry((ns.to_string(), name.to_string()))
                    .or_default()
                    .extend(theirs);
                (
                    Written::Conflict,
                    format!("left {fields} to the manager that holds it (not forced)"),
                    EventType::Normal,
                )
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                (Written::Forbidden, s.message, EventType::Warning)
            }
            Err(e) => (Written::Failed, e.to_string(), EventType::Warning),
        };
        self.writes
            .get_or_create(&OutcomeLabel {
                outcome: written.label(),
            })
            .inc();
        tracing::info!(namespace = ns, service = name, outcome = ?written, "knative writer: {msg}");
        let target = Target {
            api_version: API_VERSION.into(),
            kind: "Service".into(),
            namespace: ns.into(),
            name: name.into(),
            uid: live
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(String::from),
        };
        let reason = match written {
            Written::Applied => "KnativeValuesApplied",
            Written::Conflict => "KnativeValueLeftToUser",
            _ => "KnativeApplyFailed",
        };
        if let Err(e) = self.recorder.publish(&target, type_, reason, &msg).await {
            tracing::warn!(error = %e, "posting the Knative writer's Event");
        }
        Some(written)
    }
}

/// Check the rights and spawn the passes (leader only). Returns the task and the health
/// `/readyz` reports: unhealthy while this identity may not list or patch Services.
pub async fn start(
    writer: KnativeWriter,
    interval: Duration,
) -> Result<(JoinHandle<()>, Arc<UpdaterHealth>), KubeError> {
    let health = Arc::new(UpdaterHealth::default());
    if let Some(why) = writer.check_access().await? {
        tracing::error!("{why}");
        health.set(Some(why));
    }
    let h = health.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            if h.check().is_ok() && writer.leader.is_leader() {
                if let Err(e) = writer.pass().await {
                    tracing::warn!(error = %e, "knative writer: pass");
                }
            }
        }
    });
    Ok((task, health))
}
