//! `rightsizer serve`: the webhook over HTTPS (plus an optional plain admin port).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use rightsizer::admission::{AdmitConfig, Admitter};
use rightsizer::analyzer::cache::RecommendationCache;
use rightsizer::analyzer::ksm::KsmMode;
use rightsizer::analyzer::policies::PoliciesLookup;
use rightsizer::analyzer::prom::PromClient;
use rightsizer::analyzer::{Analyzer, AnalyzerHooks};
use rightsizer::certs::Ca;
use rightsizer::kube::writer::KubeWriter;
use rightsizer::kube::KubeHandles;
use rightsizer::loadfit::fitter::FitWindow;
use rightsizer::loadfit::metrics::LoadModelMetrics;
use rightsizer::loadfit::publish::refresh;
use rightsizer::policies::store::PolicyStore;
use rightsizer::policies::watch as policy;
use rightsizer::reporting::ReportSource;
use rightsizer::server::metrics::ServerMetrics;
use rightsizer::server::readiness::Readiness;
use rightsizer::server::recommendation_bytes::RecommendationCollector;
use rightsizer::server::{self, listener, reload, tls, AppState};
use rightsizer::updater::{self, UpdaterOptions};
use rightsizer_core::cluster::{ClusterFacts, NoFacts};
use rightsizer_core::quantity::Resource;
use rightsizer_core::recommendation::{Committed, ContainerKey};
use rightsizer_core::recommendation::{NoRecommendations, RecommendationSource, Snapshot};
use rightsizer_core::rules::Sizes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the HTTPS port.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain (reloaded when the file changes).
    #[arg(long, requires = "tls_key", conflicts_with_all = ["self_signed", "certificate_secret"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (reloaded when the file changes).
    #[arg(long, requires = "tls_cert", conflicts_with = "self_signed")]
    pub tls_key: Option<PathBuf>,
    /// Generate an in-memory CA and a localhost certificate (local runs only).
    #[arg(long, conflicts_with = "certificate_secret")]
    pub self_signed: bool,
    /// Serve the pair the certificate Job (`rightsizer certs --kube`) keeps in this
    /// Secret of the own namespace, read and watched through the API (`get`/`watch` on
    /// that name only) and switched to as soon as it changes. Not ready until it holds one.
    #[arg(long, value_name = "SECRET")]
    pub certificate_secret: Option<String>,
    /// Require a client certificate signed by this CA (PEM) on the HTTPS port: for an
    /// apiserver whose AdmissionConfiguration presents one to this webhook. Read at start.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Where `--self-signed` writes the CA bundle [default: <temp dir>/rightsizer-ca.pem].
    #[arg(long, requires = "self_signed")]
    pub ca_out: Option<PathBuf>,
    /// Plain-HTTP admin port: /healthz, /readyz, /metrics, /recommendations, /report (the
    /// last three are served only here, never on the HTTPS port).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Folder of policy ConfigMap manifests (may be repeated).
    #[arg(long, value_name = "DIR")]
    pub policies: Vec<PathBuf>,
    /// Prometheus for the analyzer (without it only overrides and defaults apply).
    #[command(flatten)]
    pub prom: Box<crate::commands::recommend::PromArgs>,
    /// Node shapes and prices for `GET /report` on the admin port.
    #[command(flatten)]
    pub report: crate::commands::report::ReportArgs,
    /// Time between analyzer cycles.
    #[arg(long, env = "RIGHTSIZER_ANALYZER_INTERVAL", default_value = "5m", value_parser = rightsizer_core::duration::parse_seconds)]
    pub analyzer_interval: u64,
    /// Where the analyzer keeps committed values across restarts when not in a cluster
    /// (in a cluster they live in the Rightsizing objects).
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// JSON recommendation snapshot to serve from (when there is no Prometheus).
    #[arg(long, value_name = "FILE")]
    pub recommendations: Option<PathBuf>,
    /// Allow enforce-mode policies to apply values.
    #[arg(long, env = "RIGHTSIZER_ENFORCEMENT", default_value_t = false)]
    pub enforcement: bool,
    /// The webhook's own namespace (never mutated).
    #[arg(long, env = "POD_NAMESPACE", default_value = "rightsizer-system")]
    pub own_namespace: String,
    /// Longest wait for in-flight requests after SIGTERM/SIGINT (a plain number is seconds).
    #[arg(long, default_value_t = listener::DEFAULT_DRAIN.as_secs(), value_parser = rightsizer_core::duration::parse_seconds)]
    pub shutdown_timeout: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Watch the Kubernetes API (policy ConfigMaps, LimitRanges, quotas, PriorityClasses,
    /// owner chains, HPAs, committed values). `auto`: when running in a cluster or when
    /// KUBECONFIG is set.
    #[arg(long, value_enum, default_value_t = KubeMode::Auto)]
    pub kube: KubeMode,
    /// Read owners, requests/limits, OOM kills and HPAs from kube-state-metrics series.
    /// `auto`: when a cycle finds none, from the Kubernetes API (a Pod watch, started
    /// then); `never`: always from the API. Without `--kube`, always the series.
    #[arg(long, env = "RIGHTSIZER_KUBE_STATE_METRICS", value_enum, default_value_t = KsmMode::Auto)]
    pub kube_state_metrics: KsmMode,
    /// Run the updater in the leader: bring running Pods of enforce-mode workloads whose
    /// policy sets `update.mode` to their committed values (needs the rights of
    /// deploy/overlays/updater).
    #[arg(long, env = "RIGHTSIZER_UPDATER", default_value_t = false)]
    pub updater: bool,
    /// Time between the updater's passes.
    #[arg(long, env = "RIGHTSIZER_UPDATER_INTERVAL", default_value = "30s", value_parser = parse_timeout)]
    pub updater_interval: Duration,
    /// Cluster-wide cap on the updater's evictions and resizes per minute.
    #[arg(long, env = "RIGHTSIZER_UPDATER_PER_MINUTE", default_value_t = 6)]
    pub updater_per_minute: u32,
    /// Run the Knative writer in the leader: apply rightsizer's Knative values to the
    /// Services whose policy sets `knative.apply: true`, with server-side apply under the
    /// field manager `rightsizer` (needs the rights of deploy/overlays/updater).
    #[arg(long, env = "RIGHTSIZER_KNATIVE_WRITER", default_value_t = false)]
    pub knative_writer: bool,
    /// Time between the Knative writer's passes.
    #[arg(long, env = "RIGHTSIZER_KNATIVE_WRITER_INTERVAL", default_value = "60s", value_parser = parse_timeout)]
    pub knative_writer_interval: Duration,
}

