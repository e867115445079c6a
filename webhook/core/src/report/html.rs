//! The report as one self-contained HTML page: no external asset (works air-gapped),
//! charts as inline SVG, and a few lines of script for the namespace filter
//! (`#ns=<namespace>` in the address selects one). Every figure a test or a script may
//! read is in a `data-f` (what) / `data-v` (raw value: bytes, millicores, seconds)
//! attribute pair next to its human form. Every name from the cluster is escaped.

use std::fmt::Write as _;

use crate::report::model::{ContainerRow, Report, ResourceRow, ResourceTotals, Totals};
use crate::report::svg::{usage_chart, Chart};
use crate::report::text::{bytes, duration, escape, millis, money, signed};

const STYLE: &str = "body{font:13px/1.4 system-ui,sans-serif;margin:16px auto;max-width:1240px;padding:0 12px;color:#222}\
h1{font-size:20px}h2{font-size:16px;margin-top:24px}h3{font-size:14px}\
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{padding:3px 5px;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}\
th{background:#f2f2f2}.n{text-align:left;overflow-wrap:anywhere}.risk{background:#fdecea}.stale{color:#888}\
.freed{color:#2e7d32}.added{color:#c62828}.note{color:#555}\
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:12px}\
.wl{border:1px solid #ddd;padding:6px 10px;min-width:0}svg.usage{width:100%;height:auto;display:block}\
header label{font-weight:600}";

/// The filter: show the namespace the select (or `#ns=` in the address) names; and
/// record the page's width so a headless browser can tell whether it overflows.
const SCRIPT: &str = "(function(){var sel=document.getElementById('ns');\
function apply(ns){document.querySelectorAll('[data-ns]').forEach(function(e){e.hidden=!!ns&&e.getAttribute('data-ns')!==ns;});\
sel.value=ns;document.body.setAttribute('data-filter',ns);}\
function fromHash(){var m=/(?:^#|&)ns=([^&]*)/.exec(location.hash);return m?decodeURIComponent(m[1]):'';}\
sel.addEventListener('change',function(){location.hash=sel.value?'ns='+encodeURIComponent(sel.value):'';apply(sel.value);});\
window.addEventListener('hashchange',function(){apply(fromHash());});apply(fromHash());\
var d=document.documentElement;document.body.setAttribute('data-scroll-width',d.scrollWidth);\
document.body.setAttribute('data-client-width',d.clientWidth);})();";

/// A cell with its figure: `data-f` names it, `data-v` holds the raw value.
fn cell(out: &mut String, field: &str, raw: impl std::fmt::Display, text: &str, class: &str) {
    let _ = write!(
        out,
        r#"<td class="{class}" data-f="{field}" data-v="{raw}">{text}</td>"#
    );
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

type Fmt = fn(Option<f64>) -> String;

fn fmt_of(resource: &str) -> Fmt {
    if resource == "memory" {
        bytes
    } else {
        millis
    }
}

fn signed_class(v: i64) -> &'static str {
    match v {
        v if v > 0 => "freed",
        v if v < 0 => "added",
        _ => "",
    }
}

/// The page.
pub fn render(r: &Report) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let cluster = escape(&r.cluster);
    let _ = write!(
        s,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>rightsizer savings report: {cluster}</title><style>{STYLE}</style></head><body data-generated-at="{}"><header><h1>Savings and capacity: {cluster}</h1><p class="note">From the recommendations rightsizer serves (<code>/recommendations</code>) at unix time {}. Requests are per pod times the pods running now; “freed” is what enforce mode would give back, “added” what under-requested containers would get.</p><label for="ns">Namespace </label><select id="ns"><option value="">all</option>"#,
        r.generated_at, r.generated_at
    );
    for ns in &r.namespaces {
        let n = escape(&ns.namespace);
        let _ = write!(s, r#"<option value="{n}">{n}</option>"#);
    }
    s.push_str("</select></header>");
    cluster_section(&mut s, r);
    namespaces_section(&mut s, r);
    workloads_section(&mut s, r);
    charts_section(&mut s, r);
    let _ = writeln!(s, "<script>{SCRIPT}</script></body></html>");
    s
}

