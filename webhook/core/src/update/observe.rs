//! What the updater reads of a running Pod, cut from the Pod object (pure: the shell
//! lists the Pods, this reads them).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerState, Pod, PodCondition, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{parse_bytes, parse_millicores, QuantityError};
use crate::rules::Sizes;

/// Annotations that forbid a voluntary disruption, with the value that forbids it.
pub const DO_NOT_DISRUPT: [(&str, &str); 2] = [
    ("karpenter.sh/do-not-disrupt", "true"),
    ("cluster-autoscaler.kubernetes.io/safe-to-evict", "false"),
];

/// A running (regular) container's values and whether its last end was an OOM kill.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunningContainer {
    pub name: String,
    /// Bytes.
    pub memory: Sizes,
    /// Millicores.
    pub cpu: Sizes,
    /// The last termination was an OOM kill and the kubelet restarted it (a loop: it
    /// restarts with the same limit).
    pub oom_restarted: bool,
}

/// Where an in-place resize stands (the Pod's `PodResizePending`/`PodResizeInProgress`
/// conditions, or the older `status.resize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizePhase {
    InProgress,
    /// The node may fit it later.
    Deferred,
    /// The node can never fit it.
    Infeasible,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeState {
    pub phase: ResizePhase,
    /// Unix seconds the phase was entered (0: unknown, counts as long ago).
    pub since: i64,
}

/// One Pod of the workload, as the decision reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodView {
    pub name: String,
    pub ready: bool,
    /// Deleted (has a deletion timestamp), still stopping.
    pub terminating: bool,
    /// The annotation that forbids disrupting it.
    pub do_not_disrupt: Option<&'static str>,
    pub containers: Vec<RunningContainer>,
    pub resize: Option<ResizeState>,
    /// Unix seconds of its creation (0: unknown).
    pub created: i64,
    /// Its labels (which PodDisruptionBudgets cover it).
    pub labels: BTreeMap<String, String>,
}

fn sizes(
    res: Option<&ResourceRequirements>,
    key: &str,
    parse: fn(&str) -> Result<u64, QuantityError>,
) -> Sizes {
    let get = |m: Option<&BTreeMap<String, Quantity>>| {
        m.and_then(|m| m.get(key)).and_then(|q| parse(&q.0).ok())
    };
    Sizes {
        request: get(res.and_then(|r| r.requests.as_ref())),
        limit: get(res.and_then(|r| r.limits.as_ref())),
    }
}

fn oom(state: Option<&ContainerState>) -> bool {
    state
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
}

/// The view of a Pod; `None` without a name or once it has finished (Succeeded or
/// Failed, e.g. left behind by a kubelet eviction): it runs nothing to update and holds
/// no replica.
pub fn pod_view(pod: &Pod) -> Option<PodView> {
    let meta = &pod.metadata;
    let name = meta.name.clone()?;
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let condition = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let ready = condition("Ready").is_some();
    let annotations = meta.annotations.as_ref();
    let do_not_disrupt = DO_NOT_DISRUPT.iter().find_map(|(k, v)| {
        let have = annotations.and_then(|a| a.get(*k))?;
        (have.trim() == *v).then_some(*k)
    });
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let st = statuses.iter().find(|s| s.name == c.name);
            RunningContainer {
                name: c.name.clone(),
                memory: sizes(c.resources.as_ref(), "memory", parse_bytes),
                cpu: sizes(c.resources.as_ref(), "cpu", parse_millicores),
                oom_restarted: st.is_some_and(|s| {
                    s.restart_count > 0 && (oom(s.last_state.as_ref()) || oom(s.state.as_ref()))
                }),
            }
        })
        .collect();
    let since = |c: &PodCondition| {
        c.last_transition_time
            .as_ref()
            .map_or(0, |t| t.0.as_second())
    };
    let pending = condition("PodResizePending").map(|c| ResizeState {
        phase: match c.reason.as_deref() {
            Some("Infeasible") => ResizePhase::Infeasible,
            _ => ResizePhase::Deferred,
        },
        since: since(c),
    });
    let resize = pending.or_else(|| {
        condition("PodResizeInProgress").map(|c| ResizeState {
            phase: ResizePhase::InProgress,
            since: since(c),
        })
    });
    Some(PodView {
        name,
        ready,
        terminating: meta.deletion_timestamp.is_some(),
        do_not_disrupt,
        containers,
        resize,
        created: meta
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
        labels: meta.labels.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> PodView {
        pod_view(&serde_json::from_value(v).unwrap()).unwrap()
    }

    #[test]
    fn a_pod_reads_as_its_values_labels_readiness_marks_and_oom_restarts() {
        let v = pod(serde_json::json!({
            "metadata": {"name": "web-1", "labels": {"app": "web"},
                "annotations": {"karpenter.sh/do-not-disrupt": "true"}},
            "spec": {"containers": [{"name": "app", "resources": {
                "requests": {"memory": "256Mi", "cpu": "250m"}, "limits": {"memory": "512Mi"}}}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"},
                    {"type": "PodResizePending", "status": "True", "reason": "Infeasible",
                     "lastTransitionTime": "2026-01-01T00:00:10Z"}],
                "containerStatuses": [{"name": "app", "restartCount": 3, "ready": true, "image": "x",
                    "imageID": "", "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        }));
        assert!(v.ready && !v.terminating);
        assert_eq!(v.do_not_disrupt, Some("karpenter.sh/do-not-disrupt"));
        assert_eq!(v.labels.get("app").map(String::as_str), Some("web"));
        let c = &v.containers[0];
        assert_eq!(
            c.memory,
            Sizes {
                request: Some(256 << 20),
                limit: Some(512 << 20)
            }
        );
        assert_eq!(
            c.cpu,
            Sizes {
                request: Some(250),
                limit: None
            }
        );
        assert!(c.oom_restarted);
        assert_eq!(v.resize.unwrap().phase, ResizePhase::Infeasible);
        assert_eq!(v.resize.unwrap().since, 1_767_225_610);
    }

    #[test]
    fn a_finished_pod_is_not_seen() {
        let failed = serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"containers": []},
            "status": {"phase": "Failed", "reason": "Evicted"}
        });
        assert_eq!(pod_view(&serde_json::from_value(failed).unwrap()), None);
    }

    #[test]
    fn safe_to_evict_true_and_a_deleted_pod() {
        let v = pod(serde_json::json!({
            "metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z",
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}},
            "spec": {"containers": []}
        }));
        assert_eq!(v.do_not_disrupt, None);
        assert!(v.terminating && !v.ready);
    }
}
