//! A serving certificate the webhook manages itself (`serve --certificate-secret NAME`),
//! so a cluster without cert-manager needs no pre-step: at start (and twice a day) the
//! Secret is read, created when absent, renewed when close to expiry, and the CA is put
//! into the caBundle of the webhook's own MutatingWebhookConfiguration.
//!
//! The Secret holds the CA key too (`ca.key`): every replica must be able to renew the
//! serving certificate without changing the caBundle the others are trusted by. RBAC
//! limits `get`/`update` to this Secret and `get`/`patch` to the one configuration
//! (deploy/overlays/self-managed/rbac-certs.yaml); `create` cannot be limited by name.
//!
//! `plan` is pure (what to do with what the Secret holds at a given time); `ensure`
//! executes it against the API.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
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
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

/// What the Secret holds, as PEM text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Material {
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
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

/// Material after executing `plan` (new keys where the plan says so).
pub fn apply(m: &Material, plan: &Plan, names: &[String]) -> Result<Material, certs::CertError> {
    let (ca, ca_cert) = match plan {
        Plan::Keep => return Ok(m.clone()),
        Plan::Reissue => {
            let (c, k) = (m.ca_cert.clone().unwrap_or_default(), m.ca_key.clone());
            (Ca::load(&c, &k.unwrap_or_default())?, c)
        }
        Plan::New => {
            let ca = Ca::generate("rightsizer webhook CA", CA_DAYS)?;
            let pem = ca.cert_pem().to_string();
            (ca, pem)
        }
    };
    let Serving { cert_pem, key_pem } = ca.issue_serving(names, SERVING_DAYS)?;
    Ok(Material {
        ca_key: Some(ca.key_pem()),
        ca_cert: Some(ca_cert),
        cert: Some(cert_pem),
        key: Some(key_pem),
    })
}

fn from_secret(s: &Secret) -> Material {
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
    }
}

fn to_data(m: &Material) -> BTreeMap<String, ByteString> {
    [
        (CA_CRT, &m.ca_cert),
        (CA_KEY, &m.ca_key),
        (TLS_CRT, &m.cert),
        (TLS_KEY, &m.key),
    ]
    .into_iter()
    .filter_map(|(k, v)| {
        v.as_ref()
            .map(|v| (k.to_string(), ByteString(v.clone().into_bytes())))
    })
    .collect()
}

/// Where the managed certificate lives and whom it is for.
#[derive(Debug, Clone)]
pub struct CertTarget {
    pub namespace: String,
    pub secret: String,
    pub service: String,
    pub webhook_configuration: String,
}

/// Read (or create, or renew) the Secret and make the webhook configuration trust its
/// CA. Returns the serving pair (PEM certificate, PEM key). Concurrent replicas are
/// safe: a lost create or update race re-reads what the winner wrote.
pub async fn ensure(client: &Client, t: &CertTarget) -> anyhow::Result<(String, String)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &t.namespace);
    let names = certs::service_dns_names(&t.service, &t.namespace);
    let mut material = None;
    for _ in 0..3 {
        let existing = api.get_opt(&t.secret).await?;
        let current = existing.as_ref().map(from_secret).unwrap_or_default();
        let decision = plan(&current, OffsetDateTime::now_utc());
        if decision == Plan::Keep {
            material = Some(current);
            break;
        }
        let next = apply(&current, &decision, &names)?;
        let written = match existing {
            None => {
                let mut s = certs::tls_secret(
                    &t.secret,
                    &t.namespace,
                    &Serving {
                        cert_pem: String::new(),
                        key_pem: String::new(),
                    },
                    "",
                );
                s.data = Some(to_data(&next));
                api.create(&PostParams::default(), &s).await.map(|_| ())
            }
            Some(mut s) => {
                s.data = Some(to_data(&next));
                api.replace(&t.secret, &PostParams::default(), &s)
                    .await
                    .map(|_| ())
            }
        };
        match written {
            Ok(()) => {
                tracing::info!(secret = %t.secret, ?decision, "serving certificate written");
                material = Some(next);
                break;
            }
            // Another replica got there first: use what it wrote.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let m = material.ok_or_else(|| anyhow::anyhow!("the Secret {} kept changing", t.secret))?;
    trust_ca(
        client,
        &t.webhook_configuration,
        m.ca_cert.as_deref().unwrap_or(""),
    )
    .await?;
    Ok((m.cert.unwrap_or_default(), m.key.unwrap_or_default()))
}

/// Set every webhook's caBundle in `configuration` to `ca_pem` (only when it differs).
async fn trust_ca(client: &Client, configuration: &str, ca_pem: &str) -> anyhow::Result<()> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let cfg = api.get(configuration).await?;
    let want = ByteString(ca_pem.as_bytes().to_vec());
    let stale: Vec<String> = cfg
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.client_config.ca_bundle.as_ref() != Some(&want))
        .map(|w| w.name.clone())
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    // Strategic merge: webhooks merge by name, so only caBundle is touched.
    let entries: Vec<serde_json::Value> = stale
        .iter()
        .map(|n| serde_json::json!({"name": n, "clientConfig": {"caBundle": want}}))
        .collect();
    let patch = serde_json::json!({"webhooks": entries});
    api.patch(
        configuration,
        &PatchParams::default(),
        &Patch::Strategic(&patch),
    )
    .await?;
    tracing::info!(%configuration, webhooks = ?stale, "caBundle set");
    Ok(())
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
