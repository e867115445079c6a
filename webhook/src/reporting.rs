//! The savings report's inputs: the recommendations `/recommendations` serves, what the
//! analyzer's cache knows of the running pods (requests, limits, pod count, OOM kills),
//! memory usage per interval from Prometheus for the charts, and the cluster's node
//! shapes from the Node list. The arithmetic and rendering are the core's
//! (`rightsizer_core::report`).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use rightsizer_core::analysis::entry::Entry;
use rightsizer_core::analysis::queries::QueryConfig;
use rightsizer_core::cluster::{ClusterFacts, NodeInfo};
use rightsizer_core::recommendation::{ContainerKey, Snapshot};
use rightsizer_core::report::capacity::{shapes_of_nodes, NodeShape, Pricing};
use rightsizer_core::report::model::{build, ContainerInput, Report};

use crate::analyzer::cache::RecommendationCache;
use crate::analyzer::history;
use crate::analyzer::prom::PromClient;

/// What the user set for the report: the cluster's name, node shapes and prices.
#[derive(Debug, Clone, Default)]
pub struct ReportSettings {
    pub cluster: String,
    pub shapes: Vec<NodeShape>,
    pub pricing: Pricing,
}

/// Where a report's inputs come from besides the served recommendations.
#[derive(Default)]
pub struct ReportSource {
    /// The analyzer's cache (None when serving a snapshot file).
    cache: Option<Arc<RecommendationCache>>,
    /// Prometheus and the analyzer's queries, for the usage charts.
    history: Option<(PromClient, QueryConfig)>,
    pub settings: ReportSettings,
    /// The node watch's facts: the node shapes when the user gave none.
    nodes: Option<Arc<dyn ClusterFacts>>,
}

impl ReportSource {
    pub fn new(
        cache: Option<Arc<RecommendationCache>>,
        history: Option<(PromClient, QueryConfig)>,
        settings: ReportSettings,
    ) -> Self {
        ReportSource {
            cache,
            history,
            settings,
            nodes: None,
        }
    }

    /// Take node shapes from the cluster's nodes as watched (unless `--node-shape` gave some).
    pub fn with_nodes(mut self, facts: Arc<dyn ClusterFacts>) -> Self {
        self.nodes = Some(facts);
        self
    }

    /// The report of `snapshot` (what `/recommendations` serves, taken by the caller so
    /// both show the same figures), with usage history up to `snapshot.generated_at`.
    pub async fn report(&self, snapshot: Snapshot) -> Report {
        let now = snapshot.generated_at;
        let entries: HashMap<ContainerKey, Entry> = self
            .cache
            .as_ref()
            .map(|c| c.entries().into_iter().collect())
            .unwrap_or_default();
        let mut usage = match &self.history {
            Some((client, cfg)) => {
                match history::load(client, cfg, cfg.long_window_secs, now).await {
                    Ok((series, _)) => series,
                    Err(e) => {
                        tracing::warn!(error = %e, "report: no usage history from Prometheus; charts are empty");
                        Default::default()
                    }
                }
            }
            None => Default::default(),
        };
        let inputs: Vec<ContainerInput> = snapshot
            .recommendations
            .into_iter()
            .map(|(key, rec)| {
                let e = entries.get(&key).cloned().unwrap_or_default();
                ContainerInput {
                    usage: usage.remove(&key).unwrap_or_default(),
                    key,
                    rec,
                    current_memory: e.current_memory,
                    current_cpu: e.current_cpu,
                    pods: e.pods,
                    oom_kills: e.oom_kills,
                }
            })
            .collect();
        let s = &self.settings;
        let watched;
        let shapes = match &self.nodes {
            Some(facts) if s.shapes.is_empty() => {
                watched = shapes_of_nodes(&facts.nodes().nodes);
                &watched
            }
            _ => &s.shapes,
        };
        build(&inputs, &s.cluster, now, shapes, &s.pricing)
    }
}

/// The cluster's node shapes from the Node list (allocatable CPU and memory, grouped
/// by instance type), most numerous first.
pub async fn node_shapes(client: kube::Client) -> Result<Vec<NodeShape>, kube::Error> {
    let nodes = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await?;
    let infos: Vec<NodeInfo> = nodes
        .items
        .iter()
        .filter_map(|n| serde_json::to_value(n).ok())
        .filter_map(|v| NodeInfo::from_object(&v))
        .collect();
    Ok(shapes_of_nodes(&infos))
}
