//! `rightsizer serve` end to end over real TLS on loopback: HTTP/2 and HTTP/1.1 by
//! ALPN, certificate rotation through a Kubernetes-style `..data` symlink swap,
//! malformed and oversized bodies, graceful shutdown, `--self-signed` and the admin port,
//! and the listeners' limits (slow heads, slow bodies, idle connections, stream floods,
//! the connection cap), each shown to release what it held within its timeout.

use crate::support_https;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rightsizer::certs::{Ca, Serving};
use rightsizer_core::recommendation::Snapshot;
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
            "--admin-listen",
            "127.0.0.1:0",
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

    // Counted by the metrics endpoint (on the admin port only).
    let text = server.metrics().await;
    // The serving certificate's expiry (issued for 30 days) is exported.
    let not_after = support_https::sample(&text, "rightsizer_tls_cert_not_after_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let days = (not_after - now) / 86400.0;
    assert!(
        (29.9..30.1).contains(&days),
        "expires in {days} days:\n{text}"
    );
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
    loop {
        let text = server.metrics().await;
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
    let started = Instant::now();
    loop {
        let text = server.metrics().await;
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
    // Usage data and metrics are not served to whoever reaches the HTTPS port.
    for path in ["/recommendations", "/metrics"] {
        assert_eq!(conn.get(path).await.unwrap().status, 404, "{path}");
    }

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
        text.contains(r#"rightsizer_http_requests_total{path="/recommendations",code="200"} 1"#),
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

// ------------------------------------------------------------ listener limits

/// The limits' timeouts, shortened by flag so a test takes seconds.
const SHORT: Duration = Duration::from_secs(1);
/// What a timeout may overrun by on a busy machine before a test calls it a failure
/// (a correctness bound, not a speed figure: without the timeout nothing closes at all).
const SLACK: Duration = Duration::from_secs(4);

fn start_limited(tmp: &tempfile::TempDir, extra: &[&str]) -> (Server, String) {
    let ca_out = tmp.path().join("ca.pem");
    let mut args = vec![
        "--self-signed",
        "--ca-out",
        ca_out.to_str().unwrap(),
        "--admin-listen",
        "127.0.0.1:0",
        "--header-timeout",
        "1s",
        "--body-timeout",
        "1s",
        "--idle-timeout",
        "1s",
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args, tmp.path().join("serve.log"));
    let ca = std::fs::read_to_string(&ca_out).unwrap();
    (server, ca)
}

/// Wait until the metric `series` has the value `want`; how long that took.
async fn metric_reaches(server: &Server, series: &str, want: f64) -> Duration {
    let start = Instant::now();
    loop {
        let text = server.metrics().await;
        if support_https::sample(&text, series) == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < SHORT + SLACK,
            "{series} never reached {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const WEBHOOK_CONNS: &str = r#"rightsizer_http_connections{listener="webhook"}"#;
const IN_FLIGHT: &str = "rightsizer_http_in_flight_requests";

/// Write `head` and then one more header line every 100 ms, as long as the server keeps
/// the connection open; how long it stayed open.
async fn trickle_head<S>(stream: S) -> Duration
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = tokio::io::split(stream);
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let _ = wr
            .write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\n")
            .await;
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if wr
                .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            let _ = wr.flush().await;
        }
    });
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(SHORT + SLACK, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {} // e.g. a 408 before the close
            }
        }
    })
    .await;
    writer.abort();
    assert!(
        closed.is_ok(),
        "a trickled request head kept its connection open"
    );
    start.elapsed()
}

/// A client that never finishes its request head is cut off after the header timeout, on
/// the TLS port and on the admin port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_request_heads_are_cut_off_on_both_ports() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, ca) = start_limited(&tmp, &[]);
    let tls = support_https::raw_tls(server.addr, client_config(&[&ca], Proto::H1))
        .await
        .unwrap();
    let took = trickle_head(tls).await;
    eprintln!("TLS port: trickled head closed after {took:?}");
    metric_reaches(&server, WEBHOOK_CONNS, 0.0).await;

    let plain = tokio::net::TcpStream::connect(server.admin.unwrap())
        .await
        .unwrap();
    let took = trickle_head(plain).await;
    eprintln!("admin port: trickled head closed after {took:?}");
}

/// A body that stops arriving is answered 408 after the body timeout, over HTTP/1.1 and
/// HTTP/2, and the request no longer counts as in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_get_408_within_the_body_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, ca) = start_limited(&tmp, &[]);
    let body = fixture("pod-review.json");
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = Conn::connect(server.addr, client_config(&[&ca], proto), proto)
            .await
            .unwrap();
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        use futures::SinkExt;
        tx.send(Ok(Frame::data(Bytes::copy_from_slice(&body[..100]))))
            .await
            .unwrap();
        let start = Instant::now();
        let reply = conn
            .send("POST", MUTATE, StreamBody::new(rx).boxed())
            .await
            .unwrap();
        let took = start.elapsed();
        assert_eq!(reply.status, 408, "{proto:?}");
        assert!(took < SHORT + SLACK, "{proto:?}: {took:?}");
        eprintln!("{proto:?}: stalled body answered 408 after {took:?}");
        drop(tx);
    }
    // Only the metrics request itself is in flight.
    metric_reaches(&server, IN_FLIGHT, 1.0).await;
}

