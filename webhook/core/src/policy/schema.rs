//! The policy document (data key `policy.yaml` of a ConfigMap labelled
//! `rightsizer.io/policy: "true"`). Unknown fields are refused so typos surface.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, PreferredSchedulingTerm, Toleration};
use serde::{Deserialize, Serialize};

use crate::quantity::{Bytes, Millicores};
use crate::rules::Rules;
use crate::workload::kind::WorkloadKind;

/// How far rightsizer may go for the selected workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Touch nothing.
    Off,
    /// Apply overrides and defaults; record recommendations in an annotation only.
    #[default]
    Observe,
    /// Also apply committed values and (if allowed) recommendations.
    Enforce,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s.trim() {
            "off" => Some(Mode::Off),
            "observe" => Some(Mode::Observe),
            "enforce" => Some(Mode::Enforce),
            _ => None,
        }
    }
}

/// Where resources are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteTarget {
    /// On Pods at creation: no GitOps drift, no rollouts caused by the webhook.
    #[default]
    Pods,
    /// On workload pod templates (Deployment, StatefulSet, ...); their Pods are left as created.
    Templates,
}

use crate::selector::Selector;

/// A request/limit pair written as quantities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair<Q> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Q>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Q>,
}

/// Explicit values for one container. Also the JSON of the `rightsizer.io/overrides`
/// annotation (keyed by container name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerValues {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Pair<Bytes>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Pair<Millicores>>,
}

/// Names one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadRef {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub kind: Option<WorkloadKind>,
    pub name: String,
}

impl WorkloadRef {
    /// Whether this names the workload `key` (namespace and kind, when given, must match).
    pub fn names(&self, key: &crate::workload::WorkloadKey) -> bool {
        self.name == key.name
            && self.namespace.as_ref().is_none_or(|n| *n == key.namespace)
            && self.kind.is_none_or(|k| k == key.kind)
    }
}

/// Per-workload explicit values; container `*` applies to every container. `knative`:
/// this workload's own Knative settings (Knative Services and Configurations): each field
/// set there replaces the policy's `knative` field and beats the analyzer's proposal;
/// like the policy's, it is written only where the user set none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Override {
    pub workload: WorkloadRef,
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerValues>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knative: Option<KnativePolicy>,
}

/// How enforce mode may use usage-based values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Enforcement {
    /// In enforce mode, apply the current recommendation when nothing is committed yet
    /// (through the step limit and p95 floor of the rules' safeguards).
    #[serde(default = "yes")]
    pub apply_recommendations: bool,
}

impl Default for Enforcement {
    fn default() -> Self {
        Enforcement {
            apply_recommendations: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// GPU placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuPolicy {
    /// Extended resources that mark a GPU container.
    #[serde(default = "default_gpu_resources")]
    pub resources: Vec<String>,
    /// Requirements ANDed into every required node-selector term (or a new term).
    #[serde(default)]
    pub required_node_affinity: Vec<NodeSelectorRequirement>,
    /// Preferred terms added when not already present.
    #[serde(default)]
    pub preferred_node_affinity: Vec<PreferredSchedulingTerm>,
    /// Tolerations added when not already present.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Priority class for GPU workloads (ignored when the user set one).
    #[serde(default)]
    pub priority_class_name: Option<String>,
}

pub fn default_gpu_resources() -> Vec<String> {
    vec!["nvidia.com/gpu".to_string()]
}

/// Node placement for the workloads a rule selects (tried in order; the first that
/// matches applies; GPU Pods take the `gpu` section's instead). Terms are merged into the
/// pod spec like the GPU section's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementRule {
    /// For messages and readers only.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub selector: Selector,
    /// Match only when the Pod's effective CPU request (as the scheduler counts it) is at
    /// least this.
    #[serde(default)]
    pub min_cpu: Option<Millicores>,
    /// Requirements ANDed into every required node-selector term (or a new term).
    #[serde(default)]
    pub required_node_affinity: Vec<NodeSelectorRequirement>,
    /// Preferred terms added when not already present.
    #[serde(default)]
    pub preferred_node_affinity: Vec<PreferredSchedulingTerm>,
    /// Tolerations added when not already present.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
}

/// A PriorityClass as the webhook needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriorityClassInfo {
    pub value: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemption_policy: Option<String>,
    /// The cluster's `globalDefault` class: the apiserver gives it to every Pod that names
    /// none, before webhooks run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub global_default: bool,
}

