//! Admission offline: the review handler as the apiserver drives it, the golden cases,
//! `rightsizer mutate` and `rightsizer plan` as a user runs them, and policy loading.

#[path = "../support/exe.rs"]
mod exe;
#[path = "../support/gen.rs"]
mod gen;
#[path = "../support/invariants.rs"]
mod invariants;

mod cli_explain;
mod cli_mutate;
mod golden;
mod plan;
mod policies;
mod readme_values;
mod review;
