//! The Helm chart (`deploy/chart/rightsizer`), checked with a real helm (3.17.2, installed
//! by tests/tools/helm.sh; without it these tests are ignored with the reason, and under
//! `CI=true` they fail):
//!
//! - one source of truth: the chart's `files/` and `crds/` are byte-for-byte what
//!   `deploy/chart/sync.sh` copies from deploy/ and policies/ (a stale copy fails), and
//!   the chart's renders hold the same objects as the kustomize installs they stand for
//!   (default values = `kubectl kustomize deploy/overlays/self-managed` plus
//!   `policies/default-observe.yaml`, as the README installs; `certificates.mode=cert-manager`
//!   = `deploy/overlays/cert-manager`; `certificates.mode=existingSecret` =
//!   `deploy/overlays/self-signed` without its Secret; the monitoring toggles = `deploy/monitoring`;
//!   `priorityClasses.create` = `deploy/priority-classes`), compared as parsed objects
//!   with the differences Helm's conventions bring listed in `normalize` and `CHART_ONLY`;
//! - `helm lint --strict` with every value set of `VALUE_SETS`;
//! - `helm template` with each value set: every object strictly valid as its k8s-openapi
//!   type (tests/deploy/strict.rs), in the release namespace, and what the values asked for
//!   is in the objects; inline policies are read by `rightsizer mutate` as the webhook reads
//!   policy ConfigMaps;
//! - values the chart cannot honour are refused with a message naming them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};

use crate::helm_path::helm_path;
use crate::strict::{all, check_strict, deploy, find, first_difference, kind, kustomize, name};
use crate::strict::{repo, typed, yaml_docs};

// ---------------------------------------------------------------- helm itself

fn chart() -> PathBuf {
    deploy().join("chart/rightsizer")
}

