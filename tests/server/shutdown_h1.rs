//! At SIGTERM an HTTP/1.1 keep-alive connection (what the apiserver uses to call webhooks)
//! is not closed while idle, which would race the client's next request on it (the client
//! gets EOF and the apiserver admits the object unsized): a request sent on it right after
//! the signal is answered, and the server then closes the connection (`Connection: close`).
//! tests/cluster/upgrade_e2e.rs found the race under a rolling restart.

use crate::support_https;

use std::time::{Duration, Instant};

use support_https::{client_config, fixture, Conn, Proto, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_connection_is_answered_once_more_after_sigterm_then_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    let mut server = Server::start(
        &["--self-signed", "--ca-out", ca.to_str().unwrap()],
        tmp.path().join("serve.log"),
    );
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let mut conn = Conn::connect(server.addr, client_config(&[&ca_pem], Proto::H1), Proto::H1)
        .await
        .unwrap();
    let body = fixture("pod-review.json");
    let first = conn
        .post("/mutate?timeout=10s", body.clone())
        .await
        .unwrap();
    assert_eq!(first.status, 200);

    server.sigterm();
    // The listener closes: the signal has been handled.
    let started = Instant::now();
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "listener still open after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!conn.is_closed(), "the idle connection was closed at once");
    let again = conn.post("/mutate?timeout=10s", body).await;
    assert_eq!(again.map(|r| r.status).ok(), Some(200), "{}", server.logs());
    // Then it goes: the answer said `Connection: close`.
    let started = Instant::now();
    while !conn.is_closed() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still open after the answer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        server.logs()
    );
}
