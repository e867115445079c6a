//! What the deploy tests share: the repository's paths, `kubectl kustomize` split into
//! JSON documents, lookups by kind and name, and the strict check of one rendered object
//! (a round trip through its k8s-openapi type; field lists for the CRD kinds this
//! repository uses). tests/deploy/deploy.rs checks the kustomize renders with it and
//! tests/deploy/helm.rs the chart's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::monitoring::is_metric_name;

// ---------------------------------------------------------------- helpers

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub(crate) fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// `kubectl kustomize DIR`, split into JSON documents.
pub(crate) fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl must be on PATH (tests/run installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Deprecation notices and other warnings fail too: they become errors in later kustomize.
    assert!(
        out.stderr.is_empty(),
        "kubectl kustomize {} warned:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_docs(&String::from_utf8(out.stdout).unwrap());
    assert!(!docs.is_empty(), "{} rendered nothing", dir.display());
    docs
}

/// A multi-document YAML stream as JSON values (empty documents dropped).
pub(crate) fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

pub(crate) fn kind(doc: &Value) -> (&str, &str) {
    (
        doc["apiVersion"].as_str().unwrap_or_default(),
        doc["kind"].as_str().unwrap_or_default(),
    )
}

pub(crate) fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

pub(crate) fn find<'a>(docs: &'a [Value], kind_: &str, name_: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d).1 == kind_ && name(d) == name_)
        .unwrap_or_else(|| panic!("no {kind_} {name_} rendered"))
}

pub(crate) fn all<'a>(docs: &'a [Value], kind_: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d).1 == kind_).collect()
}

pub(crate) fn typed<T: DeserializeOwned>(doc: &Value) -> T {
    serde_json::from_value(doc.clone()).unwrap()
}

/// First path where two JSON values differ.
pub(crate) fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, &format!("{path}/{k}")),
                (Some(_), None) => Some(format!(
                    "{path}/{k} is dropped by the typed struct (unknown or misplaced field)"
                )),
                (None, Some(_)) => Some(format!("{path}/{k} appears only after the round trip")),
                (None, None) => None,
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}/{i}"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} became {b}")),
    }
}

/// Deserialize into the typed struct, serialize back, and require the same JSON: a field
/// the type does not know (typo, wrong level) is dropped and fails the comparison.
fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!("{} {}: {e}", kind(doc).1, name(doc));
    });
    let back = serde_json::to_value(&typed).unwrap();
    if let Some(diff) = first_difference(doc, &back, "") {
        panic!(
            "{} {} is not strictly valid: {diff}",
            kind(doc).1,
            name(doc)
        );
    }
}

fn is<T: k8s_openapi::Resource>(doc: &Value) -> bool {
    kind(doc) == (T::API_VERSION, T::KIND)
}

/// Strict check of one rendered object: k8s-openapi types for built-in kinds, field
/// lists for the CRD kinds this repository uses. Unknown kinds fail.
pub(crate) fn check_strict(doc: &Value) {
    if is::<Namespace>(doc) {
        round_trip::<Namespace>(doc)
    } else if is::<ServiceAccount>(doc) {
        round_trip::<ServiceAccount>(doc)
    } else if is::<ClusterRole>(doc) {
        round_trip::<ClusterRole>(doc)
    } else if is::<ClusterRoleBinding>(doc) {
        round_trip::<ClusterRoleBinding>(doc)
    } else if is::<Role>(doc) {
        round_trip::<Role>(doc)
    } else if is::<RoleBinding>(doc) {
        round_trip::<RoleBinding>(doc)
    } else if is::<Deployment>(doc) {
        round_trip::<Deployment>(doc)
    } else if is::<PodDisruptionBudget>(doc) {
        round_trip::<PodDisruptionBudget>(doc)
    } else if is::<Service>(doc) {
        round_trip::<Service>(doc)
    } else if is::<MutatingWebhookConfiguration>(doc) {
        round_trip::<MutatingWebhookConfiguration>(doc)
    } else if is::<Secret>(doc) {
        round_trip::<Secret>(doc)
    } else if is::<ConfigMap>(doc) {
        round_trip::<ConfigMap>(doc)
    } else if is::<PriorityClass>(doc) {
        round_trip::<PriorityClass>(doc)
    } else if is::<CustomResourceDefinition>(doc) {
        round_trip::<CustomResourceDefinition>(doc)
    } else if is::<NetworkPolicy>(doc) {
        round_trip::<NetworkPolicy>(doc)
    } else if is::<Lease>(doc) {
        round_trip::<Lease>(doc)
    } else if is::<Job>(doc) {
        round_trip::<Job>(doc)
    } else if is::<CronJob>(doc) {
        round_trip::<CronJob>(doc)
    } else if kind(doc) == ("batch/v1beta1", "CronJob") {
        // Clusters before 1.21 (the chart picks it); the same fields as batch/v1.
        let mut v1 = doc.clone();
        v1["apiVersion"] = "batch/v1".into();
        round_trip::<CronJob>(&v1)
    } else {
        match kind(doc) {
            ("cert-manager.io/v1", "Certificate") => check_certificate(doc),
            ("cert-manager.io/v1", "Issuer") => check_issuer(doc),
            ("monitoring.coreos.com/v1", "ServiceMonitor") => check_service_monitor(doc),
            ("monitoring.coreos.com/v1", "PrometheusRule") => check_prometheus_rule(doc),
            ("cilium.io/v2", "CiliumNetworkPolicy") => check_cilium_network_policy(doc),
            other => panic!("no strict check for {other:?}"),
        }
    }
}

