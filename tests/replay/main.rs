//! `rightsizer replay` and the strategies it scores, offline.

#[path = "../support/exe.rs"]
mod exe;

mod replay;