/// helm with `args`; its output, whatever the exit status.
fn helm_output(args: &[&str]) -> Output {
    let path = helm_path();
    assert!(
        path.is_file(),
        "no helm at {} (tests/tools/helm.sh installs it; tests/run runs it)",
        path.display()
    );
    Command::new(&path)
        .args(args)
        // No user or machine helm configuration: only what the test says.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("rightsizer-helm-test/config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("rightsizer-helm-test/cache"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("rightsizer-helm-test/data"),
        )
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()))
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm_output(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A values file in `dir` holding `values` (YAML); its path.
fn values_file(dir: &Path, values: &str) -> String {
    let path = dir.join("values.yaml");
    fs::write(&path, values).unwrap();
    path.display().to_string()
}

/// `helm template rightsizer deploy/chart/rightsizer -n NAMESPACE --include-crds -f VALUES`.
pub(crate) fn render_in(namespace: &str, values: &str) -> Vec<Value> {
    let tmp = tempfile::tempdir().unwrap();
    let chart = chart().display().to_string();
    let values = values_file(tmp.path(), values);
    let text = helm_ok(&[
        "template",
        "rightsizer",
        &chart,
        "--namespace",
        namespace,
        "--include-crds",
        "--values",
        &values,
    ]);
    yaml_docs(&text)
}

fn render(values: &str) -> Vec<Value> {
    render_in(NS, values)
}

/// What `helm template` says when it refuses `values`.
fn refusal(values: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let chart = chart().display().to_string();
    let values = values_file(tmp.path(), values);
    let out = helm_output(&["template", "rightsizer", &chart, "--values", &values]);
    assert!(!out.status.success(), "helm accepted {values}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const NS: &str = "rightsizer-system";

// ------------------------------------------------------------- one source of truth

/// The chart's copies of deploy/ and policies/ (files/, crds/) are what sync.sh writes
/// now: run it into a scratch chart and compare both trees file by file, both ways.
#[test]
fn the_charts_copies_are_what_sync_sh_writes_from_deploy() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(deploy().join("chart/sync.sh"))
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/chart/sync.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for sub in ["files", "crds"] {
        let fresh = tree(&tmp.path().join(sub));
        let committed = tree(&chart().join(sub));
        assert!(!fresh.is_empty());
        let names = |t: &BTreeMap<PathBuf, Vec<u8>>| t.keys().cloned().collect::<BTreeSet<_>>();
        assert_eq!(
            names(&committed),
            names(&fresh),
            "deploy/chart/rightsizer/{sub} lists other files than deploy/chart/sync.sh writes: run deploy/chart/sync.sh"
        );
        for (path, bytes) in &fresh {
            assert!(
                committed[path] == *bytes,
                "deploy/chart/rightsizer/{sub}/{} is stale: its source changed; run deploy/chart/sync.sh",
                path.display()
            );
        }
    }
}

/// The chart stands alone (no symlink or path outside it): `helm package` makes an archive
/// that renders exactly what the chart directory renders.
#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn the_packaged_chart_renders_what_the_directory_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let chart = chart().display().to_string();
    let dest = tmp.path().display().to_string();
    helm_ok(&["package", &chart, "--destination", &dest]);
    let archive = tmp.path().join("rightsizer-0.1.0.tgz");
    assert!(archive.is_file());
    let archive = archive.display().to_string();
    for values in ["{}", "{certificates: {mode: cert-manager}, serviceMonitor: {enabled: true}, dashboards: {enabled: true}, prometheusRule: {enabled: true}, priorityClasses: {create: true}}"] {
        let file = values_file(tmp.path(), values);
        let template = |from: &str| {
            helm_ok(&["template", "rightsizer", from, "--include-crds", "--values", &file])
        };
        assert_eq!(template(&archive), template(&chart), "{values}");
    }
}

/// Every file under `dir` (relative path -> bytes).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Labels Helm's conventions add to every object's metadata (the chart never puts them in
/// selectors or Pod templates, so that part of the comparison stays exact).
const CHART_LABELS: &[&str] = &[
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

/// Objects only the chart has, each for a reason of Helm's:
/// - the Secret `rightsizer-tls` (self-managed mode) and the Lease `rightsizer-leader`: the
///   webhook writes both at run time; the chart creates them empty (no `data`, no `spec`)
///   so that they belong to the release and `helm uninstall` removes them, and an upgrade
///   never touches what the webhook wrote.
const CHART_ONLY: &[(&str, &str)] = &[("Secret", "rightsizer-tls"), ("Lease", "rightsizer-leader")];

/// Objects only the kustomize install has:
/// - the Namespace: with Helm, `--create-namespace` makes it (a release cannot own the
///   namespace it lives in); its Pod Security label is set by hand (README).
const KUSTOMIZE_ONLY: &[(&str, &str)] = &[("Namespace", NS)];

/// An object as compared: without the chart's labels (and without a label map they
/// leave empty).
fn normalize(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(labels) = d["metadata"]["labels"].as_object_mut() {
        for l in CHART_LABELS {
            labels.remove(*l);
        }
        if labels.is_empty() {
            d["metadata"].as_object_mut().unwrap().remove("labels");
        }
    }
    d
}

type Key = (String, String, String, String);

fn key(doc: &Value) -> Key {
    let (api, k) = kind(doc);
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or_default();
    (api.into(), k.into(), ns.into(), name(doc).into())
}

/// The chart's objects and the kustomize install's are the same, as parsed objects (maps
/// compare regardless of key order, lists in order), apart from the listed differences.
fn assert_same_objects(chart: &[Value], kustomized: &[Value], what: &str) {
    let excluded = |doc: &Value, list: &[(&str, &str)]| {
        list.iter()
            .any(|(k, n)| kind(doc).1 == *k && name(doc) == *n)
    };
    let mine: BTreeMap<Key, Value> = chart
        .iter()
        .filter(|d| !excluded(d, CHART_ONLY))
        .map(|d| (key(d), normalize(d)))
        .collect();
    let theirs: BTreeMap<Key, Value> = kustomized
        .iter()
        .filter(|d| !excluded(d, KUSTOMIZE_ONLY))
        .map(|d| (key(d), d.clone()))
        .collect();
    let only_chart: Vec<_> = mine.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let only_kustomize: Vec<_> = theirs.keys().filter(|k| !mine.contains_key(*k)).collect();
    assert!(
        only_chart.is_empty() && only_kustomize.is_empty(),
        "{what}: objects only in the chart: {only_chart:?}; only in the kustomize render: {only_kustomize:?}"
    );
    for (k, theirs) in &theirs {
        if let Some(diff) = first_difference(theirs, &mine[k], "") {
            panic!("{what}: {k:?} differs (kustomize -> chart): {diff}");
        }
    }
}

/// The README's kustomize install: the self-managed overlay, then the default policy.
fn readme_install() -> Vec<Value> {
    let mut docs = kustomize(&deploy().join("overlays/self-managed"));
    let policy = fs::read_to_string(repo().join("policies/default-observe.yaml")).unwrap();
    docs.extend(yaml_docs(&policy));
    docs
}

#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn the_default_render_is_the_readme_kustomize_install() {
    let chart = render("{}");
    assert_same_objects(
        &chart,
        &readme_install(),
        "defaults vs overlays/self-managed",
    );
    // The two chart-only objects carry nothing the webhook writes.
    let secret = find(&chart, "Secret", "rightsizer-tls");
    assert!(
        secret.get("data").is_none() && secret.get("type").is_none(),
        "{secret}"
    );
    assert!(find(&chart, "Lease", "rightsizer-leader")
        .get("spec")
        .is_none());
}

#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn the_cert_manager_mode_is_the_cert_manager_overlay() {
    let chart = render("certificates: {mode: cert-manager}");
    let mut kustomized = kustomize(&deploy().join("overlays/cert-manager"));
    kustomized.extend(yaml_docs(
        &fs::read_to_string(repo().join("policies/default-observe.yaml")).unwrap(),
    ));
    assert_same_objects(&chart, &kustomized, "cert-manager vs overlays/cert-manager");
    assert!(
        all(&chart, "Secret").is_empty(),
        "cert-manager writes the Secret"
    );
}