/// Bounds on what one client may hold (both ports). Durations as `10s`, `500ms`, `1m`.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Longest wait for an HTTP/1.1 request head (and for a TLS handshake).
    #[arg(long, default_value = "2s", value_parser = parse_timeout)]
    pub header_timeout: Duration,
    /// Longest wait for a whole request body (also bounded by the review's deadline).
    #[arg(long, default_value = "2s", value_parser = parse_timeout)]
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,
    /// Open connections per port; past it new ones are closed at once.
    #[arg(long, default_value_t = listener::ConnLimits::default().max_connections)]
    pub max_connections: usize,
    /// Reviews in flight (bodies read); past it /mutate admits unchanged with a warning.
    #[arg(long, default_value_t = server::guard::ReviewLimits::default().max_in_flight)]
    pub max_reviews_in_flight: usize,
}

/// A timeout flag: a duration (`rightsizer_core::duration`) above zero; more than a day
/// counts as a day.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match rightsizer_core::duration::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(format!("timeout {:?} must be above zero", s.trim())),
        Ok(d) => Ok(d.min(Duration::from_secs(86_400))),
        Err(e) => Err(e.to_string()),
    }
}

impl LimitArgs {
    fn conn(&self) -> listener::ConnLimits {
        listener::ConnLimits {
            header_timeout: self.header_timeout,
            handshake_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            ..listener::ConnLimits::default()
        }
    }

