//! `rightsizer plan`: capacity and cost for a declared load, from the policies' load
//! models (declared coefficients, or fitted ones from a webhook's `/recommendations`
//! or from Prometheus directly).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use rightsizer::analyzer::prom::PromClient;
use rightsizer::loadfit::fitter::{fit_container, series_query, FitWindow};
use rightsizer_core::loadmodel::annotation::{parse_load, Load};
use rightsizer_core::loadmodel::model::{choose, Chosen};
use rightsizer_core::loadmodel::plan::{plan, used_units, PlanInput, WorkloadPlan};
use rightsizer_core::policy::select::Subject;
use rightsizer_core::quantity::parse_bytes;
use rightsizer_core::recommendation::fit::Fit;
use rightsizer_core::recommendation::{ContainerKey, Snapshot};
use rightsizer_core::sizing::load::model_for;
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::WorkloadKey;

use super::recommend::PromArgs;
use rightsizer_core::duration::parse_seconds;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder(s) of policy ConfigMap manifests.
    #[arg(long, required = true)]
    policies: Vec<PathBuf>,
    /// Workload to plan, NAMESPACE/KIND/NAME (repeatable).
    #[arg(long = "workload", required = true, value_parser = parse_workload)]
    workloads: Vec<WorkloadKey>,
    /// Total load of the run, e.g. participant_video=120,experimenter=4.
    #[arg(long, value_parser = parse_load_arg)]
    load: Load,
    /// Most load one pod may carry, e.g. participant_video=25 (sets replicas).
    #[arg(long, value_parser = parse_load_arg)]
    per_pod: Option<Load>,
    /// Length of the run (a duration: 1h, 90m, 2d, ...).
    #[arg(long, default_value = "1h", value_parser = parse_seconds)]
    duration: u64,
    /// Price of one GiB of memory for one hour.
    #[arg(long)]
    price_per_gib_hour: Option<f64>,
    /// Allocatable memory of a node, e.g. 8Gi.
    #[arg(long, value_parser = parse_quantity)]
    node_memory: Option<u64>,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Fitted models from a webhook's /recommendations (http(s) URL) or a snapshot file.
    #[arg(long, conflicts_with = "prometheus")]
    from: Option<String>,
    #[command(flatten)]
    prom: Box<PromArgs>,
    /// Step between samples when fitting from Prometheus (over --long-window).
    #[arg(long, default_value = "5m", value_parser = parse_seconds)]
    fit_step: u64,
    /// Fit at this unix time instead of now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    at: Option<u64>,
}

fn parse_workload(s: &str) -> Result<WorkloadKey, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let [ns, kind, name] = parts[..] else {
        return Err(format!("{s:?}: expected NAMESPACE/KIND/NAME"));
    };
    let kind = WorkloadKind::parse(kind).ok_or_else(|| format!("{s:?}: unknown kind {kind:?}"))?;
    if ns.is_empty() || name.is_empty() {
        return Err(format!("{s:?}: expected NAMESPACE/KIND/NAME"));
    }
    Ok(WorkloadKey {
        namespace: ns.to_string(),
        kind,
        name: name.to_string(),
    })
}

fn parse_load_arg(s: &str) -> Result<Load, String> {
    parse_load(s).map_err(|e| e.to_string())
}

fn parse_quantity(s: &str) -> Result<u64, String> {
    parse_bytes(s).map_err(|e| e.to_string())
}

