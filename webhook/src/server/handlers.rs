//! Route handlers. `/mutate` hands the body to `Admitter::review` and knows nothing
//! about policies or sizing.

use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::BytesMut;
use http_body_util::BodyExt;

use super::error::HttpError;
use super::metrics::{self, ServerMetrics};
use super::AppState;

/// Largest AdmissionReview body accepted (the apiserver's own request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// `POST /mutate[?timeout=..]`: the query is ignored (the apiserver adds its timeout).
pub async fn mutate(State(st): State<AppState>, req: Request) -> Result<Response, HttpError> {
    let started = Instant::now();
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(e) => {
            st.metrics
                .observe_rejected(outcome_of(&e), started.elapsed());
            return Err(e);
        }
    };
    match st.admitter.review(&body) {
        Ok(r) => {
            st.metrics.observe_review(&r, started.elapsed());
            Ok(([(header::CONTENT_TYPE, "application/json")], r.body).into_response())
        }
        Err(e) => {
            tracing::info!(error = %e, "rejected review body");
            st.metrics.observe_rejected("error", started.elapsed());
            Err(HttpError::from(e))
        }
    }
}

fn outcome_of(e: &HttpError) -> &'static str {
    match e {
        HttpError::TooLarge { .. } => "too_large",
        _ => "error",
    }
}

/// Past the limit, up to this much more is read and dropped before answering 413, so the
/// client sees the 413 instead of a reset stream; a bigger body is cut off.
const DISCARD_BYTES: usize = 4 * MAX_BODY_BYTES;

/// Read at most [`MAX_BODY_BYTES`]; a declared or actual larger body is a 413.
async fn read_body(mut body: Body) -> Result<Bytes, HttpError> {
    let too_large = HttpError::TooLarge {
        limit: MAX_BODY_BYTES,
    };
    let declared = body.size_hint().exact().unwrap_or(0);
    if declared > DISCARD_BYTES as u64 {
        return Err(too_large);
    }
    let mut buf = BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| HttpError::BodyRead(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total > DISCARD_BYTES {
            return Err(too_large);
        }
        if total <= MAX_BODY_BYTES {
            buf.extend_from_slice(&data);
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(too_large);
    }
    Ok(buf.freeze())
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(State(st): State<AppState>) -> Result<Json<serde_json::Value>, HttpError> {
    match st.readiness.check() {
        Ok(()) => Ok(Json(serde_json::json!({"status": "ready"}))),
        Err(why) => Err(HttpError::NotReady(why)),
    }
}

pub async fn metrics(State(st): State<AppState>) -> Result<Response, HttpError> {
    let text = metrics::encode(&st.registry).map_err(|e| HttpError::Encode(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

pub async fn recommendations(State(st): State<AppState>) -> Json<crate::recommendation::Snapshot> {
    Json(st.recommendations.snapshot())
}

pub async fn not_found() -> Response {
    let body = serde_json::json!({"error": "no such route"});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

pub async fn method_not_allowed() -> Response {
    let body = serde_json::json!({"error": "method not allowed"});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// Middleware: count requests by route and status code.
pub async fn count_requests(
    State(m): State<ServerMetrics>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    // Installed with `route_layer`, so only matched (fixed, low-cardinality) paths get here.
    let path = req.uri().path().to_string();
    m.http_in_flight.inc();
    // Decremented on drop, so a request cancelled by its client is not left counted.
    let _in_flight = InFlight(&m.http_in_flight);
    let resp = next.run(req).await;
    m.http_requests
        .get_or_create(&metrics::HttpLabels {
            path,
            code: resp.status().as_u16(),
        })
        .inc();
    resp
}

struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