    fn review(&self) -> server::guard::ReviewLimits {
        server::guard::ReviewLimits {
            body_timeout: self.body_timeout,
            max_in_flight: self.max_reviews_in_flight,
            ..server::guard::ReviewLimits::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeMode {
    Auto,
    Always,
    Never,
}

impl KubeMode {
    pub fn enabled(self) -> bool {
        match self {
            KubeMode::Always => true,
            KubeMode::Never => false,
            KubeMode::Auto => ["KUBERNETES_SERVICE_HOST", "KUBECONFIG"]
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty())),
        }
    }
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
    /// What `/report` adds to the served recommendations.
    report: Arc<ReportSource>,
    kube: Option<KubeHandles>,
    /// Background work (analyzer, load-model fits), aborted on shutdown.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Build the admission side: policies (folders and/or ConfigMaps), cluster facts,
/// recommendations (snapshot or analyzer cache, with committed values overlaid).
async fn build_admission(args: &Args, registry: &mut Registry) -> anyhow::Result<Admission> {
    let snapshot: Option<Arc<dyn RecommendationSource>> = match &args.recommendations {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("reading recommendations {}", path.display()))?;
            let snap: Snapshot = serde_json::from_slice(&text)
                .with_context(|| format!("parsing recommendations {}", path.display()))?;
            Some(Arc::new(snap))
        }
        None => None,
    };

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

    let mut facts: Arc<dyn ClusterFacts> = Arc::new(NoFacts);
    let mut kube_client = None;
    let kube = if args.kube.enabled() {
        let client = ::kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (use --kube never to run without it)")?;
        kube_client = Some(client.clone());
        let handles =
            rightsizer::kube::start(client, &args.own_namespace, store.clone(), registry).await?;
        // Ready once every watcher has its first list (see `readiness` below).
        facts = handles.facts.clone();
        Some(handles)
    } else {
        store.mark_ready();
        None
    };

    // The analyzer: background cycles into the cache admission reads.
    let mut recommendations: Arc<dyn RecommendationSource> = Arc::new(NoRecommendations);
    let mut tasks = Vec::new();
    let settings = args.report.settings(&args.prom);
    let mut report = ReportSource::new(None, None, settings.clone());
    let mut pod_gate = None;
    if let Some(mut cfg) = args.prom.analyzer_config()? {
        cfg.enforcement = args.enforcement;
        cfg.interval = Duration::from_secs(args.analyzer_interval.max(10));
        cfg.state_file = args.state_file.clone();
        let lookup = Arc::new(PoliciesLookup {
            store: store.clone(),
            facts: facts.clone(),
            own_namespace: Some(args.own_namespace.clone()),
        });
        let prom = cfg.prometheus.clone();
        let queries = cfg.queries.clone();
        let long_window = cfg.queries.long_window_secs;
        let mut analyzer = Analyzer::new(cfg, lookup, registry)?;
        if let Some(k) = &kube {
            analyzer.set_home_facts(k.facts.clone());
            if args.kube_state_metrics != KsmMode::Always {
                analyzer.set_facts_source(args.kube_state_metrics, k.pods.clone());
                if let Some(c) = &kube_client {
                    let (mode, pods) = (args.kube_state_metrics, k.pods.clone());
                    pod_gate = rightsizer::kube::pod_access::gate(mode, c, pods).await;
                }
            }
            // Committed state lives in the Rightsizings; only the leader carries out
            // the analyzer's effects (the analyzer checks once per cycle).
            analyzer.set_store(k.commit_store());
            let leader = k.leader.clone();
            analyzer.set_leader(move || leader.is_leader());
            // Nothing written where the webhook is not called.
            analyzer.set_scope(k.opted_in(&args.own_namespace));
            analyzer.set_hooks(Arc::new(ClusterHooks {
                writer: k.writer.clone(),
            }));
        }
        let analyzer = Arc::new(analyzer);
        let cache = analyzer.cache();
        report = ReportSource::new(
            Some(cache.clone()),
            Some((PromClient::new(prom.clone())?, queries)),
            settings,
        );
        tasks.push(tokio::spawn(analyzer.run(std::future::pending())));
        tasks.push(tokio::spawn(load_models(
            PromClient::new(prom)?,
            store.clone(),
            cache.clone(),
            LoadModelMetrics::register(registry),
            long_window,
        )));
        recommendations = cache;
    } else if let Some(s) = snapshot {
        recommendations = s;
    }
    // Exported as recommended (committed values are on the workloads, not in this metric).
    registry.register_collector(Box::new(RecommendationCollector::new(
        recommendations.clone(),
    )));
    if let Some(k) = &kube {
        recommendations = k.overlay(recommendations);
    }

