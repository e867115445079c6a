//! Which version of a group the server serves. Clusters differ: v1.20 has
//! autoscaling/v2beta2 and batch/v1beta1 CronJobs, current ones autoscaling/v2 and
//! batch/v1. The watchers use whichever the server lists, newest first.

use kube::discovery::ApiResource;
use kube::Client;

use rightsizer_core::workload::kind::WorkloadKind;

use crate::kube::error::KubeError;

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
                let (group, version) = match api_version.split_once('/') {
                    Some((g, v)) => (g.to_string(), v.to_string()),
                    None => (String::new(), api_version.to_string()),
                };
                return Ok(ApiResource {
                    group,
                    version,
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

/// CronJobs: batch/v1 (1.21+) or batch/v1beta1 (older).
pub async fn cronjobs(client: &Client) -> Result<ApiResource, KubeError> {
    let i = WorkloadKind::CronJob.info();
    let versions: Vec<String> = i
        .versions
        .iter()
        .map(|v| format!("{}/{v}", i.group))
        .collect();
    let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
    pick(client, &versions, i.api_kind, i.plural).await
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
