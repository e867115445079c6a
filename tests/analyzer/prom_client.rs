//! The Prometheus client against a real Prometheus behind TLS and basic auth (its own
//! web config), and the headers Mimir/Thanos deployments need (bearer token,
//! X-Scope-OrgID) plus retry on 503, checked on the wire by a loopback listener.

use crate::prometheus;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rightsizer::analyzer::prom::{PromClient, PromConfig, PromError};

use prometheus::{OpenMetrics, TestProm};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// bcrypt of "test-secret" (crypt(3) with salt `$2b$04$abcdefghijklmnopqrstuu`).
const HASH: &str = "$2b$04$abcdefghijklmnopqrstuuJWEtnDvZqoBF8SQxzfeB.9m.INtpuwK";

#[tokio::test]
async fn tls_and_basic_auth_against_real_prometheus() {
    let t = now() - 3600;
    let t = t - t % 60;
    let mut om = OpenMetrics::default();
    om.series(
        "container_memory_working_set_bytes",
        r#"namespace="a",pod="p",container="c""#,
        (0..30).map(|k| (t - 1800 + 30 + k * 60, 42.0)),
    );

    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();
    let web = format!(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  rightsizer: {HASH}\n"
    );
    let prom = TestProm::start_with_web(&om, dir, &web);
    let url = format!("https://127.0.0.1:{}", prom.port);

    let ca_pem = ca.pem();
    let cfg = |trust: bool, password: &str| {
        let mut c = PromConfig::new(url.clone());
        c.ca_pem = trust.then(|| ca_pem.as_bytes().to_vec());
        c.basic_auth = Some(("rightsizer".into(), password.into()));
        c.retries = 10; // Prometheus answers 503 until its storage is ready
        c.backoff = Duration::from_millis(50);
        c.timeout = Duration::from_secs(5);
        c
    };

    let q = "sum(container_memory_working_set_bytes)";
    let ok = PromClient::new(cfg(true, "test-secret")).unwrap();
    let v = ok
        .query(q, t)
        .await
        .unwrap_or_else(|e| panic!("{e}; prometheus log: {}", prom.log()));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].value, 42.0);

    let wrong = PromClient::new(cfg(true, "nope")).unwrap();
    match wrong.query(q, t).await {
        Err(PromError::Status { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }

    let mut no_ca = cfg(false, "test-secret");
    no_ca.retries = 0;
    let untrusted = PromClient::new(no_ca).unwrap();
    assert!(matches!(
        untrusted.query(q, t).await,
        Err(PromError::Transport(_))
    ));

    // A malformed query is refused without retries.
    assert!(matches!(
        ok.query("sum(", t).await,
        Err(PromError::Query { .. })
    ));
}

/// Accepts connections, records each request; answers 503, then a result, then garbage.
fn header_recorder() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for (n, conn) in l.incoming().enumerate() {
            let Ok(mut c) = conn else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers and the form body (Content-Length).
            while let Ok(k) = c.read(&mut chunk) {
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            s2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).to_string());
            let (status, body) = if n == 0 {
                ("503 Service Unavailable", "busy".to_string())
            } else if n == 2 {
                ("200 OK", "<html>not prometheus</html>".to_string())
            } else {
                (
                    "200 OK",
                    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"namespace":"a"},"value":[1,"7"]}]}}"#.to_string(),
                )
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

#[tokio::test]
async fn bearer_token_tenant_header_and_retry() {
    let (port, seen) = header_recorder();
    let mut c = PromConfig::new(format!("http://127.0.0.1:{port}/prometheus"));
    c.bearer_token = Some("tok-123".into());
    c.tenant = Some("team-a".into());
    c.retries = 1;
    c.backoff = Duration::from_millis(10);
    let client = PromClient::new(c).unwrap();
    let v = client.query("up", 1000).await.unwrap();
    assert_eq!(v[0].value, 7.0);
    assert_eq!(v[0].label("namespace"), "a");
    // Garbage with a 200 is an error, not an empty result.
    assert!(matches!(
        client.query("up", 1000).await,
        Err(PromError::Garbage(_))
    ));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "one retry after the 503, none after garbage");
    for req in seen.iter() {
        let lower = req.to_ascii_lowercase();
        assert!(
            req.starts_with("POST /prometheus/api/v1/query HTTP/1.1"),
            "{req}"
        );
        assert!(lower.contains("authorization: bearer tok-123"), "{req}");
        assert!(lower.contains("x-scope-orgid: team-a"), "{req}");
        assert!(req.contains("query=up&time=1000"), "{req}");
    }
}
