//! The decision's inputs for every workload the updater may act on: committed values
//! from the Rightsizings (the commit store), running Pods listed per namespace and
//! grouped by the one Pod-to-workload resolver admission and the analyzer use.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};

use rightsizer_core::analysis::container_state::ContainerState;
use rightsizer_core::quantity::PerResource;
use rightsizer_core::rules::Sizes;
use rightsizer_core::update::budget::{budget_of, Budget};
use rightsizer_core::update::observe::{pod_view, PodView};
use rightsizer_core::update::Target;
use rightsizer_core::workload::resolve::{resolve_pod, PodRef};
use rightsizer_core::workload::WorkloadKey;

use crate::analyzer::state::State;
use crate::kube::error::KubeError;
use crate::kube::facts::KubeFacts;

/// The committed values (and active OOM floors) per workload, from the store's state.
pub fn targets(state: &State, now: u64) -> BTreeMap<WorkloadKey, Target> {
    let mut out: BTreeMap<WorkloadKey, Target> = BTreeMap::new();
    for (key, st) in &state.containers {
        let t = out.entry(key.workload.clone()).or_default();
        if let Some(v) = values(st) {
            t.containers.insert(key.container.clone(), v);
        }
        let at = [st.memory.as_ref(), st.cpu.as_ref()]
            .into_iter()
            .flatten()
            .map(|c| c.at as i64)
            .max()
            .unwrap_or(0);
        t.committed_at = t.committed_at.max(at);
        if let Some(h) = st.oom.as_ref().filter(|h| h.until > now) {
            t.oom_floor.insert(key.container.clone(), h.floor);
        }
    }
    out.retain(|_, t| !t.containers.is_empty() || !t.oom_floor.is_empty());
    out
}

fn values(st: &ContainerState) -> Option<PerResource<Sizes>> {
    if st.memory.is_none() && st.cpu.is_none() {
        return None;
    }
    // Requests only: admission gives a new Pod the committed request and derives its
    // limit by the policy's limit rule (`sizing.limitRule`, keepRatio by default), so the
    // committed limit is not what a replacement would run with; comparing it would evict
    // replacements that are already right. A resize keeps the running ratio
    // (`rightsizer_core::update`).
    let request = |c: Option<&rightsizer_core::recommendation::Committed>| Sizes {
        request: c.and_then(|c| c.sizes.request),
        limit: None,
    };
    Some(PerResource {
        memory: request(st.memory.as_ref()),
        cpu: request(st.cpu.as_ref()),
    })
}

/// The Pods of one namespace, by workload.
pub async fn pods_by_workload(
    client: &Client,
    facts: &KubeFacts,
    namespace: &str,
) -> Result<BTreeMap<WorkloadKey, Vec<PodView>>, KubeError> {
    let list = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(KubeError::api(format!("listing pods in {namespace}")))?;
    let mut out: BTreeMap<WorkloadKey, Vec<PodView>> = BTreeMap::new();
    for pod in &list.items {
        let Ok(meta) = serde_json::to_value(&pod.metadata) else {
            continue;
        };
        let w = resolve_pod(&PodRef::from_meta(namespace, &meta), facts);
        if let Some(v) = pod_view(pod) {
            out.entry(w.key).or_default().push(v);
        }
    }
    Ok(out)
}

/// The PodDisruptionBudgets of one namespace, at `version` (`policy/v1` or
/// `policy/v1beta1`, the Eviction API's: the budgets are served at the same versions).
pub async fn budgets(
    client: &Client,
    namespace: &str,
    version: &str,
) -> Result<Vec<Budget>, kube::Error> {
    let ar = ApiResource {
        group: "policy".into(),
        version: version.trim_start_matches("policy/").into(),
        api_version: version.into(),
        kind: "PodDisruptionBudget".into(),
        plural: "poddisruptionbudgets".into(),
    };
    let list = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &ar)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .iter()
        .filter_map(|o| budget_of(&serde_json::to_value(o).ok()?))
        .collect())
}
