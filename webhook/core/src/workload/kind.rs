//! The one table of workload kinds: for each kind, the name recommendation keys,
//! policies and metric labels use, its API group, kind, versions and resource, where
//! its pod template lives, and its part in owner chains ([`KINDS`], [`LINKS`]); then
//! the facts given by one exhaustive `match` each: the admission operations it is
//! mutated on, how many Pods it stands for, where its controllers are recorded, the Pod
//! its controller makes, and its strict decode. Everything that maps a kind to
//! something reads this file; elsewhere a kind is only compared with `Pod` (whether
//! the object is a Pod itself rather than a template).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::names;

/// The kinds a workload identity can have. Serialized (keys, policies, JSON) as
/// [`KindInfo::label`]: the variant name, or `<Kind>.<group>` for [`WorkloadKind::Scaled`].
/// Compared, hashed and ordered by table position, then label.
#[derive(Debug, Clone, Copy)]
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
    /// A controller outside the table whose ReplicaSets run its Pods and which serves
    /// the `/scale` subresource (an Argo Rollout): found by API discovery, never by name
    /// ([`WorkloadKind::scaled`]), so its history survives the per-revision ReplicaSets.
    Scaled(&'static KindInfo),
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
    /// Versions the watchers and writers use, newest first (discovery picks one where
    /// there are several).
    pub versions: &'static [&'static str],
    /// Plural resource name (also the `resource` label of `rightsizer_watch_objects`).
    pub plural: &'static str,
    /// JSON pointers to the pod spec and the pod metadata inside the object.
    pub pod_spec: &'static str,
    pub pod_meta: &'static str,
    /// Pods name it as their controller (`ownerReferences` with `controller: true`).
    pub controls_pods: bool,
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
    }
}

use WorkloadKind as K;

/// Every kind rightsizer handles, in [`WorkloadKind`] order.
#[rustfmt::skip]
pub const KINDS: [KindInfo; 9] = [
    //   kind                     label                   group                  kind             versions                plural            pod paths   pods
    row(K::Pod,                  "Pod",                  "",                    "Pod",           &["v1"],                "pods",           ("/spec", "/metadata"), false),
    row(K::Deployment,           "Deployment",           "apps",                "Deployment",    &["v1"],                "deployments",    TEMPLATE,   false),
    row(K::StatefulSet,          "StatefulSet",          "apps",                "StatefulSet",   &["v1"],                "statefulsets",   TEMPLATE,   true),
    row(K::DaemonSet,            "DaemonSet",            "apps",                "DaemonSet",     &["v1"],                "daemonsets",     TEMPLATE,   true),
    row(K::ReplicaSet,           "ReplicaSet",           "apps",                "ReplicaSet",    &["v1"],                "replicasets",    TEMPLATE,   true),
    row(K::Job,                  "Job",                  "batch",               "Job",           &["v1"],                "jobs",           TEMPLATE,   true),
    row(K::CronJob,              "CronJob",              "batch",               "CronJob",       &["v1", "v1beta1"],     "cronjobs",
        ("/spec/jobTemplate/spec/template/spec", "/spec/jobTemplate/spec/template/metadata"),           false),
    row(K::KnativeService,       "KnativeService",       "serving.knative.dev", "Service",       &["v1"],                "services",       TEMPLATE,   false),
    row(K::KnativeConfiguration, "KnativeConfiguration", "serving.knative.dev", "Configuration", &["v1"],                "configurations", TEMPLATE,   false),
];

/// The scaled controllers discovery registered ([`WorkloadKind::scaled`]): a handful per
/// cluster, kept for the process's life (each row is leaked once, so kinds stay `Copy`).
static SCALED: RwLock<Vec<&'static KindInfo>> = RwLock::new(Vec::new());

fn scaled_rows() -> std::sync::RwLockReadGuard<'static, Vec<&'static KindInfo>> {
    SCALED.read().unwrap_or_else(|e| e.into_inner())
}

/// The scaled controllers a cluster serves (discovery's answer), as the resolver's fact:
/// the controller of a ReplicaSet named by API kind alone (kube-state-metrics rows, the
/// watchers' owner mirrors) is one of these when exactly one has that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScaledKinds(pub Vec<WorkloadKind>);

