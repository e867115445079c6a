//! rightsizer: a Kubernetes mutating admission webhook that sizes memory and CPU
//! requests and limits from observed usage, steered by policy ConfigMaps.
//!
//! This crate is the I/O shell: the review handler and HTTP server, the analyzer's
//! Prometheus client and loop, the Kubernetes watchers and writers, policy sources
//! (files, ConfigMaps) and the replay runner. What decides is the pure core,
//! `rightsizer_core` (webhook/core): its modules are re-exported here under the same
//! paths (`crate::quantity`, `crate::policy::schema`, ...), and the directories split
//! between the two crates add their I/O files to the core's module. `main.rs` only
//! parses arguments.

pub use rightsizer_core::{cluster, object, quantity, rules, selector, sizing, strategy, workload};

pub mod admission;
pub mod analyzer;
pub mod certs;
pub mod clock;
pub mod kube;
pub(crate) mod lock;
pub mod offline;
pub mod replay;
pub mod server;

#[cfg(test)]
mod layering;

/// Load models: the arithmetic is the core's; fitting from Prometheus and publishing
/// the fits are here.
pub mod loadmodel {
    pub use rightsizer_core::loadmodel::*;
    /// Applying a model at admission is part of the merge (`sizing::load`).
    pub use rightsizer_core::sizing::load as admit;

    pub mod fitter;
    pub mod metrics;
    pub mod publish;
    pub mod source;
}

/// Policies: schema, validation and selection are the core's; loading them from files
/// and ConfigMaps, the store in force and the directory watch are here.
pub mod policy {
    pub use rightsizer_core::policy::*;

    pub mod load;
    pub mod store;
    pub mod watch;

    pub use load::{parse_manifests, parse_policy, POLICY_KEY, POLICY_LABEL};
    pub use store::PolicyStore;
}

/// Recommendations: the types are the core's; their metrics are here.
pub mod recommendation {
    pub use rightsizer_core::recommendation::*;

    pub mod metrics;
}
