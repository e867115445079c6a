//! A small Prometheus HTTP API client: instant and range queries, with the auth and
//! tenancy options of the backends people run (Prometheus, Thanos Query, Mimir,
//! VictoriaMetrics), a timeout per request and retries with exponential backoff.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::lock::LockExt;

/// Backoff never grows beyond this.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("invalid Prometheus client configuration: {0}")]
    Config(String),
    #[error("Prometheus request failed: {0}")]
    Transport(String),
    #[error("Prometheus answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("Prometheus answered something that is not a query result: {0}")]
    Garbage(String),
    #[error("Prometheus refused the query ({kind}): {message}")]
    Query { kind: String, message: String },
}

impl PromError {
    /// Worth another try: the network, the server being busy, or a 5xx.
    fn retryable(&self) -> bool {
        match self {
            PromError::Transport(_) => true,
            PromError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// How to reach Prometheus. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct PromConfig {
    /// Base URL, e.g. `http://prometheus:9090` or a Mimir/Thanos/VictoriaMetrics
    /// Prometheus-compatible prefix (`http://mimir/prometheus`).
    pub url: String,
    pub bearer_token: Option<String>,
    /// A file holding the bearer token, re-read whenever it changes (projected
    /// ServiceAccount tokens rotate); takes precedence over `bearer_token`.
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth: Option<(String, String)>,
    /// A file holding the basic-auth password (re-read when it changes); takes
    /// precedence over the password in `basic_auth`.
    pub password_file: Option<PathBuf>,
    /// Extra root certificate(s), PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// Mimir/Cortex tenant: sent as `X-Scope-OrgID`.
    pub tenant: Option<String>,
    pub timeout: Duration,
    /// Attempts after the first one.
    pub retries: u32,
    /// First backoff; doubled on each retry.
    pub backoff: Duration,
}

impl PromConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PromConfig {
            url: url.into(),
            bearer_token: None,
            bearer_token_file: None,
            basic_auth: None,
            password_file: None,
            ca_pem: None,
            tenant: None,
            timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(500),
        }
    }
}

const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for PromConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromConfig")
            .field("url", &self.url)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| REDACTED),
            )
            .field("bearer_token_file", &self.bearer_token_file)
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|(u, _)| (u, REDACTED)),
            )
            .field("password_file", &self.password_file)
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|c| format!("{} bytes", c.len())),
            )
            .field("tenant", &self.tenant)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// A secret kept in a file, re-read when the file changes (size, mtime or inode: a
/// kubelet swap of the `..data` symlink changes the inode).
struct SecretFile {
    path: PathBuf,
    seen: Mutex<Option<(FileStamp, String)>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    ino: u64,
}

impl SecretFile {
    fn new(path: PathBuf) -> Self {
        SecretFile {
            path,
            seen: Mutex::new(None),
        }
    }

    /// The file's current contents (trimmed). A file that cannot be read keeps the last
    /// value read, if any.
    fn current(&self) -> Result<String, PromError> {
        let mut seen = self.seen.locked();
        let stamp = std::fs::metadata(&self.path).map(|m| FileStamp {
            len: m.len(),
            modified: m.modified().ok(),
            ino: {
                #[cfg(unix)]
                {
                    std::os::unix::fs::MetadataExt::ino(&m)
                }
                #[cfg(not(unix))]
                {
                    0
                }
            },
        });
        let read = match (&stamp, seen.as_ref()) {
            (Ok(st), Some((old, v))) if st == old => return Ok(v.clone()),
            (Ok(st), _) => std::fs::read_to_string(&self.path).map(|t| (*st, t)),
            (Err(e), _) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        match read {
            Ok((st, text)) => {
                let v = text.trim().to_string();
                *seen = Some((st, v.clone()));
                Ok(v)
            }
            Err(e) => match seen.as_ref() {
                Some((_, v)) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot re-read a secret file; keeping the last value");
                    Ok(v.clone())
                }
                None => Err(PromError::Config(format!(
                    "reading {}: {e}",
                    self.path.display()
                ))),
            },
        }
    }
}

/// One element of an instant vector. Labels are a short list (the queries aggregate
/// down to a handful), which is far smaller than a map per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl PromSample {
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// Reads a JSON object into a list of pairs.
fn label_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a label object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(m.size_hint().unwrap_or(4));
            while let Some(kv) = m.next_entry::<String, String>()? {
                out.push(kv);
            }
            out.shrink_to_fit();
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

