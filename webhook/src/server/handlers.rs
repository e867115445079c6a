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
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::error::HttpError;
use super::guard::ReviewSlot;
use super::metrics::{self, ServerMetrics};
use super::AppState;
use crate::admission::{self, Envelope, Outcome, RequestIn, ReviewError, Reviewed};

/// Largest AdmissionReview body accepted (the apiserver's own request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// `POST /mutate[?timeout=..]`: bounded by [`super::guard`]; a review of a body over
/// [`ReviewLimits::inline_max_bytes`](super::guard::ReviewLimits) runs on a blocking thread (one
/// per core, within the memory budget: 503 when it is spent) and is answered "admitted
/// unchanged" when it does not finish before the deadline the apiserver's `?timeout=`
/// sets; a smaller one is answered inline.
///
/// Each review runs in a `review` span (uid, kind, namespace, name, operation, outcome,
/// duration_ms): every line logged while reviewing carries them. A review that patched or
/// admitted with a warning ends with one info line; the others (unchanged, skipped, and
/// failures already logged where they happened) with a debug line.
pub async fn mutate(State(st): State<AppState>, req: Request) -> Result<Response, HttpError> {
    let started = Instant::now();
    let span = tracing::info_span!(
        "review",
        uid = Empty,
        kind = Empty,
        namespace = Empty,
        name = Empty,
        operation = Empty,
        outcome = Empty,
        duration_ms = Empty,
    );
    let result = review(&st, req, started, &span)
        .instrument(span.clone())
        .await;
    let took = started.elapsed();
    let outcome = match &result {
        Ok(r) => {
            st.metrics.observe_review(r, took);
            r.outcome.as_str()
        }
        Err(e) => {
            st.metrics.observe_rejected(outcome_of(e), took);
            outcome_of(e)
        }
    };
    span.record("outcome", outcome);
    // Microsecond resolution: a shortest-form number, not 1.2083389999999998.
    span.record("duration_ms", (took.as_secs_f64() * 1e6).round() / 1e3);
    let _entered = span.enter();
    match &result {
        Ok(r) if matches!(r.outcome, Outcome::Patched) => {
            tracing::info!(patch_ops = r.patch_ops, "review patched");
        }
        Ok(r) if matches!(r.outcome, Outcome::Invalid | Outcome::Capped) => {
            tracing::info!("review admitted unchanged with a warning");
        }
        _ => tracing::debug!("review answered"),
    }
    let r = result?;
    Ok(([(header::CONTENT_TYPE, "application/json")], r.body).into_response())
}

/// Fill the span's fields from the parsed request.
fn describe(span: &Span, req: &RequestIn<'_>) {
    span.record("uid", req.uid());
    span.record("kind", req.kind_label());
    span.record("namespace", req.namespace());
    span.record("name", req.name());
    span.record("operation", req.operation_label());
}

