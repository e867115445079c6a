//! Shared by the HTTPS tests and the admission benchmark: a hyper client over rustls that
//! trusts only the given CAs, the `rightsizer serve` child process, and certificate files
//! laid out the way Kubernetes mounts a Secret (`..data` symlink swapped atomically).
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type ReqBody = BoxBody<Bytes, Infallible>;

pub fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/server")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// A Pod review of `n` tiny containers (90,000 make a 2.7 MB body, under the 3 MiB
/// limit): the review that took 3.4 s and 724 MB before reviews were capped.
pub fn hostile_pod_review(n: usize, uid: &str) -> Vec<u8> {
    let mut containers = String::with_capacity(n * 32);
    for i in 0..n {
        if i > 0 {
            containers.push(',');
        }
        containers.push_str(&format!(r#"{{"name":"c{i}","image":"x"}}"#));
    }
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"{uid}","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"namespace":"shop","operation":"CREATE","object":{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"big","namespace":"shop"}},"spec":{{"containers":[{containers}]}}}}}}}}"#
    )
    .into_bytes()
}

pub fn full(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).boxed()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

impl Proto {
    fn alpn(self) -> &'static [u8] {
        match self {
            Proto::H1 => b"http/1.1",
            Proto::H2 => b"h2",
        }
    }
}

/// A rustls client config trusting only `ca_pems`, offering only `proto` by ALPN.
pub fn client_config(ca_pems: &[&str], proto: Proto) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.expect("CA PEM")).expect("add CA");
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![proto.alpn().to_vec()];
    // Full handshakes only: a resumed session reports the certificate of the session it
    // resumes, which would hide a rotation.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<ReqBody>),
    H2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

/// One HTTPS connection.
pub struct Conn {
    sender: Sender,
    pub addr: SocketAddr,
    /// The ALPN protocol the server chose.
    pub alpn: Option<Vec<u8>>,
    /// DER of the certificate the server presented.
    pub peer_cert: Vec<u8>,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub version: http::Version,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Conn {
    /// Another handle on the same HTTP/2 connection (a new stream per request); `None`
    /// for HTTP/1.1, which has one request at a time per connection.
    pub fn h2_handle(&self) -> Option<Conn> {
        match &self.sender {
            Sender::H2(s) => Some(Conn {
                sender: Sender::H2(s.clone()),
                addr: self.addr,
                alpn: self.alpn.clone(),
                peer_cert: self.peer_cert.clone(),
            }),
            Sender::H1(_) => None,
        }
    }

    pub async fn connect(
        addr: SocketAddr,
        cfg: Arc<rustls::ClientConfig>,
        proto: Proto,
    ) -> Result<Conn, Error> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost")?;
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await?;
        let (_, session) = tls.get_ref();
        let alpn = session.alpn_protocol().map(|a| a.to_vec());
        let peer_cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .ok_or("no peer certificate")?;
        let io = TokioIo::new(tls);
        let sender = match proto {
            Proto::H1 => {
                let (s, c) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(c);
                Sender::H1(s)
            }
            Proto::H2 => {
                let (s, c) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(c);
                Sender::H2(s)
            }
        };
        Ok(Conn {
            sender,
            addr,
            alpn,
            peer_cert,
        })
    }

    /// Whether the server has closed this connection.
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    pub async fn send(&mut self, method: &str, path: &str, body: ReqBody) -> Result<Reply, Error> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost:{}{path}", self.addr.port()))
            .header(
                http::header::HOST,
                format!("localhost:{}", self.addr.port()),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)?;
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status().as_u16();
        let version = resp.version();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            version,
            content_type,
            body,
        })
    }

    pub async fn post(&mut self, path: &str, body: impl Into<Bytes>) -> Result<Reply, Error> {
        self.send("POST", path, full(body)).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, Error> {
        self.send("GET", path, full(Bytes::new())).await
    }
}

/// A TLS connection with nothing on top (to write bytes by hand).
pub async fn raw_tls(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")?;
    Ok(tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?)
}

/// Plain HTTP/1.1 GET (the admin port).
pub async fn plain_get(addr: SocketAddr, path: &str) -> Result<Reply, Error> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(c);
    let req = http::Request::builder()
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .body(full(Bytes::new()))?;
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    let version = resp.version();
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        version,
        content_type,
        body,
    })
}

/// The value of the sample `series` (exact labels) in a `/metrics` text, 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `rightsizer serve` as a child process; killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    log: PathBuf,
}

impl Server {
    /// Start with `--listen 127.0.0.1:0` plus `args`; waits for the "listening" line.
    pub fn start(args: &[&str], log: PathBuf) -> Server {
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(crate::exe::rightsizer())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RIGHTSIZER_TEST_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("start rightsizer serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addr = None;
        let mut admin = None;
        let want_admin = args.contains(&"--admin-listen");
        while addr.is_none() || (want_admin && admin.is_none()) {
            let line = match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "serve did not start: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            };
            if let Some(a) = line.split("listening on https://").nth(1) {
                addr = Some(a.trim().parse().expect("listen address"));
            }
            if let Some(a) = line.split("admin on http://").nth(1) {
                admin = Some(a.trim().parse().expect("admin address"));
            }
        }
        Server {
            child,
            addr: addr.expect("addr"),
            admin,
            log,
        }
    }

    /// `/metrics` from the admin port (the server must have been started with one).
    pub async fn metrics(&self) -> String {
        let admin = self.admin.expect("started with --admin-listen");
        let r = plain_get(admin, "/metrics").await.expect("admin /metrics");
        String::from_utf8(r.body.to_vec()).expect("metrics text")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM to this child (by its pid).
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Wait up to `limit` for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Secret volume as the kubelet writes it: `tls.crt`/`tls.key` are symlinks into
/// `..data`, itself a symlink to a timestamped directory that is swapped atomically.
pub struct SecretDir {
    pub dir: PathBuf,
    generation: u32,
}

impl SecretDir {
    pub fn new(dir: &Path, cert_pem: &str, key_pem: &str) -> SecretDir {
        let mut s = SecretDir {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        s.update(cert_pem, key_pem);
        std::os::unix::fs::symlink("..data/tls.crt", dir.join("tls.crt")).expect("symlink");
        std::os::unix::fs::symlink("..data/tls.key", dir.join("tls.key")).expect("symlink");
        s
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    /// Write a new generation and swap `..data` to it in one rename, as the kubelet does.
    pub fn update(&mut self, cert_pem: &str, key_pem: &str) {
        self.generation += 1;
        let gen_name = format!("..gen_{}", self.generation);
        let gen_dir = self.dir.join(&gen_name);
        std::fs::create_dir(&gen_dir).expect("generation dir");
        std::fs::write(gen_dir.join("tls.crt"), cert_pem).expect("write cert");
        std::fs::write(gen_dir.join("tls.key"), key_pem).expect("write key");
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&gen_name, &tmp).expect("symlink");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        if self.generation > 1 {
            let old = self.dir.join(format!("..gen_{}", self.generation - 1));
            let _ = std::fs::remove_dir_all(old);
        }
    }
}

/// DER of the first certificate in a PEM.
pub fn leaf_der(cert_pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .expect("cert PEM")
        .to_vec()
}
