//! Policies: the schema ops write, its validation, and which one applies to a
//! workload. Where policies come from (files, ConfigMaps) is the I/O crate's.

pub mod apiserver;
pub mod error;
pub mod schema;
pub mod select;
pub mod validate;
