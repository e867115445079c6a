//! `GET /report` in process: the formats the admin port answers with, and a refused one.
//! The figures themselves are checked against a real Prometheus in report_browser.rs.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Body;
use serde_json::Value;

use crate::server_router::{call, state};

#[tokio::test]
async fn the_report_comes_as_html_json_or_csv_of_the_served_snapshot() {
    let app = rightsizer::server::admin_router(state(Arc::new(AtomicBool::new(true))));
    // (query, content type, what the body starts with)
    for (query, ctype, starts) in [
        ("", "text/html; charset=utf-8", "<!doctype html>"),
        (
            "?format=html",
            "text/html; charset=utf-8",
            "<!doctype html>",
        ),
        ("?format=json", "application/json", "{"),
        (
            "?format=csv",
            "text/csv; charset=utf-8",
            "namespace,kind,workload,container,",
        ),
    ] {
        let (status, ct, out) = call(&app, "GET", &format!("/report{query}"), Body::empty()).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(ct.as_deref(), Some(ctype), "{query}");
        assert!(String::from_utf8_lossy(&out).starts_with(starts), "{query}");
    }
    // The snapshot's one container, with its figures (no cache: nothing runs, no pods).
    let (_, _, out) = call(&app, "GET", "/report?format=json", Body::empty()).await;
    let r: Value = serde_json::from_slice(&out).unwrap();
    let c = &r["workloads"][0]["containers"][0];
    assert_eq!(c["key"], "shop/Deployment/api/app");
    assert_eq!(c["memory"]["recommendedRequest"], 486_539_264);
    assert_eq!(c["memory"]["usedP95"], 400_000_000.0);
    assert_eq!(
        (c["pods"].as_u64(), c["memory"]["freed"].as_i64()),
        (Some(0), Some(0))
    );

    let (status, _, out) = call(&app, "GET", "/report?format=pdf", Body::empty()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&out).contains("html, json or csv"));
}
