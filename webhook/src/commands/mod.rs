//! Subcommands: argument parsing and process edges only; the work is in the library.

pub mod certs;
pub mod mutate;
pub mod plan;
pub mod recommend;
pub mod replay;
pub mod serve;