async fn read_snapshot(from: &str) -> anyhow::Result<Snapshot> {
    let text = if from.starts_with("http://") || from.starts_with("https://") {
        let resp = reqwest::get(from)
            .await
            .with_context(|| format!("fetching {from}"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("reading {from}"))?;
        if !status.is_success() {
            bail!("{from}: HTTP {status}");
        }
        body
    } else {
        std::fs::read_to_string(from).with_context(|| format!("reading {from}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{from} is not a recommendation snapshot"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let text = render(&plans(&args).await?, args.output)?;
    print!("{text}");
    Ok(())
}

/// Plan every workload given.
async fn plans(args: &Args) -> anyhow::Result<Vec<WorkloadPlan>> {
    let store = super::input::load_policies(&args.policies)?;
    let set = store.current();
    let snapshot = match &args.from {
        Some(f) => Some(read_snapshot(f).await?),
        None => None,
    };
    let prom = match args.prom.analyzer_config()? {
        Some(cfg) => Some(PromClient::new(cfg.prometheus).context("Prometheus client")?),
        None => None,
    };
    let end = args.at.unwrap_or_else(now);
    let per_pod = args.per_pod.clone().unwrap_or_default();
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    let mut units_seen: Vec<String> = Vec::new();
    for w in &args.workloads {
        let subject = Subject {
            key: w,
            labels: &empty,
            namespace_labels: &empty,
        };
        // The same choice as admission: the policy that applies, then its first load
        // model that selects the workload.
        let Some(policy) = set.select(&subject) else {
            bail!("no policy selects {w}");
        };
        let Some(model) = model_for(&policy, &subject) else {
            bail!("policy {} has no load model that selects {w}", policy.name);
        };
        let mut models: BTreeMap<String, Chosen> = BTreeMap::new();
        for (container, spec) in &model.containers {
            let key = ContainerKey::new(w.clone(), container.clone());
            let fitted: Option<Fit> = if !spec.fitted {
                None
            } else if let Some(s) = &snapshot {
                s.recommendations
                    .get(&key)
                    .and_then(|r| r.load_model.as_ref())
                    .map(|r| r.fit.clone())
            } else if let Some(client) = &prom {
                let window = FitWindow {
                    end,
                    seconds: args.prom.long_window,
                    step: args.fit_step,
                };
                match series_query(w, container, spec, window) {
                    Some(q) => match fit_container(client, &q, model, Some(spec), end).await {
                        Ok(r) => Some(r.fit),
                        Err(e) => {
                            tracing::warn!(container = %key, error = %e, "load-model fit failed");
                            None
                        }
                    },
                    None => None,
                }
            } else {
                None
            };
            if let Some(c) = choose(spec, &model.fit, fitted.as_ref()) {
                models.insert(container.clone(), c);
            }
        }
        if models.is_empty() {
            bail!(
                "{w}: load model {} has no usable model (fitted-only and no fit passes its gate)",
                model.name
            );
        }
        units_seen.extend(used_units(&models).into_iter().map(String::from));
        out.push(plan(&PlanInput {
            workload: w.to_string(),
            models: &models,
            headroom: model.headroom,
            rules: &policy.rules,
            load: &args.load,
            per_pod: &per_pod,
            duration_hours: args.duration as f64 / 3600.0,
            price_per_gib_hour: args.price_per_gib_hour,
            node_memory: args.node_memory,
        }));
    }
    for u in args.load.keys() {
        if !units_seen.contains(u) {
            eprintln!("warning: unit {u} is in no planned workload's model; ignored");
        }
    }
    Ok(out)
}

fn render(plans: &[WorkloadPlan], output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(plans)? + "\n",
        Output::Yaml => serde_norway::to_string(plans)?,
        Output::Table => table(plans),
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1}Mi", bytes as f64 / 1_048_576.0)
}

fn table(plans: &[WorkloadPlan]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<32} {:>8} {:>10} {:>10} {:>10} {:>10} {:>6} {:>10} {:>10}",
        "WORKLOAD",
        "REPLICAS",
        "POD-REQ",
        "POD-LIM",
        "TOTAL-REQ",
        "TOTAL-LIM",
        "NODES",
        "GIB-HOURS",
        "COST"
    );
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for p in plans {
        let _ = writeln!(
            s,
            "{:<32} {:>8} {:>10} {:>10} {:>10} {:>10} {:>6} {:>10.3} {:>10}",
            p.workload,
            p.replicas,
            p.pod_request,
            opt(&p.pod_limit),
            p.total_request,
            opt(&p.total_limit),
            p.nodes.map_or("-".into(), |n| n.to_string()),
            p.gib_hours,
            p.cost.map_or("-".into(), |c| format!("{c:.4}")),
        );
        let load = rightsizer_core::loadmodel::annotation::format_load(&p.load_per_pod);
        let _ = writeln!(
            s,
            "  load per pod: {}",
            if load.is_empty() { "-" } else { &load }
        );
        for c in &p.containers {
            let _ = writeln!(
                s,
                "  {:<20} {:<9} predicted {:>10}  request {:>8}  limit {:>8}",
                c.name,
                c.model,
                mib(c.predicted_bytes),
                c.request,
                opt(&c.limit),
            );
            if let Some(n) = &c.note {
                let _ = writeln!(s, "    note: {n}");
            }
        }
        for w in &p.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
    }
    s
}
