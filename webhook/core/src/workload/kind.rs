//! The one table of workload kinds: for each kind, the name recommendation keys,
//! policies and metric labels use, its API group, kind, versions and resource, where
//! its pod template lives, and its part in owner chains. Everything that maps a kind
//! to something reads this table.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kinds a workload identity can have. Serialized (keys, policies, JSON) as the
/// variant name, which is [`KindInfo::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkloadKind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
    /// serving.knative.dev/v1 Service
    KnativeService,
    /// serving.knative.dev/v1 Configuration
    KnativeConfiguration,
}

/// One row of [`KINDS`].
#[derive(Debug)]
pub struct KindInfo {
    pub kind: WorkloadKind,
    /// The user-facing name: recommendation keys, policy `kinds`, metric labels, CLI
    /// output, `Rightsizing` object names (lower-cased).
    pub label: &'static str,
    /// API group ("" for core) and kind, as in `apiVersion`/`kind` and owner references.
    pub group: &'static str,
    pub api_kind: &'static str,
    /// Versions the watchers and writers use, newest first (discovery picks one).
    pub versions: &'static [&'static str],
    /// Plural resource name (also the `resource` label of `rightsizer_watch_objects`).
    pub plural: &'static str,
    /// JSON pointers to the pod spec and the pod metadata inside the object.
    pub pod_spec: &'static str,
    pub pod_meta: &'static str,
    /// Pods name it as their controller (`ownerReferences` with `controller: true`).
    pub controls_pods: bool,
    /// A top-level workload whose metadata the watchers mirror; it can own a
    /// `Rightsizing` and be the target of Events.
    pub watched: bool,
}

const TEMPLATE: (&str, &str) = ("/spec/template/spec", "/spec/template/metadata");

// One argument per column: the table below reads as a table.
#[allow(clippy::too_many_arguments)]
const fn row(
    kind: WorkloadKind,
    label: &'static str,
    group: &'static str,
    api_kind: &'static str,
    versions: &'static [&'static str],
    plural: &'static str,
    paths: (&'static str, &'static str),
    controls_pods: bool,
    watched: bool,
) -> KindInfo {
    KindInfo {
        kind,
        label,
        group,
        api_kind,
        versions,
        plural,
        pod_spec: paths.0,
        pod_meta: paths.1,
        controls_pods,
        watched,
    }
}

use WorkloadKind as K;

/// Every kind rightsizer handles, in [`WorkloadKind`] order.
#[rustfmt::skip]
pub const KINDS: [KindInfo; 9] = [
    //   kind                     label                   group                  kind             versions                plural            pod paths   pods   watched
    row(K::Pod,                  "Pod",                  "",                    "Pod",           &["v1"],                "pods",           ("/spec", "/metadata"), false, false),
    row(K::Deployment,           "Deployment",           "apps",                "Deployment",    &["v1"],                "deployments",    TEMPLATE,   false, true),
    row(K::StatefulSet,          "StatefulSet",          "apps",                "StatefulSet",   &["v1"],                "statefulsets",   TEMPLATE,   true,  true),
    row(K::DaemonSet,            "DaemonSet",            "apps",                "DaemonSet",     &["v1"],                "daemonsets",     TEMPLATE,   true,  true),
    row(K::ReplicaSet,           "ReplicaSet",           "apps",                "ReplicaSet",    &["v1"],                "replicasets",    TEMPLATE,   true,  false),
    row(K::Job,                  "Job",                  "batch",               "Job",           &["v1"],                "jobs",           TEMPLATE,   true,  false),
    row(K::CronJob,              "CronJob",              "batch",               "CronJob",       &["v1", "v1beta1"],     "cronjobs",
        ("/spec/jobTemplate/spec/template/spec", "/spec/jobTemplate/spec/template/metadata"),           false, true),
    row(K::KnativeService,       "KnativeService",       "serving.knative.dev", "Service",       &["v1"],                "services",       TEMPLATE,   false, false),
    row(K::KnativeConfiguration, "KnativeConfiguration", "serving.knative.dev", "Configuration", &["v1"],                "configurations", TEMPLATE,   false, false),
];

/// One link of the owner chains controllers build: an object of API kind `child` is
/// controlled by one of API kind `parent`, which is the workload `workload` (or, for a
/// Knative Revision, a step on the way to one).
#[derive(Debug)]
pub struct Link {
    pub child: &'static str,
    pub parent: &'static str,
    pub workload: Option<WorkloadKind>,
}

/// Deployment → ReplicaSet, CronJob → Job, and Knative's Service → Configuration →
/// Revision → Deployment (`<revision>-deployment`) → ReplicaSet.
pub const LINKS: [Link; 5] = [
    Link {
        child: "ReplicaSet",
        parent: "Deployment",
        workload: Some(K::Deployment),
    },
    Link {
        child: "Job",
        parent: "CronJob",
        workload: Some(K::CronJob),
    },
    Link {
        child: "Deployment",
        parent: "Revision",
        workload: None,
    },
    Link {
        child: "Revision",
        parent: "Configuration",
        workload: Some(K::KnativeConfiguration),
    },
    Link {
        child: "Configuration",
        parent: "Service",
        workload: Some(K::KnativeService),
    },
];

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → core).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

