//! rustls server configuration (ring, ALPN h2 + http/1.1) whose certificate can be
//! swapped at any time: new connections get the newest certificate, open ones keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PEM certificate in {0}")]
    NoCertificate(String),
    #[error("no PEM private key in {0}: {1}")]
    NoKey(String, String),
    #[error("bad PEM in {0}: {1}")]
    Pem(String, String),
    #[error("certificate and key do not form a usable pair: {0}")]
    Pair(#[from] rustls::Error),
    #[error("watching certificate files: {0}")]
    Watch(#[from] notify::Error),
    #[error("the certificate does not parse as X.509: {0}")]
    X509(String),
    #[error(
        "the certificate is valid from {not_before} to {not_after} (unix seconds), not now ({now})"
    )]
    OutsideValidity {
        not_before: i64,
        not_after: i64,
        now: i64,
    },
}

/// `notBefore` and `notAfter` of the leaf certificate, unix seconds.
pub fn validity(ck: &CertifiedKey) -> Result<(i64, i64), TlsError> {
    let leaf = ck
        .cert
        .first()
        .ok_or_else(|| TlsError::NoCertificate("chain".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| TlsError::X509(e.to_string()))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Refuse a certificate that is expired or not yet valid at `now` (unix seconds).
pub fn check_validity(ck: &CertifiedKey, now: u64) -> Result<(i64, i64), TlsError> {
    let (not_before, not_after) = validity(ck)?;
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    if now < not_before || now > not_after {
        return Err(TlsError::OutsideValidity {
            not_before,
            not_after,
            now,
        });
    }
    Ok((not_before, not_after))
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parse a PEM certificate chain and PEM private key into a checked `CertifiedKey`
/// (the key must match the leaf certificate). `what` names the source in errors.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(what.to_string(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(what.to_string()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::NoKey(what.to_string(), e.to_string()))?;
    let ck = CertifiedKey::from_der(chain, key, &provider())?;
    // from_der tolerates "unknown" consistency; a serving pair must be known to match.
    ck.keys_match()?;
    Ok(ck)
}

/// Read and check a certificate/key pair from files.
pub fn load_pair(cert: &Path, key: &Path) -> Result<(CertifiedKey, Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let (c, k) = (read(cert)?, read(key)?);
    let what = format!("{} + {}", cert.display(), key.display());
    let ck = certified_key_from_pem(&c, &k, &what)?;
    Ok((ck, c, k))
}

/// Serves whatever certificate was stored last.
#[derive(Debug)]
pub struct SwappableCert(ArcSwap<CertifiedKey>);

impl SwappableCert {
    pub fn new(initial: CertifiedKey) -> Self {
        SwappableCert(ArcSwap::from_pointee(initial))
    }

    pub fn store(&self, ck: CertifiedKey) {
        self.0.store(Arc::new(ck));
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.load_full()
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// A TLS 1.2/1.3 server config offering HTTP/2 and HTTP/1.1 by ALPN. With `client_ca`
/// (PEM, `serve --client-ca`) every client must present a certificate that CA signed,
/// as a kube-apiserver does when its AdmissionConfiguration gives it one for this
/// webhook; other clients fail the handshake.
pub fn server_config(
    cert: Arc<SwappableCert>,
    client_ca: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| TlsError::Pem("client CA".into(), e.to_string()))?;
                roots.add(c)?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCertificate("client CA".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Pem("client CA".into(), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::Ca;

    #[test]
    fn mismatched_key_and_garbage_are_refused() {
        let ca = Ca::generate("t", 1).unwrap();
        let (a, b) = (
            ca.issue_serving(&["localhost".to_string()], 1).unwrap(),
            ca.issue_serving(&["localhost".to_string()], 1).unwrap(),
        );
        assert!(certified_key_from_pem(a.cert_pem.as_bytes(), a.key_pem.as_bytes(), "a").is_ok());
        let e = certified_key_from_pem(a.cert_pem.as_bytes(), b.key_pem.as_bytes(), "a+b");
        assert!(matches!(e, Err(TlsError::Pair(_))), "{e:?}");
        let e = certified_key_from_pem(b"", a.key_pem.as_bytes(), "empty");
        assert!(matches!(e, Err(TlsError::NoCertificate(_))), "{e:?}");
        let e = certified_key_from_pem(a.cert_pem.as_bytes(), b"nope", "nokey");
        assert!(matches!(e, Err(TlsError::NoKey(..))), "{e:?}");
        // Half-written certificate file.
        let half = &a.cert_pem.as_bytes()[..a.cert_pem.len() / 2];
        assert!(certified_key_from_pem(half, a.key_pem.as_bytes(), "half").is_err());
    }

    /// `--client-ca`: a PEM CA makes a config that asks for client certificates; a file
    /// without one is refused rather than serving without verification.
    #[test]
    fn a_client_ca_must_hold_a_certificate() {
        let ca = Ca::generate("t", 1).unwrap();
        let p = ca.issue_serving(&["localhost".to_string()], 1).unwrap();
        let ck = || {
            let k = certified_key_from_pem(p.cert_pem.as_bytes(), p.key_pem.as_bytes(), "p");
            Arc::new(SwappableCert::new(k.unwrap()))
        };
        let clients = Ca::generate("clients", 1).unwrap();
        assert!(server_config(ck(), Some(clients.cert_pem().as_bytes())).is_ok());
        let empty = server_config(ck(), Some(b"no PEM here"));
        assert!(
            matches!(empty, Err(TlsError::NoCertificate(_))),
            "{empty:?}"
        );
    }

    #[test]
    fn config_offers_h2_then_http11() {
        let ca = Ca::generate("t", 1).unwrap();
        let p = ca.issue_serving(&["localhost".to_string()], 1).unwrap();
        let ck = certified_key_from_pem(p.cert_pem.as_bytes(), p.key_pem.as_bytes(), "p").unwrap();
        let cfg = server_config(Arc::new(SwappableCert::new(ck)), None).unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