fn totals_rows(s: &mut String, prefix: &str, t: &Totals) {
    for (name, rt) in [("memory", &t.memory), ("cpu", &t.cpu)] {
        let f = fmt_of(name);
        let _ = write!(s, r#"<tr><td class="n">{name}</td>"#);
        resource_totals(s, &format!("{prefix}.{name}"), rt, f);
        s.push_str("</tr>");
    }
}

fn resource_totals(s: &mut String, prefix: &str, rt: &ResourceTotals, f: Fmt) {
    for (k, v) in [
        ("requested", rt.requested),
        ("recommended", rt.recommended),
        ("usedP95", rt.used_p95),
        ("freed", rt.freed),
        ("added", rt.added),
    ] {
        cell(s, &format!("{prefix}.{k}"), v, &f(Some(v as f64)), "");
    }
    cell(
        s,
        &format!("{prefix}.net"),
        rt.net,
        &signed(rt.net, f),
        signed_class(rt.net),
    );
}

fn cluster_section(s: &mut String, r: &Report) {
    let t = &r.totals;
    s.push_str(r#"<section id="cluster"><h2>Cluster</h2><table><tr><th class="n">resource</th><th>requested</th><th>after enforce</th><th>used (p95)</th><th>freed</th><th>added</th><th>net change</th></tr>"#);
    totals_rows(s, "totals", t);
    s.push_str("</table><table><tr><th>pods</th><th>OOM kills</th><th>OOM holds</th><th>containers at OOM risk</th></tr><tr>");
    for (k, v) in [
        ("pods", t.pods),
        ("oomKills", t.oom_kills),
        ("held", t.held),
        ("atRisk", t.at_risk),
    ] {
        cell(s, &format!("totals.{k}"), v, &v.to_string(), "");
    }
    s.push_str("</tr></table><h3>Nodes</h3>");
    if r.nodes.is_empty() {
        s.push_str(r#"<p class="note">No node shape: run against a cluster (the Node list) or give <code>--node-shape cpu=4,memory=16Gi</code>.</p>"#);
    } else {
        s.push_str(r#"<table><tr><th class="n">shape</th><th>cpu</th><th>memory</th><th>in cluster</th><th>needed for the requests now</th><th>after enforce</th><th>nodes freed</th></tr>"#);
        for n in &r.nodes {
            let name = escape(&n.shape.name);
            let _ = write!(s, r#"<tr data-shape="{name}"><td class="n">{name}</td>"#);
            cell(
                s,
                "nodes.cpu",
                n.shape.cpu_millis,
                &millis(Some(n.shape.cpu_millis as f64)),
                "",
            );
            cell(
                s,
                "nodes.memory",
                n.shape.memory_bytes,
                &bytes(Some(n.shape.memory_bytes as f64)),
                "",
            );
            cell(
                s,
                "nodes.count",
                n.shape.count,
                &n.shape.count.to_string(),
                "",
            );
            cell(s, "nodes.before", n.before, &n.before.to_string(), "");
            cell(s, "nodes.after", n.after, &n.after.to_string(), "");
            cell(
                s,
                "nodes.freed",
                n.freed,
                &n.freed.to_string(),
                signed_class(n.freed),
            );
            s.push_str("</tr>");
        }
        s.push_str("</table>");
    }
    s.push_str("<h3>Monthly cost</h3>");
    let p = &r.pricing;
    let c = &r.cost;
    let cur = &p.currency;
    let mut any = false;
    s.push_str("<table>");
    for (k, label, price, v) in [
        (
            "cost.memory",
            "memory",
            p.gib_hour
                .map(|x| format!("{x} {} per GiB-hour", escape(cur))),
            c.memory,
        ),
        (
            "cost.cpu",
            "CPU",
            p.core_hour
                .map(|x| format!("{x} {} per core-hour", escape(cur))),
            c.cpu,
        ),
        ("cost.resources", "memory and CPU", None, c.resources),
        (
            "cost.nodes",
            "nodes of the first shape",
            p.node_month
                .map(|x| format!("{x} {} per node-month", escape(cur))),
            c.nodes,
        ),
    ] {
        if let Some(v) = v {
            any = true;
            let _ = write!(
                s,
                r#"<tr><td class="n">{label}</td><td class="n note">{}</td>"#,
                price.unwrap_or_default()
            );
            let text = if v >= 0.0 {
                format!("{} saved", money(v, cur))
            } else {
                format!("{} more", money(-v, cur))
            };
            cell(s, k, v, &text, if v >= 0.0 { "freed" } else { "added" });
            s.push_str("</tr>");
        }
    }
    s.push_str("</table>");
    if !any {
        s.push_str(r#"<p class="note">No price: give <code>--price-gib-hour</code> and <code>--price-core-hour</code>, or <code>--price-node-month</code>.</p>"#);
    }
    s.push_str("</section>");
}

fn namespaces_section(s: &mut String, r: &Report) {
    s.push_str(r#"<section id="namespaces"><h2>Namespaces</h2><table><tr><th class="n">namespace</th><th>workloads</th><th>pods</th><th>memory requested</th><th>after</th><th>net</th><th>CPU requested</th><th>after</th><th>net</th><th>OOM kills</th></tr>"#);
    for ns in &r.namespaces {
        let n = escape(&ns.namespace);
        let t = &ns.totals;
        let _ = write!(s, r#"<tr data-ns="{n}"><td class="n">{n}</td>"#);
        cell(s, "workloads", ns.workloads, &ns.workloads.to_string(), "");
        cell(s, "pods", t.pods, &t.pods.to_string(), "");
        for (name, rt) in [("memory", &t.memory), ("cpu", &t.cpu)] {
            let f = fmt_of(name);
            cell(
                s,
                &format!("{name}.requested"),
                rt.requested,
                &f(Some(rt.requested as f64)),
                "",
            );
            cell(
                s,
                &format!("{name}.recommended"),
                rt.recommended,
                &f(Some(rt.recommended as f64)),
                "",
            );
            cell(
                s,
                &format!("{name}.net"),
                rt.net,
                &signed(rt.net, f),
                signed_class(rt.net),
            );
        }
        cell(s, "oomKills", t.oom_kills, &t.oom_kills.to_string(), "");
        s.push_str("</tr>");
    }
    s.push_str("</table></section>");
}

fn resource_cells(s: &mut String, name: &str, r: &ResourceRow) {
    let f = fmt_of(name);
    let pair = |a: Option<u64>, b: Option<u64>| {
        format!("{} / {}", f(a.map(|v| v as f64)), f(b.map(|v| v as f64)))
    };
    let _ = write!(
        s,
        r#"<td data-f="{name}.requested" data-v="{}" data-limit="{}">{}</td>"#,
        opt(r.requested),
        opt(r.limit),
        pair(r.requested, r.limit)
    );
    let _ = write!(
        s,
        r#"<td data-f="{name}.recommendedRequest" data-v="{}" data-limit="{}">{}</td>"#,
        opt(r.recommended_request),
        opt(r.recommended_limit),
        pair(r.recommended_request, r.recommended_limit)
    );
    let _ = write!(
        s,
        r#"<td data-f="{name}.usedP95" data-v="{}" data-max="{}">{} / {}</td>"#,
        opt(r.used_p95),
        opt(r.used_max),
        f(r.used_p95),
        f(r.used_max)
    );
    cell(
        s,
        &format!("{name}.freed"),
        r.freed,
        &signed(r.freed, f),
        signed_class(r.freed),
    );
}

fn change_text(c: &ContainerRow) -> String {
    if c.changes.is_empty() {
        return "none".into();
    }
    c.changes
        .iter()
        .map(|ch| {
            let f = fmt_of(ch.resource.as_str());
            format!(
                "{} {} {} → {}",
                ch.resource.as_str(),
                ch.side,
                f(ch.from.map(|v| v as f64)),
                f(Some(ch.to as f64))
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn workloads_section(s: &mut String, r: &Report) {
    s.push_str(r#"<section id="workloads"><h2>Workloads</h2><p class="note">OOM risk first (kills, a hold, or a peak within 10% of the limit), then the most memory freed (net), then CPU. Requested and recommended as request / limit per pod; used as p95 / max.</p><table><tr><th class="n">workload / container</th><th>pods</th><th>memory now</th><th>recommended</th><th>used</th><th>freed</th><th>CPU now</th><th>recommended</th><th>used</th><th>freed</th><th class="n">enforce mode would set</th><th>OOM kills</th><th>history</th></tr>"#);
    for w in &r.workloads {
        let ns = escape(&w.namespace);
        for c in &w.containers {
            let mut class = String::from("container");
            if c.oom_risk {
                class.push_str(" risk");
            }
            if c.stale {
                class.push_str(" stale");
            }
            let _ = write!(
                s,
                r#"<tr class="{class}" data-ns="{ns}" data-key="{}"><td class="n">{}/{}/<b>{}</b> · {}</td>"#,
                escape(&c.key),
                ns,
                escape(&w.kind),
                escape(&w.name),
                escape(&c.container)
            );
            cell(s, "pods", c.pods, &c.pods.to_string(), "");
            resource_cells(s, "memory", &c.memory);
            resource_cells(s, "cpu", &c.cpu);
            let _ = write!(s, r#"<td class="n">{}</td>"#, escape(&change_text(c)));
            let hold = c
                .oom_floor
                .map(|f| format!(" (hold ≥ {})", bytes(Some(f as f64))))
                .unwrap_or_default();
            cell(
                s,
                "oomKills",
                c.oom_kills,
                &format!("{}{hold}", c.oom_kills),
                "",
            );
            let hist = c.memory.history_seconds;
            cell(
                s,
                "historySeconds",
                hist,
                &format!("{} ({} samples)", duration(hist), c.memory.samples),
                "",
            );
            s.push_str("</tr>");
        }
    }
    s.push_str("</table></section>");
}

fn charts_section(s: &mut String, r: &Report) {
    s.push_str(r#"<section id="charts"><h2>Memory over time</h2><div class="charts">"#);
    for w in &r.workloads {
        let ns = escape(&w.namespace);
        for c in &w.containers {
            let _ = write!(
                s,
                r#"<div class="wl" data-ns="{ns}" data-key="{}"><h3>{ns}/{}/{} · {}</h3>"#,
                escape(&c.key),
                escape(&w.kind),
                escape(&w.name),
                escape(&c.container)
            );
            s.push_str(&usage_chart(&Chart {
                title: &c.key,
                usage: &c.usage,
                request: c.memory.requested,
                limit: c.memory.limit,
                recommended: c.memory.recommended_request,
                now: r.generated_at,
            }));
            s.push_str("</div>");
        }
    }
    s.push_str("</div></section>");
}
