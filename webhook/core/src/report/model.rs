//! The report's figures from plain inputs: per container, workload, namespace and
//! cluster, what is requested, recommended and used, what enforce mode would change,
//! and what that frees in memory, cores, nodes and money.
//!
//! The recommendations are the ones `/recommendations` serves (`Snapshot`): this module
//! only adds them up, it recommends nothing.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::quantity::Resource;
use crate::recommendation::{ContainerKey, ContainerRecommendation, ResourceRecommendation};
use crate::report::capacity::{nodes_needed, MonthlyCost, NodeShape, Pricing};
use crate::rules::Sizes;
use crate::strategy::Interval;

/// Memory at or above this share of the limit is an OOM risk.
pub const NEAR_LIMIT: f64 = 0.9;

/// What is known of one workload container.
#[derive(Debug, Clone)]
pub struct ContainerInput {
    pub key: ContainerKey,
    /// The recommendation as `/recommendations` serves it.
    pub rec: ContainerRecommendation,
    /// What the running pods have (largest over the pods).
    pub current_memory: Sizes,
    pub current_cpu: Sizes,
    /// Pods running it now.
    pub pods: u32,
    /// Pods whose last termination was an OOM kill (in the long window).
    pub oom_kills: u32,
    /// Memory usage per interval, oldest first (for the chart).
    pub usage: Vec<Interval>,
}

/// Everything the report says, as `-o json` and `/report?format=json` print it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Unix seconds the recommendations were read.
    pub generated_at: u64,
    /// Which cluster (the `--cluster-label` value, or "cluster").
    pub cluster: String,
    pub totals: Totals,
    pub namespaces: Vec<NamespaceRow>,
    /// OOM risk first, then the most memory freed, then the most CPU freed.
    pub workloads: Vec<WorkloadRow>,
    /// Nodes needed before and after, per node shape.
    pub nodes: Vec<NodesRow>,
    pub pricing: Pricing,
    /// Monthly amounts freed (negative: added).
    pub cost: MonthlyCost,
}

/// Sums over some containers (each figure × the pods running it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub memory: ResourceTotals,
    pub cpu: ResourceTotals,
    pub pods: u64,
    pub oom_kills: u64,
    /// Containers under an OOM hold.
    pub held: u64,
    /// Containers at OOM risk.
    pub at_risk: u64,
}

/// One resource's sums (bytes or millicores).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceTotals {
    /// Requests now.
    pub requested: u64,
    /// Requests after enforce mode: the recommended request where there is one.
    pub recommended: u64,
    /// p95 usage.
    pub used_p95: u64,
    /// What containers asking too much would give back.
    pub freed: u64,
    /// What containers asking too little would get.
    pub added: u64,
    /// freed - added.
    pub net: i64,
}

impl ResourceTotals {
    fn add(&mut self, r: &ResourceRow, pods: u64) {
        self.requested += r.requested.unwrap_or(0) * pods;
        self.recommended += r.after().unwrap_or(0) * pods;
        self.used_p95 += r.used_p95.map_or(0, |v| v.max(0.0).ceil() as u64) * pods;
        if r.freed >= 0 {
            self.freed += r.freed as u64;
        } else {
            self.added += r.freed.unsigned_abs();
        }
        self.net = self.freed as i64 - self.added as i64;
    }
}

/// One resource of one container (per pod, except `freed`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRow {
    pub requested: Option<u64>,
    pub limit: Option<u64>,
    pub recommended_request: Option<u64>,
    pub recommended_limit: Option<u64>,
    /// What enforce mode applies now (a step towards the recommendation).
    pub committed_request: Option<u64>,
    pub used_p95: Option<f64>,
    pub used_max: Option<f64>,
    /// Samples and seconds of history the usage figures rest on.
    pub samples: u64,
    pub history_seconds: u64,
    /// (requested - recommended request) × pods: positive frees, negative adds.
    pub freed: i64,
}

impl ResourceRow {
    fn new(cur: Sizes, rec: Option<&ResourceRecommendation>, pods: u32) -> Self {
        let recd = rec.and_then(|r| r.recommended);
        let obs = rec.and_then(|r| r.observed);
        let mut row = ResourceRow {
            requested: cur.request,
            limit: cur.limit,
            recommended_request: recd.and_then(|s| s.request),
            recommended_limit: recd.and_then(|s| s.limit),
            committed_request: rec
                .and_then(|r| r.committed.as_ref())
                .and_then(|c| c.sizes.request),
            used_p95: obs.map(|o| o.p95),
            used_max: obs.map(|o| o.max),
            samples: obs.map_or(0, |o| o.samples),
            history_seconds: obs.map_or(0, |o| o.history_seconds),
            freed: 0,
        };
        let per_pod = row.after().unwrap_or(0) as i64 - row.requested.unwrap_or(0) as i64;
        row.freed = -per_pod * i64::from(pods);
        row
    }

    /// The request after enforce mode: the recommendation, else what runs.
    pub fn after(&self) -> Option<u64> {
        self.recommended_request.or(self.requested)
    }
}

/// One change enforce mode would make (per pod).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub resource: Resource,
    /// `request` or `limit`.
    pub side: &'static str,
    pub from: Option<u64>,
    pub to: u64,
}

/// One workload container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRow {
    /// `namespace/kind/name/container`, the key of `/recommendations`.
    pub key: String,
    pub container: String,
    pub pods: u32,
    pub memory: ResourceRow,
    pub cpu: ResourceRow,
    pub oom_kills: u32,
    /// The memory floor an OOM kill holds, while it lasts.
    pub oom_floor: Option<u64>,
    /// OOM kills, a hold, or usage near the limit.
    pub oom_risk: bool,
    pub changes: Vec<Change>,
    pub reasons: Vec<String>,
    pub stale: bool,
    /// Memory usage per interval: [end unix seconds, peak bytes, mean bytes].
    pub usage: Vec<(i64, f64, f64)>,
}