impl WorkloadKind {
    /// This kind's row of [`KINDS`].
    pub fn info(self) -> &'static KindInfo {
        &KINDS[self as usize]
    }

    /// The user-facing name ([`KindInfo::label`]).
    pub fn as_str(self) -> &'static str {
        self.info().label
    }

    /// From the user-facing name (`KnativeService`, not `Service`).
    pub fn parse(s: &str) -> Option<Self> {
        KINDS.iter().find(|i| i.label == s).map(|i| i.kind)
    }

    /// From an API group and kind.
    pub fn from_api(group: &str, kind: &str) -> Option<Self> {
        KINDS
            .iter()
            .find(|i| i.group == group && i.api_kind == kind)
            .map(|i| i.kind)
    }

    /// From a kind named where the group may be missing (kube-state-metrics rows, HPA
    /// target labels): with an `apiVersion`, exactly; without, only built-in kinds (a
    /// bare `Service` is not a Knative Service).
    pub fn from_kind(api_version: Option<&str>, kind: &str) -> Option<Self> {
        match api_version {
            Some(v) => Self::from_api(group_of(v), kind),
            None => Self::from_api("", kind)
                .or_else(|| Self::from_api("apps", kind))
                .or_else(|| Self::from_api("batch", kind)),
        }
    }

    /// JSON pointers to the pod spec and pod metadata of this kind.
    pub fn pod_paths(self) -> (&'static str, &'static str) {
        let i = self.info();
        (i.pod_spec, i.pod_meta)
    }

    pub fn is_knative(self) -> bool {
        self.info().group == "serving.knative.dev"
    }

    /// The kinds whose metadata the watchers mirror.
    pub fn watched() -> impl Iterator<Item = WorkloadKind> {
        KINDS.iter().filter(|i| i.watched).map(|i| i.kind)
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind for an API group and kind, if rightsizer handles it.
pub fn kind_for(group: &str, kind: &str) -> Option<WorkloadKind> {
    WorkloadKind::from_api(group, kind)
}

/// The kind of a manifest from its `apiVersion` and `kind`.
pub fn kind_of_manifest(obj: &Value) -> Option<WorkloadKind> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    WorkloadKind::from_api(group_of(api_version), obj.get("kind")?.as_str()?)
}

/// JSON pointers to the pod spec and pod metadata of a kind.
pub fn pod_paths(kind: WorkloadKind) -> (&'static str, &'static str) {
    kind.pod_paths()
}

/// Whether the kind is a Knative resource.
pub fn is_knative(kind: WorkloadKind) -> bool {
    kind.is_knative()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_enum_order_and_its_names_are_the_serialized_ones() {
        for (i, info) in KINDS.iter().enumerate() {
            assert_eq!(info.kind as usize, i, "{info:?}");
            let json = serde_json::to_string(&info.kind).unwrap();
            assert_eq!(json, format!("\"{}\"", info.label));
            assert_eq!(WorkloadKind::parse(info.label), Some(info.kind));
            assert_eq!(
                WorkloadKind::from_api(info.group, info.api_kind),
                Some(info.kind)
            );
        }
    }

    #[test]
    fn kinds_from_api_names() {
        // (apiVersion given, kind) → kind
        let table = [
            (Some("apps/v1"), "ReplicaSet", Some(K::ReplicaSet)),
            (Some("batch/v1beta1"), "CronJob", Some(K::CronJob)),
            (
                Some("serving.knative.dev/v1"),
                "Service",
                Some(K::KnativeService),
            ),
            (Some("v1"), "Service", None),
            (Some("argoproj.io/v1alpha1"), "ReplicaSet", None),
            (None, "StatefulSet", Some(K::StatefulSet)),
            (None, "Job", Some(K::Job)),
            (None, "Service", None),
            (None, "KnativeService", None),
            (None, "Rollout", None),
        ];
        for (api_version, kind, want) in table {
            assert_eq!(
                WorkloadKind::from_kind(api_version, kind),
                want,
                "{api_version:?} {kind}"
            );
        }
    }

    #[test]
    fn pod_templates_and_watched_kinds() {
        assert_eq!(K::Pod.pod_paths(), ("/spec", "/metadata"));
        assert_eq!(
            K::CronJob.pod_paths().0,
            "/spec/jobTemplate/spec/template/spec"
        );
        assert_eq!(K::KnativeService.pod_paths().0, "/spec/template/spec");
        let watched: Vec<_> = WorkloadKind::watched().collect();
        assert_eq!(
            watched,
            [K::Deployment, K::StatefulSet, K::DaemonSet, K::CronJob]
        );
        assert!(K::KnativeConfiguration.is_knative() && !K::Deployment.is_knative());
    }
}