/// Connections with no request in flight are closed after the idle timeout: one that
/// never sent anything, and HTTP/1.1 and HTTP/2 ones after a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, ca) = start_limited(&tmp, &[]);
    let silent = support_https::raw_tls(server.addr, client_config(&[&ca], Proto::H2))
        .await
        .unwrap();
    let body = fixture("pod-review.json");
    let mut conns = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        let mut c = Conn::connect(server.addr, client_config(&[&ca], proto), proto)
            .await
            .unwrap();
        check_review(&c.post(MUTATE, body.clone()).await.unwrap(), &body);
        conns.push(c);
    }
    let start = Instant::now();
    while !conns.iter().all(Conn::is_closed) {
        assert!(
            start.elapsed() < SHORT + SLACK,
            "idle connections still open after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "idle HTTP/1.1 and HTTP/2 connections closed after {:?}",
        start.elapsed()
    );
    {
        use tokio::io::AsyncReadExt;
        let mut silent = silent;
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(SHORT + SLACK, async {
            // An HTTP/2 server would speak first after a request preface; nothing was sent.
            while let Ok(n) = silent.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a silent connection stayed open");
    }
    metric_reaches(&server, WEBHOOK_CONNS, 0.0).await;
}

/// One HTTP/2 connection opening 100 streams whose bodies never end: the server holds at
/// most 16 at once (SETTINGS_MAX_CONCURRENT_STREAMS; more are refused), answers each one
/// it took 408 after the body timeout, and ends with nothing in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_flood_is_held_to_16_streams_and_released() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, ca) = start_limited(&tmp, &["--max-reviews-in-flight", "1000"]);
    let conn = Conn::connect(server.addr, client_config(&[&ca], Proto::H2), Proto::H2)
        .await
        .unwrap();
    let mut senders = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..100 {
        let mut h = conn.h2_handle().unwrap();
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        use futures::SinkExt;
        tx.send(Ok(Frame::data(Bytes::from_static(b"{\"apiVersion\""))))
            .await
            .unwrap();
        senders.push(tx);
        streams.push(tokio::spawn(async move {
            h.send("POST", MUTATE, StreamBody::new(rx).boxed())
                .await
                .map(|r| r.status)
        }));
    }
    // Watch the server's in-flight gauge (the metrics request itself is one of them).
    let start = Instant::now();
    let mut peak = 0.0f64;
    while !streams.iter().all(|s| s.is_finished()) {
        let text = server.metrics().await;
        peak = peak.max(support_https::sample(&text, IN_FLIGHT) - 1.0);
        assert!(
            start.elapsed() < 2 * SHORT + 2 * SLACK,
            "streams not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "100 streams: peak {peak} in flight; all answered after {:?}",
        start.elapsed()
    );
    assert!(peak <= 16.0, "{peak} streams in flight on one connection");
    assert!(peak >= 8.0, "the flood never reached the server ({peak})");
    // Streams the client opened before it saw the server's SETTINGS are refused
    // (REFUSED_STREAM, which a client may retry); every other one is answered 408.
    let mut answered = 0;
    for s in streams {
        match s.await.unwrap() {
            Ok(status) => {
                assert_eq!(status, 408);
                answered += 1;
            }
            Err(e) => assert!(format!("{e:?}").contains("REFUSED_STREAM"), "{e:?}"),
        }
    }
    assert!(answered >= 16, "{answered} streams answered");
    drop(senders);
    metric_reaches(&server, IN_FLIGHT, 1.0).await;
}

/// Past the connection cap, when every connection has sent a request, a new connection
/// is closed at once and counted; when some have sent nothing (slow or silent clients),
/// the oldest of those is closed for the newcomer, which is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_silent_connections_make_room_and_busy_ones_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, ca) = start_limited(&tmp, &["--max-connections", "4"]);
    let cfg = client_config(&[&ca], Proto::H2);
    let body = fixture("pod-review.json");
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = Conn::connect(server.addr, cfg.clone(), Proto::H2)
            .await
            .unwrap();
        check_review(&c.post(MUTATE, body.clone()).await.unwrap(), &body);
        held.push(c);
    }
    assert!(
        Conn::connect(server.addr, cfg.clone(), Proto::H2)
            .await
            .is_err(),
        "a fifth connection was served"
    );
    let refused = r#"rightsizer_http_connections_refused_total{listener="webhook"}"#;
    assert_eq!(support_https::sample(&server.metrics().await, refused), 1.0);
    drop(held);
    // Four silent connections fill the cap (timeouts long enough not to close them
    // here); a fifth is served, and the oldest silent one is closed for it.
    let tmp = tempfile::tempdir().unwrap();
    let ca_out = tmp.path().join("ca.pem");
    let server = Server::start(
        &[
            "--self-signed",
            "--ca-out",
            ca_out.to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
            "--max-connections",
            "4",
            "--idle-timeout",
            "60s",
            "--header-timeout",
            "60s",
        ],
        tmp.path().join("serve.log"),
    );
    let ca = std::fs::read_to_string(&ca_out).unwrap();
    let cfg = client_config(&[&ca], Proto::H2);
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(
            support_https::raw_tls(server.addr, cfg.clone())
                .await
                .unwrap(),
        );
    }
    let mut c = Conn::connect(server.addr, cfg, Proto::H2).await.unwrap();
    check_review(&c.post(MUTATE, body.clone()).await.unwrap(), &body);
    assert_eq!(support_https::sample(&server.metrics().await, refused), 0.0);
    async fn closes_within(
        s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        d: Duration,
    ) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        tokio::time::timeout(d, async {
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await
        .is_ok()
    }
    assert!(
        closes_within(&mut silent[0], SLACK).await,
        "the oldest silent connection stayed open"
    );
    assert!(
        !closes_within(&mut silent[3], SHORT).await,
        "the newest silent connection was closed"
    );
}

