//! The accept loop: TLS by rustls, HTTP/1.1 or HTTP/2 by ALPN (hyper-util auto), and a
//! graceful stop: on the shutdown signal the listener closes, every connection is asked
//! to finish (HTTP/2 GOAWAY, HTTP/1.1 close after the current response) and in-flight
//! requests get up to `drain` to complete.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Default bound on waiting for in-flight requests at shutdown (Kubernetes' default
/// grace period is 30 s).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(25);
/// A client that does not finish the TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on receiving an HTTP/1.1 request head (slow-header clients).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How a serve loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished.
    Clean,
    /// The drain bound passed with this many connections still open.
    TimedOut(usize),
}

/// Serve `app` over TLS on `listener` until `shutdown` resolves, then drain.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
) -> Drained {
    let acceptor = TlsAcceptor::from(tls);
    // Every connection task holds a receiver: a send asks them to stop, and the
    // sender's `closed()` resolves once all of them are gone.
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            tokio::pin!(conn);
            let res = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(stop);
        });
    }
    drop(listener);
    tracing::info!("shutting down: listener closed, draining connections");
    let _ = stop_tx.send(());
    drop(stop_rx);
    match tokio::time::timeout(drain, stop_tx.closed()).await {
        Ok(()) => Drained::Clean,
        Err(_) => {
            let left = stop_tx.receiver_count();
            tracing::warn!(open = left, "drain time over; dropping open connections");
            Drained::TimedOut(left)
        }
    }
}

/// Serve `app` over plain HTTP (the admin port) until `shutdown` resolves.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
