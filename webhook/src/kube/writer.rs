//! The leader's writes: committed values onto workload metadata (server-side apply,
//! field manager `rightsizer`) and Events about new recommendations and commits.

use std::sync::Arc;

use futures::future::BoxFuture;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde_json::json;

use crate::kube::committed::{record, CommitError, CommitSink, CommittedDoc, COMMITTED_ANNOTATION};
use crate::kube::error::KubeError;
use crate::kube::events::{EventType, Published, Recorder, Target};
use crate::kube::facts::KubeFacts;
use crate::kube::leader::Leader;
use crate::quantity::Resource;
use crate::recommendation::{Committed, ContainerKey, WorkloadKey, WorkloadKind};
use crate::rules::Sizes;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "rightsizer";

/// Writes committed values and posts Events; commits only while leading.
pub struct KubeWriter {
    client: Client,
    facts: Arc<KubeFacts>,
    leader: Arc<Leader>,
    recorder: Arc<Recorder>,
    cronjobs: ApiResource,
}

impl KubeWriter {
    pub fn new(
        client: Client,
        facts: Arc<KubeFacts>,
        leader: Arc<Leader>,
        recorder: Arc<Recorder>,
        cronjobs: ApiResource,
    ) -> Self {
        KubeWriter {
            client,
            facts,
            leader,
            recorder,
            cronjobs,
        }
    }

    /// The API resource of a workload kind that can carry committed values.
    fn api_resource(&self, kind: WorkloadKind) -> Result<ApiResource, KubeError> {
        let apps = |kind: &str, plural: &str| ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        Ok(match kind {
            WorkloadKind::Deployment => apps("Deployment", "deployments"),
            WorkloadKind::StatefulSet => apps("StatefulSet", "statefulsets"),
            WorkloadKind::DaemonSet => apps("DaemonSet", "daemonsets"),
            WorkloadKind::CronJob => self.cronjobs.clone(),
            other => return Err(KubeError::UnsupportedKind(other.to_string())),
        })
    }

    /// The Event target for a workload (uid from the watch, when seen).
    pub fn target(&self, key: &WorkloadKey) -> Result<Target, KubeError> {
        let ar = self.api_resource(key.kind)?;
        Ok(Target {
            api_version: ar.api_version,
            kind: ar.kind,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            uid: self.facts.workload(key).and_then(|w| w.uid),
        })
    }

    /// Write one committed value: read the current annotation from the server (not
    /// the cache, so no concurrent history is lost), record the new value, apply.
    async fn write(
        &self,
        key: &ContainerKey,
        r: Resource,
        value: &Committed,
    ) -> Result<Option<Committed>, KubeError> {
        let w = &key.workload;
        let ar = self.api_resource(w.kind)?;
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &w.namespace, &ar);
        let current = api
            .get_metadata(&w.name)
            .await
            .map_err(KubeError::api(format!("reading {w}")))?;
        let mut doc: CommittedDoc = current
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(COMMITTED_ANNOTATION))
            .and_then(|t| match serde_json::from_str(t) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(workload = %w, error = %e, "unreadable committed annotation; starting afresh");
                    None
                }
            })
            .unwrap_or_default();
        let before = doc
            .get(&key.container)
            .and_then(|c| c.get(&r))
            .and_then(|e| e.current.to_committed(r));
        record(&mut doc, &key.container, r, value);
        let text = serde_json::to_string(&doc).map_err(|source| KubeError::Encode {
            what: COMMITTED_ANNOTATION.into(),
            source,
        })?;
        // Only top-level metadata: a change under spec.template would roll the
        // workload out.
        let patch = json!({
            "apiVersion": ar.api_version,
            "kind": ar.kind,
            "metadata": {"name": w.name, "annotations": {COMMITTED_ANNOTATION: text}},
        });
        api.patch(
            &w.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(KubeError::api(format!(
            "applying {COMMITTED_ANNOTATION} on {w}"
        )))?;
        Ok(before)
    }

    /// Post an Event saying a new recommendation was produced.
    pub async fn announce_recommendation(
        &self,
        key: &ContainerKey,
        r: Resource,
        before: Option<Sizes>,
        after: Sizes,
        reason: &str,
    ) -> Result<Published, KubeError> {
        let target = self.target(&key.workload)?;
        let msg = change_message(&key.container, r, before, after, reason);
        self.recorder
            .publish(&target, EventType::Normal, "RecommendationChanged", &msg)
            .await
    }
}

/// "memory of container app: request 256Mi -> 300Mi, limit 512Mi -> 600Mi (reason)".
pub fn change_message(
    container: &str,
    r: Resource,
    before: Option<Sizes>,
    after: Sizes,
    reason: &str,
) -> String {
    let q = |v: Option<u64>| v.map(|v| r.format(v)).unwrap_or_else(|| "unset".into());
    let b = before.unwrap_or_default();
    let mut msg = format!(
        "{} of container {container}: request {} -> {}, limit {} -> {}",
        r.as_str(),
        q(b.request),
        q(after.request),
        q(b.limit),
        q(after.limit)
    );
    if !reason.is_empty() {
        msg.push_str(&format!(" ({reason})"));
    }
    msg
}

impl CommitSink for KubeWriter {
    fn commit<'a>(
        &'a self,
        key: &'a ContainerKey,
        resource: Resource,
        value: Committed,
    ) -> BoxFuture<'a, Result<(), CommitError>> {
        Box::pin(async move {
            if !self.leader.is_leader() {
                return Err(CommitError::NotLeader);
            }
            let before = self.write(key, resource, &value).await?;
            let msg = change_message(
                &key.container,
                resource,
                before.map(|b| b.sizes),
                value.sizes,
                &value.reason,
            );
            let target = self.target(&key.workload)?;
            // The commit stands even when its Event cannot be posted.
            if let Err(e) = self
                .recorder
                .publish(&target, EventType::Normal, "Committed", &msg)
                .await
            {
                tracing::warn!(error = %e, "could not post the Committed Event");
            }
            Ok(())
        })
    }
}
