//! The savings and capacity report (`rightsizer report`, `GET /report` on the admin
//! port): the recommendations the webhook serves, added up per container, workload,
//! namespace and cluster into memory, cores, nodes and money, and rendered as a
//! self-contained HTML page (charts in inline SVG), JSON or CSV. Pure: the I/O crate
//! gathers the inputs (`rightsizer::reporting`).

pub mod capacity;
pub mod csv;
pub mod html;
pub mod model;
pub mod svg;
pub mod text;

#[cfg(test)]
mod model_tests;