/// `certificates.mode=existingSecret` is `deploy/overlays/self-signed` without the Secret
/// (which that mode expects to exist): the material of `rightsizer certs`, the Secret
/// named, its CA as the caBundle.
#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn the_existing_secret_mode_is_the_self_signed_overlay() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("deploy");
    crate::deploy::copy_dir(&deploy(), &copy);
    let overlay = copy.join("overlays/self-signed");
    crate::deploy::run_certs(&overlay.join("generated"), &[]);
    let mut kustomized = kustomize(&overlay);
    let mwc = find(&kustomized, "MutatingWebhookConfiguration", "rightsizer");
    let ca = mwc["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap();
    let ca = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, ca).unwrap(),
    )
    .unwrap();
    // The Secret is the user's in this mode, as the overlay's generated/secret.yaml is.
    kustomized.retain(|d| kind(d).1 != "Secret");
    kustomized.extend(yaml_docs(
        &fs::read_to_string(repo().join("policies/default-observe.yaml")).unwrap(),
    ));
    let values = json!({"certificates": {"mode": "existingSecret", "existingSecret": "rightsizer-tls", "caBundle": ca}});
    let chart = render(&values.to_string());
    assert_same_objects(
        &chart,
        &kustomized,
        "existingSecret vs overlays/self-signed",
    );
}

#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn the_monitoring_toggles_are_deploy_monitoring_and_priority_classes_deploy_priority_classes() {
    let off = render("{}");
    let on = render(
        "{serviceMonitor: {enabled: true}, prometheusRule: {enabled: true}, dashboards: {enabled: true}, priorityClasses: {create: true}}",
    );
    let added: Vec<Value> = on
        .iter()
        .filter(|d| !off.iter().any(|o| key(o) == key(d)))
        .cloned()
        .collect();
    let mut kustomized = kustomize(&deploy().join("monitoring"));
    kustomized.extend(kustomize(&deploy().join("priority-classes")));
    assert_same_objects(&added, &kustomized, "monitoring and priority classes");
    // Everything else is unchanged by the toggles.
    for d in &off {
        assert_eq!(Some(d), on.iter().find(|o| key(o) == key(d)));
    }
}

// ------------------------------------------------------------------ value sets

