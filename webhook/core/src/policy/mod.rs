//! Policies: the schema ops write, its validation, and which one applies to a
//! workload. Where policies come from (files, ConfigMaps) is the I/O crate's.

#[cfg(feature = "test-support")]
pub mod apiserver;
#[cfg(not(feature = "test-support"))]
pub(crate) mod apiserver;
pub mod compose;
pub mod error;
pub mod schema;
pub mod select;
pub mod sizing;
pub mod validate;
