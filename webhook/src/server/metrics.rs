//! Metrics of the HTTP/TLS layer. Other parts (policies, analyzer) register into the
//! same `prometheus_client::registry::Registry` before it is frozen in an `Arc`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::Reviewed;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub kind: String,
    pub operation: String,
    pub outcome: String,
}

/// The admission plugin a change was held back for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub path: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Which listener a connection is on: `webhook` (TLS) or `admin`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

/// Handles to the server's metrics (cheap to clone: each handle is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct ServerMetrics {
    pub reviews: Family<ReviewLabels, Counter>,
    pub review_duration: Histogram,
    pub patch_operations: Counter,
    pub withheld: Family<PluginLabels, Counter>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_in_flight: Gauge,
    pub tls_reloads: Family<ResultLabels, Counter>,
    /// Unix seconds after which the serving certificate is no longer valid.
    pub tls_cert_not_after: Gauge,
    pub connections: Family<ListenerLabels, Gauge>,
    pub connections_refused: Family<ListenerLabels, Counter>,
    pub node_capped: Family<ResourceLabels, Counter>,
}

/// A resource (`memory`, `cpu`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
}

/// Histogram buckets from 50µs to 1s: a review is normally well under a millisecond.
const DURATION_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

impl ServerMetrics {
    /// Create the metrics and register them (names as exposed: `rightsizer_admission_*`,
    /// `rightsizer_http_requests_total`, `rightsizer_tls_reloads_total`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = ServerMetrics {
            reviews: Family::default(),
            review_duration: Histogram::new(DURATION_BUCKETS),
            patch_operations: Counter::default(),
            withheld: Family::default(),
            http_requests: Family::default(),
            http_in_flight: Gauge::default(),
            tls_reloads: Family::default(),
            tls_cert_not_after: Gauge::default(),
            connections: Family::default(),
            connections_refused: Family::default(),
            node_capped: Family::default(),
        };
        registry.register(
            "rightsizer_admission_reviews",
            "Admission reviews answered, by object kind, operation and outcome",
            m.reviews.clone(),
        );
        registry.register(
            "rightsizer_admission_duration_seconds",
            "Time to answer one admission review (body read to response built)",
            m.review_duration.clone(),
        );
        registry.register(
            "rightsizer_admission_patch_operations",
            "JSONPatch operations returned in admission responses",
            m.patch_operations.clone(),
        );
        registry.register(
            "rightsizer_admission_withheld",
            "Reviews in which a change was not made because an admission plugin that runs \
             after webhooks would refuse the object (resourcequota, podtolerationrestriction)",
            m.withheld.clone(),
        );
        registry.register(
            "rightsizer_http_requests",
            "HTTP requests by route and status code",
            m.http_requests.clone(),
        );
        registry.register(
            "rightsizer_http_in_flight_requests",
            "HTTP requests being handled now",
            m.http_in_flight.clone(),
        );
        registry.register(
            "rightsizer_tls_reloads",
            "Serving certificate reloads by result (success; error: unreadable or mismatched; \
             expired: outside its validity, refused)",
            m.tls_reloads.clone(),
        );
        registry.register(
            "rightsizer_tls_cert_not_after_seconds",
            "Unix time at which the serving certificate in use expires",
            m.tls_cert_not_after.clone(),
        );
        registry.register(
            "rightsizer_http_connections",
            "Open connections by listener (webhook, admin)",
            m.connections.clone(),
        );
        registry.register(
            "rightsizer_http_connections_refused",
            "Connections closed at accept because the listener was at its connection cap",
            m.connections_refused.clone(),
        );
        registry.register(
            "rightsizer_admission_node_capped",
            "Admitted objects whose raise of a resource was held to the largest allocatable \
             of the nodes the Pod can run on (it would not have been schedulable)",
            m.node_capped.clone(),
        );
        m
    }

    pub(crate) fn observe_review(&self, r: &Reviewed, took: Duration) {
        self.reviews
            .get_or_create(&ReviewLabels {
                kind: r.kind.to_string(),
                operation: r.operation.to_string(),
                outcome: r.outcome.as_str().to_string(),
            })
            .inc();
        self.review_duration.observe(took.as_secs_f64());
        self.patch_operations.inc_by(r.patch_ops as u64);
        for plugin in &r.withheld {
            self.withheld
                .get_or_create(&PluginLabels {
                    plugin: plugin.to_string(),
                })
                .inc();
        }
        for res in &r.node_capped {
            self.node_capped
                .get_or_create(&ResourceLabels {
                    resource: res.as_str().to_string(),
                })
                .inc();
        }
    }

    /// A body that could not be reviewed (400/408/413/503): no kind or operation is known.
    pub(crate) fn observe_rejected(&self, outcome: &'static str, took: Duration) {
        self.reviews
            .get_or_create(&ReviewLabels {
                kind: String::new(),
                operation: String::new(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.review_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn tls_reload(&self, result: &'static str) {
        self.tls_reloads
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }
}

/// Encode a registry in the OpenMetrics text format (which Prometheus scrapes).
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// Content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