/// Value sets every test renders (and lints): name, values.
const VALUE_SETS: &[(&str, &str)] = &[
    ("defaults", "{}"),
    ("cert-manager", "certificates: {mode: cert-manager}"),
    (
        "existingSecret",
        "certificates: {mode: existingSecret, existingSecret: my-tls, caBundle: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\"}",
    ),
    (
        "policies inline",
        r#"
defaultPolicy: false
policies:
  shop:
    precedence: 10
    selector: {namespaces: [shop]}
    mode: observe
    defaults:
      memory: {request: 192Mi, limit: 384Mi}
  as-text: |
    precedence: 5
    mode: off
"#,
    ),
    (
        "monitoring on",
        "{serviceMonitor: {enabled: true, labels: {release: kps}, interval: 15s}, prometheusRule: {enabled: true, labels: {release: kps}}, dashboards: {enabled: true}}",
    ),
    (
        "everything optional off",
        "{networkPolicy: {enabled: false}, defaultPolicy: false, replicas: 1}",
    ),
    (
        "network peers",
        r#"
networkPolicy:
  apiserverFrom: [{ipBlock: {cidr: 10.0.0.0/24}}]
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: observability}}, podSelector: {matchLabels: {app: prometheus}}}]
"#,
    ),
    (
        "scheduling",
        r#"
replicas: 3
nodeSelector: {kubernetes.io/os: linux, pool: system}
tolerations: [{key: dedicated, operator: Equal, value: system, effect: NoSchedule}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [system]}]}]
priorityClassName: system-cluster-critical
resources: {requests: {cpu: 50m, memory: 96Mi}, limits: {memory: 192Mi}}
podAnnotations: {example.com/team: platform}
imagePullSecrets: [{name: regcred}]
"#,
    ),
    (
        "prometheus auth",
        r#"
image: {repository: registry.example.com/rightsizer, digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", pullPolicy: Always}
prometheus:
  url: https://thanos.example.com:10902
  tokenSecret: {name: prom-token}
  basicAuth: {user: rightsizer, passwordSecret: {name: prom-basic, key: pw}}
  ca: {configMap: prom-ca}
  tenant: team-a
  clusterLabel: cluster=prod-eu
kubeStateMetrics: never
enforcement: true
extraArgs: [--analyzer-interval, 2m]
webhook: {timeoutSeconds: 5}
"#,
    ),
    ("no prometheus", "prometheus: {url: \"\"}"),
];

fn deployment(docs: &[Value]) -> (Deployment, PodSpec, Container) {
    let dep: Deployment = typed(find(docs, "Deployment", "rightsizer"));
    let pod = dep.spec.clone().unwrap().template.spec.unwrap();
    let c = pod.containers[0].clone();
    (dep, pod, c)
}

fn env_of(c: &Container) -> BTreeMap<String, Option<String>> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect()
}

/// The value after `flag` in `args`.
fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .map(|i| args[i + 1].as_str())
}

/// The file an argument names is in a volume mounted from `source` (a Secret's or a
/// ConfigMap's name).
fn file_from(pod: &PodSpec, c: &Container, file: &str, source: &str) {
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| file.starts_with(&format!("{}/", m.mount_path)))
        .unwrap_or_else(|| panic!("{file} is not under a mount"));
    assert_eq!(mount.read_only, Some(true));
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let from = vol
        .secret
        .as_ref()
        .and_then(|s| s.secret_name.clone())
        .or_else(|| vol.config_map.as_ref().map(|c| c.name.clone()));
    assert_eq!(from.as_deref(), Some(source), "{file}");
}

#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn helm_lint_strict_passes_with_every_value_set() {
    let tmp = tempfile::tempdir().unwrap();
    let chart = chart().display().to_string();
    for (set, values) in VALUE_SETS {
        let values = values_file(tmp.path(), values);
        let out = helm_ok(&["lint", "--strict", &chart, "--values", &values]);
        assert!(out.contains("0 chart(s) failed"), "{set}: {out}");
    }
}

/// Every object of every value set is strictly valid, unique, and in the release namespace
/// when namespaced; the CRD is rendered from crds/ (installed by Helm, never deleted).
#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn every_value_set_renders_strictly_valid_objects() {
    const CLUSTER_SCOPED: &[&str] = &[
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "CustomResourceDefinition",
        "PriorityClass",
    ];
    for (set, values) in VALUE_SETS {
        let docs = render(values);
        let mut seen = BTreeSet::new();
        for d in &docs {
            check_strict(d);
            assert!(seen.insert(key(d)), "{set}: {:?} twice", key(d));
            let namespaced = !CLUSTER_SCOPED.contains(&kind(d).1);
            assert_eq!(
                d["metadata"]["namespace"].as_str(),
                namespaced.then_some(NS),
                "{set}: {:?}",
                key(d)
            );
        }
        find(
            &docs,
            "CustomResourceDefinition",
            "rightsizings.rightsizer.io",
        );
        deployment(&docs);
    }
}