impl ScaledKinds {
    /// The scaled controller of API kind `api_kind` (`None` when none or ambiguous).
    pub fn by_kind(&self, api_kind: &str) -> Option<WorkloadKind> {
        let mut found = self.0.iter().filter(|k| k.info().api_kind == api_kind);
        match (found.next(), found.next()) {
            (Some(k), None) => Some(*k),
            _ => None,
        }
    }
}

/// One link of the owner chains controllers build: an object of API kind `child` is
/// controlled by one of API kind `parent`, which is the workload `workload` (or, for a
/// Knative Revision, a step on the way to one).
#[derive(Debug)]
pub struct Link {
    pub child: &'static str,
    pub parent: &'static str,
    pub workload: Option<WorkloadKind>,
    /// The parent's name from the child's (and the Pod's `pod-template-hash`), by the
    /// parent controller's naming: used when the owner facts do not know the child.
    pub parent_named: Option<ParentNamed>,
}

/// See [`Link::parent_named`].
pub type ParentNamed = for<'a> fn(&'a str, Option<&str>) -> Option<&'a str>;

fn cronjob_of_job<'a>(job: &'a str, _template_hash: Option<&str>) -> Option<&'a str> {
    names::cronjob_of_job(job)
}

/// Deployment → ReplicaSet, CronJob → Job, and Knative's Service → Configuration →
/// Revision → Deployment (`<revision>-deployment`) → ReplicaSet.
pub const LINKS: [Link; 5] = [
    Link {
        child: "ReplicaSet",
        parent: "Deployment",
        workload: Some(K::Deployment),
        parent_named: Some(names::deployment_of_replicaset),
    },
    Link {
        child: "Job",
        parent: "CronJob",
        workload: Some(K::CronJob),
        parent_named: Some(cronjob_of_job),
    },
    Link {
        child: "Deployment",
        parent: "Revision",
        workload: None,
        parent_named: None,
    },
    Link {
        child: "Revision",
        parent: "Configuration",
        workload: Some(K::KnativeConfiguration),
        parent_named: None,
    },
    Link {
        child: "Configuration",
        parent: "Service",
        workload: Some(K::KnativeService),
        parent_named: None,
    },
];

/// How many Pods one object of a kind stands for (see `sizing::pod::pods_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodCount {
    /// The object is a Pod.
    One,
    /// A template run as many times as the number at this pointer says (1 when absent).
    Replicas(&'static str),
    /// A template whose Pod count is not in the object (a DaemonSet: one per node;
    /// Knative: autoscaled).
    Unknown,
}

/// Where the controllers of a kind's objects are recorded: kube-state-metrics'
/// `kube_replicaset_owner` / `kube_job_owner` series, or the watchers' metadata-only
/// ReplicaSet and Job mirrors standing in for them. These are the kinds between a Pod
/// and its top-level workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerTable {
    ReplicaSets,
    Jobs,
}

impl OwnerTable {
    /// The table that records controllers of objects of API kind `api_kind`.
    pub fn of_api_kind(api_kind: &str) -> Option<OwnerTable> {
        KINDS
            .iter()
            .find_map(|i| i.kind.owner_table().filter(|_| i.api_kind == api_kind))
    }
}

/// The Pod a kind's controller creates from the object's template, as `mutate --pods`
/// previews it. Names and label values are templates over the object's name `{name}`,
/// its pod template's hash `{hash}` and, for a CronJob's Job, the scheduled minutes
/// `{minutes}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadePod {
    /// The Pod's controller (its owner reference): kind and name.
    pub owner: (WorkloadKind, &'static str),
    /// The Pod's name, or the prefix the apiserver completes.
    pub name: PodName,
    /// Labels the controller adds to the template's, in order.
    pub labels: &'static [(&'static str, &'static str)],
    /// The name the controller gives a container that has none.
    pub unnamed_container: Option<&'static str>,
}

/// See [`MadePod::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodName {
    /// `metadata.name`.
    Name(&'static str),
    /// `metadata.generateName`.
    Generate(&'static str),
}

/// Where a workload's committed state lives: its `Rightsizing`, owned (garbage
/// collection) by the object the workload key names, whose uid comes from:
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// the watchers' mirror of the kind (a built-in kind, always served);
    Watched,
    /// the same mirror, which exists only when the apiserver serves the kind (a CRD:
    /// Knative); without it the state stays in the leader's memory;
    WatchedWhenServed,
    /// the analyzer's pod facts (`kube_pod_info{uid}`, or the Pod watch): a bare Pod.
    PodFacts,
    /// the controller reference of its ReplicaSets (the watchers' ReplicaSet mirror): a
    /// scaled controller, which rightsizer neither watches nor may read.
    ControllerRef,
}