#[derive(Deserialize)]
struct ApiResponse<D> {
    status: String,
    #[serde(default = "none")]
    data: Option<D>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// The analyzer only sends queries that return instant vectors; anything else does not
/// decode and counts as garbage. Decoding straight into the vector (no intermediate
/// JSON tree) keeps memory at the size of the result.
#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<VectorElem>,
}

#[derive(Deserialize)]
struct VectorElem {
    #[serde(deserialize_with = "label_list")]
    metric: Vec<(String, String)>,
    value: (f64, Num),
}

/// A sample value, which Prometheus sends as a string: parsed where it is read, so no
/// string is kept per point (a range answer holds millions); unparsable is NaN (dropped).
struct Num(f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sample value string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Num, E> {
                Ok(Num(s.parse().unwrap_or(f64::NAN)))
            }
        }
        d.deserialize_str(V)
    }
}

fn none<D>() -> Option<D> {
    None
}

/// A range query's answer: every matrix series with its points.
#[derive(Deserialize)]
struct MatrixData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<MatrixElem>,
}

#[derive(Deserialize)]
struct MatrixElem {
    #[serde(deserialize_with = "label_list")]
    metric: Vec<(String, String)>,
    values: Vec<(f64, Num)>,
}

/// One series of a range query: labels and (unix seconds, value) points; non-finite
/// values are dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Vec<(String, String)>,
    pub points: Vec<(i64, f64)>,
}

impl RangeSeries {
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// The client. Cheap to clone.
#[derive(Clone)]
pub struct PromClient {
    http: reqwest::Client,
    cfg: PromConfig,
    token_file: Option<Arc<SecretFile>>,
    password_file: Option<Arc<SecretFile>>,
    endpoint: String,
    range_endpoint: String,
}

impl PromClient {
    pub fn new(cfg: PromConfig) -> Result<Self, PromError> {
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)));
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| PromError::Config(format!("CA bundle: {e}")))?;
            if certs.is_empty() {
                return Err(PromError::Config("CA bundle holds no certificate".into()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| PromError::Config(format!("HTTP client: {e}")))?;
        let base = cfg.url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(PromError::Config(format!(
                "Prometheus URL {:?} must start with http:// or https://",
                cfg.url
            )));
        }
        let endpoint = format!("{base}/api/v1/query");
        let range_endpoint = format!("{base}/api/v1/query_range");
        let token_file = cfg
            .bearer_token_file
            .clone()
            .map(|p| Arc::new(SecretFile::new(p)));
        let password_file = cfg
            .password_file
            .clone()
            .map(|p| Arc::new(SecretFile::new(p)));
        Ok(PromClient {
            http,
            cfg,
            token_file,
            password_file,
            endpoint,
            range_endpoint,
        })
    }

    /// Evaluate `query` as an instant vector at unix time `at`, retrying transient failures.
    pub async fn query(&self, query: &str, at: u64) -> Result<Vec<PromSample>, PromError> {
        let time = at.to_string();
        let params = [("query", query), ("time", time.as_str())];
        let data = self.call::<ApiData>(&self.endpoint, &params).await?;
        decode_vector(data)
    }

    /// Evaluate `query` at every `step` seconds from `start` to `end` (unix seconds,
    /// both included), retrying transient failures.
    pub async fn query_range(
        &self,
        query: &str,
        start: u64,
        end: u64,
        step: u64,
    ) -> Result<Vec<RangeSeries>, PromError> {
        let (s, e, st) = (start.to_string(), end.to_string(), step.to_string());
        let params = [
            ("query", query),
            ("start", s.as_str()),
            ("end", e.as_str()),
            ("step", st.as_str()),
        ];
        let data = self
            .call::<MatrixData>(&self.range_endpoint, &params)
            .await?;
        decode_matrix(data)
    }

    async fn call<D: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        params: &[(&str, &str)],
    ) -> Result<Option<D>, PromError> {
        let mut delay = self.cfg.backoff;
        let mut attempt = 0;
        loop {
            match self.call_once::<D>(endpoint, params).await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && attempt < self.cfg.retries => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "retrying Prometheus query");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn call_once<D: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        params: &[(&str, &str)],
    ) -> Result<Option<D>, PromError> {
        let mut req = self.http.post(endpoint).form(params);
        let token = match &self.token_file {
            Some(f) => Some(f.current()?),
            None => self.cfg.bearer_token.clone(),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        } else if let Some((u, p)) = &self.cfg.basic_auth {
            let p = match &self.password_file {
                Some(f) => f.current()?,
                None => p.clone(),
            };
            req = req.basic_auth(u, Some(p));
        }
        if let Some(t) = &self.cfg.tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| PromError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| PromError::Transport(e.to_string()))?;
        // Prometheus answers 400/422 with a JSON error body; decode those too.
        let parsed: Result<ApiResponse<D>, _> = serde_json::from_slice(&body);
        match parsed {
            Ok(r) if r.status == "success" => Ok(r.data),
            Ok(r) if status < 500 && status != 429 => Err(PromError::Query {
                kind: r.error_type.unwrap_or_default(),
                message: r.error.unwrap_or_default(),
            }),
            _ if status >= 400 => Err(PromError::Status {
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            }),
            Ok(r) => Err(PromError::Garbage(format!("status {:?}", r.status))),
            Err(e) => Err(PromError::Garbage(e.to_string())),
        }
    }
}

