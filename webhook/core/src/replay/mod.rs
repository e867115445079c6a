//! The pure parts of the replay: reading a trace, splitting it into steps, scoring
//! the answers, rendering the report and synthetic traces. The runner (threads) is
//! the I/O crate's (`rightsizer::replay_runner`).

pub mod report;
pub mod score;
pub mod split;
pub mod synthetic;
pub mod trace;
