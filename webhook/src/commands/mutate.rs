//! `rightsizer mutate -f FILE`: print what the webhook would make of manifests.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rightsizer::admission::AdmitConfig;
use rightsizer::offline::{facts_from, mutate_all, parse_documents};
use rightsizer::policy::PolicyStore;
use rightsizer::recommendation::{NoRecommendations, RecommendationSource, Snapshot};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Yaml,
    Json,
    Patch,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifests (multi-document YAML, JSON, or AdmissionReview); `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Folder(s) of policy ConfigMap manifests.
    #[arg(long)]
    policies: Vec<PathBuf>,
    /// Recommendation snapshot (the JSON of GET /recommendations).
    #[arg(long)]
    recommendations: Option<PathBuf>,
    /// Labels of namespaces the input does not describe, e.g. `team=web,tier=1`.
    #[arg(long, value_parser = parse_labels, default_value = "")]
    namespace_labels: BTreeMap<String, String>,
    /// Namespace for objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Allow enforce-mode policies to apply values (as RIGHTSIZER_ENFORCEMENT=true does).
    #[arg(long, env = "RIGHTSIZER_ENFORCEMENT", default_value_t = false)]
    enforcement: bool,
    /// The webhook's own namespace (never mutated).
    #[arg(long, default_value = "rightsizer-system")]
    own_namespace: String,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Yaml)]
    output: Output,
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("{p:?} is not key=value"))
        })
        .collect()
}

pub fn load_policies(dirs: &[PathBuf]) -> anyhow::Result<Arc<PolicyStore>> {
    let store = Arc::new(PolicyStore::new());
    for dir in dirs {
        let report = store
            .sync_dir(dir)
            .with_context(|| format!("reading policies from {}", dir.display()))?;
        if let Some(e) = report.refused.first() {
            bail!("policy refused: {e}");
        }
    }
    store.mark_ready();
    Ok(store)
}

pub fn load_snapshot(path: &Option<PathBuf>) -> anyhow::Result<Arc<dyn RecommendationSource>> {
    Ok(match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let snap: Snapshot = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a recommendation snapshot", p.display()))?;
            Arc::new(snap)
        }
        None => Arc::new(NoRecommendations),
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let text = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let docs = parse_documents(&text, &args.namespace)?;
    let policies = load_policies(&args.policies)?;
    let recs = load_snapshot(&args.recommendations)?;
    let facts = facts_from(&docs, &args.namespace_labels);
    let config = AdmitConfig {
        enforcement: args.enforcement,
        own_namespace: Some(args.own_namespace.clone()),
    };
    let results = mutate_all(&docs, policies, recs, facts, config);
    let mut out = String::new();
    for (i, r) in results.iter().enumerate() {
        let id = describe(&r.object);
        for w in &r.warnings {
            eprintln!("warning: {id}: {w}");
        }
        match args.output {
            Output::Yaml => {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&serde_yaml::to_string(&r.object)?);
            }
            Output::Json => {}
            Output::Patch => {
                if r.handled {
                    out.push_str(&serde_json::to_string(&serde_json::json!({
                        "object": id, "patch": r.patch, "warnings": r.warnings,
                    }))?);
                    out.push('\n');
                }
            }
        }
    }
    if let Output::Json = args.output {
        let objects: Vec<_> = results.into_iter().map(|r| r.object).collect();
        let v = if objects.len() == 1 {
            objects.into_iter().next().unwrap_or_default()
        } else {
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects})
        };
        out = serde_json::to_string_pretty(&v)?;
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

fn describe(obj: &serde_json::Value) -> String {
    let kind = obj.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
    let meta = obj.get("metadata");
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
        .unwrap_or("");
    let name = meta
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(|n| n.as_str())
        .unwrap_or("");
    if ns.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind} {ns}/{name}")
    }
}
