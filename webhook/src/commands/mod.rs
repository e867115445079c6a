//! Subcommands: argument parsing and process edges only; the work is in the library.

pub mod certs;
pub mod explain;
pub mod input;
pub mod mutate;
pub mod plan;
pub mod recommend;
pub mod replay;
pub mod report;
pub mod serve;

/// Log lines of a command: text on stderr (stdout carries the command's output), or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logging {
    /// Level filter when `RUST_LOG` is unset or invalid, e.g. `warn`.
    pub default_level: &'static str,
    pub json: bool,
}

/// Install the process's one tracing subscriber (every command logs through it).
pub fn init_logging(l: Logging) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(l.default_level));
    use std::io::IsTerminal as _;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person watching, not in files and pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // Fails only when a subscriber is already set; the first one stays.
    let _ = if l.json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}
