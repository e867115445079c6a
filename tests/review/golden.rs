//! Golden cases: per folder under `tests/golden/`, an input manifest, policies, a
//! recommendation snapshot and the expected output. Every case also checks that the
//! output is a valid object of its type, that request ≤ limit and LimitRange bounds
//! hold, that written quantities are canonical, and that a second pass changes nothing.
//!
//! A case may use the shipped example policies instead of (or beside) its own
//! `policy.yaml`: `shippedPolicies: [default-observe.yaml]` in `case.yaml` reads them from
//! `policies/`, so the examples are tested as shipped.
//!
//! Regenerate expectations after an intended change with `UPDATE_GOLDEN=1 cargo test
//! -p rightsizer-tests --test review golden`, then review the diff.

use crate::invariants;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rightsizer::admission::AdmitConfig;
use rightsizer::offline::{facts_from, mutate_all, parse_documents, Mutated};
use rightsizer::policies::store::PolicyStore;
use rightsizer_core::cluster::ClusterFacts;
use rightsizer_core::recommendation::{NoRecommendations, RecommendationSource, Snapshot};
use rstest::rstest;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CaseConfig {
    #[serde(default)]
    enforcement: bool,
    #[serde(default)]
    namespace_labels: BTreeMap<String, String>,
    #[serde(default)]
    description: String,
    /// Files of `policies/` to load as well.
    #[serde(default)]
    shipped_policies: Vec<String>,
}

struct Case {
    dir: PathBuf,
    config: CaseConfig,
    input: String,
    policies: Arc<PolicyStore>,
    recs: Arc<dyn RecommendationSource>,
}

fn load_case(dir: &Path) -> Case {
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    let config: CaseConfig = read("case.yaml")
        .map(|t| {
            serde_norway::from_str(&t)
                .unwrap_or_else(|e| panic!("{}: case.yaml: {e}", dir.display()))
        })
        .unwrap_or_default();
    let input = read("input.yaml").unwrap_or_else(|e| panic!("{}: input.yaml: {e}", dir.display()));
    let policies = Arc::new(PolicyStore::new());
    let policy_text = read("policy.yaml").unwrap_or_default();
    policies
        .apply("policy.yaml", &policy_text)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for name in &config.shipped_policies {
        let text = std::fs::read_to_string(shipped.join(name))
            .unwrap_or_else(|e| panic!("{}: policies/{name}: {e}", dir.display()));
        policies
            .apply(name, &text)
            .unwrap_or_else(|e| panic!("{}: policies/{name}: {e}", dir.display()));
    }
    policies.mark_ready();
    let recs: Arc<dyn RecommendationSource> = match read("recommendations.json") {
        Ok(t) => Arc::new(
            serde_json::from_str::<Snapshot>(&t)
                .unwrap_or_else(|e| panic!("{}: recommendations.json: {e}", dir.display())),
        ),
        Err(_) => Arc::new(NoRecommendations),
    };
    Case {
        dir: dir.to_path_buf(),
        config,
        input,
        policies,
        recs,
    }
}

fn run(case: &Case, input: &str) -> (Vec<rightsizer::offline::Document>, Vec<Mutated>) {
    let docs = parse_documents(input, "default").expect("input parses");
    let facts = facts_from(&docs, &case.config.namespace_labels);
    let config = AdmitConfig {
        enforcement: case.config.enforcement,
        own_namespace: Some("rightsizer-system".into()),
    };
    let out = mutate_all(
        &docs,
        case.policies.clone(),
        case.recs.clone(),
        facts,
        config,
    );
    (docs, out)
}

fn render(out: &[Mutated]) -> (String, String) {
    let yaml = out
        .iter()
        .map(|m| serde_norway::to_string(&m.object).expect("yaml"))
        .collect::<Vec<_>>()
        .join("---\n");
    let warnings = out
        .iter()
        .enumerate()
        .flat_map(|(i, m)| m.warnings.iter().map(move |w| format!("{}: {w}\n", i + 1)))
        .collect::<String>();
    (yaml, warnings)
}

fn check_case(dir: &Path) -> Result<(), String> {
    let case = load_case(dir);
    let (docs, out) = run(&case, &case.input);
    let (yaml, warnings) = render(&out);
    let expected_path = dir.join("expected.yaml");
    let warnings_path = dir.join("warnings.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &yaml).map_err(|e| e.to_string())?;
        std::fs::write(&warnings_path, &warnings).map_err(|e| e.to_string())?;
    }
    let expected =
        std::fs::read_to_string(&expected_path).map_err(|e| format!("expected.yaml: {e}"))?;
    let want: Vec<Value> = parse_documents(&expected, "default")
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|d| d.object)
        .collect();
    let got: Vec<Value> = out.iter().map(|m| m.object.clone()).collect();
    if want != got {
        return Err(format!("output differs from expected.yaml:\n{yaml}"));
    }
    let want_warnings = std::fs::read_to_string(&warnings_path).unwrap_or_default();
    if want_warnings != warnings {
        return Err(format!("warnings differ from warnings.txt:\n{warnings}"));
    }
    let facts = facts_from(&docs, &case.config.namespace_labels);
    for (d, m) in docs.iter().zip(&out) {
        let mut applied = d.object.clone();
        json_patch::patch(&mut applied, &m.patch)
            .map_err(|e| format!("patch does not apply: {e}"))?;
        if applied != m.object {
            return Err("patch does not reproduce the output".into());
        }
        invariants::declared_writes(&d.object, &m.object)?;
        // Unchanged objects are the user's business; what we change must be valid.
        if !m.handled || m.patch.0.is_empty() {
            continue;
        }
        invariants::strict_type(&m.object)?;
        invariants::canonical_patch(&m.patch)?;
        let ns = facts.namespace(&d.namespace);
        invariants::resource_rules(&m.object, &ns.limit_ranges)?;
    }
    // Idempotent: the webhook on its own output changes nothing.
    let (_, again) = run(&case, &yaml);
    for (i, m) in again.iter().enumerate() {
        if !m.patch.0.is_empty() {
            return Err(format!(
                "second pass on document {} is not empty: {}",
                i + 1,
                serde_json::to_string(&m.patch).unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// Every folder under `tests/golden/` is a test of its own, named for the folder (a new
/// folder is picked up when this binary is built again).
#[rstest]
fn golden(
    #[base_dir = "${CARGO_MANIFEST_DIR}/../tests/golden"]
    #[files("*/input.yaml")]
    input: PathBuf,
) {
    let dir = input.parent().expect("a case folder");
    if let Err(e) = check_case(dir) {
        panic!("{}: {e}", dir.display());
    }
}

#[test]
fn every_case_describes_itself() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    for e in std::fs::read_dir(&root)
        .expect("tests/golden")
        .filter_map(Result::ok)
    {
        let c = load_case(&e.path());
        assert!(
            !c.config.description.is_empty(),
            "{}: case.yaml needs a description",
            c.dir.display()
        );
    }
}