fn decode_matrix(data: Option<MatrixData>) -> Result<Vec<RangeSeries>, PromError> {
    let data = data.ok_or_else(|| PromError::Garbage("no data".into()))?;
    if data.result_type != "matrix" {
        return Err(PromError::Garbage(format!(
            "result type {}",
            data.result_type
        )));
    }
    Ok(data
        .result
        .into_iter()
        .map(|e| RangeSeries {
            labels: e.metric,
            points: e
                .values
                .into_iter()
                .filter_map(|(t, Num(v))| {
                    (v.is_finite() && t.is_finite()).then_some((t.round() as i64, v))
                })
                .collect(),
        })
        .collect())
}

fn decode_vector(data: Option<ApiData>) -> Result<Vec<PromSample>, PromError> {
    let data = data.ok_or_else(|| PromError::Garbage("no data".into()))?;
    if data.result_type != "vector" {
        return Err(PromError::Garbage(format!(
            "result type {}",
            data.result_type
        )));
    }
    Ok(data
        .result
        .into_iter()
        .filter_map(|e| {
            let v = e.value.1 .0;
            v.is_finite().then_some(PromSample {
                labels: e.metric,
                value: v,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_vectors_and_drops_non_finite() {
        let j = r#"{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1.5,"42"]},
            {"metric":{"pod":"b"},"value":[1.5,"NaN"]},
            {"metric":{"pod":"c"},"value":[1.5,"+Inf"]}]}"#;
        let d: ApiData = serde_json::from_str(j).unwrap();
        let v = decode_vector(Some(d)).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].label("pod"), "a");
        assert_eq!(v[0].value, 42.0);
    }

    #[test]
    fn refuses_matrix_and_bad_urls() {
        let d: ApiData = serde_json::from_str(r#"{"resultType":"matrix","result":[]}"#).unwrap();
        assert!(matches!(decode_vector(Some(d)), Err(PromError::Garbage(_))));
        assert!(matches!(
            PromClient::new(PromConfig::new("prometheus:9090")),
            Err(PromError::Config(_))
        ));
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut c = PromConfig::new("http://p:9090");
        c.bearer_token = Some("tok-SECRET".into());
        c.basic_auth = Some(("user".into(), "pw-SECRET".into()));
        let d = format!("{c:?}");
        assert!(!d.contains("SECRET"), "{d}");
        assert!(d.contains("user") && d.contains(REDACTED), "{d}");
        let a = crate::analyzer::AnalyzerConfig::new(c);
        assert!(!format!("{a:?}").contains("SECRET"));
    }

    /// The Authorization header follows the token file as it is rewritten (and as a
    /// Secret volume swaps it), without a new client.
    #[tokio::test]
    async fn the_token_file_is_re_read_when_it_changes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let auth = head
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: "))
                    .unwrap_or("")
                    .to_string();
                tx.send(auth).unwrap();
                let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "first\n").unwrap();
        let mut c = PromConfig::new(format!("http://{addr}"));
        c.bearer_token_file = Some(token.clone());
        let client = PromClient::new(c).unwrap();
        client.query("up", 1).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), "Bearer first");
        // Rewritten in place with the same length: the mtime or inode tells.
        std::thread::sleep(Duration::from_millis(20));
        let tmp = dir.path().join("token.new");
        std::fs::write(&tmp, "secnd\n").unwrap();
        std::fs::rename(&tmp, &token).unwrap();
        client.query("up", 1).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), "Bearer secnd");
        // Gone: the last token read is kept.
        std::fs::remove_file(&token).unwrap();
        client.query("up", 1).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), "Bearer secnd");
    }
}
