//! Who may do what, as shipped (issue 20): every identity of every kustomize install and
//! chart render, read from its bindings; the certificate Job's manifests; the NetworkPolicy
//! being opt-in; every image reference pinned by digest. tests/cluster/identity_e2e.rs asks
//! a real apiserver the same questions.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde_json::Value;

use crate::strict::{all, deploy, find, kind, kustomize, repo, yaml_docs};

/// One rule an identity holds: (namespace or "" for cluster-wide, apiGroup, resource,
/// resourceNames ("" for any), verb).
type Right = (String, String, String, String, String);

/// The rights of each ServiceAccount subject (`ns/name`) in `docs`, from its RoleBindings
/// and ClusterRoleBindings.
pub(crate) fn rights(docs: &[Value]) -> BTreeMap<String, BTreeSet<Right>> {
    let mut out: BTreeMap<String, BTreeSet<Right>> = BTreeMap::new();
    for b in docs
        .iter()
        .filter(|d| ["RoleBinding", "ClusterRoleBinding"].contains(&kind(d).1))
    {
        let scope = if kind(b).1 == "RoleBinding" {
            b["metadata"]["namespace"].as_str().unwrap().to_string()
        } else {
            String::new()
        };
        let role_kind = b["roleRef"]["kind"].as_str().unwrap();
        let role = find(docs, role_kind, b["roleRef"]["name"].as_str().unwrap());
        for s in b["subjects"].as_array().unwrap() {
            assert_eq!(s["kind"], "ServiceAccount", "{b}");
            let who = format!(
                "{}/{}",
                s["namespace"].as_str().unwrap(),
                s["name"].as_str().unwrap()
            );
            let entry = out.entry(who).or_default();
            for r in role["rules"].as_array().unwrap() {
                let list = |k: &str| -> Vec<String> {
                    r[k].as_array()
                        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                        .unwrap_or_default()
                };
                let names = list("resourceNames");
                let names = if names.is_empty() {
                    vec![String::new()]
                } else {
                    names
                };
                for g in list("apiGroups") {
                    for res in list("resources") {
                        for n in &names {
                            for v in list("verbs") {
                                entry.insert((
                                    scope.clone(),
                                    g.clone(),
                                    res.clone(),
                                    n.clone(),
                                    v.clone(),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

const WEBHOOK: &str = "rightsizer-system/rightsizer";
const JOB: &str = "rightsizer-system/rightsizer-certs";

/// What a right allows on (group, resource), any name.
fn holds(rights: &BTreeSet<Right>, group: &str, resource: &str, verb: &str) -> Vec<String> {
    rights
        .iter()
        .filter(|(_, g, r, _, v)| {
            (g == group || g == "*") && (r == resource || r == "*") && (v == verb || v == "*")
        })
        .map(|(ns, _, _, n, _)| format!("{ns}:{n}"))
        .collect()
}

/// Every install's identities: no one but the Job may patch the webhook configuration
/// (and the Job only `rightsizer`), no one may create Secrets or mint tokens, the webhook
/// reads only its own Secret and Pods only with the pod-watch component.
#[test]
fn no_identity_can_redirect_admission_or_mint_tokens() {
    let mut installs: Vec<(String, Vec<Value>, bool)> = [
        "base",
        "overlays/self-managed",
        "overlays/cert-manager",
        "examples/network-policy-cidr",
        "examples/network-policy-cilium",
    ]
    .iter()
    .map(|k| (k.to_string(), kustomize(&deploy().join(k)), false))
    .collect();
    installs.push((
        "self-managed + components/pod-watch".into(),
        pod_watch_install(),
        true,
    ));
    for (what, docs, pods) in &installs {
        let rights = rights(docs);
        assert!(rights.contains_key(WEBHOOK), "{what}: {rights:?}");
        for (who, r) in &rights {
            let mwc = holds(
                r,
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                "patch",
            );
            let vwc = holds(
                r,
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                "patch",
            );
            if who == JOB {
                assert_eq!(mwc, [":rightsizer"], "{what}: {who}");
            } else {
                assert!(mwc.is_empty(), "{what}: {who} may patch {mwc:?}");
            }
            assert!(vwc.is_empty(), "{what}: {who}");
            for verb in ["create", "patch", "delete"] {
                assert!(
                    holds(r, "", "secrets", verb).is_empty(),
                    "{what}: {who} {verb} secrets"
                );
            }
            assert!(
                holds(r, "", "serviceaccounts/token", "create").is_empty(),
                "{what}: {who}"
            );
            assert!(
                holds(r, "", "serviceaccounts", "create").is_empty(),
                "{what}: {who}"
            );
            let secret_reads: BTreeSet<String> = ["get", "list", "watch"]
                .iter()
                .flat_map(|v| holds(r, "", "secrets", v))
                .collect();
            assert!(
                secret_reads
                    .iter()
                    .all(|s| s == "rightsizer-system:rightsizer-tls"),
                "{what}: {who} reads {secret_reads:?}"
            );
            let pod_reads: Vec<String> = ["get", "list", "watch"]
                .iter()
                .flat_map(|v| holds(r, "", "pods", v))
                .collect();
            if *pods && who == WEBHOOK {
                assert_eq!(holds(r, "", "pods", "list"), [":"], "{what}");
                assert_eq!(holds(r, "", "pods", "watch"), [":"], "{what}");
            } else {
                assert!(
                    pod_reads.is_empty(),
                    "{what}: {who} reads pods {pod_reads:?}"
                );
            }
        }
        // The Job, where shipped, is the only updater of the Secret; the webhook never.
        let updaters: Vec<&String> = rights
            .iter()
            .filter(|(_, r)| !holds(r, "", "secrets", "update").is_empty())
            .map(|(w, _)| w)
            .collect();
        assert!(updaters.iter().all(|w| *w == JOB), "{what}: {updaters:?}");
    }
    // The base grants no access to Pods or Secrets at all (deploy/README.md says so).
    let base = rights(&kustomize(&deploy().join("base")));
    for res in ["pods", "secrets"] {
        for v in ["get", "list", "watch"] {
            assert!(
                holds(&base[WEBHOOK], "", res, v).is_empty(),
                "base {v} {res}"
            );
        }
    }
}

/// The self-managed overlay with the pod-watch component, as a user's overlay adds it.
pub(crate) fn pod_watch_install() -> Vec<Value> {
    let tmp = tempfile::tempdir().unwrap();
    crate::deploy::copy_dir(&deploy(), &tmp.path().join("deploy"));
    let dir = tmp.path().join("deploy/overlays/pod-watch");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("kustomization.yaml"),
        "resources: [../self-managed]\ncomponents: [../../components/pod-watch]\n",
    )
    .unwrap();
    kustomize(&dir)
}

/// The certificate Job: one Pod for the install Job and the CronJob (one fact in two
/// places, so checked here), under its own ServiceAccount that automounts nothing by
/// default; the Secret it fills is shipped empty; the webhook reads it through the API.
#[test]
fn the_certificate_job_runs_apart_from_the_webhook() {
    let docs = kustomize(&deploy().join("overlays/self-managed"));
    let job = find(&docs, "Job", "rightsizer-certs");
    let cron = find(&docs, "CronJob", "rightsizer-certs");
    let pod = &job["spec"]["template"];
    assert_eq!(*pod, cron["spec"]["jobTemplate"]["spec"]["template"]);
    assert_eq!(pod["spec"]["serviceAccountName"], "rightsizer-certs");
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        serde_json::json!(["certs", "--kube"])
    );
    let sa = find(&docs, "ServiceAccount", "rightsizer-certs");
    assert_eq!(sa["automountServiceAccountToken"], false);
    let secret = find(&docs, "Secret", "rightsizer-tls");
    assert!(secret.get("data").is_none() && secret.get("stringData").is_none());
    let dep = find(&docs, "Deployment", "rightsizer");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "rightsizer");
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args
        .windows(2)
        .any(|w| w == ["--certificate-secret", "rightsizer-tls"]));
    // Every Job Pod of the cert-manager install: none (cert-manager issues).
    let cm = kustomize(&deploy().join("overlays/cert-manager"));
    assert!(all(&cm, "Job").is_empty() && all(&cm, "CronJob").is_empty());
}

/// No install ships a NetworkPolicy unless asked: one that admits `0.0.0.0/0` protects
/// nothing, and no default can name the apiserver. The component alone is refused by the
/// apiserver (its peer is a placeholder, not a CIDR) until an overlay sets it.
#[test]
fn the_network_policy_is_opt_in_and_never_admits_everyone() {
    for k in ["base", "overlays/self-managed", "overlays/cert-manager"] {
        let docs = kustomize(&deploy().join(k));
        assert!(all(&docs, "NetworkPolicy").is_empty(), "{k}");
    }
    let mut texts =
        vec![
            fs::read_to_string(deploy().join("components/network-policy/networkpolicy.yaml"))
                .unwrap(),
        ];
    texts.push(
        serde_json::to_string(&kustomize(&deploy().join("examples/network-policy-cidr"))).unwrap(),
    );
    for t in &texts {
        assert!(!t.contains("0.0.0.0/0") && !t.contains("::/0"), "{t}");
    }
    let component = yaml_docs(&texts[0]);
    let cidr = component[0]["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"]
        .as_str()
        .unwrap();
    assert!(
        cidr.parse::<std::net::IpAddr>().is_err() && !cidr.contains('/'),
        "{cidr}"
    );
    let cilium = kustomize(&deploy().join("examples/network-policy-cilium"));
    let cnp = find(&cilium, "CiliumNetworkPolicy", "rightsizer");
    assert_eq!(
        cnp["spec"]["ingress"][0]["fromEntities"],
        serde_json::json!(["kube-apiserver"])
    );
    assert_eq!(
        cnp["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"],
        "8443"
    );
    assert!(all(&cilium, "NetworkPolicy").is_empty());
}

/// `NAME[:TAG]@sha256:<64 hex>`.
fn pinned(image: &str) -> bool {
    image.split_once("@sha256:").is_some_and(|(name, digest)| {
        !name.is_empty()
            && digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// Every container image of every object (Pods, workloads, Jobs, CronJobs).
fn images(doc: &Value, out: &mut Vec<String>) {
    match doc {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "image" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_string());
                    }
                }
                images(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| images(v, out)),
        _ => {}
    }
}

/// Every image reference in deploy/ (each kustomization's render, the chart's renders)
/// and every base image of the Dockerfile is pinned by digest (README.md, "Images", says
/// how to update them). `FROM scratch` is no image.
#[test]
fn every_image_is_pinned_by_digest() {
    let mut found = Vec::new();
    let mut renders: Vec<Vec<Value>> = crate::deploy::KUSTOMIZATIONS
        .iter()
        .map(|k| kustomize(&deploy().join(k)))
        .collect();
    renders.push(pod_watch_install());
    if crate::helm_path::helm_path().is_file() {
        renders.push(crate::helm::render_in("rightsizer-system", "{}"));
    } else {
        eprintln!("no helm here: the chart's images are checked by tests/deploy/helm.rs only");
    }
    for docs in &renders {
        for d in docs {
            images(d, &mut found);
        }
    }
    assert!(found.len() >= 4, "{found:?}");
    for i in &found {
        assert!(pinned(i), "{i} is not pinned by digest");
    }
    // The chart's default digest is the manifests' (one image, one digest).
    let values = fs::read_to_string(deploy().join("chart/rightsizer/values.yaml")).unwrap();
    let digest = found[0].split_once('@').unwrap().1;
    assert!(
        values.contains(&format!("digest: \"{digest}\"")),
        "values.yaml digest"
    );

    let dockerfile = fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let args: BTreeMap<String, String> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ARG "))
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut froms = 0;
    for line in dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FROM "))
    {
        let image = line.split_whitespace().next().unwrap();
        if image == "scratch" {
            continue;
        }
        let image = match image.strip_prefix("${").and_then(|s| s.strip_suffix('}')) {
            Some(arg) => args[arg].clone(),
            None => image.to_string(),
        };
        assert!(
            pinned(&image),
            "Dockerfile: FROM {image} is not pinned by digest"
        );
        froms += 1;
    }
    assert!(froms >= 1);
}