fn value_set(name: &str) -> Vec<Value> {
    let values = VALUE_SETS.iter().find(|(n, _)| *n == name).unwrap().1;
    render(values)
}

#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn the_certificate_modes_mount_and_trust_what_they_should() {
    // self-managed: the Secret through the API, its own RBAC, no volume.
    let docs = value_set("defaults");
    let (_, pod, c) = deployment(&docs);
    let args = c.args.clone().unwrap();
    assert_eq!(arg(&args, "--certificate-secret"), Some("rightsizer-tls"));
    assert!(pod.volumes.iter().flatten().all(|v| v.secret.is_none()));
    find(&docs, "Role", "rightsizer-certs");
    find(&docs, "ClusterRole", "rightsizer-certs");

    // cert-manager: the Certificate's Secret mounted, the injector annotation.
    let docs = value_set("cert-manager");
    let (_, pod, c) = deployment(&docs);
    let args = c.args.clone().unwrap();
    assert_eq!(arg(&args, "--certificate-secret"), None);
    file_from(
        &pod,
        &c,
        arg(&args, "--tls-cert").unwrap(),
        "rightsizer-tls",
    );
    let mwc = find(&docs, "MutatingWebhookConfiguration", "rightsizer");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "rightsizer-system/rightsizer-serving"
    );
    assert_eq!(
        find(&docs, "Certificate", "rightsizer-serving")["spec"]["secretName"],
        "rightsizer-tls"
    );
    assert!(docs.iter().all(|d| name(d) != "rightsizer-certs"));

    // existingSecret: that Secret mounted, the given CA as caBundle, nothing issued.
    let docs = value_set("existingSecret");
    let (_, pod, c) = deployment(&docs);
    let args = c.args.clone().unwrap();
    file_from(&pod, &c, arg(&args, "--tls-key").unwrap(), "my-tls");
    let mwc: MutatingWebhookConfiguration =
        typed(find(&docs, "MutatingWebhookConfiguration", "rightsizer"));
    let ca = &mwc.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap()
        .0;
    assert_eq!(
        String::from_utf8_lossy(ca),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    );
    assert!(all(&docs, "Certificate").is_empty() && all(&docs, "Secret").is_empty());
    assert!(docs.iter().all(|d| name(d) != "rightsizer-certs"));
}

/// Inline policies become policy ConfigMaps that `rightsizer mutate --policies` (the
/// webhook's own loader) reads and applies.
#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn inline_policies_are_policy_configmaps_the_webhook_reads() {
    let docs = value_set("policies inline");
    let cms: Vec<ConfigMap> = all(&docs, "ConfigMap").into_iter().map(typed).collect();
    let names: BTreeSet<String> = cms
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "rightsizer-shop".to_string(),
            "rightsizer-as-text".to_string()
        ])
    );
    for cm in &cms {
        assert_eq!(
            cm.metadata.labels.as_ref().unwrap()["rightsizer.io/policy"],
            "true"
        );
        assert!(cm.data.as_ref().unwrap().contains_key("policy.yaml"));
    }
    let shop = cms
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("rightsizer-shop"))
        .unwrap();
    let body: Value = serde_norway::from_str(&shop.data.as_ref().unwrap()["policy.yaml"]).unwrap();
    assert_eq!(
        body["defaults"]["memory"],
        json!({"request": "192Mi", "limit": "384Mi"})
    );

    // What the webhook makes of them: the shop policy's defaults on a Pod in shop.
    let tmp = tempfile::tempdir().unwrap();
    let policies = tmp.path().join("policies");
    fs::create_dir(&policies).unwrap();
    for (i, d) in all(&docs, "ConfigMap").into_iter().enumerate() {
        fs::write(
            policies.join(format!("{i}.yaml")),
            serde_json::to_string(d).unwrap(),
        )
        .unwrap();
    }
    let pod = tmp.path().join("pod.yaml");
    fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec:\n  containers: [{name: app, image: x}]\n",
    )
    .unwrap();
    let out = Command::new(crate::exe::rightsizer())
        .args(["mutate", "-o", "json", "-f"])
        .arg(&pod)
        .arg("--policies")
        .arg(&policies)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mutated: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mutated = if mutated.is_array() {
        mutated[0].clone()
    } else {
        mutated
    };
    let res = &mutated["spec"]["containers"][0]["resources"];
    assert_eq!(res["requests"]["memory"], "192Mi", "{mutated}");
    assert_eq!(res["limits"]["memory"], "384Mi", "{mutated}");
}