async fn review(
    st: &AppState,
    req: Request,
    started: Instant,
    span: &Span,
) -> Result<Reviewed, HttpError> {
    let guard = &st.guard;
    let deadline = guard.deadline(started.into(), req.uri().query());
    let mut slot = guard.enter().ok_or(HttpError::Busy)?;
    let body = tokio::time::timeout(
        guard.limits.body_timeout,
        read_body(req.into_body(), &mut slot),
    )
    .await
    .map_err(|_| HttpError::BodyTimeout)??;

    if body.len() <= guard.limits.inline_max_bytes {
        // Small: bounded cost, answered here (`answer` contains its own panics).
        let req = admission::parse(&body).inspect_err(|e| {
            tracing::info!(error = %e, "rejected review body");
        })?;
        describe(span, &req);
        return Ok(st.admitter.answer(&req));
    }
    let Some(worker) = guard.worker(body.len(), deadline).await else {
        return Err(HttpError::Busy);
    };
    let (env_tx, mut env_rx) = tokio::sync::oneshot::channel::<Envelope>();
    let admitter = st.admitter.clone();
    let span = span.clone();
    // The compute slot is held until the work ends, even if the answer went out first.
    let work = tokio::task::spawn_blocking(move || {
        let _worker = worker;
        let _entered = span.enter();
        let req = admission::parse(&body)?;
        describe(&span, &req);
        let _ = env_tx.send(req.envelope());
        Ok::<_, ReviewError>(admitter.answer(&req))
    });
    let late = match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(Ok(r))) => return Ok(r),
        Ok(Ok(Err(e))) => {
            tracing::info!(error = %e, "rejected review body");
            return Err(HttpError::from(e));
        }
        Ok(Err(join)) => {
            // `answer` contains its own panics; this is one in parsing or encoding.
            tracing::error!(error = %join, "review task failed");
            (
                Outcome::Panicked,
                "internal error while reviewing; admitted unchanged",
            )
        }
        Err(_) => {
            tracing::warn!("review passed its deadline; admitted unchanged");
            (
                Outcome::TimedOut,
                "review did not finish in time; admitted unchanged",
            )
        }
    };
    match env_rx.try_recv() {
        Ok(env) => Ok(env.unchanged(late.0, late.1)),
        // Not even parsed: there is no uid to answer with.
        Err(_) => Err(HttpError::Busy),
    }
}

fn outcome_of(e: &HttpError) -> &'static str {
    match e {
        HttpError::TooLarge { .. } => "too_large",
        HttpError::Busy => "busy",
        HttpError::BodyTimeout => "body_timeout",
        _ => "error",
    }
}

/// Past the limit, up to this much more is read and dropped before answering 413, so the
/// client sees the 413 instead of a reset stream; a bigger body is cut off.
const DISCARD_BYTES: usize = 4 * MAX_BODY_BYTES;

/// Read at most [`MAX_BODY_BYTES`], reserving buffered bytes in `slot` as they arrive;
/// a declared or actual larger body is a 413, a spent byte budget a 503.
async fn read_body(mut body: Body, slot: &mut ReviewSlot) -> Result<Bytes, HttpError> {
    let too_large = HttpError::TooLarge {
        limit: MAX_BODY_BYTES,
    };
    let declared = body.size_hint().exact().unwrap_or(0);
    if declared > DISCARD_BYTES as u64 {
        return Err(too_large);
    }
    let declared = declared as usize;
    let mut buf = BytesMut::new();
    if declared <= MAX_BODY_BYTES {
        // Reserve the declared length up front: refused before a byte is read.
        if !slot.reserve(declared) {
            return Err(HttpError::Busy);
        }
        buf.reserve(declared);
    }
    let mut reserved = declared.min(MAX_BODY_BYTES);
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
            if total > reserved {
                if !slot.reserve(total - reserved) {
                    return Err(HttpError::Busy);
                }
                reserved = total;
            }
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

pub async fn recommendations(
    State(st): State<AppState>,
) -> Json<rightsizer_core::recommendation::Snapshot> {
    Json(st.recommendations.snapshot())
}

/// `GET /report[?format=html|json|csv]`: the savings report of the recommendations
/// `/recommendations` serves at this moment (the same snapshot).
pub async fn report(
    State(st): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<ReportQuery>,
) -> Response {
    use rightsizer_core::report::{csv, html};
    let report = st.report.report(st.recommendations.snapshot()).await;
    match q.format.as_deref() {
        Some("json") => Json(report).into_response(),
        Some("csv") => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            csv::render(&report),
        )
            .into_response(),
        None | Some("html") => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // Self-contained: nothing may be loaded from elsewhere; the one inline
                // script is the namespace filter.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:",
                ),
            ],
            html::render(&report),
        )
            .into_response(),
        Some(other) => {
            let body = serde_json::json!({"error": format!("format {other:?}: html, json or csv")});
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct ReportQuery {
    format: Option<String>,
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
