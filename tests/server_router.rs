//! The router driven in process with tower's `oneshot` (no socket): status codes, JSON
//! errors, readiness and metrics.

mod support_https;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use rightsizer::admission::Admitter;
use rightsizer::recommendation::Snapshot;
use rightsizer::server::{router, AppState, Readiness, ServerMetrics, MAX_BODY_BYTES};
use support_https::fixture;
use tower::ServiceExt;

fn state(ready: Arc<AtomicBool>) -> AppState {
    let mut registry = Registry::default();
    let metrics = ServerMetrics::register(&mut registry);
    let snap: Snapshot = serde_json::from_slice(&fixture("snapshot.json")).unwrap();
    AppState {
        admitter: Arc::new(Admitter::default()),
        recommendations: Arc::new(snap),
        readiness: Readiness::from_flag(ready),
        registry: Arc::new(registry),
        metrics,
        guard: Arc::default(),
    }
}

async fn call(
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
    let app = router(state(Arc::new(AtomicBool::new(true))));
    let (status, _, out) = call(&app, "GET", "/recommendations", Body::empty()).await;
    assert_eq!(status, 200);
    let got: Snapshot = serde_json::from_slice(&out).unwrap();
    let want: Snapshot = serde_json::from_slice(&fixture("snapshot.json")).unwrap();
    assert_eq!(got, want);
}

#[tokio::test]
async fn metrics_count_reviews_requests_and_latency() {
    let app = router(state(Arc::new(AtomicBool::new(true))));
    let body = fixture("pod-review.json");
    for _ in 0..3 {
        assert_eq!(call(&app, "POST", "/mutate", body.clone()).await.0, 200);
    }
    assert_eq!(call(&app, "POST", "/mutate", "x").await.0, 400);
    let (status, ct, out) = call(&app, "GET", "/metrics", Body::empty()).await;
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