// ------------------------------------------------------------ CRD checks

/// The fields of Cilium's v2 policy this repository uses (its example): an endpoint
/// selector and ingress rules from entities or endpoints to TCP ports.
fn check_cilium_network_policy(doc: &Value) {
    crd_envelope(doc);
    let spec = &doc["spec"];
    fields(
        spec,
        "CiliumNetworkPolicy.spec",
        &["endpointSelector", "ingress"],
        &["endpointSelector", "ingress"],
    );
    let _: LabelSelector = typed(&spec["endpointSelector"]);
    const ENTITIES: &[&str] = &[
        "kube-apiserver",
        "host",
        "remote-node",
        "cluster",
        "world",
        "all",
        "init",
        "health",
        "unmanaged",
        "ingress",
    ];
    for (i, rule) in spec["ingress"]
        .as_array()
        .expect("ingress list")
        .iter()
        .enumerate()
    {
        let path = format!("CiliumNetworkPolicy.spec.ingress[{i}]");
        fields(
            rule,
            &path,
            &["fromEntities", "fromEndpoints", "toPorts"],
            &["toPorts"],
        );
        for e in rule["fromEntities"].as_array().into_iter().flatten() {
            assert!(
                ENTITIES.contains(&string_at(e, &path)),
                "{path}: unknown entity {e}"
            );
        }
        for sel in rule["fromEndpoints"].as_array().into_iter().flatten() {
            let _: LabelSelector = typed(sel);
        }
        for tp in rule["toPorts"].as_array().expect("toPorts list") {
            fields(tp, &path, &["ports"], &["ports"]);
            for p in tp["ports"].as_array().expect("ports list") {
                fields(p, &path, &["port", "protocol"], &["port"]);
                assert!(
                    string_at(&p["port"], &path).parse::<u16>().is_ok(),
                    "{path}: port {p}"
                );
            }
        }
    }
}

/// The object at `path` has only `allowed` keys and all `required` ones.
fn fields(v: &Value, path: &str, allowed: &[&str], required: &[&str]) {
    let map = v
        .as_object()
        .unwrap_or_else(|| panic!("{path} must be an object, is {v}"));
    for k in map.keys() {
        assert!(allowed.contains(&k.as_str()), "{path}: unknown field {k:?}");
    }
    for r in required {
        assert!(map.contains_key(*r), "{path}: missing required field {r:?}");
    }
}

fn string_at<'a>(v: &'a Value, path: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{path} must be a string, is {v}"))
}

fn crd_envelope(doc: &Value) {
    fields(
        doc,
        "",
        &["apiVersion", "kind", "metadata", "spec"],
        &["apiVersion", "kind", "metadata", "spec"],
    );
    let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta = typed(&doc["metadata"]);
    assert_eq!(serde_json::to_value(&meta).unwrap(), doc["metadata"]);
    assert!(meta.name.is_some_and(|n| !n.is_empty()));
}

/// Go duration as cert-manager and Prometheus accept it (e.g. 90m, 2160h, 1h30m).
fn is_duration(s: &str) -> bool {
    let mut digits = false;
    let mut units = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits = true;
        } else if digits && "smhdwy".contains(c) {
            if c == 'm' && chars.peek() == Some(&'s') {
                chars.next();
            }
            digits = false;
            units += 1;
        } else {
            return false;
        }
    }
    !digits && units > 0
}

fn check_issuer_ref(v: &Value, path: &str) {
    fields(v, path, &["name", "kind", "group"], &["name"]);
    if let Some(k) = v.get("kind") {
        assert!(["Issuer", "ClusterIssuer"].contains(&string_at(k, path)));
    }
}

