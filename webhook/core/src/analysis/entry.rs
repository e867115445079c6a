//! One container's entry in the analyzer's recommendation cache. The cache itself
//! (bounded, timestamped) is the I/O crate's (`rightsizer::analyzer::cache`).

use crate::recommendation::ContainerRecommendation;

/// One cached container.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entry {
    pub rec: ContainerRecommendation,
    /// Unix seconds of the last memory / CPU / Knative revision (for the cooldown).
    pub memory_revised_at: u64,
    pub cpu_revised_at: u64,
    pub knative_revised_at: u64,
    /// What the running pods have now (kube-state-metrics), for reports.
    pub current_memory: crate::rules::Sizes,
    pub current_cpu: crate::rules::Sizes,
    /// Pods running the container now, and those whose last termination was an OOM
    /// kill (in the long window), for reports.
    pub pods: u32,
    pub oom_kills: u32,
}
