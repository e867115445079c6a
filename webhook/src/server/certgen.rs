//! Certificate generation: a CA and serving certificates signed by it. Used by
//! `serve --self-signed` and reusable for issuing a cluster's webhook certificate.

use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("no DNS name or IP address given for the serving certificate")]
    NoNames,
}

/// A certificate authority that can sign serving certificates.
pub struct CertAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and its PEM (PKCS#8) private key.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Years of validity: the CA outlives the serving certificates it signs.
const CA_YEARS: i32 = 10;
const SERVING_YEARS: i32 = 2;

impl CertAuthority {
    /// A fresh CA with an ECDSA P-256 key.
    pub fn generate(common_name: &str) -> Result<Self, CertGenError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_YEARS);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(CertAuthority { issuer })
    }

    /// The CA certificate (the bundle clients and `caBundle` trust).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn cert_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// The CA key, for callers that keep the CA to issue more certificates later.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A serving certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn issue(&self, names: &[String]) -> Result<PemPair, CertGenError> {
        let first = names.first().ok_or(CertGenError::NoNames)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, SERVING_YEARS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A new CA and a serving certificate for `names` signed by it.
pub fn generate_ca_and_serving(
    ca_name: &str,
    names: &[String],
) -> Result<(CertAuthority, PemPair), CertGenError> {
    let ca = CertAuthority::generate(ca_name)?;
    let serving = ca.issue(names)?;
    Ok((ca, serving))
}

/// The names `--self-signed` uses.
pub fn localhost_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

/// Valid from the start of last year (tolerates clock skew) for `years` more years.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Average Gregorian year; only the year number matters here.
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + years, 1, 1);
}
