//! A small Prometheus HTTP API client: instant and range queries, with the auth and
//! tenancy options of the backends people run (Prometheus, Thanos Query, Mimir,
//! VictoriaMetrics), a timeout per request and retries with exponential backoff.

use std::time::Duration;

use serde::Deserialize;

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

/// How to reach Prometheus.
#[derive(Debug, Clone)]
pub struct PromConfig {
    /// Base URL, e.g. `http://prometheus:9090` or a Mimir/Thanos/VictoriaMetrics
    /// Prometheus-compatible prefix (`http://mimir/prometheus`).
    pub url: String,
    pub bearer_token: Option<String>,
    pub basic_auth: Option<(String, String)>,
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
            basic_auth: None,
            ca_pem: None,
            tenant: None,
            timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(500),
        }
    }
}

/// One element of an instant vector. Labels are a short list (the queries aggregate
/// down to a handful), which is far smaller than a map per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
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
    value: (f64, String),
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
    values: Vec<(f64, String)>,
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
        Ok(PromClient {
            http,
            cfg,
            endpoint,
            range_endpoint,
        })
    }

    /// Evaluate `query` as an instant vector at unix time `at`, retrying transient failures.
    pub async fn query(&self, query: &str, at: u64) -> Result<Vec<Sample>, PromError> {
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
        if let Some(t) = &self.cfg.bearer_token {
            req = req.bearer_auth(t);
        } else if let Some((u, p)) = &self.cfg.basic_auth {
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
                .filter_map(|(t, v)| {
                    let v: f64 = v.parse().ok()?;
                    (v.is_finite() && t.is_finite()).then_some((t.round() as i64, v))
                })
                .collect(),
        })
        .collect())
}

fn decode_vector(data: Option<ApiData>) -> Result<Vec<Sample>, PromError> {
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
            let v: f64 = e.value.1.parse().ok()?;
            v.is_finite().then_some(Sample {
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
}
