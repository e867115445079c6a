//! `rightsizer certs`: write the webhook's CA, serving certificate, TLS Secret manifest
//! and caBundle patch into a directory (by default the self-signed overlay's git-ignored
//! `generated/`), reusing the CA found there unless `--new-ca`.
//!
//! `rightsizer certs --kube`: the certificate Job of the self-managed install (see
//! `kube::certjob`): issue, renew or rotate the pair in the Secret and set the caBundle,
//! under the Job's own ServiceAccount.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rightsizer::certs::{self, Ca};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write into (created when missing; it gets a `.gitignore` of `*`).
    #[arg(long, default_value = "deploy/overlays/self-signed/generated")]
    out_dir: PathBuf,
    /// Through the Kubernetes API instead of files: fill or renew the (existing) Secret
    /// `--secret-name` and set the caBundle of `--webhook-configuration` (the Job of
    /// deploy/overlays/self-managed). `--new-ca` rotates the CA, keeping the old one in
    /// the bundle until every replica serves the new pair.
    #[arg(long)]
    kube: bool,
    /// Namespace of the Service and Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = certs::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Name of the webhook's Service.
    #[arg(long, default_value = certs::DEFAULT_SERVICE)]
    service: String,
    /// Name of the TLS Secret the Deployment mounts.
    #[arg(long, default_value = certs::DEFAULT_SECRET)]
    secret_name: String,
    /// Name of the MutatingWebhookConfiguration to patch with the caBundle.
    #[arg(long, default_value = certs::WEBHOOK_CONFIGURATION)]
    webhook_configuration: String,
    /// Webhook entries inside it to patch (repeatable).
    #[arg(long = "webhook", default_values_t = [certs::WEBHOOK_NAME.to_string()])]
    webhooks: Vec<String>,
    /// Extra subject alternative names, DNS names or IP addresses (repeatable), e.g.
    /// 127.0.0.1 for a webhook registered by URL in a local test cluster.
    #[arg(long = "san")]
    extra_names: Vec<String>,
    /// Validity of the serving certificate, in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Validity of a newly generated CA, in days.
    #[arg(long, default_value_t = 3650)]
    ca_days: u32,
    /// Generate a new CA even if one exists in the output directory. The caBundle then
    /// holds the new and the previous CA, so the apiserver trusts both during the switch.
    #[arg(long)]
    new_ca: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.kube {
        return in_cluster(args).await;
    }
    let dir = &args.out_dir;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write(
        dir,
        ".gitignore",
        b"# generated certificates and keys: never commit\n*\n",
        false,
    )?;

    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let existing = match (fs::read_to_string(&ca_crt), fs::read_to_string(&ca_key)) {
        (Ok(c), Ok(k)) => Some((c, k)),
        _ => None,
    };
    let (ca, previous) = match existing {
        Some((cert, key)) if !args.new_ca => {
            let ca = Ca::load(&cert, &key)
                .with_context(|| format!("reusing the CA in {}", dir.display()))?;
            eprintln!("reusing the CA in {}", dir.display());
            (ca, None)
        }
        existing => {
            let cn = format!("rightsizer webhook CA ({})", args.namespace);
            let ca = Ca::generate(&cn, args.ca_days)?;
            eprintln!("generated a new CA valid for {} days", args.ca_days);
            (ca, existing.map(|(cert, _)| cert))
        }
    };

    let mut names = certs::service_dns_names(&args.service, &args.namespace);
    names.extend(args.extra_names.iter().cloned());
    let serving = ca.issue_serving(&names, args.days)?;

    let mut bundle = ca.cert_pem().to_string();
    if let Some(old) = &previous {
        write(dir, "ca-previous.crt", old.as_bytes(), false)?;
        bundle.push_str(old);
    }
    let webhooks: Vec<&str> = args.webhooks.iter().map(String::as_str).collect();

    write(dir, "ca.key", ca.key_pem().as_bytes(), true)?;
    write(dir, "ca.crt", ca.cert_pem().as_bytes(), false)?;
    write(dir, "ca-bundle.crt", bundle.as_bytes(), false)?;
    write(dir, "tls.key", serving.key_pem.as_bytes(), true)?;
    write(dir, "tls.crt", serving.cert_pem.as_bytes(), false)?;
    let secret = certs::tls_secret_yaml(&args.secret_name, &args.namespace, &serving, &bundle)?;
    write(dir, "secret.yaml", secret.as_bytes(), true)?;
    let patch = certs::webhook_ca_patch_yaml(&args.webhook_configuration, &webhooks, &bundle)?;
    write(dir, "webhook-ca-patch.yaml", patch.as_bytes(), false)?;

    eprintln!(
        "serving certificate for {} valid for {} days; wrote {}",
        names.join(", "),
        args.days,
        dir.display()
    );
    Ok(())
}

async fn in_cluster(args: Args) -> anyhow::Result<()> {
    use rightsizer::kube::certjob;
    let client = kube::Client::try_default()
        .await
        .context("certs --kube needs the Kubernetes API")?;
    let target = certjob::CertTarget {
        namespace: args.namespace,
        secret: args.secret_name,
        service: args.service,
        webhook_configuration: args.webhook_configuration,
    };
    let report = certjob::run(&client, &target, args.new_ca).await?;
    println!(
        "rightsizer certs: {:?}; caBundle {}; previous CA {}",
        report.plan,
        if report.bundle_patched {
            "set"
        } else {
            "unchanged"
        },
        match (report.retired_previous, report.previous_kept) {
            (true, _) => "retired",
            (false, true) => "kept (a replica does not serve the new pair yet)",
            (false, false) => "none",
        }
    );
    Ok(())
}

/// Through [`certs::write_file`]: atomic, exclusive, never through a symlink; private
/// material owner-only.
fn write(dir: &Path, name: &str, contents: &[u8], private: bool) -> anyhow::Result<()> {
    certs::write_file(dir, name, contents, private)
        .with_context(|| format!("writing {}", dir.join(name).display()))
}