/// One workload: its containers and their sums.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRow {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub containers: Vec<ContainerRow>,
    pub totals: Totals,
    /// The least history any figure of it rests on, seconds.
    pub history_seconds: u64,
}

/// One namespace's sums.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceRow {
    pub namespace: String,
    pub workloads: usize,
    pub totals: Totals,
}

/// Nodes of one shape that the requests need, before and after enforce mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodesRow {
    pub shape: NodeShape,
    pub before: u64,
    pub after: u64,
    /// before - after (negative: more nodes needed).
    pub freed: i64,
}

fn container_row(c: &ContainerInput, key: &ContainerKey) -> ContainerRow {
    let memory = ResourceRow::new(c.current_memory, c.rec.memory.as_ref(), c.pods);
    let cpu = ResourceRow::new(c.current_cpu, c.rec.cpu.as_ref(), c.pods);
    let oom_floor = c.rec.memory.as_ref().and_then(|m| m.oom_floor);
    let near_limit = match (memory.used_max, memory.limit) {
        (Some(max), Some(limit)) if limit > 0 => max >= NEAR_LIMIT * limit as f64,
        _ => false,
    };
    let mut changes = Vec::new();
    for (res, row) in [(Resource::Memory, &memory), (Resource::Cpu, &cpu)] {
        for (side, from, to) in [
            ("request", row.requested, row.recommended_request),
            ("limit", row.limit, row.recommended_limit),
        ] {
            if let Some(to) = to.filter(|t| Some(*t) != from) {
                changes.push(Change {
                    resource: res,
                    side,
                    from,
                    to,
                });
            }
        }
    }
    let mut reasons: Vec<String> = [&c.rec.memory, &c.rec.cpu]
        .into_iter()
        .flatten()
        .flat_map(|r| r.reasons.iter().cloned())
        .collect();
    reasons.dedup();
    ContainerRow {
        key: key.to_string(),
        container: key.container.clone(),
        pods: c.pods,
        oom_kills: c.oom_kills,
        oom_floor,
        oom_risk: c.oom_kills > 0 || oom_floor.is_some() || near_limit,
        changes,
        reasons,
        stale: c.rec.stale,
        usage: c.usage.iter().map(|i| (i.end(), i.max, i.avg)).collect(),
        memory,
        cpu,
    }
}

impl Totals {
    fn add(&mut self, c: &ContainerRow) {
        let pods = u64::from(c.pods);
        self.memory.add(&c.memory, pods);
        self.cpu.add(&c.cpu, pods);
        self.pods += pods;
        self.oom_kills += u64::from(c.oom_kills);
        self.held += u64::from(c.oom_floor.is_some());
        self.at_risk += u64::from(c.oom_risk);
    }
}

/// Add up `inputs` for the cluster `cluster`
/// at `generated_at`, with node `shapes` (first: the one `pricing.node_month` prices).
pub fn build(
    inputs: &[ContainerInput],
    cluster: &str,
    generated_at: u64,
    shapes: &[NodeShape],
    pricing: &Pricing,
) -> Report {
    let mut by_workload: BTreeMap<_, Vec<ContainerRow>> = BTreeMap::new();
    for c in inputs {
        by_workload
            .entry(c.key.workload.clone())
            .or_default()
            .push(container_row(c, &c.key));
    }
    let mut totals = Totals::default();
    let mut namespaces: BTreeMap<String, NamespaceRow> = BTreeMap::new();
    let mut workloads = Vec::new();
    for (w, mut containers) in by_workload {
        containers.sort_by(|a, b| a.container.cmp(&b.container));
        let mut t = Totals::default();
        for c in &containers {
            t.add(c);
            totals.add(c);
        }
        let ns = namespaces
            .entry(w.namespace.clone())
            .or_insert_with(|| NamespaceRow {
                namespace: w.namespace.clone(),
                workloads: 0,
                totals: Totals::default(),
            });
        ns.workloads += 1;
        for c in &containers {
            ns.totals.add(c);
        }
        let history_seconds = containers
            .iter()
            .flat_map(|c| [&c.memory, &c.cpu])
            .filter(|r| r.samples > 0)
            .map(|r| r.history_seconds)
            .min()
            .unwrap_or(0);
        workloads.push(WorkloadRow {
            namespace: w.namespace.clone(),
            kind: w.kind.to_string(),
            name: w.name.clone(),
            containers,
            totals: t,
            history_seconds,
        });
    }
    workloads.sort_by(|a, b| {
        (b.totals.at_risk > 0)
            .cmp(&(a.totals.at_risk > 0))
            .then(b.totals.memory.net.cmp(&a.totals.memory.net))
            .then(b.totals.cpu.net.cmp(&a.totals.cpu.net))
            .then((&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)))
    });
    let nodes: Vec<NodesRow> = shapes
        .iter()
        .map(|s| {
            let before = nodes_needed(s, totals.memory.requested, totals.cpu.requested);
            let after = nodes_needed(s, totals.memory.recommended, totals.cpu.recommended);
            NodesRow {
                shape: s.clone(),
                before,
                after,
                freed: before as i64 - after as i64,
            }
        })
        .collect();
    let cost = pricing.monthly(
        totals.memory.net,
        totals.cpu.net,
        nodes.first().map(|n| n.freed),
    );
    Report {
        generated_at,
        cluster: cluster.to_string(),
        totals,
        namespaces: namespaces.into_values().collect(),
        workloads,
        nodes,
        pricing: pricing.clone(),
        cost,
    }
}