#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn the_toggles_add_and_remove_their_objects() {
    let on = value_set("monitoring on");
    let sm = find(&on, "ServiceMonitor", "rightsizer");
    assert_eq!(sm["metadata"]["labels"]["release"], "kps");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "15s");
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"], json!([NS]));
    assert_eq!(
        find(&on, "PrometheusRule", "rightsizer")["metadata"]["labels"]["release"],
        "kps"
    );
    let boards: ConfigMap = typed(find(&on, "ConfigMap", "rightsizer-dashboards"));
    assert_eq!(
        boards.metadata.labels.as_ref().unwrap()["grafana_dashboard"],
        "1"
    );
    assert_eq!(boards.data.unwrap().len(), 4);

    let defaults = value_set("defaults");
    for k in ["ServiceMonitor", "PrometheusRule", "PriorityClass"] {
        assert!(all(&defaults, k).is_empty(), "{k} rendered by default");
    }
    find(&defaults, "NetworkPolicy", "rightsizer");
    find(&defaults, "PodDisruptionBudget", "rightsizer");
    find(&defaults, "ConfigMap", "rightsizer-default");

    // Off: no NetworkPolicy, no default policy; one replica, so no PodDisruptionBudget
    // (minAvailable 1 of 1 would block every drain).
    let off = value_set("everything optional off");
    for k in ["NetworkPolicy", "PodDisruptionBudget", "ConfigMap"] {
        assert!(all(&off, k).is_empty(), "{k} rendered");
    }
    assert_eq!(deployment(&off).0.spec.unwrap().replicas, Some(1));

    // Peers replace the shipped ones, rule by rule.
    let np: NetworkPolicy = typed(find(
        &value_set("network peers"),
        "NetworkPolicy",
        "rightsizer",
    ));
    let ingress = np.spec.unwrap().ingress.unwrap();
    let from = |i: usize| serde_json::to_value(&ingress[i].from).unwrap();
    assert_eq!(from(0), json!([{"ipBlock": {"cidr": "10.0.0.0/24"}}]));
    assert_eq!(
        from(1)[0]["podSelector"]["matchLabels"]["app"],
        "prometheus"
    );
}

#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn scheduling_values_reach_the_pod_spec() {
    let docs = value_set("scheduling");
    let (dep, pod, c) = deployment(&docs);
    let spec = dep.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        pod.node_selector.unwrap(),
        BTreeMap::from([
            ("kubernetes.io/os".into(), "linux".into()),
            ("pool".into(), "system".into())
        ])
    );
    assert_eq!(
        pod.tolerations.unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    let affinity = pod.affinity.unwrap();
    assert!(affinity.node_affinity.is_some() && affinity.pod_anti_affinity.is_none());
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
    let res = c.resources.unwrap();
    assert_eq!(res.requests.unwrap()["memory"].0, "96Mi");
    assert!(!res.limits.unwrap().contains_key("cpu"));
    assert_eq!(
        spec.template.metadata.unwrap().annotations.unwrap()["example.com/team"],
        "platform"
    );
}

