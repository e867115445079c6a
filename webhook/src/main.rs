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
    /// Show which policy decided each section and value for manifests, offline.
    Explain(commands::explain::Args),
    /// Query Prometheus once and print recommendations.
    Recommend(commands::recommend::Args),
    /// Backtest recommenders on a usage history.
    Replay(commands::replay::Args),
    /// Capacity and cost for a declared load, from the policies' load models.
    Plan(commands::plan::Args),
    /// Savings and capacity report (HTML, JSON or CSV) from one analyzer pass.
    Report(commands::report::Args),
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
        Command::Explain(a) => commands::explain::run(a).await,
        Command::Recommend(a) => commands::recommend::run(a).await,
        Command::Replay(a) => commands::replay::run(a).await,
        Command::Plan(a) => commands::plan::run(a).await,
        Command::Report(a) => commands::report::run(a).await,
        Command::Certs(a) => commands::certs::run(a).await,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn serve(flags: &[&str]) -> Result<commands::serve::Args, clap::Error> {
        let argv = ["rightsizer", "serve"].iter().chain(flags);
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(a) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn every_duration_flag_reads_the_same_grammar() {
        let a = serve(&[
            "--analyzer-interval=1m30s",
            "--shutdown-timeout=1m",
            "--header-timeout=90",
            "--body-timeout=1m30s",
            "--idle-timeout=1.5s",
            "--prometheus-timeout=2m",
            "--short-window=90m",
            "--long-window=1d",
        ])
        .unwrap();
        assert_eq!((a.analyzer_interval, a.shutdown_timeout), (90, 60));
        let l = &a.limits;
        assert_eq!(
            (l.header_timeout, l.body_timeout, l.idle_timeout),
            (
                Duration::from_secs(90),
                Duration::from_secs(90),
                Duration::from_millis(1500)
            )
        );
        let p = &a.prom;
        assert_eq!(
            (p.prometheus_timeout, p.short_window, p.long_window),
            (120, 5400, 86_400)
        );
        for refused in [
            "--analyzer-interval=1w",
            "--analyzer-interval=1.5s",
            "--body-timeout=0",
            "--body-timeout=1m 30s",
            "--shutdown-timeout=-1",
            "--long-window=106751991167301d",
        ] {
            assert!(serve(&[refused]).is_err(), "{refused} was accepted");
        }
    }
}
