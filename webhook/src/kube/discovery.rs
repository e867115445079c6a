//! Which version of a group the server serves. Clusters differ: v1.20 has
//! autoscaling/v2beta2 and batch/v1beta1 CronJobs, current ones autoscaling/v2 and
//! batch/v1. The watchers use whichever the server lists, newest first (of workload
//! kinds, those the kind table lists several versions of).

use std::collections::BTreeMap;

use kube::discovery::ApiResource;
use kube::Client;

use rightsizer_core::workload::kind::{KindInfo, ScaledKinds, WorkloadKind};

use crate::kube::error::KubeError;

/// The API resource, at the version the server serves, of each workload kind the
/// watchers mirror (the kinds that can own a Rightsizing and be named by Events):
/// discovered where the kind table lists several versions (CronJob's batch/v1 or
/// batch/v1beta1) or the kind may not be served (Knative's, absent without its CRDs),
/// else the table's one.
pub type WorkloadApis = BTreeMap<WorkloadKind, ApiResource>;

/// The first of `versions` (e.g. `["autoscaling/v2", "autoscaling/v2beta2"]`) whose
/// resource list holds `plural`, as an `ApiResource` for the dynamic API.
pub async fn pick(
    client: &Client,
    versions: &[&str],
    kind: &str,
    plural: &str,
) -> Result<ApiResource, KubeError> {
    for api_version in versions {
        match client.list_api_group_resources(api_version).await {
            Ok(list) if list.resources.iter().any(|r| r.name == plural) => {
                let (group, version) = group_version(api_version);
                return Ok(ApiResource {
                    group: group.into(),
                    version: version.into(),
                    api_version: api_version.to_string(),
                    kind: kind.to_string(),
                    plural: plural.to_string(),
                });
            }
            Ok(_) => {}
            // 404: the group version is not served here; try the next one.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(KubeError::api(format!("discovering {api_version}"))(e)),
        }
    }
    Err(KubeError::NoVersion(format!(
        "{plural} in {}",
        versions.join(", ")
    )))
}

/// The API resource of every watched workload kind (see [`WorkloadApis`]).
pub async fn workloads(client: &Client) -> Result<WorkloadApis, KubeError> {
    let mut out = WorkloadApis::new();
    for kind in WorkloadKind::watched() {
        let i = kind.info();
        let optional = kind.watched_as() == Some(true);
        let resource = if i.discovered() || optional {
            let versions: Vec<String> = i.api_versions().collect();
            let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
            match pick(client, &versions, i.api_kind, i.plural).await {
                Ok(r) => r,
                // A CRD not installed (no Knative here): not watched; its workloads'
                // state stays in the leader's memory.
                Err(KubeError::NoVersion(what)) if optional => {
                    tracing::info!(kind = %kind, "{what} not served; not watched");
                    continue;
                }
                Err(e) => return Err(e),
            }
        } else {
            api_resource(i, &i.api_version())
        };
        out.insert(kind, resource);
    }
    Ok(out)
}

/// A kind's resource at `api_version`, from the kind table.
pub(crate) fn api_resource(i: &KindInfo, api_version: &str) -> ApiResource {
    ApiResource {
        group: i.group.into(),
        version: group_version(api_version).1.into(),
        api_version: api_version.into(),
        kind: i.api_kind.into(),
        plural: i.plural.into(),
    }
}

/// `apps/v1` → (`apps`, `v1`), `v1` → (core, `v1`).
fn group_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// The controllers outside the kind table that serve the `/scale` subresource (an Argo
/// Rollout's `rollouts/scale`), at each API group's preferred version: the resolver
/// keys Pods of their ReplicaSets to them. Owner rows name a kind without its group
/// (kube-state-metrics' `owner_kind`), so a kind another group serves too is left out:
/// its Pods stay with their ReplicaSet, as everywhere else. Discovery needs no RBAC
/// (every authenticated user may read it). The core group is left out: its one scaled
/// kind, ReplicationController, controls Pods, not ReplicaSets. Read at start: a CRD
/// installed later is found at the next restart.
pub async fn scaled(client: &Client) -> Result<ScaledKinds, KubeError> {
    let groups = client
        .list_api_groups()
        .await
        .map_err(KubeError::api("discovering API groups".to_string()))?;
    // (group, version, kind, plural, serves /scale) of every namespaced resource.
    let mut served = Vec::new();
    for g in groups.groups {
        let Some(gv) = g.preferred_version else {
            continue;
        };
        let list = match client.list_api_group_resources(&gv.group_version).await {
            Ok(l) => l,
            // A group whose aggregated API is down: its kinds are not known this time.
            Err(e) => {
                tracing::warn!(group = %gv.group_version, error = %e, "discovery failed; its scaled controllers are not known");
                continue;
            }
        };
        for r in list
            .resources
            .iter()
            .filter(|r| r.namespaced && !r.name.contains('/'))
        {
            let scale = format!("{}/scale", r.name);
            let serves_scale = list.resources.iter().any(|s| s.name == scale);
            served.push((
                g.name.clone(),
                gv.version.clone(),
                r.kind.clone(),
                r.name.clone(),
                serves_scale,
            ));
        }
    }
    let mut out = Vec::new();
    for (group, version, kind, plural, serves_scale) in &served {
        let groups = served.iter().filter(|s| &s.2 == kind).count();
        if !serves_scale {
            continue;
        }
        if groups > 1 {
            tracing::info!(kind = %kind, group = %group, "serves /scale, but another group serves a {kind} too: its Pods stay with their ReplicaSet");
            continue;
        }
        if let Some(k) = WorkloadKind::scaled(group, version, kind, plural) {
            out.push(k);
        }
    }
    if !out.is_empty() {
        let names: Vec<&str> = out.iter().map(|k| k.as_str()).collect();
        tracing::info!(kinds = %names.join(", "), "scaled controllers: their ReplicaSets' Pods are keyed to them");
    }
    Ok(ScaledKinds(out))
}

/// HorizontalPodAutoscalers with resource metrics: autoscaling/v2 (1.23+) or v2beta2.
pub async fn hpas(client: &Client) -> Result<ApiResource, KubeError> {
    pick(
        client,
        &["autoscaling/v2", "autoscaling/v2beta2"],
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    )
    .await
}
