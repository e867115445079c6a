//! Policies: the schema ops write, its validation, where policies come from, and
//! which one applies to a workload.

pub mod error;
pub mod load;
pub mod schema;
pub mod select;
pub mod store;
pub mod validate;
pub mod watch;

pub use error::PolicyError;
pub use load::{parse_manifests, parse_policy, POLICY_KEY, POLICY_LABEL};
pub use schema::{ContainerValues, Mode, Pair, Policy, PolicySpec, Target};
pub use select::{PolicySet, Subject};
pub use store::PolicyStore;