#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn prometheus_values_become_serve_arguments_and_mounted_files() {
    let docs = value_set("prometheus auth");
    let (_, pod, c) = deployment(&docs);
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example.com/rightsizer@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    let env = env_of(&c);
    assert_eq!(
        env["RIGHTSIZER_PROMETHEUS_URL"].as_deref(),
        Some("https://thanos.example.com:10902")
    );
    assert_eq!(env["RIGHTSIZER_ENFORCEMENT"].as_deref(), Some("true"));
    let args = c.args.clone().unwrap();
    file_from(
        &pod,
        &c,
        arg(&args, "--prometheus-token-file").unwrap(),
        "prom-token",
    );
    assert!(arg(&args, "--prometheus-token-file")
        .unwrap()
        .ends_with("/token"));
    file_from(
        &pod,
        &c,
        arg(&args, "--prometheus-password-file").unwrap(),
        "prom-basic",
    );
    assert!(arg(&args, "--prometheus-password-file")
        .unwrap()
        .ends_with("/pw"));
    assert_eq!(arg(&args, "--prometheus-user"), Some("rightsizer"));
    file_from(&pod, &c, arg(&args, "--prometheus-ca").unwrap(), "prom-ca");
    assert_eq!(arg(&args, "--prometheus-tenant"), Some("team-a"));
    assert_eq!(arg(&args, "--cluster-label"), Some("cluster=prod-eu"));
    assert_eq!(arg(&args, "--kube-state-metrics"), Some("never"));
    assert_eq!(arg(&args, "--analyzer-interval"), Some("2m"));
    let mwc = find(&docs, "MutatingWebhookConfiguration", "rightsizer");
    assert_eq!(mwc["webhooks"][0]["timeoutSeconds"], 5);

    // The arguments are ones `serve` accepts: clap parses them (a wrong flag fails here)
    // and `serve` gets as far as connecting to the Kubernetes API, which is not here.
    let out = Command::new(crate::exe::rightsizer())
        .args(&args)
        .env("KUBECONFIG", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // clap refuses with exit status 2 and a usage line; past clap, serve fails on the
    // Kubernetes API it cannot reach here.
    assert!(
        out.status.code() != Some(2) && !err.contains("Usage:"),
        "{err}"
    );
    assert!(err.contains("Kubernetes API"), "{err}");
    assert!(
        !err.contains("unexpected argument") && !err.contains("invalid value"),
        "{err}"
    );

    // Without a URL, no Prometheus and no analyzer; without enforcement, no switch.
    let (_, _, c) = deployment(&value_set("no prometheus"));
    let env = env_of(&c);
    assert!(
        !env.contains_key("RIGHTSIZER_PROMETHEUS_URL")
            && !env.contains_key("RIGHTSIZER_ENFORCEMENT")
    );
}

/// Installed in another namespace, no object or reference names rightsizer-system: the
/// Service the webhook calls, the RBAC subjects, the namespaceSelector's exclusion, the
/// certificates' names.
#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn another_namespace_is_used_everywhere() {
    let values = "{certificates: {mode: cert-manager}, serviceMonitor: {enabled: true}, dashboards: {enabled: true}, prometheusRule: {enabled: true}}";
    let docs = render_in("platform", values);
    for d in docs
        .iter()
        .filter(|d| kind(d).1 != "CustomResourceDefinition")
    {
        let text = serde_json::to_string(d).unwrap();
        assert!(
            !text.contains("rightsizer-system"),
            "{:?} still names rightsizer-system",
            key(d)
        );
    }
    let mwc: MutatingWebhookConfiguration =
        typed(find(&docs, "MutatingWebhookConfiguration", "rightsizer"));
    let hook = &mwc.webhooks.unwrap()[0];
    assert_eq!(
        hook.client_config.service.as_ref().unwrap().namespace,
        "platform"
    );
    let excluded = &hook
        .namespace_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert!(excluded
        .values
        .as_ref()
        .unwrap()
        .contains(&"platform".to_string()));
    let serving = find(&docs, "Certificate", "rightsizer-serving");
    assert!(serving["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .contains(&json!("rightsizer.platform.svc")));
    let crb = find(&docs, "ClusterRoleBinding", "rightsizer");
    assert_eq!(crb["subjects"][0]["namespace"], "platform");
}

#[test]
#[cfg_attr(
    not(has_helm),
    ignore = "no helm here: run tests/tools/helm.sh (tests/run does)"
)]
fn values_the_chart_cannot_honour_are_refused() {
    for (values, says) in [
        ("replicass: 3", "replicass"),
        ("certificates: {mode: vault}", "certificates.mode"),
        ("kubeStateMetrics: sometimes", "kubeStateMetrics"),
        ("replicas: 0", "replicas"),
        (
            "certificates: {mode: existingSecret}",
            "certificates.existingSecret",
        ),
        (
            "certificates: {mode: existingSecret, existingSecret: x}",
            "certificates.caBundle",
        ),
        ("policies: {default: {mode: off}}", "defaultPolicy"),
        ("policies: {Shop_1: {mode: off}}", "DNS label"),
        ("prometheus: {basicAuth: {user: u}}", "passwordSecret"),
    ] {
        let err = refusal(values);
        assert!(err.contains(says), "{values}: {err}");
    }
}