/// One priority rule: the first matching rule gives the class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriorityRule {
    pub class_name: String,
    #[serde(default)]
    pub selector: Selector,
    /// Match only when the Pod's total CPU request is at least this.
    #[serde(default)]
    pub min_cpu: Option<Millicores>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriorityPolicy {
    /// Class values for offline `mutate` (labelled in a warning); the webhook sets only
    /// classes the cluster has (watched).
    #[serde(default)]
    pub classes: BTreeMap<String, PriorityClassInfo>,
    #[serde(default)]
    pub rules: Vec<PriorityRule>,
    /// Class for selected workloads no rule matched.
    #[serde(default)]
    pub default_class_name: Option<String>,
}

/// Knative autoscaling defaults, written to `spec.template` where the user set none. Also
/// the `knative` block of a per-workload override, whose fields are laid over these.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KnativePolicy {
    /// `autoscaling.knative.dev/target`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// `autoscaling.knative.dev/target-utilization-percentage`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_utilization_percentage: Option<f64>,
    /// `spec.template.spec.containerConcurrency`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<u64>,
    /// `autoscaling.knative.dev/min-scale`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_scale: Option<u32>,
    /// `autoscaling.knative.dev/max-scale`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale: Option<u32>,
    /// `autoscaling.knative.dev/metric` (concurrency, rps, cpu, memory)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Use the analyzer's concurrency proposals (enforce mode only) before these defaults
    /// (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_recommendations: Option<bool>,
    /// Let the Knative writer (`serve --knative-writer`) apply these values to running
    /// Services with server-side apply, without waiting for an edit (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply: Option<bool>,
}

impl KnativePolicy {
    /// Fields left open here taken from `other` (the first set wins).
    pub fn or(self, other: &KnativePolicy) -> KnativePolicy {
        KnativePolicy {
            target: self.target.or(other.target),
            target_utilization_percentage: self
                .target_utilization_percentage
                .or(other.target_utilization_percentage),
            container_concurrency: self.container_concurrency.or(other.container_concurrency),
            min_scale: self.min_scale.or(other.min_scale),
            max_scale: self.max_scale.or(other.max_scale),
            metric: self.metric.or_else(|| other.metric.clone()),
            apply_recommendations: self.apply_recommendations.or(other.apply_recommendations),
            apply: self.apply.or(other.apply),
        }
    }

    /// Whether the analyzer's proposals are used (default false).
    pub fn uses_recommendations(&self) -> bool {
        self.apply_recommendations.unwrap_or(false)
    }
}

/// Whether sections this policy leaves out come from lower-precedence matching policies
/// (`crate::policy::compose`): `true` (the default), `false` (none do), or a list of the
/// sections that may (e.g. `[gpu, placement]`; any other section left out keeps its default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Inherit {
    All(bool),
    Only(Vec<String>),
}

impl Default for Inherit {
    fn default() -> Self {
        Inherit::All(true)
    }
}

impl Inherit {
    /// Whether `section` may come from a lower-precedence policy.
    pub fn allows(&self, section: &str) -> bool {
        match self {
            Inherit::All(b) => *b,
            Inherit::Only(list) => list.iter().any(|s| s == section),
        }
    }
}

