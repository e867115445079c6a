//! `rightsizer explain -f FILE [--policies DIR]`: for each object, which policies select
//! it, which one decided each section of the composed policy, and for each value a Pod
//! gets, its source and the policy behind it.

use serde::Serialize;
use serde_json::Value;

use rightsizer::offline::preview::{rows, PreviewRow};
use rightsizer::offline::{changes, Mutated};
use rightsizer_core::object::OVERRIDES_ANNOTATION;
use rightsizer_core::policy::compose::sections_of;
use rightsizer_core::policy::schema::Policy;
use rightsizer_core::workload::kind::kind_of_manifest;
use rightsizer_core::workload::WorkloadKey;

use crate::commands::input::Input;
use crate::commands::mutate::{align, describe};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: Input,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// One object's explanation.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explained {
    pub object: String,
    /// `namespace/Kind/name` whose recommendations apply.
    pub workload: Option<String>,
    /// The highest-precedence policy that selects it (None: left alone).
    pub policy: Option<String>,
    /// Why it was left alone, when it was.
    pub skipped: Option<String>,
    /// Each section with the policy that decided it (None: no matching policy writes it;
    /// its default applies).
    pub sections: std::collections::BTreeMap<String, Option<String>>,
    pub values: Vec<Decided>,
}

/// One value a Pod gets.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decided {
    pub container: String,
    pub field: String,
    pub value: Option<String>,
    pub source: Option<String>,
    /// The policy (and section) or other origin that decided it.
    pub decided_by: String,
}

/// Who decided a value of this source (a row of `mutate -o table`).
fn decided_by(policy: &Policy, workload: Option<&WorkloadKey>, row: &PreviewRow) -> String {
    let by = |section: &str| match policy.decided_by.get(section) {
        Some(p) => format!("{p} ({section})"),
        None => format!("default ({section})"),
    };
    let names_it = workload.is_some_and(|w| policy.overrides.iter().any(|o| o.workload.names(w)));
    match row.source.as_deref() {
        Some("override") if names_it => by("overrides"),
        Some("override") => format!("annotation {OVERRIDES_ANNOTATION}"),
        Some("enforced") => format!("committed value, {}", by("mode")),
        Some("recommendation") => format!("{}, {}", by("recommender"), by("rules")),
        Some("load-model") => by("loadModels"),
        Some("default") => by("defaults"),
        Some("template") | None => "the manifest".into(),
        Some("knative") if names_it => format!("{}, {}", by("overrides"), by("knative")),
        Some("knative") => by("knative"),
        Some("placement") => format!("{}, {}", by("gpu"), by("placement")),
        Some("priority") => format!("{}, {}", by("priority"), by("gpu")),
        Some(other) => other.to_string(),
    }
}

fn explain_one(
    doc: &rightsizer::offline::Document,
    r: &Mutated,
    pod: Option<&Mutated>,
) -> Option<Explained> {
    kind_of_manifest(&doc.object)?;
    let object = describe(&doc.object);
    // What the Pods get: the preview Pod's values for a workload, else the object's own.
    let (after, result) = match pod {
        Some(p) => (&p.object, p),
        None => (&r.object, r),
    };
    let policy = result.policy.as_ref().or(r.policy.as_ref());
    let workload = r.workload.as_ref().or(result.workload.as_ref());
    let before = kind_of_manifest(&doc.object)
        .and_then(|k| doc.object.pointer(k.pod_paths().0))
        .unwrap_or(&Value::Null);
    let mut all = rows(before, after);
    all.extend(changes::pod_rows(
        before,
        after.get("spec").unwrap_or(&Value::Null),
    ));
    if pod.is_some() {
        all.extend(changes::knative_rows(&doc.object, &r.object));
    }
    let values = match policy {
        Some(p) => all
            .into_iter()
            .filter(|row| row.after.is_some())
            .map(|row| Decided {
                decided_by: decided_by(p, workload, &row),
                container: row.container,
                field: row.resource,
                value: row.after,
                source: row.source,
            })
            .collect(),
        None => Vec::new(),
    };
    Some(Explained {
        object,
        workload: workload.map(|w| w.to_string()),
        policy: policy.map(|p| p.name.clone()),
        skipped: r.skipped.clone().or_else(|| result.skipped.clone()),
        sections: policy.map(|p| sections_of(p)).unwrap_or_default(),
        values,
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let ev = args.input.evaluate()?;
    let explained: Vec<Explained> = ev
        .docs
        .iter()
        .zip(&ev.results)
        .enumerate()
        .filter_map(|(i, (d, r))| {
            let pod = ev.preview(i).map(|p| &p.result);
            explain_one(d, r, pod)
        })
        .collect();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&explained)?),
        Output::Table => print!("{}", table(&explained)),
    }
    Ok(())
}

fn table(all: &[Explained]) -> String {
    let mut out = String::new();
    for (i, e) in all.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let policy = e.policy.as_deref().unwrap_or("none");
        out.push_str(&format!("{}  (policy: {policy})\n", e.object));
        if let Some(why) = &e.skipped {
            out.push_str(&format!("  left unchanged: {why}\n"));
            continue;
        }
        let mut lines = vec![vec!["  SECTION".to_string(), "DECIDED BY".to_string()]];
        for (s, by) in &e.sections {
            let by = by.clone().unwrap_or_else(|| "(default)".into());
            lines.push(vec![format!("  {s}"), by]);
        }
        out.push_str(&align(&lines));
        let mut lines = vec![["  CONTAINER", "FIELD", "VALUE", "SOURCE", "DECIDED BY"]
            .map(String::from)
            .to_vec()];
        for v in &e.values {
            let dash = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
            lines.push(vec![
                format!("  {}", v.container),
                v.field.clone(),
                dash(&v.value),
                dash(&v.source),
                v.decided_by.clone(),
            ]);
        }
        out.push_str(&align(&lines));
    }
    out
}
