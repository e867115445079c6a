//! The pure core of rightsizer: everything that decides, nothing that waits.
//!
//! Quantities and rules, the object model, policies (schema, validation, selection),
//! the strategies, the sizing merge, load-model arithmetic, the analyzer's decision
//! (`analysis`), replay scoring and the savings report (`report`). Functions here take
//! values and return values (or effects to
//! execute): no network, files, clock or Kubernetes client. Cargo enforces it (this
//! crate has no such dependency) and so does clippy (`clippy.toml` bans the clock,
//! the filesystem, the network and the environment). The `rightsizer` crate is the
//! shell that does the I/O.
//!
//! Every item has one path, its defining module's
//! (`rightsizer_core::policy::schema::Policy`): no module re-exports another's items,
//! except `strategy`, whose implementations are private modules named through it.
//!
//! Public is what the `rightsizer` crate uses, and the modules of the types that API
//! hands out (the `unnameable_types` lint keeps it so); the rest is `pub(crate)`. A
//! module that only the integration tests (`tests/`) name is `pub` under the
//! `test-support` feature (which only the tests enable) and `pub(crate)` without it.
//!
//! Top-level modules are layered, lowest first: each names only modules to its left,
//! so none imports another in a cycle (the I/O crate's layering test reads this list):
//! duration < quantity < rules < strategy < replay < workload < recommendation < object <
//! selector < loadmodel < policy < cluster < sizing < analysis < report.

#![forbid(unsafe_code)]

pub mod analysis;
pub mod cluster;
pub mod duration;
pub mod loadmodel;
pub mod object;
pub mod policy;
pub mod quantity;
pub mod recommendation;
pub mod replay;
pub mod report;
pub mod rules;
pub mod selector;
pub mod sizing;
pub mod strategy;
pub mod workload;
