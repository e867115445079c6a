//! The flags a tree's Deployment (deploy/base) gives the webhook: each version runs with
//! its own, so an upgrade test also upgrades the flags. What only a cluster gives (the
//! addresses, the TLS files, the Pod's name and namespace) the test sets instead.

use std::path::Path;

use serde::Deserialize as _;
use serde_json::Value;

use crate::cluster::ControlPlane;

/// Flags the test sets itself (with their value, unless in `ALONE`).
const OWN: [&str; 6] = [
    "--listen",
    "--tls-cert",
    "--tls-key",
    "--admin-listen",
    "--certificate-secret",
    "--self-signed",
];
const ALONE: [&str; 1] = ["--self-signed"];

pub struct Shipped {
    /// `serve`'s arguments without those in `OWN`.
    pub args: Vec<String>,
    /// Environment variables with a value (those from the downward API are the test's).
    env: Vec<(String, String)>,
}

impl Shipped {
    /// From `<tree>/deploy/base`, rendered with kustomize.
    pub fn read(plane: &ControlPlane, tree: &Path) -> Shipped {
        let base = tree.join("deploy/base");
        let text = plane.kubectl_ok(&["kustomize", &base.display().to_string()], None);
        let deployment = serde_norway::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .find(|d| d["kind"] == "Deployment")
            .expect("deploy/base has a Deployment");
        let c = &deployment["spec"]["template"]["spec"]["containers"][0];
        let all: Vec<String> = c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        let mut args = Vec::new();
        let mut it = all.into_iter().skip_while(|a| a == "serve");
        while let Some(a) = it.next() {
            let flag = a.split('=').next().unwrap_or_default().to_string();
            if OWN.contains(&flag.as_str()) {
                if !a.contains('=') && !ALONE.contains(&flag.as_str()) {
                    it.next();
                }
                continue;
            }
            args.push(a);
        }
        let env = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_string(),
                    e["value"].as_str()?.to_string(),
                ))
            })
            .collect();
        Shipped { args, env }
    }

    /// The environment, with the test's Prometheus where the manifest names the cluster's.
    pub fn env(&self, prometheus: &str) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| {
                let v = if k == "RIGHTSIZER_PROMETHEUS_URL" {
                    prometheus
                } else {
                    v
                };
                (k.clone(), v.to_string())
            })
            .collect()
    }
}