/// Checks that an object decodes as its kind's strict type (the message when not).
pub type Decode = fn(&Value) -> Result<(), String>;

fn strict<T: serde::de::DeserializeOwned>(raw: &Value) -> Result<(), String> {
    // Decoded from the already parsed tree: the text is parsed once per review.
    T::deserialize(raw).map(|_| ()).map_err(|e| e.to_string())
}

/// The per-kind facts beyond the identity columns of [`KINDS`]: one exhaustive `match`
/// each (no catch-all), so a new kind does not compile until every one is given.
impl WorkloadKind {
    /// The admission operations rightsizer mutates objects of this kind on: a Pod's
    /// spec is immutable once created (resizing goes through `resize`, not here).
    pub fn operations(self) -> &'static [&'static str] {
        match self {
            K::Pod => &["CREATE"],
            K::Deployment
            | K::StatefulSet
            | K::DaemonSet
            | K::ReplicaSet
            | K::Job
            | K::CronJob
            | K::KnativeService
            | K::KnativeConfiguration => &["CREATE", "UPDATE"],
            // Its template is not ours to size: its Pods are, at creation.
            K::Scaled(_) => &[],
        }
    }

    /// How many Pods an object of this kind stands for.
    pub fn pod_count(self) -> PodCount {
        match self {
            K::Pod => PodCount::One,
            K::Deployment | K::StatefulSet | K::ReplicaSet => PodCount::Replicas("/spec/replicas"),
            K::Job => PodCount::Replicas("/spec/parallelism"),
            K::CronJob => PodCount::Replicas("/spec/jobTemplate/spec/parallelism"),
            K::DaemonSet | K::KnativeService | K::KnativeConfiguration | K::Scaled(_) => {
                PodCount::Unknown
            }
        }
    }

    /// Where the controllers of this kind's objects are recorded (see [`OwnerTable`]).
    pub fn owner_table(self) -> Option<OwnerTable> {
        match self {
            K::ReplicaSet => Some(OwnerTable::ReplicaSets),
            K::Job => Some(OwnerTable::Jobs),
            K::Pod
            | K::Deployment
            | K::StatefulSet
            | K::DaemonSet
            | K::CronJob
            | K::KnativeService
            | K::KnativeConfiguration
            | K::Scaled(_) => None,
        }
    }

    /// Where this kind's committed state lives (see [`Home`]); `None`: in the leader's
    /// memory only. A ReplicaSet or Job is a workload only when nothing controls it,
    /// and their metadata mirrors do not keep uids.
    pub fn home(self) -> Option<Home> {
        match self {
            K::Deployment | K::StatefulSet | K::DaemonSet | K::CronJob => Some(Home::Watched),
            K::KnativeService | K::KnativeConfiguration => Some(Home::WatchedWhenServed),
            K::Pod => Some(Home::PodFacts),
            K::Scaled(_) => Some(Home::ControllerRef),
            K::ReplicaSet | K::Job => None,
        }
    }

    /// The Pod this kind's controller makes (`None` for a Pod).
    pub fn made_pod(self) -> Option<MadePod> {
        use PodName::{Generate, Name};
        // A Knative revision `<name>-00001` runs as Deployment `<revision>-deployment`.
        let knative = |labels| MadePod {
            owner: (K::ReplicaSet, "{name}-00001-deployment-{hash}"),
            name: Generate("{name}-00001-deployment-{hash}-"),
            labels,
            // Knative names an unnamed serving container so.
            unnamed_container: Some("user-container"),
        };
        let made = |owner, name, labels| MadePod {
            owner,
            name,
            labels,
            unnamed_container: None,
        };
        Some(match self {
            K::Pod | K::Scaled(_) => return None,
            K::Deployment => made(
                (K::ReplicaSet, "{name}-{hash}"),
                Generate("{name}-{hash}-"),
                &[("pod-template-hash", "{hash}")],
            ),
            K::ReplicaSet => made((K::ReplicaSet, "{name}"), Generate("{name}-"), &[]),
            K::StatefulSet => made(
                (K::StatefulSet, "{name}"),
                Name("{name}-0"),
                &[
                    ("controller-revision-hash", "{name}-{hash}"),
                    ("statefulset.kubernetes.io/pod-name", "{name}-0"),
                ],
            ),
            K::DaemonSet => made(
                (K::DaemonSet, "{name}"),
                Generate("{name}-"),
                &[("controller-revision-hash", "{hash}")],
            ),
            K::Job => made(
                (K::Job, "{name}"),
                Generate("{name}-"),
                &[("job-name", "{name}")],
            ),
            K::CronJob => made(
                (K::Job, "{name}-{minutes}"),
                Generate("{name}-{minutes}-"),
                &[("job-name", "{name}-{minutes}")],
            ),
            K::KnativeService => knative(&[
                ("serving.knative.dev/service", "{name}"),
                ("serving.knative.dev/revision", "{name}-00001"),
                ("pod-template-hash", "{hash}"),
            ]),
            K::KnativeConfiguration => knative(&[
                ("serving.knative.dev/configuration", "{name}"),
                ("serving.knative.dev/revision", "{name}-00001"),
                ("pod-template-hash", "{hash}"),
            ]),
        })
    }

    /// The strict decode of this kind (Knative: the template's pod spec shape), so
    /// nothing is patched that the apiserver would not store.
    pub fn decode(self) -> Decode {
        use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
        match self {
            K::Pod => strict::<core::Pod>,
            K::Deployment => strict::<apps::Deployment>,
            K::StatefulSet => strict::<apps::StatefulSet>,
            K::DaemonSet => strict::<apps::DaemonSet>,
            K::ReplicaSet => strict::<apps::ReplicaSet>,
            K::Job => strict::<batch::Job>,
            K::CronJob => strict::<batch::CronJob>,
            K::KnativeService | K::KnativeConfiguration => strict::<knative_shape::Tpl>,
            // Never admitted (no operations): nothing to check.
            K::Scaled(_) => |_| Ok(()),
        }
    }
}

