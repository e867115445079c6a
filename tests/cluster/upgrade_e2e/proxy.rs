//! What a Service does in front of the webhook's replicas: a TCP proxy that gives each new
//! connection to the next backend in its pool (round robin, TLS passed through). Taking a
//! backend out of the pool is what an endpoint leaving the Service does: connections already
//! made stay until an end closes them, new ones go elsewhere.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    pool: Arc<Mutex<Vec<SocketAddr>>>,
    /// Connections accepted with no backend in the pool (closed at once).
    pub refused: Arc<AtomicUsize>,
}

impl Proxy {
    /// Listen on a free loopback port, on the runtime `rt`.
    pub fn start(rt: &tokio::runtime::Runtime) -> Proxy {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("proxy binds");
        let proxy = Proxy {
            addr: listener.local_addr().expect("proxy address"),
            pool: Arc::default(),
            refused: Arc::default(),
        };
        let p = proxy.clone();
        rt.spawn(async move {
            let next = AtomicUsize::new(0);
            while let Ok((client, _)) = listener.accept().await {
                let backend = {
                    let pool = p.pool.lock().unwrap_or_else(|e| e.into_inner());
                    (!pool.is_empty())
                        .then(|| pool[next.fetch_add(1, Ordering::Relaxed) % pool.len()])
                };
                let Some(backend) = backend else {
                    p.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                tokio::spawn(pipe(client, backend));
            }
        });
        proxy
    }

    pub fn add(&self, backend: SocketAddr) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(backend);
    }

    pub fn remove(&self, backend: SocketAddr) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|b| *b != backend);
    }
}

async fn pipe(mut client: TcpStream, backend: SocketAddr) {
    if let Ok(mut upstream) = TcpStream::connect(backend).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}
