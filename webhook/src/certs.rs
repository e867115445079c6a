//! Certificate material for the webhook's HTTPS endpoint: a private CA, a serving
//! certificate for the Service's DNS names, and the two manifests that carry them into
//! a cluster (the TLS Secret and a kustomize patch that sets the webhook's `caBundle`).
//!
//! Generation only: serving and reloading the files is the TLS server's job.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// Namespace the manifests in `deploy/` install into.
pub const DEFAULT_NAMESPACE: &str = "rightsizer-system";
/// The webhook's Service in `deploy/base`.
pub const DEFAULT_SERVICE: &str = "rightsizer";
/// The TLS Secret the Deployment mounts at /tls.
pub const DEFAULT_SECRET: &str = "rightsizer-tls";
/// The MutatingWebhookConfiguration in `deploy/base`.
pub const WEBHOOK_CONFIGURATION: &str = "rightsizer";
/// The webhook entry inside it (the caBundle patch is keyed by this name).
pub const WEBHOOK_NAME: &str = "mutate.rightsizer.io";

/// Certificates are valid from a little before "now" so that a node whose clock is
/// slightly behind does not reject a freshly issued certificate.
const CLOCK_SKEW: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("invalid subject alternative name {name:?}: {source}")]
    InvalidName { name: String, source: rcgen::Error },
    #[error("a validity of {days} days is out of range")]
    Validity { days: u32 },
    #[error("generating a key pair: {0}")]
    Key(rcgen::Error),
    #[error("signing the {what} certificate: {source}")]
    Sign {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("reading the CA {what}: {detail}")]
    LoadCa { what: &'static str, detail: String },
    #[error("the CA key does not belong to the CA certificate: {0}")]
    CaKeyMismatch(String),
    #[error("writing a manifest: {0}")]
    Manifest(#[from] serde_norway::Error),
}

/// The names a client inside the cluster may use for `service` in `namespace`. The
/// apiserver calls `<service>.<namespace>.svc`, which comes first (it becomes the CN).
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ]
}