/// The policy document as written. Every field but `name`, `precedence`, `selector` and
/// `inherit` is a *section*: optional, and absent when not written, so that composition
/// (`crate::policy::compose`) can tell what a policy decides. A new section must be an
/// `Option` that is skipped when `None`; it then composes like the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Defaults to the ConfigMap's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Order among the policies that select a workload: for each section, the highest
    /// precedence that writes it wins (ties: name order).
    #[serde(default)]
    pub precedence: i32,
    #[serde(default)]
    pub selector: Selector,
    /// See [`Inherit`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherit: Option<Inherit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<WriteTarget>,
    /// Memory recommendation strategy by name (default `adaptive`, `crate::strategy::DEFAULT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommender: Option<String>,
    /// Partial overrides of the seed rules' numbers; anything left out keeps its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Values for containers that declare nothing for a resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ContainerValues>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Vec<Override>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuPolicy>,
    /// Placement by workload and CPU request; the first matching rule applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Vec<PlacementRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<PriorityPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knative: Option<KnativePolicy>,
    /// Memory as a function of declared load (`rightsizer.io/expected-load`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_models: Option<Vec<crate::loadmodel::schema::LoadModelSpec>>,
    /// Controlled resources and values, the limit rule, the JVM bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing: Option<crate::policy::sizing::SizingPolicy>,
    /// Whether and how running Pods are brought to the committed values (default off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<crate::update::policy::UpdatePolicy>,
}

/// The document's fields that say which workloads a policy selects, not what it decides.
pub const NOT_SECTIONS: &[&str] = &["name", "precedence", "selector", "inherit"];

/// The sections, as written in a policy (for `inherit` lists and `explain`). `sizing`
/// is the section of the limit rules, controlled resources and JVM settings.
pub const SECTIONS: &[&str] = &[
    "mode",
    "target",
    "recommender",
    "rules",
    "enforcement",
    "defaults",
    "overrides",
    "gpu",
    "placement",
    "priority",
    "knative",
    "loadModels",
    "sizing",
    "update",
];

/// Whether `key` names a section (see [`SECTIONS`]).
pub fn is_section(key: &str) -> bool {
    SECTIONS.contains(&key)
}

impl PolicySpec {
    /// The written document as a JSON object (sections left out are absent).
    pub fn document(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// The sections this document writes, in its field order.
    pub fn written(&self) -> Vec<String> {
        self.document()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !NOT_SECTIONS.contains(&k.as_str()))
            .collect()
    }
}

/// A validated policy, ready for admission. Selected for a workload, it is the
/// composition of every policy that matches (`crate::policy::compose`).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The highest-precedence policy that selects the workload.
    pub name: String,
    /// Where it came from (file path or namespace/ConfigMap).
    pub source: String,
    pub precedence: i32,
    pub selector: Selector,
    pub mode: Mode,
    pub target: WriteTarget,
    pub recommender: String,
    pub rules: Rules,
    pub enforcement: Enforcement,
    pub defaults: Option<ContainerValues>,
    pub overrides: Vec<Override>,
    pub gpu: Option<GpuPolicy>,
    pub placement: Vec<PlacementRule>,
    pub priority: Option<PriorityPolicy>,
    pub knative: Option<KnativePolicy>,
    pub load_models: Vec<crate::loadmodel::schema::LoadModelSpec>,
    /// `None`: the section's defaults ([`Policy::sizing`]).
    pub sizing: Option<crate::policy::sizing::SizingPolicy>,
    pub update: crate::update::policy::UpdatePolicy,
    /// The document as written (what composition lays over other policies).
    pub spec: PolicySpec,
    /// Which policy decided each section written here or inherited, by section key
    /// (`gpu`, `rules`, ...): for a single policy, itself for every section it writes.
    pub decided_by: BTreeMap<String, String>,
}

impl Policy {
    /// The `sizing:` section in force (its defaults when the policy sets none).
    pub fn sizing(&self) -> std::borrow::Cow<'_, crate::policy::sizing::SizingPolicy> {
        match &self.sizing {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(Default::default()),
        }
    }
}
