//! rightsizer: a Kubernetes mutating admission webhook that sizes memory and CPU
//! requests and limits from observed usage, steered by policy ConfigMaps.
//!
//! The library holds everything testable without a process: quantities and rules,
//! the object model, policies, the pure merge, the review handler, the HTTP router,
//! the analyzer and the replay. `main.rs` only parses arguments.

pub mod admission;
pub mod analyzer;
pub mod certs;
pub mod cluster;
pub mod kube;
pub mod loadmodel;
pub mod object;
pub mod offline;
pub mod policy;
pub mod quantity;
pub mod recommendation;
pub mod replay;
pub mod rules;
pub mod server;
pub mod sizing;
pub mod strategy;
pub mod workload;
