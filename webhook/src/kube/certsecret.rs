//! `serve --certificate-secret NAME`: serve the pair the certificate Job keeps in the
//! Secret, read through the API with `get` and `watch` on that one name (the webhook's
//! identity has no other right on Secrets), and switch to a new pair as soon as the
//! Secret changes.
//!
//! Until the Job has filled the Secret (it is shipped empty) the server presents a
//! throwaway in-memory certificate no one trusts and `/readyz` says what it waits for.
//! A pair that does not parse, does not match, or is outside its validity is refused;
//! the last good one stays. The expiry gauge follows the pair actually served.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::Client;

use super::selfcert::{self, TLS_CRT, TLS_KEY};
use crate::clock::unix_now;
use crate::lock::LockExt as _;
use crate::server::metrics::ServerMetrics;
use crate::server::readiness::Readiness;
use crate::server::tls::{check_validity, SwappableCert};

/// Backstop re-read and the wait before a failed watch is opened again.
const REREAD: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(5);

/// The pair being served and whether it came from the Secret yet.
pub struct SecretCert {
    pub cert: Arc<SwappableCert>,
    state: Arc<Mutex<State>>,
    _task: tokio::task::JoinHandle<()>,
}

struct State {
    secret: String,
    loaded: bool,
    /// The Secret's last content looked at (good or bad), so it is parsed once.
    seen: Option<(Vec<u8>, Vec<u8>)>,
    failure: Option<String>,
}

impl SecretCert {
    /// Ready once a pair from the Secret is served.
    pub fn readiness(&self) -> Readiness {
        let state = self.state.clone();
        Readiness::from_fn(move || {
            let s = state.locked();
            if s.loaded {
                return Ok(());
            }
            let why = s.failure.as_deref().unwrap_or(
                "empty: the certificate Job (rightsizer certs --kube) has not filled it yet",
            );
            Err(format!(
                "no serving certificate from Secret {}: {why}",
                s.secret
            ))
        })
    }

    pub fn is_loaded(&self) -> bool {
        self.state.locked().loaded
    }
}

/// Read the Secret once and keep following it in the background.
pub async fn follow(
    client: Client,
    namespace: &str,
    secret: &str,
    metrics: ServerMetrics,
) -> anyhow::Result<SecretCert> {
    let placeholder = crate::certs::Ca::generate("rightsizer placeholder", 1)?
        .issue_serving(&["localhost".to_string()], 1)?;
    let ck = crate::server::tls::certified_key_from_pem(
        placeholder.cert_pem.as_bytes(),
        placeholder.key_pem.as_bytes(),
        "placeholder",
    )?;
    let cert = Arc::new(SwappableCert::new(ck));
    let state = Arc::new(Mutex::new(State {
        secret: secret.to_string(),
        loaded: false,
        seen: None,
        failure: None,
    }));
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let follower = Follower {
        api,
        name: secret.to_string(),
        cert: cert.clone(),
        state: state.clone(),
        metrics,
    };
    // The first read happens before the server starts, so a filled Secret is served
    // from the first connection on.
    let version = follower.reread().await;
    let task = tokio::spawn(follower.run(version));
    Ok(SecretCert {
        cert,
        state,
        _task: task,
    })
}

struct Follower {
    api: Api<Secret>,
    name: String,
    cert: Arc<SwappableCert>,
    state: Arc<Mutex<State>>,
    metrics: ServerMetrics,
}

impl Follower {
    /// `get` the Secret and take its pair; returns the resourceVersion to watch from.
    async fn reread(&self) -> Option<String> {
        match self.api.get_opt(&self.name).await {
            Ok(Some(s)) => {
                self.take(&s);
                s.metadata.resource_version
            }
            Ok(None) => {
                self.fail(format!("Secret {} does not exist", self.name));
                None
            }
            Err(e) => {
                self.fail(format!("reading Secret {}: {e}", self.name));
                None
            }
        }
    }

    async fn run(self, mut version: Option<String>) {
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(290);
        let mut reread = tokio::time::interval(REREAD);
        reread.tick().await;
        loop {
            let Some(v) = version.clone() else {
                tokio::time::sleep(RETRY).await;
                version = self.reread().await;
                continue;
            };
            let stream = match self.api.watch(&params, &v).await {
                Ok(s) => s.boxed(),
                Err(e) => {
                    tracing::warn!(secret = %self.name, error = %e, "watching the certificate Secret");
                    tokio::time::sleep(RETRY).await;
                    version = self.reread().await;
                    continue;
                }
            };
            let mut stream = stream.into_stream();
            loop {
                tokio::select! {
                    ev = stream.next() => match ev {
                        Some(Ok(WatchEvent::Added(s) | WatchEvent::Modified(s))) => {
                            self.take(&s);
                            version = s.metadata.resource_version.or(version);
                        }
                        Some(Ok(WatchEvent::Bookmark(b))) => {
                            version = Some(b.metadata.resource_version);
                        }
                        Some(Ok(WatchEvent::Deleted(_))) => {
                            self.fail(format!("Secret {} was deleted", self.name));
                        }
                        // Expired version, a dropped connection or the server's timeout:
                        // read again and watch from there.
                        Some(Ok(WatchEvent::Error(_)) | Err(_)) | None => {
                            version = self.reread().await;
                            break;
                        }
                    },
                    _ = reread.tick() => {
                        version = self.reread().await;
                        break;
                    }
                }
            }
        }
    }

    /// Serve the Secret's pair when it changed and is good now.
    fn take(&self, s: &Secret) {
        let m = selfcert::from_secret(s);
        let (Some(c), Some(k)) = (m.cert, m.key) else {
            let mut st = self.state.locked();
            if !st.loaded {
                st.failure = Some(format!(
                    "Secret {} has no {TLS_CRT}/{TLS_KEY} yet: the certificate Job (rightsizer certs --kube) has not filled it",
                    self.name
                ));
            }
            return;
        };
        let (c, k) = (c.into_bytes(), k.into_bytes());
        let mut st = self.state.locked();
        if st.seen.as_ref() == Some(&(c.clone(), k.clone())) {
            return;
        }
        let parsed = crate::server::tls::certified_key_from_pem(&c, &k, &self.name)
            .and_then(|ck| check_validity(&ck, unix_now()).map(|(_, end)| (ck, end)));
        match parsed {
            Ok((ck, not_after)) => {
                // The expiry alert reads the pair actually served.
                self.metrics.tls_cert_not_after.set(not_after);
                self.cert.store(ck);
                st.seen = Some((c, k));
                st.loaded = true;
                st.failure = None;
                self.metrics.tls_reload("success");
                tracing::info!(secret = %self.name, "serving certificate taken from the Secret");
            }
            Err(e) => {
                let why = e.to_string();
                if st.failure.as_deref() != Some(why.as_str()) {
                    tracing::warn!(secret = %self.name, error = %why, "certificate in the Secret refused; keeping the last good one");
                    self.metrics.tls_reload("error");
                }
                st.failure = Some(why);
            }
        }
    }

    fn fail(&self, why: String) {
        let mut st = self.state.locked();
        if st.failure.as_deref() != Some(why.as_str()) {
            tracing::warn!(secret = %self.name, error = %why, "certificate Secret");
        }
        st.failure = Some(why);
    }
}
