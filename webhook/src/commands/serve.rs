//! `rightsizer serve`: the webhook over HTTPS (plus an optional plain admin port).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use rightsizer::admission::{AdmitConfig, Admitter};
use rightsizer::certs::Ca;
use rightsizer::cluster::NoFacts;
use rightsizer::policy::store::PolicyStore;
use rightsizer::policy::watch as policy;
use rightsizer::recommendation::{NoRecommendations, RecommendationSource, Snapshot};
use rightsizer::server::{self, listener, reload, tls, AppState, Readiness, ServerMetrics};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the HTTPS port.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain (reloaded when the file changes).
    #[arg(long, requires = "tls_key", conflicts_with = "self_signed")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (reloaded when the file changes).
    #[arg(long, requires = "tls_cert", conflicts_with = "self_signed")]
    pub tls_key: Option<PathBuf>,
    /// Generate an in-memory CA and a localhost certificate (local runs only).
    #[arg(long)]
    pub self_signed: bool,
    /// Where `--self-signed` writes the CA bundle [default: <temp dir>/rightsizer-ca.pem].
    #[arg(long, requires = "self_signed")]
    pub ca_out: Option<PathBuf>,
    /// Plain-HTTP admin port repeating /healthz, /readyz, /metrics, /recommendations.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Folder of policy ConfigMap manifests (may be repeated).
    #[arg(long, value_name = "DIR")]
    pub policies: Vec<PathBuf>,
    /// Prometheus base URL for the analyzer.
    #[arg(long, env = "RIGHTSIZER_PROMETHEUS_URL")]
    pub prometheus: Option<String>,
    /// JSON recommendation snapshot to serve from (when there is no Prometheus).
    #[arg(long, value_name = "FILE")]
    pub recommendations: Option<PathBuf>,
    /// Allow enforce-mode policies to apply values.
    #[arg(long, env = "RIGHTSIZER_ENFORCEMENT", default_value_t = false)]
    pub enforcement: bool,
    /// The webhook's own namespace (never mutated).
    #[arg(long, env = "POD_NAMESPACE", default_value = "rightsizer-system")]
    pub own_namespace: String,
    /// Longest wait for in-flight requests after SIGTERM/SIGINT, in seconds.
    #[arg(long, default_value_t = listener::DEFAULT_DRAIN.as_secs())]
    pub shutdown_timeout: u64,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What answers reviews, what `/recommendations` shows and when the server is ready.
struct Admission {
    admitter: Arc<Admitter>,
    recommendations: Arc<dyn RecommendationSource>,
    readiness: Readiness,
}

/// Build the admission side. Kept in one place so the analyzer cache can be wired in
/// here without touching the HTTP/TLS code.
fn build_admission(args: &Args, registry: &mut Registry) -> anyhow::Result<Admission> {
    let recommendations: Arc<dyn RecommendationSource> = match &args.recommendations {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("reading recommendations {}", path.display()))?;
            let snap: Snapshot = serde_json::from_slice(&text)
                .with_context(|| format!("parsing recommendations {}", path.display()))?;
            Arc::new(snap)
        }
        None => Arc::new(NoRecommendations),
    };
    if args.prometheus.is_some() {
        tracing::warn!("--prometheus is not used yet by this build");
    }

    let store = Arc::new(PolicyStore::new());
    store.register_metrics(registry);
    if !args.policies.is_empty() {
        // Refusals are logged and counted; the last good policy (none at start) stays.
        policy::load_dirs(&store, &args.policies);
        tokio::spawn(policy::watch_dirs(
            store.clone(),
            args.policies.clone(),
            POLICY_REREAD,
        ));
    }
    store.mark_ready();

    let config = AdmitConfig {
        enforcement: args.enforcement,
        own_namespace: Some(args.own_namespace.clone()),
    };
    let admitter = Arc::new(Admitter::new(
        store.clone(),
        recommendations.clone(),
        Arc::new(NoFacts),
        config,
    ));
    let readiness = Readiness::from_fn(move || {
        if store.is_ready() {
            Ok(())
        } else {
            Err("policies not loaded".to_string())
        }
    });
    Ok(Admission {
        admitter,
        recommendations,
        readiness,
    })
}

/// How often policy folders are re-read.
const POLICY_REREAD: Duration = Duration::from_secs(5);

pub async fn run(args: Args) -> anyhow::Result<()> {
    init_logging(args.log_format);

    let mut registry = Registry::default();
    let metrics = ServerMetrics::register(&mut registry);
    let admission = build_admission(&args, &mut registry)?;

    // Keep the watch alive for the life of the server.
    let (cert, _watch) = serving_cert(&args, &metrics)?;
    let tls_config = tls::server_config(cert)?;

    let state = AppState {
        admitter: admission.admitter,
        recommendations: admission.recommendations,
        readiness: admission.readiness,
        registry: Arc::new(registry),
        metrics,
    };

    let tcp = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = tcp.local_addr()?;
    println!("rightsizer serve: listening on https://{addr}");

    // One signal fans out to both servers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        listener::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let admin = match args.admin_listen {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding admin {a}"))?;
            println!("rightsizer serve: admin on http://{}", l.local_addr()?);
            let app = server::admin_router(state.clone());
            Some(tokio::spawn(listener::serve_plain(
                l,
                app,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };

    tracing::info!(%addr, "serving");
    let drained = listener::serve_tls(
        tcp,
        tls_config,
        server::router(state),
        stopped(stop_rx),
        Duration::from_secs(args.shutdown_timeout),
    )
    .await;
    if let Some(h) = admin {
        h.await??;
    }
    tracing::info!(?drained, "stopped");
    Ok(())
}

fn serving_cert(
    args: &Args,
    metrics: &ServerMetrics,
) -> anyhow::Result<(Arc<tls::SwappableCert>, Option<reload::CertWatch>)> {
    match (&args.tls_cert, &args.tls_key, args.self_signed) {
        (Some(c), Some(k), false) => {
            let (cert, watch) = reload::watch_pair(c, k, metrics.clone(), reload::DEFAULT_PERIOD)
                .context("loading the serving certificate")?;
            Ok((cert, Some(watch)))
        }
        (None, None, true) => {
            let ca = Ca::generate("rightsizer local CA", SELF_SIGNED_DAYS)?;
            let pair = ca.issue_serving(&localhost_names(), SELF_SIGNED_DAYS)?;
            let out = args
                .ca_out
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("rightsizer-ca.pem"));
            std::fs::write(&out, ca.cert_pem())
                .with_context(|| format!("writing the CA bundle to {}", out.display()))?;
            println!("rightsizer serve: CA bundle written to {}", out.display());
            let ck = tls::certified_key_from_pem(
                pair.cert_pem.as_bytes(),
                pair.key_pem.as_bytes(),
                "self-signed",
            )?;
            Ok((Arc::new(tls::SwappableCert::new(ck)), None))
        }
        _ => anyhow::bail!("give --tls-cert and --tls-key, or --self-signed"),
    }
}

/// Validity of `--self-signed` certificates (they live as long as the process uses them).
const SELF_SIGNED_DAYS: u32 = 365;

/// The names `--self-signed` certifies.
fn localhost_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}
