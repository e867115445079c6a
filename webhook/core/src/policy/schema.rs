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

/// Per-workload explicit values; container `*` applies to every container. `knative`:
/// Knative settings for this workload (Knative Services and Configurations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Override {
    pub workload: WorkloadRef,
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerValues>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knative: Option<KnativeOverride>,
}

/// A workload's own Knative settings: the fields of the policy's `knative` section, each
/// optional. A field set here replaces the policy's for this workload and beats the
/// analyzer's proposal; like the policy's, it is written only where the user set none.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KnativeOverride {
    #[serde(default)]
    pub target: Option<f64>,
    #[serde(default)]
    pub target_utilization_percentage: Option<f64>,
    #[serde(default)]
    pub container_concurrency: Option<u64>,
    #[serde(default)]
    pub min_scale: Option<u32>,
    #[serde(default)]
    pub max_scale: Option<u32>,
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub apply_recommendations: Option<bool>,
}

impl KnativeOverride {
    /// Fields left open here taken from `other` (the first set wins).
    pub fn or(self, other: &KnativeOverride) -> KnativeOverride {
        KnativeOverride {
            target: self.target.or(other.target),
            target_utilization_percentage: self
                .target_utilization_percentage
                .or(other.target_utilization_percentage),
            container_concurrency: self.container_concurrency.or(other.container_concurrency),
            min_scale: self.min_scale.or(other.min_scale),
            max_scale: self.max_scale.or(other.max_scale),
            metric: self.metric.or_else(|| other.metric.clone()),
            apply_recommendations: self.apply_recommendations.or(other.apply_recommendations),
        }
    }

    /// The policy's section (or none) with this workload's fields in place.
    pub fn over(&self, policy: Option<&KnativePolicy>) -> KnativePolicy {
        let p = policy.cloned().unwrap_or_default();
        KnativePolicy {
            target: self.target.or(p.target),
            target_utilization_percentage: self
                .target_utilization_percentage
                .or(p.target_utilization_percentage),
            container_concurrency: self.container_concurrency.or(p.container_concurrency),
            min_scale: self.min_scale.or(p.min_scale),
            max_scale: self.max_scale.or(p.max_scale),
            metric: self.metric.clone().or(p.metric),
            apply_recommendations: self
                .apply_recommendations
                .unwrap_or(p.apply_recommendations),
        }
    }
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

/// Knative autoscaling defaults, written to `spec.template` where the user set none.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KnativePolicy {
    /// `autoscaling.knative.dev/target`
    #[serde(default)]
    pub target: Option<f64>,
    /// `autoscaling.knative.dev/target-utilization-percentage`
    #[serde(default)]
    pub target_utilization_percentage: Option<f64>,
    /// `spec.template.spec.containerConcurrency`
    #[serde(default)]
    pub container_concurrency: Option<u64>,
    /// `autoscaling.knative.dev/min-scale`
    #[serde(default)]
    pub min_scale: Option<u32>,
    /// `autoscaling.knative.dev/max-scale`
    #[serde(default)]
    pub max_scale: Option<u32>,
    /// `autoscaling.knative.dev/metric` (concurrency, rps, cpu, memory)
    #[serde(default)]
    pub metric: Option<String>,
    /// Use the analyzer's concurrency proposals (enforce mode only) before these defaults.
    #[serde(default)]
    pub apply_recommendations: bool,
}

/// The policy document as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Defaults to the ConfigMap's name.
    #[serde(default)]
    pub name: Option<String>,
    /// When several policies select a workload, the highest precedence wins (ties: name order).
    #[serde(default)]
    pub precedence: i32,
    #[serde(default)]
    pub selector: Selector,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub target: WriteTarget,
    /// Memory recommendation strategy by name (default `adaptive`, `crate::strategy::DEFAULT`).
    #[serde(default)]
    pub recommender: Option<String>,
    /// Partial overrides of the seed rules' numbers; anything left out keeps its default.
    #[serde(default)]
    pub rules: Option<serde_json::Value>,
    #[serde(default)]
    pub enforcement: Enforcement,
    /// Values for containers that declare nothing for a resource.
    #[serde(default)]
    pub defaults: Option<ContainerValues>,
    #[serde(default)]
    pub overrides: Vec<Override>,
    #[serde(default)]
    pub gpu: Option<GpuPolicy>,
    /// Placement by workload and CPU request; the first matching rule applies.
    #[serde(default)]
    pub placement: Vec<PlacementRule>,
    #[serde(default)]
    pub priority: Option<PriorityPolicy>,
    #[serde(default)]
    pub knative: Option<KnativePolicy>,
    /// Memory as a function of declared load (`rightsizer.io/expected-load`).
    #[serde(default)]
    pub load_models: Vec<crate::loadmodel::schema::LoadModelSpec>,
    /// Controlled resources and values, the limit rule, the JVM bound.
    #[serde(default)]
    pub sizing: Option<crate::policy::sizing::SizingPolicy>,
    /// Whether and how running Pods are brought to the committed values (default off).
    #[serde(default)]
    pub update: crate::update::policy::UpdatePolicy,
}

/// A validated policy, ready for admission.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
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