/// The 90,000-container review over real TLS: admitted unchanged, and the replica keeps
/// serving (cost figures are in BENCHMARKS.md, not asserted here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_90000_container_review_is_admitted_unchanged_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, ca) = start_limited(&tmp, &[]);
    let mut conn = Conn::connect(server.addr, client_config(&[&ca], Proto::H2), Proto::H2)
        .await
        .unwrap();
    let big = support_https::hostile_pod_review(90_000, "big-uid");
    let reply = conn.post(MUTATE, big.clone()).await.unwrap();
    assert_eq!(check_review(&reply, &big), 0);
    let w = reply.json()["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(w.contains("admitted unchanged"), "{w}");
    // A new connection: this (debug-built) client checking 2.7 MB may stay silent
    // longer than the 1 s idle timeout, which closes the first one.
    let mut conn = Conn::connect(server.addr, client_config(&[&ca], Proto::H2), Proto::H2)
        .await
        .unwrap();
    let body = fixture("pod-review.json");
    check_review(&conn.post(MUTATE, body.clone()).await.unwrap(), &body);
}

// ---------------------------------------------------------------------------------------
// One `review` span per AdmissionReview (issue 14): at the default level a patched review
// logs exactly one line, carrying the span's fields; an unpatched one logs nothing.

/// `body` with another uid (and padded with spaces to `len` bytes when longer).
fn with_uid(body: &[u8], uid: &str, len: usize) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["request"]["uid"] = uid.into();
    let mut out = serde_json::to_vec(&v).unwrap();
    out.resize(out.len().max(len), b' ');
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patched_review_logs_one_info_line_with_its_span_and_an_unchanged_one_none() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::generate("e2e CA", 30).unwrap();
    let (server, _secret) = start_with_files(&tmp, &pair(&ca));
    let mut conn = Conn::connect(
        server.addr,
        client_config(&[ca.cert_pem()], Proto::H1),
        Proto::H1,
    )
    .await
    .unwrap();
    let pod = fixture("pod-review.json");
    let deployment = fixture("deployment-review.json");
    // Small bodies are reviewed inline, large ones (over 64 KiB) on a worker thread.
    let cases = [
        ("span-inline-pod", &pod, 0, true),
        ("span-worker-pod", &pod, 100 * 1024, true),
        ("span-inline-deployment", &deployment, 0, false),
    ];
    for (uid, body, len, patched) in cases {
        let body = with_uid(body, uid, len);
        let reply = conn.post(MUTATE, body.clone()).await.unwrap();
        assert_eq!(check_review(&reply, &body) > 0, patched, "{uid}");
    }

    // Quotes differ between text fields and numbers; they are not what is tested.
    let logs = server.logs().replace('"', "");
    for (uid, _, _, patched) in cases {
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(uid)).collect();
        if !patched {
            assert_eq!(lines, Vec::<&str>::new(), "{uid}");
            continue;
        }
        assert_eq!(lines.len(), 1, "{uid}:\n{logs}");
        let line = lines[0];
        let fields = format!(
            "review{{uid={uid} kind=Pod namespace=shop name= operation=CREATE outcome=patched duration_ms="
        );
        for want in [" INFO ", fields.as_str(), "review patched patch_ops="] {
            assert!(line.contains(want), "{want:?} not in {line}");
        }
    }
}