/// The parts of a Knative Service/Configuration that must decode for us to size it.
/// Only the shape matters: the fields are decoded to be checked, not read.
#[allow(dead_code)]
mod knative_shape {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Tpl {
        spec: TplSpec,
    }
    #[derive(Deserialize)]
    struct TplSpec {
        template: Template,
    }
    #[derive(Deserialize)]
    struct Template {
        #[serde(default)]
        metadata: Option<ObjectMeta>,
        spec: KnSpec,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct KnSpec {
        containers: Vec<KnContainer>,
        #[serde(default)]
        container_concurrency: Option<i64>,
    }
    #[derive(Deserialize)]
    struct KnContainer {
        #[serde(default)]
        resources: Option<core::ResourceRequirements>,
    }
}

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → core).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

impl WorkloadKind {
    /// This kind's row of [`KINDS`] (a scaled controller's: its discovered row).
    pub fn info(self) -> &'static KindInfo {
        match self {
            K::Scaled(i) => i,
            k => &KINDS[k.rank().0],
        }
    }

    /// The scaled controller of API `group`/`version` kind `api_kind` (plural
    /// `plural`), registered once: discovery calls this for each resource serving
    /// `<plural>/scale` whose kind is not in [`KINDS`]. `None` for a table kind.
    pub fn scaled(group: &str, version: &str, api_kind: &str, plural: &str) -> Option<Self> {
        if Self::from_api(group, api_kind).is_some() {
            return None;
        }
        if let Some(k) = Self::registered(group, api_kind) {
            return Some(k);
        }
        let mut rows = SCALED.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = rows
            .iter()
            .find(|i| i.group == group && i.api_kind == api_kind)
        {
            return Some(K::Scaled(i));
        }
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let versions: &'static [&'static str] = Box::leak(Box::new([leak(version.into())]));
        let info: &'static KindInfo = Box::leak(Box::new(KindInfo {
            // Not read for a scaled row (`info` answers from the variant); any value.
            kind: K::Pod,
            label: leak(format!("{api_kind}.{group}")),
            group: leak(group.into()),
            api_kind: leak(api_kind.into()),
            versions,
            plural: leak(plural.into()),
            pod_spec: TEMPLATE.0,
            pod_meta: TEMPLATE.1,
            controls_pods: false,
        }));
        rows.push(info);
        Some(K::Scaled(info))
    }

    fn registered(group: &str, api_kind: &str) -> Option<Self> {
        scaled_rows()
            .iter()
            .find(|i| i.group == group && i.api_kind == api_kind)
            .map(|i| K::Scaled(i))
    }

    /// Position in the table (scaled controllers after it, by label), for comparisons.
    fn rank(self) -> (usize, &'static str) {
        let i = match self {
            K::Pod => 0,
            K::Deployment => 1,
            K::StatefulSet => 2,
            K::DaemonSet => 3,
            K::ReplicaSet => 4,
            K::Job => 5,
            K::CronJob => 6,
            K::KnativeService => 7,
            K::KnativeConfiguration => 8,
            K::Scaled(i) => return (KINDS.len(), i.label),
        };
        (i, "")
    }

    /// The user-facing name ([`KindInfo::label`]).
    pub fn as_str(self) -> &'static str {
        self.info().label
    }

    /// From the user-facing name (`KnativeService`, not `Service`; a registered scaled
    /// controller's `Rollout.argoproj.io`).
    pub fn parse(s: &str) -> Option<Self> {
        KINDS
            .iter()
            .find(|i| i.label == s)
            .map(|i| i.kind)
            .or_else(|| {
                scaled_rows()
                    .iter()
                    .find(|i| i.label == s)
                    .map(|i| K::Scaled(i))
            })
    }

    /// From an API group and kind: a table kind or a registered scaled controller.
    pub fn from_api_or_scaled(group: &str, kind: &str) -> Option<Self> {
        Self::from_api(group, kind).or_else(|| Self::registered(group, kind))
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

    /// The kinds whose metadata the watchers mirror (when served): top-level workloads
    /// that can own a `Rightsizing` and be the target of Events.
    pub fn watched() -> impl Iterator<Item = WorkloadKind> {
        KINDS
            .iter()
            .map(|i| i.kind)
            .filter(|k| k.watched_as().is_some())
    }

    /// Whether the watchers mirror this kind: `Some(optional)`, optional when the
    /// apiserver may not serve it (see [`Home`]).
    pub fn watched_as(self) -> Option<bool> {
        match self.home()? {
            Home::Watched => Some(false),
            Home::WatchedWhenServed => Some(true),
            Home::PodFacts | Home::ControllerRef => None,
        }
    }
}

