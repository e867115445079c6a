//! What `deploy/monitoring` reads: the declared metric names (`metrics.txt`), the PromQL
//! of every recording rule, alert and dashboard query, and the metric names in it.
//!
//! promtool 2.42 parses PromQL (`promtool check rules`, used by tests/deploy/deploy.rs) but has
//! no command that lists the metric names of an expression, so `promql_metrics` is a
//! small lexer for the subset the shipped rules use; its own test is in tests/deploy/deploy.rs.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

pub fn is_metric_name(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

pub struct MetricList {
    pub webhook: BTreeMap<String, (String, BTreeSet<String>)>,
    /// Webhook metrics exported only while it watches the Kubernetes API (`webhook-kube`).
    pub kube_only: BTreeSet<String>,
    pub external: BTreeSet<String>,
}

pub fn metric_list() -> MetricList {
    let text = fs::read_to_string(monitoring_dir().join("metrics.txt")).unwrap();
    let mut webhook = BTreeMap::new();
    let mut external = BTreeSet::new();
    let mut kube_only = BTreeSet::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert!(matches!(parts.len(), 3 | 4), "bad line {line:?}");
        assert!(is_metric_name(parts[1]));
        assert!(
            ["counter", "gauge", "histogram"].contains(&parts[2]),
            "{line}"
        );
        if parts[2] == "counter" {
            assert!(
                parts[1].ends_with("_total"),
                "counters end in _total: {line}"
            );
        }
        let labels: BTreeSet<String> = parts
            .get(3)
            .map(|l| l.split(',').map(String::from).collect())
            .unwrap_or_default();
        match parts[0] {
            "webhook" => {
                assert!(parts[1].starts_with("rightsizer_"));
                webhook.insert(parts[1].to_string(), (parts[2].to_string(), labels));
            }
            "webhook-kube" => {
                assert!(parts[1].starts_with("rightsizer_"));
                webhook.insert(parts[1].to_string(), (parts[2].to_string(), labels));
                kube_only.insert(parts[1].to_string());
            }
            // Only with the updater overlay (the updater's and the Knative writer's).
            "updater" => {
                assert!(
                    parts[1].starts_with("rightsizer_updater_")
                        || parts[1].starts_with("rightsizer_knative_writes")
                );
                external.insert(parts[1].to_string());
            }
            "cadvisor" | "kube-state-metrics" | "cluster-autoscaler" | "prometheus"
            | "kube-apiserver" | "knative" => {
                external.insert(parts[1].to_string());
            }
            other => panic!("unknown source {other}"),
        }
    }
    MetricList {
        webhook,
        kube_only,
        external,
    }
}

impl MetricList {
    /// The exported metric a series name belongs to (histograms add suffixes).
    pub fn webhook_metric(&self, series: &str) -> Option<&(String, BTreeSet<String>)> {
        self.webhook.get(series).or_else(|| {
            ["_bucket", "_sum", "_count"].iter().find_map(|s| {
                series
                    .strip_suffix(s)
                    .and_then(|base| self.webhook.get(base))
                    .filter(|(t, _)| t == "histogram")
            })
        })
    }
}

/// Metric names in a PromQL expression with the label names of their matchers. A small
/// lexer: strings, ranges and grouping label lists are skipped; an identifier followed
/// by `(` is a function or aggregation; keywords are not names.
pub fn promql_metrics(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let b: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let skip_string = |mut i: usize| {
        let q = b[i];
        i += 1;
        while i < b.len() && b[i] != q {
            if b[i] == '\\' && q != '`' {
                i += 1;
            }
            i += 1;
        }
        i + 1
    };
    let mut out: Vec<(String, BTreeSet<String>)> = Vec::new();
    // Where the last metric name ended: a `{` right after it holds its matchers.
    let mut last_metric_end = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c == '[' {
            while i < b.len() && b[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '#' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '$'
            || c.is_ascii_digit()
            || (c == '.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            i += 1;
            while i < b.len() && (ident(b[i]) || b[i] == '.' || b[i] == '{' || b[i] == '}') {
                i += 1;
            }
        } else if c == '{' {
            // Label matchers: every bare identifier inside is a label name.
            let attached = last_metric_end.is_some_and(|end| skip_ws(end) == i);
            let mut labels = BTreeSet::new();
            i += 1;
            while i < b.len() && b[i] != '}' {
                if b[i] == '"' || b[i] == '\'' || b[i] == '`' {
                    i = skip_string(i);
                } else if ident(b[i]) {
                    let s = i;
                    while i < b.len() && ident(b[i]) {
                        i += 1;
                    }
                    labels.insert(b[s..i].iter().collect::<String>());
                } else {
                    i += 1;
                }
            }
            i += 1;
            match out.last_mut() {
                Some(last) if attached => last.1 = labels,
                _ => panic!("a selector without a metric name: {expr}"),
            }
        } else if ident(c) {
            let s = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word: String = b[s..i].iter().collect();
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if GROUPING.contains(&lower.as_str()) {
                if b.get(next) == Some(&'(') {
                    i = next;
                    while i < b.len() && b[i] != ')' {
                        i += 1;
                    }
                    i += 1;
                }
            } else if lower == "offset" {
                i = next;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
            } else if KEYWORDS.contains(&lower.as_str()) || b.get(next) == Some(&'(') {
                // function, aggregation or keyword
            } else {
                out.push((word, BTreeSet::new()));
                last_metric_end = Some(i);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The PromQL of a dashboard: (panel title or `variable NAME`, expression). The metric
/// selector of a `label_values(SELECTOR, label)` variable counts as a query.
pub fn dashboard_queries(json: &Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let mut panels: Vec<&Value> = json["panels"].as_array().unwrap().iter().collect();
    let mut i = 0;
    while i < panels.len() {
        panels.extend(panels[i]["panels"].as_array().into_iter().flatten());
        i += 1;
    }
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for v in json["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap();
            let (metric_expr, _label) = inner.rsplit_once(',').unwrap();
            exprs.push((format!("variable {}", v["name"]), metric_expr.to_string()));
        }
    }
    exprs
}

/// Every query in deploy/monitoring, read from the files as shipped.
pub struct Queries {
    /// Names the recording rules define.
    pub records: BTreeSet<String>,
    /// (where, PromQL): recording rules, alerts, dashboard panels and variables.
    pub exprs: Vec<(String, String)>,
}

pub fn queries() -> Queries {
    let dir = monitoring_dir();
    let rule: Value =
        serde_norway::from_str(&fs::read_to_string(dir.join("prometheusrule.yaml")).unwrap())
            .unwrap();
    let mut records = BTreeSet::new();
    let mut exprs = Vec::new();
    for g in rule["spec"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let id = r
                .get("record")
                .or(r.get("alert"))
                .unwrap()
                .as_str()
                .unwrap();
            if r.get("record").is_some() {
                records.insert(id.to_string());
            }
            exprs.push((
                format!("rule {id}"),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let json: Value = serde_json::from_slice(&fs::read(&f).unwrap()).unwrap();
        let file = f.file_name().unwrap().to_string_lossy().into_owned();
        for (title, e) in dashboard_queries(&json) {
            exprs.push((format!("{file} / {title}"), e));
        }
    }
    Queries { records, exprs }
}
