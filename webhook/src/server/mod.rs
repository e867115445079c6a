//! The HTTP/TLS layer of `rightsizer serve`: routes, TLS with hot-reloaded
//! certificates, metrics and the accept loop. It knows nothing about policies: `/mutate`
//! hands the body to [`Admitter::review`](crate::admission::Admitter::review).

mod error;
pub mod guard;
mod handlers;
pub mod listener;
pub mod malloc;
pub mod metrics;
pub mod readiness;
pub mod recommendation_bytes;
pub mod reload;
pub mod tls;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use prometheus_client::registry::Registry;

use rightsizer_core::recommendation::RecommendationSource;

use crate::admission::Admitter;

pub use error::HttpError;
use guard::ReviewGuard;
pub use handlers::MAX_BODY_BYTES;
use metrics::ServerMetrics;
use readiness::Readiness;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub admitter: Arc<Admitter>,
    /// Served as JSON by `GET /recommendations`.
    pub recommendations: Arc<dyn RecommendationSource>,
    /// `GET /readyz` answers 200 only while this says ready.
    pub readiness: Readiness,
    /// Everything `GET /metrics` exposes (server metrics plus whatever else was registered).
    pub registry: Arc<Registry>,
    /// Handles to the server's own metrics, registered in `registry`.
    pub metrics: ServerMetrics,
    /// Bounds on `/mutate` (in flight, buffered bytes, workers, deadlines).
    pub guard: Arc<ReviewGuard>,
    /// What `GET /report` adds to the served recommendations (admin port only).
    pub report: Arc<crate::reporting::ReportSource>,
}

/// The TLS port, for the apiserver only: `POST /mutate` plus the probes `/healthz` and
/// `/readyz`. Usage data (`/recommendations`) and `/metrics` are never served here: any
/// pod can reach this port, and only the apiserver should.
pub fn router(state: AppState) -> Router {
    finish(
        Router::new()
            .route("/mutate", post(handlers::mutate))
            .merge(probe_routes()),
        state,
    )
}

/// The plain-HTTP admin port: `/healthz`, `/readyz`, `/metrics`, `/recommendations`,
/// `/report` (the NetworkPolicy in `deploy/` admits only the monitoring namespace to it).
pub fn admin_router(state: AppState) -> Router {
    finish(
        probe_routes()
            .route("/metrics", get(handlers::metrics))
            .route("/recommendations", get(handlers::recommendations))
            .route("/report", get(handlers::report)),
        state,
    )
}

fn finish(routes: Router<AppState>, state: AppState) -> Router {
    let metrics = state.metrics.clone();
    routes
        .route_layer(axum::middleware::from_fn_with_state(
            metrics,
            handlers::count_requests,
        ))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
}

fn probe_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
}
