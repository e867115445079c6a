use clap::{Parser, Subcommand};

mod commands;

/// Kubernetes admission webhook that sizes memory and CPU from real usage.
#[derive(Debug, Parser)]
#[command(name = "rightsizer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once at start-up; the size of `serve`'s arguments does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the webhook (HTTPS) with the background analyzer.
    Serve(commands::serve::Args),
    /// Print what the webhook would make of manifests, offline.
    Mutate(commands::mutate::Args),
    /// Query Prometheus once and print recommendations.
    Recommend(commands::recommend::Args),
    /// Backtest recommenders on a usage history.
    Replay(commands::replay::Args),
    /// Capacity and cost for a declared load, from the policies' load models.
    Plan(commands::plan::Args),
    /// Generate the webhook's CA and serving certificate, TLS Secret and caBundle patch.
    Certs(commands::certs::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    commands::init_logging(logging(&cli.command));
    match cli.command {
        Command::Serve(a) => commands::serve::run(a).await,
        Command::Mutate(a) => commands::mutate::run(a).await,
        Command::Recommend(a) => commands::recommend::run(a).await,
        Command::Replay(a) => commands::replay::run(a).await,
        Command::Plan(a) => commands::plan::run(a).await,
        Command::Certs(a) => commands::certs::run(a),
    }
}

/// The server logs its life (info); the offline commands only what goes wrong (warn),
/// so their stdout and stderr stay readable. `RUST_LOG` overrides both.
fn logging(c: &Command) -> commands::Logging {
    match c {
        Command::Serve(a) => commands::Logging {
            default_level: "info",
            json: matches!(a.log_format, commands::serve::LogFormat::Json),
        },
        _ => commands::Logging {
            default_level: "warn",
            json: false,
        },
    }
}
