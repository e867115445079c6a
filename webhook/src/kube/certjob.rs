//! What the certificate Job (`rightsizer certs --kube`) does, run once at install and
//! again by a CronJob: it is the only identity that writes the serving certificate's
//! Secret or the webhook's caBundle, so the webhook's own (long-running) identity never
//! can redirect admission or write Secrets.
//!
//! The Secret is shipped empty by the manifests, so the Job needs `get`/`update` on that
//! one name and never `create` (which RBAC cannot limit to a name). One run:
//! 1. read the Secret and plan (`selfcert::plan`): keep, reissue from the same CA, or a
//!    new CA (first run, CA close to expiry, or `--new-ca`);
//! 2. set the caBundle to what the new material needs *before* writing the Secret, so
//!    the apiserver already trusts a new CA when the replicas (which watch the Secret)
//!    start serving its pair; a new CA's bundle also holds the previous CA;
//! 3. write the Secret (optimistic concurrency: a concurrent run's write wins, this run
//!    fails and the next one starts over);
//! 4. retire the previous CA only once every address of the webhook's Endpoints (ready
//!    or not) completes a TLS handshake trusting the new CA alone, or once the previous
//!    CA has expired (it then verifies nothing anyway). Otherwise it stays, and a later
//!    run looks again.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Endpoints, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use time::OffsetDateTime;

use super::selfcert::{self, Material, Plan};
use crate::certs;

/// Where the managed certificate lives and whom it is for.
#[derive(Debug, Clone)]
pub struct CertTarget {
    pub namespace: String,
    pub secret: String,
    pub service: String,
    pub webhook_configuration: String,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub plan: Plan,
    /// The previous CA was dropped from the bundle on this run.
    pub retired_previous: bool,
    /// A previous CA is still trusted after this run.
    pub previous_kept: bool,
    /// The caBundle was changed.
    pub bundle_patched: bool,
}

/// One run of the Job (see the module documentation).
pub async fn run(client: &Client, t: &CertTarget, new_ca: bool) -> anyhow::Result<Report> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &t.namespace);
    let secret = api.get_opt(&t.secret).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "Secret {}/{} not found: the manifests ship it empty (this Job may only update it); apply them first",
            t.namespace,
            t.secret
        )
    })?;
    let current = selfcert::from_secret(&secret);
    let now = OffsetDateTime::now_utc();
    let decision = if new_ca {
        Plan::New
    } else {
        selfcert::plan(&current, now)
    };
    let names = certs::service_dns_names(&t.service, &t.namespace);
    let mut next = selfcert::apply(&current, &decision, &names)?;

    let mut retired = false;
    if decision == Plan::Keep {
        if let Some(old) = next.previous_ca.clone() {
            let expired = selfcert::not_after(&old).is_none_or(|end| end <= now);
            if expired || serving_new_pair(client, t, &next).await {
                next.previous_ca = None;
                retired = true;
            }
        }
    }

    // Trust first, then hand the replicas the new pair.
    let patched = trust_bundle(client, &t.webhook_configuration, &next.bundle()).await?;
    if next != current {
        let mut s = secret;
        s.data = Some(selfcert::to_data(&next));
        api.replace(&t.secret, &PostParams::default(), &s).await?;
        tracing::info!(secret = %t.secret, ?decision, retired, "certificate Secret written");
    }
    Ok(Report {
        plan: decision,
        retired_previous: retired,
        previous_kept: next.previous_ca.is_some(),
        bundle_patched: patched,
    })
}

/// Every address of the Service's Endpoints serves a pair the new CA alone verifies.
/// False when there is no address or one cannot be reached: the previous CA then stays.
async fn serving_new_pair(client: &Client, t: &CertTarget, m: &Material) -> bool {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &t.namespace);
    let eps = match api.get_opt(&t.service).await {
        Ok(Some(e)) => e,
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(error = %e, "reading the webhook's Endpoints; keeping the previous CA");
            return false;
        }
    };
    let mut targets = Vec::new();
    for subset in eps.subsets.iter().flatten() {
        let port = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("https"))
            .or_else(|| subset.ports.iter().flatten().next())
            .map(|p| p.port);
        let Some(port) = port else { continue };
        let addrs = subset.addresses.iter().flatten();
        let not_ready = subset.not_ready_addresses.iter().flatten();
        for a in addrs.chain(not_ready) {
            targets.push(format!("{}:{port}", a.ip));
        }
    }
    if targets.is_empty() {
        return false;
    }
    let ca = m.ca_cert.clone().unwrap_or_default();
    let name = format!("{}.{}.svc", t.service, t.namespace);
    for addr in targets {
        if let Err(e) = verify_serving(&addr, &name, &ca).await {
            tracing::info!(%addr, error = %e, "a replica does not serve the new pair yet; keeping the previous CA");
            return false;
        }
    }
    true
}

/// A TLS handshake with `addr` as `server_name`, trusting only `ca_pem`.
pub async fn verify_serving(addr: &str, server_name: &str, ca_pem: &str) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(crate::server::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let name = ServerName::try_from(server_name.to_string())?;
    let timeout = std::time::Duration::from_secs(5);
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await??;
    tokio::time::timeout(timeout, connector.connect(name, tcp)).await??;
    Ok(())
}

/// Set every webhook's caBundle in `configuration` to `bundle` (only where it differs).
/// Returns whether anything changed.
async fn trust_bundle(client: &Client, configuration: &str, bundle: &str) -> anyhow::Result<bool> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let cfg = api.get(configuration).await?;
    let want = ByteString(bundle.as_bytes().to_vec());
    let stale: Vec<String> = cfg
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.client_config.ca_bundle.as_ref() != Some(&want))
        .map(|w| w.name.clone())
        .collect();
    if stale.is_empty() {
        return Ok(false);
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
    Ok(true)
}