/// A certificate authority that can issue serving certificates.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA with a fresh ECDSA P-256 key.
    pub fn generate(common_name: &str, days: u32) -> Result<Self, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "rightsizer");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity(days)?;
        let key = KeyPair::generate().map_err(CertError::Key)?;
        let cert = params
            .self_signed(&key)
            .map_err(|source| CertError::Sign { what: "CA", source })?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// An existing CA from PEM files (to renew the serving certificate without
    /// changing the webhook's caBundle). Fails if the key is not the certificate's.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::LoadCa {
            what: "key",
            detail: e.to_string(),
        })?;
        check_key_matches(cert_pem, key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| CertError::LoadCa {
            what: "certificate",
            detail: e.to_string(),
        })?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A serving certificate (server auth) for `names` (DNS names or IP addresses),
    /// signed by this CA, with a fresh key. The first name is also the common name.
    pub fn issue_serving(&self, names: &[String], days: u32) -> Result<Serving, CertError> {
        let (not_before, not_after) = validity(days)?;
        self.issue_serving_between(names, not_before, not_after)
    }

    /// [`Ca::issue_serving`] with an explicit validity period.
    pub fn issue_serving_between(
        &self,
        names: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Serving, CertError> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|name| {
                CertificateParams::new(vec![name.clone()])
                    .map(|p| p.subject_alt_names)
                    .map_err(|source| CertError::InvalidName {
                        name: name.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = (not_before, not_after);
        let key = KeyPair::generate().map_err(CertError::Key)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| CertError::Sign {
                what: "serving",
                source,
            })?;
        Ok(Serving {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A serving certificate and its private key, PEM. Its `Debug` omits the key.
#[derive(Clone)]
pub struct Serving {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn validity(days: u32) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
    let now = OffsetDateTime::now_utc();
    let not_after = (days > 0)
        .then(|| now.checked_add(Duration::days(i64::from(days))))
        .flatten()
        .ok_or(CertError::Validity { days })?;
    Ok((now - CLOCK_SKEW, not_after))
}

/// Compares the key's public half with the certificate's, so a CA certificate and key
/// from different runs are refused instead of producing an unverifiable chain.
fn check_key_matches(cert_pem: &str, key_pem: &str) -> Result<(), CertError> {
    let cert =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| CertError::LoadCa {
            what: "certificate",
            detail: e.to_string(),
        })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| CertError::LoadCa {
        what: "key",
        detail: e.to_string(),
    })?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::LoadCa {
            what: "key",
            detail: e.to_string(),
        })?;
    rustls::sign::CertifiedKey::new(vec![cert], Arc::clone(&signing))
        .keys_match()
        .map_err(|e| CertError::CaKeyMismatch(e.to_string()))
}

/// The `kubernetes.io/tls` Secret the Deployment mounts; `ca.crt` is included so
/// clients in the cluster can find the CA next to the certificate.
pub fn tls_secret(name: &str, namespace: &str, serving: &Serving, ca_bundle_pem: &str) -> Secret {
    let data = BTreeMap::from([
        (
            "tls.crt".to_string(),
            ByteString(serving.cert_pem.clone().into_bytes()),
        ),
        (
            "tls.key".to_string(),
            ByteString(serving.key_pem.clone().into_bytes()),
        ),
        (
            "ca.crt".to_string(),
            ByteString(ca_bundle_pem.as_bytes().to_vec()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "rightsizer".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

pub fn tls_secret_yaml(
    name: &str,
    namespace: &str,
    serving: &Serving,
    ca_bundle_pem: &str,
) -> Result<String, CertError> {
    Ok(serde_norway::to_string(&tls_secret(
        name,
        namespace,
        serving,
        ca_bundle_pem,
    ))?)
}

/// A strategic-merge patch (webhooks merge by name) that sets `caBundle` on each named
/// webhook of the MutatingWebhookConfiguration `configuration`.
pub fn webhook_ca_patch_yaml(
    configuration: &str,
    webhooks: &[&str],
    ca_bundle_pem: &str,
) -> Result<String, CertError> {
    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_bundle_pem.as_bytes());
    let entries: Vec<serde_json::Value> = webhooks
        .iter()
        .map(|name| serde_json::json!({"name": name, "clientConfig": {"caBundle": bundle}}))
        .collect();
    let patch = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": configuration},
        "webhooks": entries,
    });
    Ok(serde_norway::to_string(&patch)?)
}

/// Write `contents` to `dir/name` so that no reader sees half a file and nothing is
/// written through a link: a temporary file is created exclusively (`O_EXCL`: it fails
/// on any existing path, a symlink included) with its final mode (0600 when `private`,
/// for keys), synced, then renamed over `name` (a rename replaces a symlink at `name`
/// instead of following it). A stale temporary of an interrupted run is removed first.
pub fn write_file(dir: &Path, name: &str, contents: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_cover_the_short_and_full_service_names() {
        let names = service_dns_names("svc", "ns");
        assert_eq!(
            names,
            ["svc.ns.svc", "svc.ns.svc.cluster.local", "svc.ns", "svc"]
        );
    }

    #[test]
    fn zero_days_is_refused() {
        assert!(matches!(
            Ca::generate("x", 0),
            Err(CertError::Validity { days: 0 })
        ));
    }

    #[test]
    fn a_key_from_another_ca_is_refused() {
        let a = Ca::generate("a", 1).unwrap();
        let b = Ca::generate("b", 1).unwrap();
        assert!(matches!(
            Ca::load(a.cert_pem(), &b.key_pem()),
            Err(CertError::CaKeyMismatch(_))
        ));
        assert!(Ca::load(a.cert_pem(), &a.key_pem()).is_ok());
    }

    #[test]
    fn a_bad_name_is_a_typed_error() {
        let ca = Ca::generate("a", 1).unwrap();
        let err = ca.issue_serving(&["b\u{e4}d.example".to_string()], 1);
        assert!(
            matches!(err, Err(CertError::InvalidName { .. })),
            "{:?}",
            err.err()
        );
    }

    #[test]
    fn debug_of_a_serving_pair_omits_the_key() {
        let ca = Ca::generate("a", 1).unwrap();
        let p = ca.issue_serving(&["localhost".to_string()], 1).unwrap();
        let d = format!("{p:?}");
        assert!(!d.contains("PRIVATE KEY"), "{d}");
        assert!(d.contains("BEGIN CERTIFICATE"));
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_written_owner_only_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        // A planted temporary and a planted target, both links to the victim.
        std::os::unix::fs::symlink(&victim, dir.path().join(".tls.key.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("tls.key")).unwrap();
        write_file(dir.path(), "tls.key", b"secret", true).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let key = dir.path().join("tls.key");
        assert!(!std::fs::symlink_metadata(&key)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "secret");
        assert_eq!(mode(&key), 0o600);
        assert!(!dir.path().join(".tls.key.tmp").exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_replacing_a_world_readable_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca.key");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_file(dir.path(), "ca.key", b"new", true).unwrap();
        assert_eq!(mode(&key), 0o600);
        write_file(dir.path(), "ca.crt", b"cert", false).unwrap();
        assert_eq!(mode(&dir.path().join("ca.crt")) & 0o600, 0o600);
    }
}
