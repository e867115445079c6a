//! The certificate material of the self-managed mode, as kept in the Secret
//! `rightsizer-tls`: a CA (certificate and key), the serving pair it signed, and during a
//! CA rotation the previous CA certificate (`ca-previous.crt`), which stays in the
//! webhook's caBundle until every serving replica presents the new pair (see
//! `kube::certjob`).
//!
//! Only the certificate Job (`rightsizer certs --kube`) writes it, under its own
//! ServiceAccount; the webhook's replicas only read and watch it (`kube::certsecret`).
//!
//! `plan` and `apply` are pure (what to do with what the Secret holds at a given time).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use time::{Duration, OffsetDateTime};

use crate::certs::{self, Ca, Serving};

/// Validity of the CA the webhook makes (its caBundle then stays put for years).
pub const CA_DAYS: u32 = 3650;
/// Validity of a serving certificate.
pub const SERVING_DAYS: u32 = 365;
/// Renew a certificate once it has less than this left.
pub const RENEW_BEFORE: Duration = Duration::days(60);

const CA_KEY: &str = "ca.key";
const CA_CRT: &str = "ca.crt";
const CA_PREVIOUS: &str = "ca-previous.crt";
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// What the Secret holds, as PEM text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Material {
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// The CA replaced by the last rotation, still trusted until it is retired.
    pub previous_ca: Option<String>,
}

impl Material {
    /// The caBundle the apiserver must hold for this material: the CA, then the
    /// previous CA while it is kept.
    pub fn bundle(&self) -> String {
        let mut b = self.ca_cert.clone().unwrap_or_default();
        if let Some(old) = &self.previous_ca {
            if !b.ends_with('\n') && !b.is_empty() {
                b.push('\n');
            }
            b.push_str(old);
        }
        b
    }
}

/// The decision for one look at the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The pair in the Secret is good for a while: serve it.
    Keep,
    /// The CA is good but the serving certificate is missing, unusable or expiring:
    /// issue a new one from the same CA (the caBundle does not change).
    Reissue,
    /// No usable CA: make a new CA and serving certificate.
    New,
}

/// Pure: decide from the Secret's content and the expiry dates read from it.
pub fn plan(m: &Material, now: OffsetDateTime) -> Plan {
    let fresh = |pem: &Option<String>| {
        pem.as_deref()
            .and_then(not_after)
            .is_some_and(|end| end - now > RENEW_BEFORE)
    };
    let ca_ok = fresh(&m.ca_cert)
        && match (&m.ca_cert, &m.ca_key) {
            (Some(c), Some(k)) => Ca::load(c, k).is_ok(),
            _ => false,
        };
    if !ca_ok {
        return Plan::New;
    }
    let pair_ok = fresh(&m.cert)
        && match (&m.cert, &m.key) {
            (Some(c), Some(k)) => {
                crate::server::tls::certified_key_from_pem(c.as_bytes(), k.as_bytes(), "secret")
                    .is_ok()
            }
            _ => false,
        };
    if pair_ok {
        Plan::Keep
    } else {
        Plan::Reissue
    }
}

/// The end of a PEM certificate's validity (None when it does not parse).
pub fn not_after(pem: &str) -> Option<OffsetDateTime> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.to_datetime())
}

/// Material after executing `plan` (new keys where the plan says so). A new CA keeps
/// the CA it replaces (when that one still parses) as `previous_ca`, so the caBundle
/// trusts both while replicas switch.
pub fn apply(m: &Material, plan: &Plan, names: &[String]) -> Result<Material, certs::CertError> {
    let (ca, ca_cert, previous_ca) = match plan {
        Plan::Keep => return Ok(m.clone()),
        Plan::Reissue => {
            let (c, k) = (m.ca_cert.clone().unwrap_or_default(), m.ca_key.clone());
            (
                Ca::load(&c, &k.unwrap_or_default())?,
                c,
                m.previous_ca.clone(),
            )
        }
        Plan::New => {
            let ca = Ca::generate("rightsizer webhook CA", CA_DAYS)?;
            let pem = ca.cert_pem().to_string();
            let old = m.ca_cert.clone().filter(|c| not_after(c).is_some());
            (ca, pem, old)
        }
    };
    let Serving { cert_pem, key_pem } = ca.issue_serving(names, SERVING_DAYS)?;
    Ok(Material {
        ca_key: Some(ca.key_pem()),
        ca_cert: Some(ca_cert),
        cert: Some(cert_pem),
        key: Some(key_pem),
        previous_ca,
    })
}

