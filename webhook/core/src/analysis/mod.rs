//! The analyzer's decisions: what a cycle recommends and commits from what it
//! gathered (`decide`, `compute`), the Knative rules, the PromQL it asks for, the parts
//! it reads it in (`parts`), and the state it remembers between cycles. Gathering,
//! caching, storing and the loop are the I/O crate's (`rightsizer::analyzer`).

pub mod compute;
pub mod container_state;
pub mod decide;
pub mod entry;
pub mod knative;
pub mod parts;
pub mod queries;
