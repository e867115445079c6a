//! The report as CSV: one line per container and resource, raw units (bytes,
//! millicores, seconds) so spreadsheets can add them up.

use crate::report::model::{Report, ResourceRow};

const HEADER: &str = "namespace,kind,workload,container,resource,pods,requested,limit,recommended_request,recommended_limit,committed_request,used_p95,used_max,freed,oom_kills,oom_floor,oom_risk,samples,history_seconds";

fn field(s: &str) -> String {
    // A leading =, +, - or @ would be a formula in a spreadsheet.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

/// The CSV text, header first, in the report's order.
pub fn render(r: &Report) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for w in &r.workloads {
        for c in &w.containers {
            for (name, row) in [("memory", &c.memory), ("cpu", &c.cpu)] {
                let ResourceRow {
                    requested,
                    limit,
                    recommended_request,
                    recommended_limit,
                    committed_request,
                    used_p95,
                    used_max,
                    samples,
                    history_seconds,
                    freed,
                } = row;
                let floor = if name == "memory" { c.oom_floor } else { None };
                let cells = [
                    field(&w.namespace),
                    field(&w.kind),
                    field(&w.name),
                    field(&c.container),
                    name.to_string(),
                    c.pods.to_string(),
                    opt(*requested),
                    opt(*limit),
                    opt(*recommended_request),
                    opt(*recommended_limit),
                    opt(*committed_request),
                    opt(*used_p95),
                    opt(*used_max),
                    freed.to_string(),
                    c.oom_kills.to_string(),
                    opt(floor),
                    c.oom_risk.to_string(),
                    samples.to_string(),
                    history_seconds.to_string(),
                ];
                out.push_str(&cells.join(","));
                out.push('\n');
            }
        }
    }
    out
}
