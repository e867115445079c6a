//! rightsizer: a Kubernetes mutating admission webhook that sizes memory and CPU
//! requests and limits from observed usage, steered by policy ConfigMaps.
//!
//! This crate is the I/O shell: the review handler and HTTP server, the analyzer's
//! Prometheus client and loop, the Kubernetes watchers and writers, policy sources
//! (files, ConfigMaps) and the replay runner. What decides is the pure core,
//! `rightsizer_core` (webhook/core).
//!
//! Every item has one path, and the path says which crate holds it: this crate names
//! core items as `rightsizer_core::…` (`rightsizer_core::quantity::Resource`) and its
//! own as `crate::…`, re-exports no core item, and has no module of the same name as a
//! core module (the I/O halves are `analyzer` next to the core's `analysis`, `policies`
//! next to `policy`, `loadfit` next to `loadmodel`, `replay_runner` next to `replay`,
//! `reporting` next to `report`).
//! The layering test checks all of it. `main.rs` only parses arguments.
//!
//! Public is what the binary (`main.rs`, `commands/`) and the benches use, and the
//! modules of the types that API hands out (the `unnameable_types` lint keeps it so);
//! the rest is `pub(crate)`. A module that only the integration tests (`tests/`) name
//! is declared twice, `pub` under the `test-support` feature (which only the tests
//! enable) and `pub(crate)` without it, so its items keep their one path either way.

pub mod admission;
pub mod analyzer;
pub mod certs;
pub mod clock;
pub mod kube;
pub(crate) mod lock;
pub mod offline;
pub mod replay_runner;
pub mod reporting;
pub mod server;

#[cfg(test)]
mod layering;

/// Load models fitted from Prometheus and published: the fitter, its series source,
/// putting fits into the analyzer's cache and the load-model gauges. The arithmetic is
/// the core's (`rightsizer_core::loadmodel`).
pub mod loadfit {
    pub mod fitter;
    pub mod metrics;
    pub mod publish;
    pub mod source;
}

/// The policies in force: loading them from files and ConfigMaps, the store and the
/// directory watch. Schema, validation and selection are the core's
/// (`rightsizer_core::policy`).
pub mod policies {
    #[cfg(feature = "test-support")]
    pub mod load;
    #[cfg(not(feature = "test-support"))]
    pub(crate) mod load;
    pub mod store;
    pub mod watch;
}
