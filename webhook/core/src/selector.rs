//! Which workloads a policy, a rule inside it or a load model applies to (matching is
//! `policy::select`). Below both `loadmodel` and `policy`, which each hold selectors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::workload::kind::WorkloadKind;

/// Which workloads and containers a policy (or a rule inside it) applies to.
/// Every given field must match; empty fields match everything.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// Namespace names; `*` wildcards allowed (`team-*`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Labels the namespace must carry.
    #[serde(default)]
    pub namespace_labels: BTreeMap<String, String>,
    /// Labels the workload (or its pod template, or the Pod) must carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Workload kinds (the identity kind: a Deployment's Pods match `Deployment`).
    #[serde(default)]
    pub kinds: Vec<WorkloadKind>,
    /// Workload names; `*` wildcards allowed.
    #[serde(default)]
    pub names: Vec<String>,
    /// Containers this policy sizes; `*` wildcards allowed. Empty: all.
    #[serde(default)]
    pub containers: Vec<String>,
    /// Containers never sized, in addition to Knative's `queue-proxy`.
    #[serde(default)]
    pub exclude_containers: Vec<String>,
}
