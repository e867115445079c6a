//! `deploy/` and `rightsizer certs`, checked with the real tools (kustomize, promtool,
//! openssl, rustls).

#[path = "../support/exe.rs"]
mod exe;
#[path = "../support/helm.rs"]
mod helm_path;
#[path = "../support/monitoring.rs"]
mod monitoring;
#[path = "../support/previous.rs"]
mod previous;

mod crd_upgrade;
mod deploy;
mod helm;
mod identity;
mod strict;
