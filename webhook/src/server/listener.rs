//! The accept loops of both ports: TLS by rustls (webhook port) or plain (admin port),
//! HTTP/1.1 or HTTP/2 (hyper-util auto), hardened so that no client can hold resources
//! for long: a connection cap, handshake, request-head and idle timeouts, HTTP/2 stream
//! and header limits and keep-alive pings (request bodies have their own timeout in the
//! `/mutate` handler). A graceful stop: on the shutdown signal the listener closes, every
//! connection is asked to finish (HTTP/2 GOAWAY, HTTP/1.1 close after the current
//! response) and in-flight requests get up to `drain` to complete.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::guard::ConnShare;
use super::metrics::{ListenerLabels, ServerMetrics};
use crate::lock::LockExt;

/// Default bound on waiting for in-flight requests at shutdown (Kubernetes' default
/// grace period is 30 s).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(25);

/// What one client may hold on a listener, and for how long. `Default` is what
/// `rightsizer serve` uses; tests shorten the timeouts by flag.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// A client that does not finish the TLS handshake in this time is dropped.
    pub handshake_timeout: Duration,
    /// Bound on receiving an HTTP/1.1 request head (slow-header clients).
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    /// It also bounds a request head that never completes on HTTP/2.
    pub idle_timeout: Duration,
    /// Open connections per listener; past it a new one is closed at accept.
    pub max_connections: usize,
    /// HTTP/2 streams in flight per connection.
    pub h2_max_streams: u32,
    /// HTTP/2 PING interval; a peer that does not answer within the timeout is dropped.
    pub h2_keepalive_interval: Duration,
    pub h2_keepalive_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            // Sized to the apiserver's webhook timeout (3 s as shipped): its handshake
            // and request heads take milliseconds, and a slow client holding a
            // connection slot for 10 s let ~27 new connections/s fill the cap.
            handshake_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            // The apiserver keeps a few connections per replica; 256 leaves room for
            // bursts while bounding buffers (~100 KiB each) to a few tens of MiB.
            max_connections: 256,
            // Reviews in flight per connection: a single connection cannot take the
            // replica's 64; the apiserver's Go transport opens another connection when
            // one is at the server's limit.
            h2_max_streams: 16,
            h2_keepalive_interval: Duration::from_secs(20),
            h2_keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// HTTP/1.1 read buffer cap: bounds a request head (the apiserver's are well under 8 KiB).
const H1_MAX_BUF: usize = 64 * 1024;
/// HTTP/2 header list cap.
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// After an idle connection is asked to close, how long it may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long an HTTP/1.1 connection keeps serving after the stop signal (see `H1Close`).
const H1_LINGER: Duration = Duration::from_secs(1);

/// An HTTP/1.1 connection's way out at shutdown: it has served HTTP/1.1 (`seen`), and
/// from the stop signal on (`stopping`) each response closes it.
#[derive(Default)]
struct H1Close {
    seen: std::sync::atomic::AtomicBool,
    stopping: std::sync::atomic::AtomicBool,
}

/// How a serve loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished.
    Clean,
    /// The drain bound passed with this many connections still open.
    TimedOut(usize),
}

/// Where connections are counted, and under which `listener` label.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub metrics: ServerMetrics,
    pub listener: &'static str,
}

/// Serve `app` over TLS on `listener` until `shutdown` resolves, then drain.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
    limits: ConnLimits,
    observed: ListenerMetrics,
) -> Drained {
    let acceptor = TlsAcceptor::from(tls);
    let handshake = limits.handshake_timeout;
    let upgrade = move |tcp: TcpStream| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    None
                }
            }
        }
    };
    serve(listener, upgrade, app, shutdown, drain, limits, observed).await
}

/// Serve `app` over plain HTTP (the admin port) until `shutdown` resolves, with the same
/// limits as the TLS port.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
    limits: ConnLimits,
    observed: ListenerMetrics,
) -> Drained {
    let upgrade = |tcp: TcpStream| async move { Some(tcp) };
    serve(listener, upgrade, app, shutdown, drain, limits, observed).await
}

/// The accept loop: a connection cap, then per connection `upgrade` (the TLS handshake),
/// HTTP/1.1 or HTTP/2, an idle watchdog, and a graceful stop on `shutdown`.
async fn serve<U, F, IO>(
    listener: TcpListener,
    upgrade: U,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
    limits: ConnLimits,
    observed: ListenerMetrics,
) -> Drained
where
    U: Fn(TcpStream) -> F + Clone + Send + 'static,
    F: Future<Output = Option<IO>> + Send,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let label = ListenerLabels {
        listener: observed.listener.to_string(),
    };
    let open = observed.metrics.connections.get_or_create(&label).clone();
    let refused = observed
        .metrics
        .connections_refused
        .get_or_create(&label)
        .clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let unproven = Arc::new(Unproven::default());
    let limits = Arc::new(limits);
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
        // At the cap, the oldest connection that has not sent a whole request yet
        // (a slow or silent client) makes room; with none, the newcomer is closed at
        // once: the client (the apiserver) fails fast and fails open, instead of
        // waiting in the backlog for its timeout.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) if unproven.evict_oldest() => {
                match tokio::time::timeout(EVICT_WAIT, slots.clone().acquire_owned()).await {
                    Ok(Ok(s)) => s,
                    _ => {
                        refused.inc();
                        continue;
                    }
                }
            }
            Err(_) => {
                refused.inc();
                tracing::debug!(%peer, "connection cap reached; closed");
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (upgrade, app, limits, open) =
            (upgrade.clone(), app.clone(), limits.clone(), open.clone());
        let mut stop = stop_rx.clone();
        let ticket = unproven.enter();
        open.inc();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = DecOnDrop(open);
            let evicted = ticket.evicted.clone();
            tokio::select! {
                _ = run_connection(upgrade(tcp), app, &limits, &mut stop, &ticket) => {}
                _ = evicted.notified() => tracing::debug!("slow connection closed for a new one"),
            }
            drop(stop);
        });
    }
    drop(listener);
    tracing::info!(
        listener = observed.listener,
        "shutting down: listener closed, draining connections"
    );
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

