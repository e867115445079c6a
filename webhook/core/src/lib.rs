//! The pure core of rightsizer: everything that decides, nothing that waits.
//!
//! Quantities and rules, the object model, policies (schema, validation, selection),
//! the strategies, the sizing merge, load-model arithmetic, the analyzer's decision
//! and replay scoring. Functions here take values and return values (or effects to
//! execute): no network, files, clock or Kubernetes client. Cargo enforces it (this
//! crate has no such dependency) and so does clippy (`clippy.toml` bans the clock,
//! the filesystem, the network and the environment). The `rightsizer` crate is the
//! shell that does the I/O.
//!
//! Top-level modules are layered (no import cycle; a test in the I/O crate checks):
//! duration < quantity < rules < strategy < recommendation < object < selector <
//! loadmodel < policy < cluster < sizing < analyzer; replay uses only strategy.

#![forbid(unsafe_code)]

pub mod analyzer;
pub mod cluster;
pub mod duration;
pub mod loadmodel;
pub mod object;
pub mod policy;
pub mod quantity;
pub mod recommendation;
pub mod replay;
pub mod rules;
pub mod selector;
pub mod sizing;
pub mod strategy;
pub mod workload;
