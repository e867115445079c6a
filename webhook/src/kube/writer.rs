//! The leader's Events about new recommendations and commits, and the API identity
//! (apiVersion, kind, uid) of workloads that Events and Rightsizing owner references
//! name. Workloads themselves are never written.

use std::sync::Arc;

use kube::discovery::ApiResource;

use rightsizer_core::quantity::Resource;
use rightsizer_core::recommendation::ContainerKey;
use rightsizer_core::rules::Sizes;
use rightsizer_core::workload::kind::{Home, WorkloadKind};
use rightsizer_core::workload::WorkloadKey;

use crate::kube::discovery::{self, WorkloadApis};
use crate::kube::error::KubeError;
use crate::kube::events::{EventType, Published, Recorder, Target};
use crate::kube::facts::KubeFacts;

/// Posts Events about workloads (the caller checks leadership).
pub struct KubeWriter {
    facts: Arc<KubeFacts>,
    recorder: Arc<Recorder>,
    apis: WorkloadApis,
}

impl KubeWriter {
    pub fn new(facts: Arc<KubeFacts>, recorder: Arc<Recorder>, apis: WorkloadApis) -> Self {
        KubeWriter {
            facts,
            recorder,
            apis,
        }
    }

    /// The API resource of a workload kind that can own a Rightsizing (a watched kind, at
    /// the version discovery found; a Pod at the table's).
    fn api_resource(&self, kind: WorkloadKind) -> Result<ApiResource, KubeError> {
        match kind.home() {
            Some(Home::PodFacts | Home::ControllerRef) => Ok(discovery::api_resource(
                kind.info(),
                &kind.info().api_version(),
            )),
            _ => self
                .apis
                .get(&kind)
                .cloned()
                .ok_or_else(|| KubeError::UnsupportedKind(kind.to_string())),
        }
    }

    /// The object that stands for a workload, for Events and as its Rightsizing's
    /// owner (uid from the watch, when seen). A bare-Pod workload is one of its live
    /// Pods, by that Pod's own name.
    pub fn target(&self, key: &WorkloadKey) -> Result<Target, KubeError> {
        let ar = self.api_resource(key.kind)?;
        let (name, uid) = match key.kind.home() {
            Some(Home::PodFacts) => match self.facts.bare_pods.pod(key) {
                Some((name, uid)) => (name, Some(uid)),
                None => (key.name.clone(), None),
            },
            Some(Home::ControllerRef) => (key.name.clone(), self.facts.scaled_uid(key)),
            _ => (
                key.name.clone(),
                self.facts.workload(key).and_then(|w| w.uid),
            ),
        };
        Ok(Target {
            api_version: ar.api_version,
            kind: ar.kind,
            namespace: key.namespace.clone(),
            name,
            uid,
        })
    }

    /// Post an Event saying a value was committed.
    pub async fn announce_commit(
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
            .publish(&target, EventType::Normal, "Committed", &msg)
            .await
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
