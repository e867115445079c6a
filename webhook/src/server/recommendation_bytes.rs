//! `rightsizer_recommendation_bytes`: the memory each container is recommended, read from
//! the recommendation source at scrape time (the analyzer's cache or a snapshot), so the
//! recording rules and the memory dashboard can compare it with what runs.
//!
//! One series per workload container and side (request, limit): CPU is not exported here
//! (the name says bytes), and entries without a recommendation export nothing.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::TypedMetric;

use rightsizer_core::recommendation::{ContainerKey, RecommendationSource};

/// The exported name (declared in deploy/monitoring/metrics.txt).
pub const RECOMMENDATION_BYTES: &str = "rightsizer_recommendation_bytes";

/// Collects the recommended memory of every servable entry on each scrape.
pub struct RecommendationCollector {
    source: Arc<dyn RecommendationSource>,
}

impl std::fmt::Debug for RecommendationCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecommendationCollector")
    }
}

impl RecommendationCollector {
    pub fn new(source: Arc<dyn RecommendationSource>) -> Self {
        RecommendationCollector { source }
    }
}

/// The sample rows: (key, side, bytes), in key order.
pub fn samples(source: &dyn RecommendationSource) -> Vec<(ContainerKey, &'static str, u64)> {
    let mut rows = Vec::new();
    // Copy out only what is exported: the source may hold a lock while visiting.
    source.visit(&mut |key, rec| {
        let Some(sizes) = rec.memory.as_ref().and_then(|m| m.recommended.as_ref()) else {
            return;
        };
        for (side, v) in [("request", sizes.request), ("limit", sizes.limit)] {
            if let Some(v) = v {
                rows.push((key.clone(), side, v));
            }
        }
    });
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    rows
}

impl Collector for RecommendationCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = samples(self.source.as_ref());
        let mut family = encoder.encode_descriptor(
            RECOMMENDATION_BYTES,
            "Recommended memory per workload container and side (request, limit), in bytes",
            None,
            ConstGauge::<i64>::TYPE,
        )?;
        for (key, side, bytes) in &rows {
            let labels = [
                ("namespace", key.workload.namespace.as_str()),
                ("kind", key.workload.kind.as_str()),
                ("name", key.workload.name.as_str()),
                ("container", key.container.as_str()),
                ("resource", "memory"),
                ("side", side),
            ];
            let gauge = ConstGauge::new(*bytes);
            gauge.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use rightsizer_core::recommendation::Snapshot;

    #[test]
    fn one_series_per_container_and_side_with_a_recommendation() {
        let snap: Snapshot = serde_json::from_str(
            r#"{"recommendations": {
                "shop/Deployment/web/app": {"memory": {"recommended": {"request": 157286400, "limit": 314572800}},
                                            "cpu": {"recommended": {"request": 100}}},
                "shop/StatefulSet/db/pg": {"memory": {"recommended": {"request": 314572800}}},
                "shop/Pod/debug/sh": {"memory": {"observed": {"avg": 1, "p95": 2, "max": 3, "samples": 9, "historySeconds": 60}}}
            }}"#,
        )
        .unwrap();
        let mut r = Registry::default();
        r.register_collector(Box::new(RecommendationCollector::new(Arc::new(snap))));
        let text = crate::server::metrics::encode(&r).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(RECOMMENDATION_BYTES))
            .collect();
        assert_eq!(
            lines,
            [
                r#"rightsizer_recommendation_bytes{namespace="shop",kind="Deployment",name="web",container="app",resource="memory",side="limit"} 314572800"#,
                r#"rightsizer_recommendation_bytes{namespace="shop",kind="Deployment",name="web",container="app",resource="memory",side="request"} 157286400"#,
                r#"rightsizer_recommendation_bytes{namespace="shop",kind="StatefulSet",name="db",container="pg",resource="memory",side="request"} 314572800"#,
            ]
        );
        assert!(text.contains("# TYPE rightsizer_recommendation_bytes gauge"));
    }
}
