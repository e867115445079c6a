//! Load-model sizing: memory as a function of declared load (users by role, open
//! connections...), declared in policies or fitted from Prometheus, applied at
//! admission from the `rightsizer.io/expected-load` annotation, and used by
//! `rightsizer plan` for capacity and cost.

pub mod annotation;
pub mod fit;
pub mod model;
pub mod plan;
pub mod schema;
pub(crate) mod validate;
