//! `rightsizer serve` end to end over real TLS on loopback: HTTP/2 and HTTP/1.1 by
//! ALPN, certificate rotation through a Kubernetes-style `..data` symlink swap,
//! malformed and oversized bodies, graceful shutdown, `--self-signed` and the admin port.

mod support_https;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rightsizer::certs::{Ca, Serving};
use rightsizer::recommendation::Snapshot;
use support_https::{client_config, fixture, leaf_der, Conn, Proto, Reply, SecretDir, Server};

const MUTATE: &str = "/mutate?timeout=10s";

/// When a request succeeded and the certificate its connection was served.
type Seen = (Instant, Vec<u8>);

fn pair(ca: &Ca) -> Serving {
    ca.issue_serving(&["localhost".to_string(), "127.0.0.1".to_string()], 30)
        .unwrap()
}

fn start_with_files(tmp: &tempfile::TempDir, p: &Serving) -> (Server, SecretDir) {
    let secret_dir = tmp.path().join("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    let secret = SecretDir::new(&secret_dir, &p.cert_pem, &p.key_pem);
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let server = Server::start(
        &[
            "--tls-cert",
            secret.cert().to_str().unwrap(),
            "--tls-key",
            secret.key().to_str().unwrap(),
            "--policies",
            policies.to_str().unwrap(),
        ],
        tmp.path().join("serve.log"),
    );
    (server, secret)
}

/// The response must be an AdmissionReview v1 answering `request`: same uid, allowed,
/// and a patch only with `patchType: JSONPatch` that decodes and applies to the object.
/// Returns the number of patch operations.
fn check_review(reply: &Reply, request: &[u8]) -> usize {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let req: serde_json::Value = serde_json::from_slice(request).unwrap();
    let v = reply.json();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    let resp = &v["response"];
    assert_eq!(resp["uid"], req["request"]["uid"]);
    assert_eq!(resp["allowed"], true);
    match resp.get("patch") {
        Some(p) => {
            assert_eq!(resp["patchType"], "JSONPatch");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(p.as_str().expect("patch is a string"))
                .expect("patch is base64");
            let patch: json_patch::Patch = serde_json::from_slice(&raw).expect("JSONPatch");
            assert!(
                !patch.0.is_empty(),
                "a patch is sent only when there is a change"
            );
            let mut obj = req["request"]["object"].clone();
            json_patch::patch(&mut obj, &patch).expect("patch applies to the object");
            patch.0.len()
        }
        None => {
            assert!(resp.get("patchType").is_none(), "patchType without patch");
            0
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_over_http2_and_http1_with_a_client_trusting_only_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::generate("e2e CA", 30).unwrap();
    let (server, _secret) = start_with_files(&tmp, &pair(&ca));
    let ca_pem = ca.cert_pem().to_string();

    for (proto, alpn, version) in [
        (Proto::H2, &b"h2"[..], http::Version::HTTP_2),
        (Proto::H1, &b"http/1.1"[..], http::Version::HTTP_11),
    ] {
        let mut conn = Conn::connect(server.addr, client_config(&[&ca_pem], proto), proto)
            .await
            .unwrap();
        assert_eq!(conn.alpn.as_deref(), Some(alpn));
        // With the repository's policies the Pod's undeclared sidecar gets the policy
        // defaults; the Deployment is left alone (resources are sized on Pods).
        for (name, patched) in [("pod-review.json", true), ("deployment-review.json", false)] {
            let body = fixture(name);
            let reply = conn.post(MUTATE, body.clone()).await.unwrap();
            assert_eq!(reply.version, version);
            assert_eq!(check_review(&reply, &body) > 0, patched, "{name}");
        }

        let reply = conn.post(MUTATE, "{not json").await.unwrap();
        assert_eq!(reply.status, 400);
        let err = reply.json()["error"].as_str().unwrap().to_string();
        assert!(err.contains("not JSON"), "{err}");

        let reply = conn.post(MUTATE, r#"{"kind":"Pod"}"#).await.unwrap();
        assert_eq!(reply.status, 400);
        assert!(!reply.json()["error"].as_str().unwrap().is_empty());

        let big = vec![b' '; rightsizer::server::MAX_BODY_BYTES + 1];
        let reply = conn.post(MUTATE, big).await.unwrap();
        assert_eq!(reply.status, 413);
        assert!(reply.json()["error"].as_str().unwrap().contains("over"));

        // The connection survives the rejections.
        let body = fixture("pod-review.json");
        check_review(&conn.post(MUTATE, body.clone()).await.unwrap(), &body);

        for path in ["/healthz", "/readyz"] {
            assert_eq!(conn.get(path).await.unwrap().status, 200, "{path}");
        }
    }

    // Counted by the metrics endpoint, over HTTPS too.
    let mut conn = Conn::connect(server.addr, client_config(&[&ca_pem], Proto::H2), Proto::H2)
        .await
        .unwrap();
    let m = conn.get("/metrics").await.unwrap();
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    assert!(
        text.contains(r#"rightsizer_http_requests_total{path="/mutate",code="413"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"rightsizer_http_requests_total{path="/mutate",code="400"} 4"#),
        "{text}"
    );
    assert!(
        text.contains("rightsizer_admission_duration_seconds_count 12"),
        "{text}"
    );

    // A client that trusts another CA cannot talk to it.
    let other = Ca::generate("other CA", 30).unwrap();
    let refused = Conn::connect(
        server.addr,
        client_config(&[other.cert_pem()], Proto::H2),
        Proto::H2,
    )
    .await;
    assert!(
        refused.is_err(),
        "handshake must fail against an untrusted CA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_by_symlink_swap_drops_no_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca1, ca2, ca3) = (
        Ca::generate("old CA", 30).unwrap(),
        Ca::generate("new CA", 30).unwrap(),
        Ca::generate("third CA", 30).unwrap(),
    );
    let (p1, p2, p3) = (pair(&ca1), pair(&ca2), pair(&ca3));
    let (server, mut secret) = start_with_files(&tmp, &p1);
    let (ca1_pem, ca2_pem) = (ca1.cert_pem().to_string(), ca2.cert_pem().to_string());
    let trust = |proto| client_config(&[&ca1_pem, &ca2_pem], proto);
    let addr = server.addr;
    let body = fixture("pod-review.json");

    // The client: a fresh connection per request (alternating HTTP/2 and HTTP/1.1) so
    // every handshake shows the current certificate, plus one long-lived HTTP/2
    // connection opened before the rotation that must keep working.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut long = Conn::connect(addr, trust(Proto::H2), Proto::H2)
        .await
        .unwrap();
    let client = {
        let (stop, seen, failures, body) =
            (stop.clone(), seen.clone(), failures.clone(), body.clone());
        let (t1, t2) = (trust(Proto::H1), trust(Proto::H2));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let proto = if n % 2 == 0 { Proto::H1 } else { Proto::H2 };
                let cfg = if proto == Proto::H1 {
                    t1.clone()
                } else {
                    t2.clone()
                };
                let attempt = async {
                    let mut c = Conn::connect(addr, cfg, proto).await?;
                    let r = c.post(MUTATE, body.clone()).await?;
                    let r2 = long.post(MUTATE, body.clone()).await?;
                    Ok::<_, support_https::Error>((c.peer_cert, r, r2))
                };
                match attempt.await {
                    Ok((cert, r, r2)) if r.status == 200 && r2.status == 200 => {
                        seen.lock().unwrap().push((Instant::now(), cert))
                    }
                    Ok((_, r, r2)) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {} / {}", r.status, r2.status)),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let wait_for_cert = |want: Vec<u8>, since: Instant| {
        let seen = seen.clone();
        async move {
            loop {
                if let Some((at, _)) = seen
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(at, c)| *at > since && *c == want)
                {
                    return Some(*at - since);
                }
                if since.elapsed() > Duration::from_secs(15) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let start = Instant::now();
    assert!(
        wait_for_cert(leaf_der(&p1.cert_pem), start).await.is_some(),
        "old cert served first"
    );

    let swapped = Instant::now();
    secret.update(&p2.cert_pem, &p2.key_pem);
    let took = wait_for_cert(leaf_der(&p2.cert_pem), swapped).await;
    assert!(
        took.is_some(),
        "new certificate not served within 15 s; failures {:?}; log:\n{}",
        failures.lock().unwrap(),
        server.logs()
    );
    eprintln!("new certificate served {:?} after the swap", took.unwrap());

    // A half-rotated pair (new certificate, old key) is refused; the last good pair stays.
    secret.update(&p3.cert_pem, &p2.key_pem);
    let refused_at = Instant::now();
    let mut metrics_conn = Conn::connect(addr, trust(Proto::H2), Proto::H2)
        .await
        .unwrap();
    loop {
        let text =
            String::from_utf8(metrics_conn.get("/metrics").await.unwrap().body.to_vec()).unwrap();
        if text.contains(r#"rightsizer_tls_reloads_total{result="error"} 1"#) {
            assert!(
                text.contains(r#"rightsizer_tls_reloads_total{result="success"} 1"#),
                "{text}"
            );
            break;
        }
        assert!(
            refused_at.elapsed() < Duration::from_secs(15),
            "broken pair not noticed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_broken = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();

    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "failed requests during rotation: {failures:?}"
    );
    let seen = seen.lock().unwrap();
    let later: Vec<_> = seen.iter().filter(|(at, _)| *at > after_broken).collect();
    assert!(!later.is_empty());
    assert!(
        later.iter().all(|(_, c)| *c == leaf_der(&p2.cert_pem)),
        "broken pair must not be served"
    );
    eprintln!("{} requests, none failed", seen.len());
}

/// A request whose body is still arriving when SIGTERM comes must be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_stops_accepting() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::generate("e2e CA", 30).unwrap();
    let (mut server, _secret) = start_with_files(&tmp, &pair(&ca));
    let ca_pem = ca.cert_pem().to_string();
    let body = fixture("deployment-review.json");
    let (first, rest) = body.split_at(body.len() / 2);

    let mut in_flight = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = Conn::connect(server.addr, client_config(&[&ca_pem], proto), proto)
            .await
            .unwrap();
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let req =
            tokio::spawn(
                async move { conn.send("POST", MUTATE, StreamBody::new(rx).boxed()).await },
            );
        use futures::SinkExt;
        tx.send(Ok(Frame::data(Bytes::copy_from_slice(first))))
            .await
            .unwrap();
        in_flight.push((tx, req));
    }
    // Both requests are being handled (the third is the metrics request itself).
    let mut probe = Conn::connect(server.addr, client_config(&[&ca_pem], Proto::H1), Proto::H1)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let text = String::from_utf8(probe.get("/metrics").await.unwrap().body.to_vec()).unwrap();
        if text.contains("rightsizer_http_in_flight_requests 3") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "requests not in flight:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.sigterm();

    // The listener closes; in-flight requests are not cut.
    let started = Instant::now();
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "listener still open after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.wait_exit(Duration::from_millis(1)).is_none(),
        "exited with requests in flight"
    );

    for (mut tx, req) in in_flight {
        use futures::SinkExt;
        tx.send(Ok(Frame::data(Bytes::copy_from_slice(rest))))
            .await
            .unwrap();
        drop(tx);
        let reply = req.await.unwrap().unwrap();
        check_review(&reply, &body);
    }
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "serve did not exit cleanly: {status:?}\n{}",
        server.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_ca_bundle_admin_port_and_recommendations() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_out = tmp.path().join("ca.pem");
    let snapshot_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/server/snapshot.json");
    let server = Server::start(
        &[
            "--self-signed",
            "--ca-out",
            ca_out.to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
            "--recommendations",
            snapshot_path.to_str().unwrap(),
        ],
        tmp.path().join("serve.log"),
    );
    let ca_pem = std::fs::read_to_string(&ca_out).unwrap();
    let want: Snapshot = serde_json::from_slice(&fixture("snapshot.json")).unwrap();

    let mut conn = Conn::connect(server.addr, client_config(&[&ca_pem], Proto::H2), Proto::H2)
        .await
        .unwrap();
    let body = fixture("pod-review.json");
    check_review(&conn.post(MUTATE, body.clone()).await.unwrap(), &body);
    let got: Snapshot =
        serde_json::from_slice(&conn.get("/recommendations").await.unwrap().body).unwrap();
    assert_eq!(got, want);

    let admin = server.admin.unwrap();
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            support_https::plain_get(admin, path).await.unwrap().status,
            200
        );
    }
    let got: Snapshot = serde_json::from_slice(
        &support_https::plain_get(admin, "/recommendations")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(got, want);
    let m = support_https::plain_get(admin, "/metrics").await.unwrap();
    assert!(m
        .content_type
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    assert!(
        text.contains("rightsizer_admission_reviews_total{"),
        "{text}"
    );
    assert!(
        text.contains(r#"rightsizer_http_requests_total{path="/recommendations",code="200"} 2"#),
        "{text}"
    );
    // The admin port does not admit.
    assert_eq!(
        support_https::plain_get(admin, "/mutate")
            .await
            .unwrap()
            .status,
        404
    );
}