fn check_certificate(doc: &Value) {
    crd_envelope(doc);
    let spec = &doc["spec"];
    fields(
        spec,
        "Certificate.spec",
        &[
            "secretName",
            "issuerRef",
            "commonName",
            "dnsNames",
            "ipAddresses",
            "uris",
            "emailAddresses",
            "isCA",
            "duration",
            "renewBefore",
            "usages",
            "privateKey",
            "subject",
            "secretTemplate",
            "revisionHistoryLimit",
        ],
        &["secretName", "issuerRef"],
    );
    check_issuer_ref(&spec["issuerRef"], "Certificate.spec.issuerRef");
    assert!(
        spec.get("dnsNames").is_some() || spec.get("commonName").is_some(),
        "a Certificate needs dnsNames or commonName"
    );
    for key in ["duration", "renewBefore"] {
        if let Some(d) = spec.get(key) {
            assert!(is_duration(string_at(d, key)), "{key}: {d}");
        }
    }
    for u in spec["usages"].as_array().into_iter().flatten() {
        let u = string_at(u, "usages");
        assert!(
            [
                "digital signature",
                "key encipherment",
                "server auth",
                "client auth",
                "cert sign",
                "crl sign"
            ]
            .contains(&u),
            "unknown usage {u:?}"
        );
    }
    if let Some(pk) = spec.get("privateKey") {
        fields(
            pk,
            "privateKey",
            &["algorithm", "size", "encoding", "rotationPolicy"],
            &[],
        );
        if let Some(a) = pk.get("algorithm") {
            assert!(["RSA", "ECDSA", "Ed25519"].contains(&string_at(a, "algorithm")));
        }
        if let Some(r) = pk.get("rotationPolicy") {
            assert!(["Never", "Always"].contains(&string_at(r, "rotationPolicy")));
        }
    }
}

fn check_issuer(doc: &Value) {
    crd_envelope(doc);
    let spec = doc["spec"].as_object().unwrap();
    let kinds: Vec<&String> = spec.keys().collect();
    assert_eq!(
        kinds.len(),
        1,
        "an Issuer has exactly one issuer type: {kinds:?}"
    );
    match kinds[0].as_str() {
        "selfSigned" => fields(
            &spec["selfSigned"],
            "selfSigned",
            &["crlDistributionPoints"],
            &[],
        ),
        "ca" => fields(
            &spec["ca"],
            "ca",
            &["secretName", "crlDistributionPoints"],
            &["secretName"],
        ),
        other => panic!("unexpected issuer type {other}"),
    }
}

fn check_service_monitor(doc: &Value) {
    crd_envelope(doc);
    let spec = &doc["spec"];
    fields(
        spec,
        "ServiceMonitor.spec",
        &[
            "selector",
            "endpoints",
            "namespaceSelector",
            "jobLabel",
            "targetLabels",
            "podTargetLabels",
            "sampleLimit",
        ],
        &["selector", "endpoints"],
    );
    round_trip_value::<LabelSelector>(&spec["selector"]);
    if let Some(ns) = spec.get("namespaceSelector") {
        fields(ns, "namespaceSelector", &["any", "matchNames"], &[]);
    }
    let endpoints = spec["endpoints"].as_array().unwrap();
    assert!(!endpoints.is_empty());
    for e in endpoints {
        fields(
            e,
            "endpoints[]",
            &[
                "port",
                "targetPort",
                "path",
                "scheme",
                "interval",
                "scrapeTimeout",
                "honorLabels",
                "honorTimestamps",
                "tlsConfig",
                "relabelings",
                "metricRelabelings",
                "params",
            ],
            &[],
        );
        assert!(e.get("port").is_some() || e.get("targetPort").is_some());
        for key in ["interval", "scrapeTimeout"] {
            if let Some(d) = e.get(key) {
                assert!(is_duration(string_at(d, key)));
            }
        }
    }
}

fn round_trip_value<T: DeserializeOwned + Serialize>(v: &Value) {
    let t: T = typed(v);
    assert_eq!(
        first_difference(v, &serde_json::to_value(t).unwrap(), ""),
        None
    );
}

fn check_prometheus_rule(doc: &Value) {
    crd_envelope(doc);
    fields(
        &doc["spec"],
        "PrometheusRule.spec",
        &["groups"],
        &["groups"],
    );
    let groups = doc["spec"]["groups"].as_array().unwrap();
    let mut names = BTreeSet::new();
    for g in groups {
        fields(
            g,
            "groups[]",
            &[
                "name",
                "interval",
                "rules",
                "limit",
                "partial_response_strategy",
                "query_offset",
            ],
            &["name", "rules"],
        );
        assert!(
            names.insert(string_at(&g["name"], "name")),
            "duplicate group name"
        );
        for r in g["rules"].as_array().unwrap() {
            fields(
                r,
                "rules[]",
                &[
                    "record",
                    "alert",
                    "expr",
                    "for",
                    "keep_firing_for",
                    "labels",
                    "annotations",
                ],
                &["expr"],
            );
            assert!(
                r.get("record").is_some() != r.get("alert").is_some(),
                "a rule is a record or an alert: {r}"
            );
            if let Some(rec) = r.get("record") {
                assert!(
                    is_metric_name(string_at(rec, "record")),
                    "record name {rec}"
                );
                assert!(r.get("for").is_none() && r.get("annotations").is_none());
            }
            if let Some(f) = r.get("for") {
                assert!(is_duration(string_at(f, "for")));
            }
        }
    }
}
