//! What the offline commands (`mutate`, `explain`) read and how they evaluate it: one
//! set of flags and one evaluation, so both say the same of the same input.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rightsizer::admission::AdmitConfig;
use rightsizer::offline::{
    facts_from, mutate_all, parse_documents, preview_pods, Document, Mutated, OptIn, PodPreview,
};
use rightsizer::policies::store::PolicyStore;
use rightsizer_core::object::OPT_IN_LABEL;
use rightsizer_core::recommendation::{NoRecommendations, RecommendationSource, Snapshot};

#[derive(Debug, clap::Args)]
pub struct Input {
    /// Manifests (multi-document YAML, JSON, or AdmissionReview); `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Folder(s) of policy ConfigMap manifests.
    #[arg(long)]
    pub policies: Vec<PathBuf>,
    /// Recommendation snapshot (the JSON of GET /recommendations).
    #[arg(long)]
    pub recommendations: Option<PathBuf>,
    /// Labels of namespaces the input does not describe, e.g. `team=web,tier=1`.
    #[arg(long, value_parser = parse_labels, default_value = "")]
    pub namespace_labels: BTreeMap<String, String>,
    /// Namespace for objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Allow enforce-mode policies to apply values (as RIGHTSIZER_ENFORCEMENT=true does).
    #[arg(long, env = "RIGHTSIZER_ENFORCEMENT", default_value_t = false)]
    pub enforcement: bool,
    /// The webhook's own namespace (never mutated).
    #[arg(long, default_value = "rightsizer-system")]
    pub own_namespace: String,
}

/// The input as admission would leave it: each document's result, and the Pod each
/// workload's controller would create.
pub struct Evaluated {
    pub docs: Vec<Document>,
    pub results: Vec<Mutated>,
    pub previews: Vec<PodPreview>,
}

impl Evaluated {
    /// The preview Pod of the `i`th document, when it is a workload.
    pub fn preview(&self, i: usize) -> Option<&PodPreview> {
        self.previews.iter().find(|p| p.index == i)
    }
}

impl Input {
    /// Read, evaluate, and note on stderr each namespace whose opt-in was not checked.
    pub fn evaluate(&self) -> anyhow::Result<Evaluated> {
        let text = if self.file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(&self.file)
                .with_context(|| format!("reading {}", self.file.display()))?
        };
        let docs = parse_documents(&text, &self.namespace)?;
        let policies = load_policies(&self.policies)?;
        let recs = load_snapshot(&self.recommendations)?;
        let facts = facts_from(&docs, &self.namespace_labels);
        tracing::info!(
            documents = docs.len(),
            policies = policies.current().len(),
            "input read"
        );
        let config = AdmitConfig {
            enforcement: self.enforcement,
            own_namespace: Some(self.own_namespace.clone()),
        };
        let results = mutate_all(
            &docs,
            policies.clone(),
            recs.clone(),
            facts.clone(),
            config.clone(),
        );
        let previews = preview_pods(&docs, &results, policies, recs, facts, config);
        for ns in OptIn::of(&docs).unchecked(&docs, &results) {
            eprintln!(
                "note: namespace {ns}: its opt-in label {OPT_IN_LABEL} was not checked (the input has no Namespace object for it); the webhook sizes only opted-in namespaces"
            );
        }
        Ok(Evaluated {
            docs,
            results,
            previews,
        })
    }
}

pub(crate) fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
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
        match report.refused.as_slice() {
            [] => {}
            [e] => bail!("policy refused: {e}"),
            all => bail!(
                "{} policies refused:\n{}",
                all.len(),
                all.iter()
                    .map(|e| format!("  {e}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
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
