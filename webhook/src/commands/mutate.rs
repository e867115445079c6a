//! `rightsizer mutate -f FILE`: print what the webhook would make of manifests.

use rightsizer::offline::changes;
use rightsizer::offline::preview::rows;
use rightsizer::offline::PodPreview;

use crate::commands::input::Input;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Yaml,
    Json,
    Patch,
    /// Per container: workload, container, resource, before -> after, source (what the
    /// Pods get, for workloads too).
    Table,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: Input,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Yaml)]
    output: Output,
    /// Also print, after each workload, the Pod its controller would create as admission
    /// leaves it (under `target: pods` the template itself is not changed). Off by default:
    /// the YAML/JSON output stays the manifests to apply, without a bare Pod among them.
    #[arg(long)]
    pods: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let ev = args.input.evaluate()?;
    let (docs, results, previews) = (&ev.docs, &ev.results, &ev.previews);
    let preview_of = |i: usize| ev.preview(i);
    let show_pods = args.pods || matches!(args.output, Output::Table);
    let mut out = String::new();
    for (i, r) in results.iter().enumerate() {
        let id = describe(&r.object);
        for w in &r.warnings {
            eprintln!("warning: {id}: {w}");
        }
        if let Some(why) = &r.skipped {
            eprintln!("note: {id}: left unchanged: {why}");
        }
        let preview = preview_of(i);
        if let Some(p) = preview {
            if show_pods {
                for w in &p.result.warnings {
                    eprintln!("warning: {} (from {id}): {w}", describe(&p.pod));
                }
            } else if r.patch.0.is_empty() && !p.result.patch.0.is_empty() {
                eprintln!(
                    "note: {id}: its template is left as is (policy target: pods); its Pods are sized when created: add --pods to see them, or -o table for a summary"
                );
            }
        }
        let pod = preview.filter(|_| args.pods);
        match args.output {
            Output::Yaml => {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&serde_norway::to_string(&r.object)?);
                if let Some(p) = pod {
                    out.push_str(&format!(
                        "---\n# the Pod {id} would create, as admitted (a preview, not a manifest to apply)\n"
                    ));
                    out.push_str(&serde_norway::to_string(&p.result.object)?);
                }
            }
            Output::Json | Output::Table => {}
            Output::Patch => {
                if r.handled {
                    out.push_str(&serde_json::to_string(&serde_json::json!({
                        "object": id, "patch": r.patch, "warnings": r.warnings,
                    }))?);
                    out.push('\n');
                }
                if let Some(p) = pod.filter(|p| p.result.handled) {
                    out.push_str(&serde_json::to_string(&serde_json::json!({
                        "object": format!("{} (from {id})", describe(&p.pod)),
                        "patch": p.result.patch, "warnings": p.result.warnings,
                    }))?);
                    out.push('\n');
                }
            }
        }
    }
    match args.output {
        Output::Json => {
            let mut objects = Vec::new();
            for (i, r) in results.iter().enumerate() {
                objects.push(r.object.clone());
                if let Some(p) = preview_of(i).filter(|_| args.pods) {
                    objects.push(p.result.object.clone());
                }
            }
            let v = if objects.len() == 1 {
                objects.into_iter().next().unwrap_or_default()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects})
            };
            out = serde_json::to_string_pretty(&v)?;
            out.push('\n');
        }
        Output::Table => out = table(docs, results, previews),
        _ => {}
    }
    print!("{out}");
    Ok(())
}

/// One line per container, resource and side of what each Pod gets: a Pod's own
/// values, a workload's from the Pod its controller would create.
fn table(
    docs: &[rightsizer::offline::Document],
    results: &[rightsizer::offline::Mutated],
    previews: &[PodPreview],
) -> String {
    let mut lines = vec![[
        "WORKLOAD".to_string(),
        "CONTAINER".to_string(),
        "RESOURCE".to_string(),
        "BEFORE -> AFTER".to_string(),
        "SOURCE".to_string(),
    ]];
    for (i, (d, r)) in docs.iter().zip(results).enumerate() {
        let (before, after, workload) = match previews.iter().find(|p| p.index == i) {
            Some(p) => {
                let spec = rightsizer_core::workload::kind::kind_of_manifest(&d.object)
                    .and_then(|k| d.object.pointer(k.pod_paths().0));
                (spec, &p.result.object, &p.result.workload)
            }
            None if d.object.get("kind").and_then(|k| k.as_str()) == Some("Pod") => {
                (d.object.get("spec"), &r.object, &r.workload)
            }
            None => continue,
        };
        let Some(workload) = workload else { continue };
        let before = before.unwrap_or(&serde_json::Value::Null);
        let mut all = rows(before, after);
        all.extend(changes::pod_rows(
            before,
            after.get("spec").unwrap_or(&serde_json::Value::Null),
        ));
        if d.object.get("kind").and_then(|k| k.as_str()) != Some("Pod") {
            all.extend(changes::knative_rows(&d.object, &r.object));
        }
        for row in all {
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            lines.push([
                workload.to_string(),
                row.container,
                row.resource,
                format!("{} -> {}", dash(&row.before), dash(&row.after)),
                dash(&row.source),
            ]);
        }
    }
    let lines: Vec<Vec<String>> = lines.into_iter().map(Vec::from).collect();
    align(&lines)
}

/// Columns padded to their widest cell, two spaces apart.
pub(crate) fn align(lines: &[Vec<String>]) -> String {
    let mut width = Vec::new();
    for l in lines {
        width.resize(width.len().max(l.len()), 0);
        for (w, c) in width.iter_mut().zip(l) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for l in lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn describe(obj: &serde_json::Value) -> String {
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