    let config = AdmitConfig {
        enforcement: args.enforcement,
        own_namespace: Some(args.own_namespace.clone()),
    };
    let admitter = Arc::new(Admitter::new(
        store.clone(),
        recommendations.clone(),
        facts,
        config,
    ));
    let policies = store.clone();
    let mut gates = vec![Readiness::from_fn(move || {
        if store.is_ready() {
            Ok(())
        } else {
            Err("policies not loaded".to_string())
        }
    })];
    if let Some(k) = &kube {
        // Facts admission reads (quotas, LimitRanges, HPAs, owners, committed values)
        // are complete only after each watcher's first list; later relists keep it ready.
        let board = k.board.clone();
        gates.push(Readiness::from_fn(move || board.check()));
    }
    gates.extend(pod_gate);
    if let (Some(k), true) = (&kube, args.updater) {
        let lookup = Arc::new(PoliciesLookup {
            store: policies.clone(),
            facts: k.facts.clone(),
            own_namespace: Some(args.own_namespace.clone()),
        });
        let options = UpdaterOptions {
            interval: args.updater_interval,
            per_minute: args.updater_per_minute,
            enforcement: args.enforcement,
        };
        // A PodDisruptionBudget refuses an eviction with 429, which kube's client would
        // retry itself (up to 15 times, minutes apart), stalling every other workload: the
        // updater tries again on a later pass instead.
        let mut config = ::kube::Config::infer().await?;
        config.default_retry = false;
        let client = ::kube::Client::try_from(config)?;
        let (task, health) = updater::start(client, k, lookup, registry, options).await?;
        tasks.push(task);
        gates.push(Readiness::from_fn(move || health.check()));
    }
    if let (Some(k), true) = (&kube, args.knative_writer) {
        let client = ::kube::Client::try_default().await?;
        let writer = updater::knative::KnativeWriter::new(
            client,
            admitter.clone(),
            k.recorder.clone(),
            k.leader.clone(),
            Box::new(k.opted_in(&args.own_namespace)),
            registry,
        );
        let (task, health) = updater::knative::start(writer, args.knative_writer_interval).await?;
        tasks.push(task);
        gates.push(Readiness::from_fn(move || health.check()));
    }
    if let Some(k) = &kube {
        // The node watch (the node cap's) gives `/report` the cluster's node shapes.
        report = report.with_nodes(k.facts.clone());
    }
    let readiness = Readiness::all(gates);
    Ok(Admission {
        admitter,
        recommendations,
        readiness,
        report: Arc::new(report),
        kube,
        tasks,
    })
}

/// Posts Events about the analyzer's commits and revisions (called by the analyzer's
/// effect executor, which already checked leadership).
struct ClusterHooks {
    writer: Arc<KubeWriter>,
}

impl AnalyzerHooks for ClusterHooks {
    fn committed(
        &self,
        key: &ContainerKey,
        r: Resource,
        new: &Committed,
        previous: Option<&Committed>,
    ) {
        let (writer, key, new) = (self.writer.clone(), key.clone(), new.clone());
        let before = previous.map(|p| p.sizes);
        tokio::spawn(async move {
            if let Err(e) = writer
                .announce_commit(&key, r, before, new.sizes, &new.reason)
                .await
            {
                tracing::warn!(%key, error = %e, "could not post the Committed Event");
            }
        });
    }

    fn revised(
        &self,
        key: &ContainerKey,
        r: Resource,
        before: Option<Sizes>,
        after: Sizes,
        reason: &str,
    ) {
        let (writer, key, reason) = (self.writer.clone(), key.clone(), reason.to_string());
        tokio::spawn(async move {
            if let Err(e) = writer
                .announce_recommendation(&key, r, before, after, &reason)
                .await
            {
                tracing::debug!(%key, error = %e, "no Event for a revised recommendation");
            }
        });
    }
}

/// Fit load models now and then (they change slowly) into the analyzer's cache.
async fn load_models(
    prom: PromClient,
    store: Arc<PolicyStore>,
    cache: Arc<RecommendationCache>,
    metrics: LoadModelMetrics,
    long_window: u64,
) {
    // The first fit waits for the analyzer to have filled the cache.
    let first = tokio::time::Instant::now() + LOAD_MODEL_FIRST;
    let mut tick = tokio::time::interval_at(first, LOAD_MODEL_REFIT);
    loop {
        tick.tick().await;
        let policies = store.current();
        if !policies.iter().any(|p| !p.load_models.is_empty()) {
            continue;
        }
        let window = FitWindow {
            end: rightsizer::clock::unix_now(),
            seconds: long_window,
            step: 300,
        };
        let report = refresh(&prom, &policies, &cache, Some(&metrics), &[], window).await;
        tracing::info!(?report, "load models refitted");
    }
}

