//! `rightsizer report`: one analyzer pass against Prometheus (the same as `recommend`),
//! added up into the savings and capacity report: HTML (default), JSON or CSV.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use rightsizer::analyzer::prom::PromClient;
use rightsizer::reporting::{node_shapes, ReportSettings, ReportSource};
use rightsizer_core::report::capacity::{NodeShape, Pricing};
use rightsizer_core::report::{csv, html};

use crate::commands::recommend::{one_cycle, PromArgs};
use crate::commands::serve::KubeMode;

/// Node shapes and prices (shared with `serve`, whose `/report` uses them).
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// A node shape to count nodes in: `cpu=4,memory=16Gi[,name=m5.xlarge][,count=3]`
    /// (allocatable; may be repeated). `report` reads the Node list when it can.
    #[arg(long, value_name = "SHAPE", value_parser = NodeShape::parse)]
    pub node_shape: Vec<NodeShape>,
    /// Price of one GiB of memory request for one hour.
    #[arg(long, value_name = "PRICE")]
    pub price_gib_hour: Option<f64>,
    /// Price of one core of CPU request for one hour.
    #[arg(long, value_name = "PRICE")]
    pub price_core_hour: Option<f64>,
    /// Price of one node of the first shape for one month (730 hours).
    #[arg(long, value_name = "PRICE")]
    pub price_node_month: Option<f64>,
    /// Shown after amounts.
    #[arg(long, default_value = "USD")]
    pub currency: String,
}

impl ReportArgs {
    /// The settings, the cluster named by `--cluster-label`'s value (else "cluster").
    pub fn settings(&self, prom: &PromArgs) -> ReportSettings {
        let cluster = prom
            .cluster_label
            .as_deref()
            .and_then(|s| s.split_once('='))
            .map_or_else(|| "cluster".to_string(), |(_, v)| v.to_string());
        ReportSettings {
            cluster,
            shapes: self.node_shape.clone(),
            pricing: Pricing {
                gib_hour: self.price_gib_hour,
                core_hour: self.price_core_hour,
                node_month: self.price_node_month,
                currency: self.currency.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Html,
    Json,
    Csv,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub prom: Box<PromArgs>,
    #[command(flatten)]
    pub report: ReportArgs,
    /// Only this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value = "html")]
    pub output: Output,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Evaluate at this unix time instead of now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub at: Option<u64>,
    /// Read node shapes from the Node list (unless --node-shape is given). `auto`: when
    /// running in a cluster or when KUBECONFIG is set.
    #[arg(long, value_enum, default_value_t = KubeMode::Auto)]
    pub kube: KubeMode,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (analyzer, now) =
        one_cycle("report", &args.prom, &[], args.namespace.clone(), args.at).await?;
    let mut settings = args.report.settings(&args.prom);
    if settings.shapes.is_empty() && args.kube.enabled() {
        let client = ::kube::Client::try_default().await.context(
            "connecting to the Kubernetes API for the Node list (--kube never, or --node-shape)",
        )?;
        settings.shapes = node_shapes(client).await.context("listing Nodes")?;
    }
    let mut cfg = args
        .prom
        .analyzer_config()?
        .context("--prometheus URL (or RIGHTSIZER_PROMETHEUS_URL) is required")?;
    cfg.queries.namespace = args.namespace.clone();
    let client = PromClient::new(cfg.prometheus.clone())?;
    let cache = analyzer.cache();
    let snapshot = cache.snapshot_at(now);
    let source = ReportSource::new(Some(cache), Some((client, cfg.queries)), settings);
    let report = source.report(snapshot).await;
    let text = match args.output {
        Output::Html => html::render(&report),
        Output::Json => serde_json::to_string_pretty(&report)? + "\n",
        Output::Csv => csv::render(&report),
    };
    match &args.out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(())
}
