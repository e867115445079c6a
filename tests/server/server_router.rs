//! The routers driven in process with tower's `oneshot` (no socket): status codes, JSON
//! errors, readiness, metrics, which port serves what, and the bounds on one review
//! (caps, panics, deadline, in-flight and body-byte limits).

use crate::support_https;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use rightsizer::admission::{AdmitConfig, Admitter};
use rightsizer::policies::store::PolicyStore;
use rightsizer::server::guard::{ReviewGuard, ReviewLimits};
use rightsizer::server::metrics::ServerMetrics;
use rightsizer::server::readiness::Readiness;
use rightsizer::server::{admin_router, router, AppState, MAX_BODY_BYTES};
use rightsizer_core::cluster::NoFacts;
use rightsizer_core::recommendation::{
    ContainerKey, ContainerRecommendation, RecommendationSource, Snapshot,
};
use support_https::{fixture, hostile_pod_review};
use tower::ServiceExt;

pub(crate) fn state(ready: Arc<AtomicBool>) -> AppState {
    let snap: Snapshot = serde_json::from_slice(&fixture("snapshot.json")).unwrap();
    state_with(
        Arc::new(Admitter::default()),
        Arc::new(snap),
        Readiness::from_flag(ready),
        ReviewLimits::default(),
    )
}

fn state_with(
    admitter: Arc<Admitter>,
    recommendations: Arc<dyn RecommendationSource>,
    readiness: Readiness,
    limits: ReviewLimits,
) -> AppState {
    let mut registry = Registry::default();
    let metrics = ServerMetrics::register(&mut registry);
    AppState {
        admitter,
        recommendations,
        readiness,
        registry: Arc::new(registry),
        metrics,
        guard: Arc::new(ReviewGuard::new(limits)),
        report: Default::default(),
    }
}

/// An admitter with the repository's policies (they size `pod-review.json`) reading
/// recommendations from `recs`.
fn admitter_with(recs: Arc<dyn RecommendationSource>) -> Arc<Admitter> {
    let store = Arc::new(PolicyStore::new());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    assert!(rightsizer::policies::watch::load_dirs(&store, &[dir]).is_empty());
    store.mark_ready();
    Arc::new(Admitter::new(
        store,
        recs,
        Arc::new(NoFacts),
        AdmitConfig::default(),
    ))
}

/// A recommendation source with a bug: every lookup panics.
struct Panics;

impl RecommendationSource for Panics {
    fn get(&self, _: &ContainerKey) -> Option<ContainerRecommendation> {
        panic!("injected: a bug in a recommendation source")
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot::default()
    }
}

/// A recommendation source that takes its time.
struct Slow(Duration);

impl RecommendationSource for Slow {
    fn get(&self, _: &ContainerKey) -> Option<ContainerRecommendation> {
        std::thread::sleep(self.0);
        None
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot::default()
    }
}

async fn metrics_text(st: &AppState) -> String {
    let (status, _, out) = call(&admin_router(st.clone()), "GET", "/metrics", Body::empty()).await;
    assert_eq!(status, 200);
    String::from_utf8(out).unwrap()
}

/// The value of the sample `series` (exact labels) in `text`, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The response of an AdmissionReview answer, checked: same uid, allowed, no patch.
fn unchanged_answer(out: &[u8], uid: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(out).unwrap();
    let r = v["response"].clone();
    assert_eq!(r["uid"], uid, "{v}");
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none(), "{v}");
    r
}

fn uid_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["request"]["uid"].as_str().unwrap().to_string()
}

pub(crate) async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: impl Into<Body>,
) -> (u16, Option<String>, Vec<u8>) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, ct, body)
}

fn error_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["error"].as_str().expect("error field").to_string()
}