/// When load models are first fitted after start.
const LOAD_MODEL_FIRST: Duration = Duration::from_secs(120);
/// How often load models are refitted.
const LOAD_MODEL_REFIT: Duration = Duration::from_secs(3600);

/// How often policy folders are re-read.
const POLICY_REREAD: Duration = Duration::from_secs(5);

pub async fn run(args: Args) -> anyhow::Result<()> {
    server::malloc::tune();
    let mut registry = Registry::default();
    let metrics = ServerMetrics::register(&mut registry);
    let mut admission = build_admission(&args, &mut registry).await?;
    let kube = admission.kube.take();
    let admission_tasks = std::mem::take(&mut admission.tasks);

    // Keep the watch alive for the life of the server.
    let mut readiness = vec![admission.readiness];
    let (cert, _watch, _followed) = match &args.certificate_secret {
        Some(secret) => {
            let followed = secret_cert(&args, secret, &metrics).await?;
            readiness.push(followed.readiness());
            (followed.cert.clone(), None, Some(followed))
        }
        None => {
            let (cert, watch) = serving_cert(&args, &metrics)?;
            (cert, watch, None)
        }
    };
    let client_ca = match &args.client_ca {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("reading --client-ca {}", p.display()))?)
        }
        None => None,
    };
    let tls_config = tls::server_config(cert, client_ca.as_deref())?;

    let state = AppState {
        admitter: admission.admitter,
        recommendations: admission.recommendations,
        readiness: Readiness::all(readiness),
        registry: Arc::new(registry),
        metrics: metrics.clone(),
        guard: Arc::new(server::guard::ReviewGuard::new(args.limits.review())),
        report: admission.report,
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
                Duration::from_secs(args.shutdown_timeout),
                args.limits.conn(),
                listener::ListenerMetrics {
                    metrics: metrics.clone(),
                    listener: "admin",
                },
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
        args.limits.conn(),
        listener::ListenerMetrics {
            metrics,
            listener: "webhook",
        },
    )
    .await;
    if let Some(h) = admin {
        let admin_drained = h.await?;
        tracing::info!(?admin_drained, "admin port stopped");
    }
    for t in &admission_tasks {
        t.abort();
    }
    if let Some(k) = kube {
        // Give the Lease up so another replica leads at once.
        if let Err(e) = k.shutdown().await {
            tracing::warn!(error = %e, "releasing the leader Lease");
        }
    }
    tracing::info!(?drained, "stopped");
    Ok(())
}

/// `--certificate-secret`: the pair the certificate Job keeps in the Secret, followed.
async fn secret_cert(
    args: &Args,
    secret: &str,
    metrics: &ServerMetrics,
) -> anyhow::Result<rightsizer::kube::certsecret::SecretCert> {
    let client = ::kube::Client::try_default()
        .await
        .context("--certificate-secret needs the Kubernetes API")?;
    rightsizer::kube::certsecret::follow(client, &args.own_namespace, secret, metrics.clone())
        .await
        .context("following the certificate Secret")
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
            let (dir, name) = match (out.parent(), out.file_name()) {
                (Some(d), Some(n)) => (d, n.to_string_lossy().into_owned()),
                _ => anyhow::bail!("--ca-out {} is not a file path", out.display()),
            };
            let dir = if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            };
            rightsizer::certs::write_file(dir, &name, ca.cert_pem().as_bytes(), false)
                .with_context(|| format!("writing the CA bundle to {}", out.display()))?;
            println!("rightsizer serve: CA bundle written to {}", out.display());
            let ck = reload::from_pem(
                pair.cert_pem.as_bytes(),
                pair.key_pem.as_bytes(),
                "self-signed",
                metrics,
            )?;
            Ok((Arc::new(tls::SwappableCert::new(ck)), None))
        }
        _ => anyhow::bail!("give --tls-cert and --tls-key, --certificate-secret, or --self-signed"),
    }
}

/// Validity of `--self-signed` certificates (they live as long as the process uses them).
const SELF_SIGNED_DAYS: u32 = 365;

/// The names `--self-signed` certifies.
fn localhost_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}