/// What a Secret holds (absent keys are `None`).
pub fn from_secret(s: &Secret) -> Material {
    let get = |k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    Material {
        ca_cert: get(CA_CRT),
        ca_key: get(CA_KEY),
        cert: get(TLS_CRT),
        key: get(TLS_KEY),
        previous_ca: get(CA_PREVIOUS),
    }
}

/// The Secret's `data` for `m`.
pub fn to_data(m: &Material) -> BTreeMap<String, ByteString> {
    [
        (CA_CRT, &m.ca_cert),
        (CA_KEY, &m.ca_key),
        (TLS_CRT, &m.cert),
        (TLS_KEY, &m.key),
        (CA_PREVIOUS, &m.previous_ca),
    ]
    .into_iter()
    .filter_map(|(k, v)| {
        v.as_ref()
            .map(|v| (k.to_string(), ByteString(v.clone().into_bytes())))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        certs::service_dns_names("rightsizer", "rightsizer-system")
    }

    fn fresh() -> Material {
        apply(&Material::default(), &Plan::New, &names()).unwrap()
    }

    #[test]
    fn plans_follow_what_the_secret_holds() {
        let now = OffsetDateTime::now_utc();
        let good = fresh();
        let other = fresh();
        let cases = [
            ("empty secret", Material::default(), Plan::New),
            ("complete and fresh", good.clone(), Plan::Keep),
            (
                "serving pair missing",
                Material {
                    cert: None,
                    key: None,
                    ..good.clone()
                },
                Plan::Reissue,
            ),
            (
                "key of another pair",
                Material {
                    key: other.key.clone(),
                    ..good.clone()
                },
                Plan::Reissue,
            ),
            (
                "CA key of another CA",
                Material {
                    ca_key: other.ca_key.clone(),
                    ..good.clone()
                },
                Plan::New,
            ),
            (
                "CA key missing (made by `rightsizer certs`)",
                Material {
                    ca_key: None,
                    ..good.clone()
                },
                Plan::New,
            ),
        ];
        for (what, m, want) in cases {
            assert_eq!(plan(&m, now), want, "{what}");
        }
    }

    #[test]
    fn a_serving_certificate_close_to_expiry_is_reissued_from_the_same_ca() {
        let good = fresh();
        let end = not_after(good.cert.as_deref().unwrap()).unwrap();
        let later = end - RENEW_BEFORE + Duration::days(1);
        assert_eq!(plan(&good, later), Plan::Reissue);
        let next = apply(&good, &Plan::Reissue, &names()).unwrap();
        assert_eq!(next.ca_cert, good.ca_cert, "the caBundle stays the same");
        assert_ne!(next.cert, good.cert);
        assert_eq!(plan(&next, OffsetDateTime::now_utc()), Plan::Keep);
    }

    #[test]
    fn a_new_ca_keeps_the_one_it_replaces_in_the_bundle() {
        let first = fresh();
        assert_eq!(first.previous_ca, None, "a first CA replaces nothing");
        assert_eq!(first.bundle(), first.ca_cert.clone().unwrap());
        let rotated = apply(&first, &Plan::New, &names()).unwrap();
        assert_ne!(rotated.ca_cert, first.ca_cert);
        assert_eq!(rotated.previous_ca, first.ca_cert);
        let bundle = rotated.bundle();
        assert!(bundle.starts_with(rotated.ca_cert.as_deref().unwrap()));
        assert!(bundle.ends_with(first.ca_cert.as_deref().unwrap()));
        // Reissuing from the new CA keeps the overlap until it is retired.
        let reissued = apply(&rotated, &Plan::Reissue, &names()).unwrap();
        assert_eq!(reissued.previous_ca, first.ca_cert);
        // What the Secret holds round-trips.
        let s = Secret {
            data: Some(to_data(&rotated)),
            ..Secret::default()
        };
        assert_eq!(from_secret(&s), rotated);
    }

    #[test]
    fn the_serving_certificate_names_the_service() {
        let m = fresh();
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(m.cert.as_deref().unwrap().as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let dns: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(
            dns.iter()
                .any(|n| n == "DNSName(rightsizer.rightsizer-system.svc)"),
            "{dns:?}"
        );
    }
}