struct DecOnDrop(prometheus_client::metrics::gauge::Gauge);

impl Drop for DecOnDrop {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn run_connection<IO>(
    io: impl Future<Output = Option<IO>>,
    app: Router,
    limits: &ConnLimits,
    stop: &mut watch::Receiver<()>,
    ticket: &Ticket,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A handshake in progress is abandoned when asked to stop.
    let io = tokio::select! {
        io = io => io,
        _ = stop.changed() => None,
    };
    let Some(io) = io else { return };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(H1_MAX_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout);
    let activity = Arc::new(Activity::new());
    // The connection's share of the body-byte budget (`guard::ConnShare`).
    let share = ConnShare::default();
    let h1 = Arc::new(H1Close::default());
    let service = {
        let (activity, h1) = (activity.clone(), h1.clone());
        let proven = ticket.proven();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let busy = activity.begin();
            proven();
            let app = app.clone();
            let is_h1 = req.version() < http::Version::HTTP_2;
            if is_h1 {
                h1.seen.store(true, Ordering::Release);
            }
            let h1 = h1.clone();
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(share.clone());
            async move {
                let mut resp = app.oneshot(req).await;
                if is_h1 && h1.stopping.load(Ordering::Acquire) {
                    if let Ok(r) = resp.as_mut() {
                        r.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                }
                drop(busy);
                resp
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let res = loop {
        let idle_at = activity.idle_deadline(limits.idle_timeout);
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stop.changed() => {
                // HTTP/1.1 (what the apiserver speaks to webhooks): closing an idle
                // keep-alive connection races the client's next request on it, which then
                // fails (EOF) and is admitted unsized. Serve on for a moment, each response
                // saying `Connection: close`; only what stays idle is closed unasked.
                h1.stopping.store(true, Ordering::Release);
                if h1.seen.load(Ordering::Acquire) {
                    if let Ok(r) = tokio::time::timeout(H1_LINGER, conn.as_mut()).await {
                        break r;
                    }
                }
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            _ = tokio::time::sleep_until(idle_at) => {
                if activity.is_idle(limits.idle_timeout) {
                    tracing::debug!("idle connection closed");
                    conn.as_mut().graceful_shutdown();
                    // A half-sent request head does not hold the close up.
                    match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
                        Ok(r) => break r,
                        Err(_) => return,
                    }
                }
            }
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// How long a newcomer waits for the slot of the connection evicted for it.
const EVICT_WAIT: Duration = Duration::from_millis(200);

/// Connections that have not sent a whole request head yet, oldest first: at the
/// connection cap the oldest is closed for a newcomer, so slow or silent clients cannot
/// keep the apiserver out (a slowloris opening connections faster than the timeouts
/// close them only evicts its own).
#[derive(Default)]
struct Unproven {
    next: AtomicU64,
    waiting: Mutex<BTreeMap<u64, Arc<Notify>>>,
}

impl Unproven {
    fn enter(self: &Arc<Self>) -> Ticket {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(Notify::new());
        self.waiting.locked().insert(id, evicted.clone());
        Ticket {
            id,
            evicted,
            registry: self.clone(),
        }
    }

    /// Ask the oldest unproven connection to close; `false` when there is none.
    fn evict_oldest(&self) -> bool {
        match self.waiting.locked().pop_first() {
            Some((_, n)) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }
}

/// One connection's entry in [`Unproven`], removed when it sends a request or ends.
struct Ticket {
    id: u64,
    evicted: Arc<Notify>,
    registry: Arc<Unproven>,
}

impl Ticket {
    /// A callback marking the connection as one that sends requests.
    fn proven(&self) -> impl Fn() + Clone + Send + Sync + 'static {
        let (id, registry) = (self.id, self.registry.clone());
        move || {
            registry.waiting.locked().remove(&id);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.registry.waiting.locked().remove(&self.id);
    }
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            since: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> BusyOwned {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        BusyOwned(self.clone())
    }

    /// When to look again: `idle` after the last request ended, or, while one is in
    /// flight, `idle` from now (no wake-ups in between).
    fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + idle;
        }
        let since = *self.since.locked();
        since + idle
    }

    fn is_idle(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.since.locked().elapsed() >= idle
    }
}

/// Marks a request in flight; its end (or cancellation) restarts the idle clock.
struct BusyOwned(Arc<Activity>);

impl Drop for BusyOwned {
    fn drop(&mut self) {
        *self.0.since.locked() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
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
