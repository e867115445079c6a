//! Starvation attacks beside real reviews (issue 20): each attack runs against the
//! binary as shipped (default limits) while real reviews, each on a new connection (the
//! worst case for the apiserver), are sent with the shipped `?timeout=3s`. Every real
//! review must be answered `allowed: true` with its uid. Latencies are printed (they go
//! in BENCHMARKS.md, "Under attack"), never asserted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::mpsc;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::support_https::{self, client_config, fixture, Conn, Proto, Server};

const MUTATE: &str = "/mutate?timeout=3s";
/// How long each attack runs beside the real reviews.
const ATTACK: Duration = Duration::from_secs(3);
/// Real reviews sent during an attack, evenly spaced.
const REAL: usize = 20;

type Chunks = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

/// What an attack holds open; dropped when it ends.
#[derive(Default)]
struct Held {
    tasks: Vec<JoinHandle<()>>,
    bodies: Vec<Chunks>,
    tls: Vec<tokio_rustls::client::TlsStream<TcpStream>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// An HTTP/2 connection sending requests with hand-set headers (a declared
/// `content-length`) and bodies the attack feeds.
async fn h2_sender(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    held: &mut Held,
) -> hyper::client::conn::http2::SendRequest<http_body_util::combinators::BoxBody<Bytes, Infallible>>
{
    let tls = support_https::raw_tls(addr, cfg).await.unwrap();
    let (s, c) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    held.tasks.push(tokio::spawn(async move {
        let _ = c.await;
    }));
    s
}

/// Open a stream declaring `declared` bytes, send `first` of them, and keep it open.
fn open_stream(
    s: &hyper::client::conn::http2::SendRequest<
        http_body_util::combinators::BoxBody<Bytes, Infallible>,
    >,
    addr: SocketAddr,
    declared: usize,
    first: usize,
    held: &mut Held,
) {
    let (mut tx, rx) = mpsc::channel(4);
    let _ = tx.try_send(Ok(Frame::data(Bytes::from(vec![b' '; first]))));
    held.bodies.push(tx);
    let req = http::Request::post(format!("https://localhost:{}{MUTATE}", addr.port()))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, declared)
        .body(StreamBody::new(rx).boxed())
        .unwrap();
    let mut s = s.clone();
    held.tasks.push(tokio::spawn(async move {
        if s.ready().await.is_ok() {
            let _ = s.send_request(req).await;
        }
    }));
}

#[derive(Debug, Clone, Copy)]
enum Attack {
    None,
    /// One HTTP/2 connection holding 64 streams whose bodies never end.
    H2Streams,
    /// 64 HTTP/1.1 connections that send a request head and part of the body, then stall.
    H1Stalled,
    /// 6 HTTP/2 connections declaring 16 MiB of bodies each (five streams of 3 MiB and
    /// one of 1 MiB), each stream sending its first MiB at once, then stalling.
    BigBodies,
    /// ~27 new TCP connections per second that never send a byte, from a steady state
    /// (the ~270 a 10 s handshake timeout held at that rate are opened first).
    Slowloris,
}

async fn start_attack(attack: Attack, addr: SocketAddr, ca: &str, held: &mut Held) {
    match attack {
        Attack::None | Attack::Slowloris => {}
        Attack::H2Streams => {
            let s = h2_sender(addr, client_config(&[ca], Proto::H2), held).await;
            for _ in 0..64 {
                open_stream(&s, addr, 4096, 16, held);
            }
        }
        Attack::H1Stalled => {
            for _ in 0..64 {
                let mut tls = support_https::raw_tls(addr, client_config(&[ca], Proto::H1))
                    .await
                    .unwrap();
                let head = format!(
                    "POST {MUTATE} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n{{\"apiVersion\""
                );
                tls.write_all(head.as_bytes()).await.unwrap();
                tls.flush().await.unwrap();
                held.tls.push(tls);
            }
        }
        Attack::BigBodies => {
            for _ in 0..6 {
                let s = h2_sender(addr, client_config(&[ca], Proto::H2), held).await;
                for declared in [3 << 20, 3 << 20, 3 << 20, 3 << 20, 3 << 20, 1 << 20] {
                    open_stream(&s, addr, declared, 1 << 20, held);
                }
            }
        }
    }
    if let Attack::Slowloris = attack {
        let stop = Instant::now() + ATTACK;
        let mut open = Vec::new();
        for _ in 0..270 {
            if let Ok(t) = TcpStream::connect(addr).await {
                open.push(t);
            }
        }
        held.tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                if let Ok(t) = TcpStream::connect(addr).await {
                    open.push(t);
                }
                tokio::time::sleep(Duration::from_millis(37)).await;
            }
            // Held until the attack is dropped (the task is aborted).
            std::future::pending::<()>().await;
            drop(open);
        }));
    }
}

/// One real review on a new connection: its latency, and whether it was answered
/// `allowed: true` with its uid.
async fn real_review(addr: SocketAddr, ca: &str, i: usize) -> (Duration, Result<(), String>) {
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("pod-review.json")).unwrap();
    let uid = format!("real-{i}");
    v["request"]["uid"] = uid.clone().into();
    let body = serde_json::to_vec(&v).unwrap();
    let start = Instant::now();
    let outcome = async {
        let mut c = Conn::connect(addr, client_config(&[ca], Proto::H2), Proto::H2)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let r = c
            .post(MUTATE, body)
            .await
            .map_err(|e| format!("post: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|_| format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))?;
        if r.status == 200 && v["response"]["allowed"] == true && v["response"]["uid"] == uid {
            Ok(())
        } else {
            Err(format!("{} {v}", r.status))
        }
    }
    .await;
    (start.elapsed(), outcome)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 1e2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_reviews_are_admitted_beside_each_attack() {
    let mut failures = Vec::new();
    let mut table = vec!["| attack | real reviews allowed | p50 | p90 | max |".to_string()];
    for attack in [
        Attack::None,
        Attack::H2Streams,
        Attack::H1Stalled,
        Attack::BigBodies,
        Attack::Slowloris,
    ] {
        // A fresh server per attack: nothing left over from the previous one.
        let tmp = tempfile::tempdir().unwrap();
        let ca_out = tmp.path().join("ca.pem");
        let server = Server::start(
            &["--self-signed", "--ca-out", ca_out.to_str().unwrap()],
            tmp.path().join("serve.log"),
        );
        let ca = std::fs::read_to_string(&ca_out).unwrap();
        let mut held = Held::default();
        start_attack(attack, server.addr, &ca, &mut held).await;
        // Let the attack take hold before the first real review.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut lat = Vec::new();
        let mut allowed = 0;
        for i in 0..REAL {
            let (took, outcome) = real_review(server.addr, &ca, i).await;
            lat.push(took);
            match outcome {
                Ok(()) => allowed += 1,
                Err(e) => failures.push(format!("{attack:?} review {i}: {e}")),
            }
            tokio::time::sleep(ATTACK / REAL as u32).await;
        }
        drop(held);
        lat.sort();
        let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
        table.push(format!(
            "| {attack:?} | {allowed}/{REAL} | {} ms | {} ms | {} ms |",
            ms(at(0.5)),
            ms(at(0.9)),
            ms(*lat.last().unwrap())
        ));
    }
    eprintln!(
        "real reviews (new TLS connection + review each, debug client):\n{}",
        table.join("\n")
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