impl KindInfo {
    /// The `apiVersion` of each of [`KindInfo::versions`], newest first.
    pub fn api_versions(&self) -> impl Iterator<Item = String> + '_ {
        self.versions.iter().map(|v| match self.group {
            "" => v.to_string(),
            g => format!("{g}/{v}"),
        })
    }

    /// The `apiVersion` rightsizer writes objects of this kind with (the newest).
    pub fn api_version(&self) -> String {
        self.api_versions().next().unwrap_or_default()
    }

    /// Whether the served version must be discovered (the table lists several).
    pub fn discovered(&self) -> bool {
        self.versions.len() > 1
    }
}

impl PartialEq for WorkloadKind {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}

impl Eq for WorkloadKind {}

impl Hash for WorkloadKind {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
    }
}

impl PartialOrd for WorkloadKind {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for WorkloadKind {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl Serialize for WorkloadKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WorkloadKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // The table's labels, read from it at compile time.
        const LABELS: [&str; KINDS.len()] = {
            let mut out = [""; KINDS.len()];
            let mut i = 0;
            while i < KINDS.len() {
                out[i] = KINDS[i].label;
                i += 1;
            }
            out
        };
        // As a derived enum says it (a scaled controller's label is accepted too).
        Self::parse(&s).ok_or_else(|| serde::de::Error::unknown_variant(&s, &LABELS))
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a manifest from its `apiVersion` and `kind`.
pub fn kind_of_manifest(obj: &Value) -> Option<WorkloadKind> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    WorkloadKind::from_api(group_of(api_version), obj.get("kind")?.as_str()?)
}

#[cfg(test)]
#[path = "kind_tests.rs"]
mod tests;