#[tokio::test]
async fn valid_review_is_answered_with_its_uid() {
    let app = router(state(Arc::new(AtomicBool::new(true))));
    for name in ["pod-review.json", "deployment-review.json"] {
        let body = fixture(name);
        let (status, ct, out) = call(&app, "POST", "/mutate?timeout=10s", body.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(ct.as_deref(), Some("application/json"));
        let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let resp: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(resp["response"]["uid"], req["request"]["uid"]);
        assert_eq!(resp["response"]["allowed"], true);
    }
}

#[tokio::test]
async fn garbage_gets_400_with_the_reason() {
    let app = router(state(Arc::new(AtomicBool::new(true))));
    let (status, ct, out) = call(&app, "POST", "/mutate", "\u{1}garbage").await;
    assert_eq!(status, 400);
    assert_eq!(ct.as_deref(), Some("application/json"));
    assert!(error_of(&out).contains("not JSON"), "{}", error_of(&out));

    let (status, _, out) = call(&app, "POST", "/mutate", r#"{"apiVersion":"v1"}"#).await;
    assert_eq!(status, 400);
    assert!(
        error_of(&out).contains("AdmissionReview"),
        "{}",
        error_of(&out)
    );
}

#[tokio::test]
async fn body_over_3_mib_gets_413_and_3_mib_does_not() {
    let app = router(state(Arc::new(AtomicBool::new(true))));
    let (status, _, out) = call(&app, "POST", "/mutate", vec![b' '; MAX_BODY_BYTES + 1]).await;
    assert_eq!(status, 413);
    assert!(error_of(&out).contains(&MAX_BODY_BYTES.to_string()));

    // Exactly at the limit the body is read (and rejected only as JSON).
    let (status, _, _) = call(&app, "POST", "/mutate", vec![b' '; MAX_BODY_BYTES]).await;
    assert_eq!(status, 400);

    // Far over the limit: refused from the declared length without reading.
    let (status, _, _) = call(&app, "POST", "/mutate", vec![b' '; 20 * MAX_BODY_BYTES]).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn readyz_follows_the_readiness_check() {
    let ready = Arc::new(AtomicBool::new(false));
    let app = router(state(ready.clone()));
    let (status, _, out) = call(&app, "GET", "/readyz", Body::empty()).await;
    assert_eq!(status, 503);
    assert!(error_of(&out).contains("not ready"));
    ready.store(true, Ordering::Release);
    assert_eq!(call(&app, "GET", "/readyz", Body::empty()).await.0, 200);
    assert_eq!(call(&app, "GET", "/healthz", Body::empty()).await.0, 200);
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let app = router(state(Arc::new(AtomicBool::new(true))));
    let (status, _, out) = call(&app, "GET", "/nope", Body::empty()).await;
    assert_eq!(status, 404);
    assert!(!error_of(&out).is_empty());
    let (status, _, out) = call(&app, "GET", "/mutate", Body::empty()).await;
    assert_eq!(status, 405);
    assert!(error_of(&out).contains("method"));
}

#[tokio::test]
async fn recommendations_are_the_snapshot() {
    let app = admin_router(state(Arc::new(AtomicBool::new(true))));
    let (status, _, out) = call(&app, "GET", "/recommendations", Body::empty()).await;
    assert_eq!(status, 200);
    let got: Snapshot = serde_json::from_slice(&out).unwrap();
    let want: Snapshot = serde_json::from_slice(&fixture("snapshot.json")).unwrap();
    assert_eq!(got, want);
}

#[tokio::test]
async fn metrics_count_reviews_requests_and_latency() {
    let st = state(Arc::new(AtomicBool::new(true)));
    let app = router(st.clone());
    let body = fixture("pod-review.json");
    for _ in 0..3 {
        assert_eq!(call(&app, "POST", "/mutate", body.clone()).await.0, 200);
    }
    assert_eq!(call(&app, "POST", "/mutate", "x").await.0, 400);
    let (status, ct, out) = call(&admin_router(st), "GET", "/metrics", Body::empty()).await;
    assert_eq!(status, 200);
    assert!(ct.unwrap().starts_with("application/openmetrics-text"));
    let text = String::from_utf8(out).unwrap();

    // Whatever kind/operation/outcome the admitter reports, three answered reviews and one
    // rejected body are counted.
    let answered: u64 = text
        .lines()
        .filter(|l| {
            l.starts_with("rightsizer_admission_reviews_total{")
                && !l.contains(r#"outcome="error""#)
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(answered, 3, "{text}");
    assert!(text.contains(r#"outcome="error"} 1"#), "{text}");
    assert!(
        text.contains("rightsizer_admission_duration_seconds_count 4"),
        "{text}"
    );
    assert!(text.contains(r#"rightsizer_admission_duration_seconds_bucket{le="0.00005"}"#));
    assert!(text.contains("rightsizer_admission_patch_operations_total"));
    assert!(
        text.contains(r#"rightsizer_http_requests_total{path="/mutate",code="200"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"rightsizer_http_requests_total{path="/mutate",code="400"} 1"#),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
}

/// The TLS port is for the apiserver: admission and probes. Usage data and metrics are
/// on the admin port only.
#[tokio::test]
async fn each_port_serves_its_own_routes() {
    let st = state(Arc::new(AtomicBool::new(true)));
    let (tls, admin) = (router(st.clone()), admin_router(st));
    let review = fixture("pod-review.json");
    for (app, method, path, want) in [
        (&tls, "POST", "/mutate", 200),
        (&tls, "GET", "/healthz", 200),
        (&tls, "GET", "/readyz", 200),
        (&tls, "GET", "/metrics", 404),
        (&tls, "GET", "/recommendations", 404),
        (&tls, "GET", "/report", 404),
        (&admin, "POST", "/mutate", 404),
        (&admin, "GET", "/healthz", 200),
        (&admin, "GET", "/readyz", 200),
        (&admin, "GET", "/metrics", 200),
        (&admin, "GET", "/recommendations", 200),
        (&admin, "GET", "/report", 200),
    ] {
        let body = if method == "POST" {
            Body::from(review.clone())
        } else {
            Body::empty()
        };
        assert_eq!(
            call(app, method, path, body).await.0,
            want,
            "{method} {path}"
        );
    }
}

/// A bug that panics inside a review: that review is admitted unchanged with its uid, the
/// panic is counted, and the next reviews are still answered.
#[tokio::test]
async fn a_panicking_review_is_admitted_unchanged_and_counted() {
    let st = state_with(
        admitter_with(Arc::new(Panics)),
        Arc::new(Snapshot::default()),
        Readiness::always(),
        ReviewLimits::default(),
    );
    let app = router(st.clone());
    let body = fixture("pod-review.json");
    for _ in 0..3 {
        let (status, _, out) = call(&app, "POST", "/mutate", body.clone()).await;
        assert_eq!(status, 200);
        let r = unchanged_answer(&out, &uid_of(&body));
        assert!(r["warnings"][0]
            .as_str()
            .unwrap()
            .contains("admitted unchanged"));
    }
    // A review that never reaches the recommendation source is answered as usual.
    let (status, _, _) = call(&app, "POST", "/mutate", fixture("deployment-review.json")).await;
    assert_eq!(status, 200);
    let text = metrics_text(&st).await;
    let panics =
        r#"rightsizer_admission_reviews_total{kind="Pod",operation="CREATE",outcome="panic"}"#;
    assert_eq!(sample(&text, panics), 3.0, "{text}");
}

/// Kinds and operations are metric labels from a closed set: ten thousand forged ones
/// count as `other` and leave `/metrics` small.
#[tokio::test]
async fn forged_kinds_and_operations_count_as_other() {
    let st = state(Arc::new(AtomicBool::new(true)));
    let app = router(st.clone());
    for i in 0..10_000 {
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": format!("u{i}"),
                "kind": {"group": format!("g{i}.example"), "version": "v1", "kind": format!("Forged{i}")},
                "namespace": "shop",
                "operation": format!("OP{i}"),
                "object": {"kind": format!("Forged{i}")},
            }
        });
        let (status, _, _) = call(&app, "POST", "/mutate", body.to_string()).await;
        assert_eq!(status, 200);
    }
    let text = metrics_text(&st).await;
    assert!(text.len() < 64 * 1024, "/metrics is {} bytes", text.len());
    let other =
        r#"rightsizer_admission_reviews_total{kind="other",operation="other",outcome="skipped"}"#;
    assert_eq!(sample(&text, other), 10_000.0, "{text}");
    assert!(!text.contains("Forged"));
}

/// Objects over a cap are admitted unchanged at once with a warning naming the cap and
/// counted as capped (the cost is in the benchmark, tests/bench/run): 90,000 tiny
/// containers in 2.7 MB are over the object-byte cap, 40,000 in 1.2 MB over the container
/// cap.
#[tokio::test]
async fn pods_over_a_cap_are_admitted_unchanged() {
    let st = state(Arc::new(AtomicBool::new(true)));
    for (n, cap) in [(90_000, "bytes"), (40_000, "containers")] {
        let body = hostile_pod_review(n, "big-1");
        assert!(body.len() < MAX_BODY_BYTES, "{}", body.len());
        let (status, _, out) = call(&router(st.clone()), "POST", "/mutate", body).await;
        assert_eq!(status, 200);
        let r = unchanged_answer(&out, "big-1");
        let warning = r["warnings"][0].as_str().unwrap();
        assert!(
            warning.contains(cap) && warning.contains("admitted unchanged"),
            "{warning}"
        );
    }
    let text = metrics_text(&st).await;
    let capped =
        r#"rightsizer_admission_reviews_total{kind="Pod",operation="CREATE",outcome="capped"}"#;
    assert_eq!(sample(&text, capped), 2.0, "{text}");
}

/// A review still computing at its deadline (the apiserver's `?timeout=` minus a
/// margin) is answered "admitted unchanged" with its uid.
#[tokio::test]
async fn a_review_past_its_deadline_is_admitted_unchanged() {
    let st = state_with(
        admitter_with(Arc::new(Slow(Duration::from_secs(2)))),
        Arc::new(Snapshot::default()),
        Readiness::always(),
        // Every body on a blocking thread (by default small ones are answered inline).
        ReviewLimits {
            inline_max_bytes: 0,
            ..ReviewLimits::default()
        },
    );
    let body = fixture("pod-review.json");
    let (status, _, out) = call(
        &router(st.clone()),
        "POST",
        "/mutate?timeout=1s",
        body.clone(),
    )
    .await;
    assert_eq!(status, 200);
    let r = unchanged_answer(&out, &uid_of(&body));
    assert!(
        r["warnings"][0].as_str().unwrap().contains("in time"),
        "{r}"
    );
    let text = metrics_text(&st).await;
    let timeout =
        r#"rightsizer_admission_reviews_total{kind="Pod",operation="CREATE",outcome="timeout"}"#;
    assert_eq!(sample(&text, timeout), 1.0, "{text}");
}

/// A request body that never ends, as a channel the test holds.
fn stalled_body(
    first: &[u8],
) -> (
    futures::channel::mpsc::Sender<Result<hyper::body::Frame<Bytes>, Infallible>>,
    Body,
) {
    let (mut tx, rx) = futures::channel::mpsc::channel(4);
    tx.try_send(Ok(hyper::body::Frame::data(Bytes::copy_from_slice(first))))
        .unwrap();
    (tx, Body::new(http_body_util::StreamBody::new(rx)))
}

/// Past the in-flight limit `/mutate` answers 503 with `Retry-After` at once, without
/// reading the body; the slot comes back when the request in flight ends.
#[tokio::test]
async fn past_the_in_flight_limit_mutate_answers_503_with_retry_after() {
    let st = state_with(
        Arc::new(Admitter::default()),
        Arc::new(Snapshot::default()),
        Readiness::always(),
        ReviewLimits {
            max_in_flight: 1,
            ..ReviewLimits::default()
        },
    );
    let app = router(st.clone());
    let body = fixture("pod-review.json");
    let (tx, stalled) = stalled_body(&body[..10]);
    let first = tokio::spawn({
        let app = app.clone();
        async move { call(&app, "POST", "/mutate", stalled).await.0 }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let req = http::Request::post("/mutate")
        .body(Body::from(body.clone()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    drop(tx); // the first body ends (truncated: 400)
    assert_eq!(first.await.unwrap(), 400);
    assert_eq!(call(&app, "POST", "/mutate", body).await.0, 200);
}

/// Body bytes buffered at once are bounded: a body whose declared length does not fit
/// the budget is refused (503) before it is read.
#[tokio::test]
async fn past_the_body_byte_budget_mutate_answers_503() {
    let st = state_with(
        Arc::new(Admitter::default()),
        Arc::new(Snapshot::default()),
        Readiness::always(),
        ReviewLimits {
            max_buffered_bytes: 64 * 1024,
            ..ReviewLimits::default()
        },
    );
    let app = router(st);
    let (status, _, _) = call(&app, "POST", "/mutate", hostile_pod_review(3_000, "u")).await;
    assert_eq!(status, 503);
    assert_eq!(
        call(&app, "POST", "/mutate", fixture("pod-review.json"))
            .await
            .0,
        200
    );
}

/// A body that stops arriving gets 408 after the body timeout, and its slot is free again.
#[tokio::test]
async fn a_stalled_body_gets_408_and_releases_its_slot() {
    let st = state_with(
        Arc::new(Admitter::default()),
        Arc::new(Snapshot::default()),
        Readiness::always(),
        ReviewLimits {
            max_in_flight: 1,
            body_timeout: Duration::from_millis(300),
            ..ReviewLimits::default()
        },
    );
    let app = router(st.clone());
    let body = fixture("pod-review.json");
    let (_tx, stalled) = stalled_body(&body[..10]);
    let (status, _, out) = call(&app, "POST", "/mutate", stalled).await;
    assert_eq!(status, 408);
    assert!(error_of(&out).contains("in time"));
    assert_eq!(call(&app, "POST", "/mutate", body).await.0, 200);
    let text = metrics_text(&st).await;
    assert_eq!(
        sample(
            &text,
            r#"rightsizer_admission_reviews_total{kind="",operation="",outcome="body_timeout"}"#
        ),
        1.0,
        "{text}"
    );
}

// ---- memory budget of large reviews (issue 10) ----

/// Large reviews draw on one memory budget in proportion to their bodies: when it is
/// spent, the excess are answered 503 with `Retry-After` (the apiserver retries, then
/// fails open), none is refused, and the replica keeps answering once the budget is back.
#[tokio::test]
async fn past_the_memory_budget_large_reviews_get_503_and_none_is_refused() {
    let body = fixture("pod-review.json");
    let per_byte = 16;
    let st = state_with(
        admitter_with(Arc::new(Slow(Duration::from_millis(400)))),
        Arc::new(Snapshot::default()),
        Readiness::always(),
        ReviewLimits {
            // Every body is a large one, and the budget holds two and a half.
            inline_max_bytes: 0,
            cost_per_body_byte: per_byte,
            heavy_budget_bytes: (2 * body.len() + body.len() / 2) * per_byte,
            budget_wait: Duration::from_millis(100),
            workers: 8,
            ..ReviewLimits::default()
        },
    );
    let app = router(st.clone());
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(async move {
                let req = http::Request::post("/mutate?timeout=10s")
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap();
                let resp = app.oneshot(req).await.unwrap();
                let status = resp.status().as_u16();
                let retry = resp.headers().get("retry-after").cloned();
                let out = resp.into_body().collect().await.unwrap().to_bytes();
                (status, retry, out)
            })
        })
        .collect();
    let (mut answered, mut busy) = (0, 0);
    for c in calls {
        let (status, retry, out) = c.await.unwrap();
        match status {
            200 => {
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(v["response"]["allowed"], true, "{v}");
                assert_eq!(v["response"]["uid"], uid_of(&body).as_str());
                answered += 1;
            }
            503 => {
                assert_eq!(retry.unwrap(), "1");
                busy += 1;
            }
            other => panic!("status {other}: {}", String::from_utf8_lossy(&out)),
        }
    }
    assert_eq!((answered, busy), (2, 4));
    let text = metrics_text(&st).await;
    let series = r#"rightsizer_admission_reviews_total{kind="",operation="",outcome="busy"}"#;
    assert_eq!(sample(&text, series), 4.0, "{text}");
    // The budget came back with the answers.
    assert_eq!(call(&app, "POST", "/mutate", body).await.0, 200);
}
