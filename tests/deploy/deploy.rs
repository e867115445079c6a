//! `deploy/` and `rightsizer certs`, checked with the real tools: every kustomization
//! renders with the machine's `kubectl kustomize`; every rendered object survives a
//! strict round trip through its k8s-openapi type (CRD kinds are checked field by field);
//! the webhook configuration, RBAC and Deployment are asserted; the PrometheusRule
//! passes `promtool check rules` and its promtool unit tests; every metric a rule, a
//! dashboard or an analyzer query names is in `deploy/monitoring/metrics.txt` (names found
//! with the lexer in tests/support/monitoring.rs; tests/analyzer/serve_analyzer.rs checks
//! the webhook's are exported by a running `serve`); the certificates that `rightsizer
//! certs` writes verify (rustls/webpki and openssl) and the self-signed overlay renders
//! with them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use rightsizer::certs;
use rustls::client::danger::ServerCertVerifier as _;
use serde_json::Value;

use crate::monitoring;
use crate::strict::{all, check_strict, deploy, find, kind, kustomize, name, repo, typed};
use monitoring::{dashboard_queries, metric_list, promql_metrics, MetricList};

// ------------------------------------------------------------- rendering

pub(crate) const KUSTOMIZATIONS: &[&str] = &[
    "base",
    "priority-classes",
    "overlays/cert-manager",
    "overlays/self-managed",
    "overlays/updater",
    "monitoring",
    "examples/network-policy-cidr",
    "examples/network-policy-cilium",
];

/// Kustomize Components: rendered through the overlays and examples that use them
/// (tests/deploy/identity.rs), never alone.
pub(crate) const COMPONENTS: &[&str] = &["components/network-policy", "components/pod-watch"];

#[test]
fn every_kustomization_renders_and_every_object_is_strictly_valid() {
    // Every directory with a kustomization.yaml is listed here or is the self-signed
    // overlay (which needs `rightsizer certs` first; rendered in its own test).
    let mut found = Vec::new();
    for entry in walk(&deploy()) {
        if entry.file_name().is_some_and(|n| n == "kustomization.yaml") {
            let dir = entry.parent().unwrap().strip_prefix(deploy()).unwrap();
            found.push(dir.to_string_lossy().into_owned());
        }
    }
    found.sort();
    let mut expected: Vec<String> = KUSTOMIZATIONS.iter().map(|s| s.to_string()).collect();
    expected.push("overlays/self-signed".to_string());
    expected.extend(COMPONENTS.iter().map(|s| s.to_string()));
    expected.sort();
    assert_eq!(found, expected);

    for k in KUSTOMIZATIONS {
        let docs = kustomize(&deploy().join(k));
        let mut seen = BTreeSet::new();
        for d in &docs {
            check_strict(d);
            let ns = d["metadata"]["namespace"].as_str().unwrap_or_default();
            assert!(
                seen.insert((kind(d).1.to_string(), ns.to_string(), name(d).to_string())),
                "duplicate {d}"
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Minimal LabelSelector evaluation (matchLabels and the four set operators).
fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expr = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match (e.operator.as_str(), labels.get(&e.key)) {
            ("In", Some(v)) => values.contains(v),
            ("In", None) => false,
            ("NotIn", Some(v)) => !values.contains(v),
            ("NotIn", None) => true,
            ("Exists", v) => v.is_some(),
            ("DoesNotExist", v) => v.is_none(),
            (op, _) => panic!("unknown operator {op}"),
        }
    });
    by_labels && by_expr
}

/// A namespace's labels as the apiserver sets them (it adds kubernetes.io/metadata.name).
fn ns_labels(name: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())]);
    m.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    m
}

#[test]
fn the_webhook_configuration_matches_the_contract() {
    let docs = kustomize(&deploy().join("base"));
    let deployment: Deployment = typed(find(&docs, "Deployment", "rightsizer"));
    let own_ns = deployment.metadata.namespace.clone().unwrap();
    let cfg: MutatingWebhookConfiguration = typed(find(
        &docs,
        "MutatingWebhookConfiguration",
        certs::WEBHOOK_CONFIGURATION,
    ));
    let hooks = cfg.webhooks.unwrap();
    assert_eq!(hooks.len(), 1);
    let h = &hooks[0];
    assert_eq!(h.name, certs::WEBHOOK_NAME);
    assert_eq!(h.admission_review_versions, ["v1"]);
    assert_eq!(h.failure_policy.as_deref(), Some("Ignore"));
    let timeout = h.timeout_seconds.unwrap();
    assert!((1..=5).contains(&timeout), "timeoutSeconds {timeout}");
    assert_eq!(h.side_effects, "NoneOnDryRun");
    assert_eq!(h.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert_eq!(h.match_policy.as_deref(), Some("Equivalent"));

    // clientConfig -> Service 443 -> container port 8443 that `serve --listen` uses.
    let svc_ref = h.client_config.service.as_ref().unwrap();
    assert_eq!(svc_ref.path.as_deref(), Some("/mutate"));
    assert_eq!(svc_ref.namespace, own_ns);
    assert_eq!(svc_ref.name, certs::DEFAULT_SERVICE);
    assert_eq!(own_ns, certs::DEFAULT_NAMESPACE);
    let svc: Service = typed(find(&docs, "Service", &svc_ref.name));
    let port = svc
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| Some(p.port) == svc_ref.port.or(Some(443)))
        .expect("the Service exposes the port the webhook calls");
    assert_eq!(port.port, 443);
    let container = &deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let target = match port.target_port.as_ref().unwrap() {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n) => {
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(n))
                .unwrap()
                .container_port
        }
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => *i,
    };
    assert_eq!(target, 8443);
    let args = container.args.clone().unwrap();
    assert!(
        args.windows(2).any(|w| w == ["--listen", "0.0.0.0:8443"]),
        "{args:?}"
    );

    // Rules: pods CREATE; workload kinds CREATE/UPDATE.
    let mut rules = BTreeSet::new();
    for r in h.rules.iter().flatten() {
        assert_eq!(r.scope.as_deref(), Some("Namespaced"));
        for g in r.api_groups.iter().flatten() {
            for v in r.api_versions.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    rules.insert((
                        g.clone(),
                        v.clone(),
                        res.clone(),
                        r.operations.clone().unwrap(),
                    ));
                }
            }
        }
    }
    let cu = || vec!["CREATE".to_string(), "UPDATE".to_string()];
    let mut expected = BTreeSet::from([(
        String::new(),
        "v1".to_string(),
        "pods".to_string(),
        vec!["CREATE".to_string()],
    )]);
    for (g, v, rs) in [
        (
            "apps",
            "v1",
            &["deployments", "statefulsets", "daemonsets", "replicasets"][..],
        ),
        ("batch", "v1", &["jobs", "cronjobs"][..]),
        (
            "serving.knative.dev",
            "v1",
            &["services", "configurations"][..],
        ),
    ] {
        for r in rs {
            expected.insert((g.to_string(), v.to_string(), r.to_string(), cu()));
        }
    }
    assert_eq!(rules, expected);

    // Selectors, evaluated against namespaces as the apiserver labels them.
    let nsel = h.namespace_selector.as_ref().unwrap();
    let on = [("rightsizer.io/enabled", "true")];
    assert!(selects(nsel, &ns_labels("shop", &on)));
    assert!(!selects(nsel, &ns_labels("shop", &[])));
    assert!(!selects(
        nsel,
        &ns_labels("shop", &[("rightsizer.io/enabled", "false")])
    ));
    assert!(!selects(nsel, &ns_labels("kube-system", &on)));
    assert!(!selects(nsel, &ns_labels(&own_ns, &on)));
    // The analyzer acts where this selector calls the webhook: one predicate, checked
    // against the shipped selector.
    let off = [("rightsizer.io/enabled", "false")];
    for (ns, extra) in [
        ("shop", &on[..]),
        ("shop", &[][..]),
        ("shop", &off[..]),
        ("kube-system", &on[..]),
        (own_ns.as_str(), &on[..]),
    ] {
        let labels = ns_labels(ns, extra);
        assert_eq!(
            selects(nsel, &labels),
            rightsizer_core::cluster::opt_in::acts_on(ns, Some(&labels), Some(&own_ns)),
            "{ns} {extra:?}"
        );
    }
    let osel = h.object_selector.as_ref().unwrap();
    assert!(selects(osel, &BTreeMap::new()));
    assert!(selects(
        osel,
        &BTreeMap::from([("rightsizer.io/mode".into(), "enforce".into())])
    ));
    assert!(!selects(
        osel,
        &BTreeMap::from([("rightsizer.io/mode".into(), "off".into())])
    ));
    assert!(
        h.client_config.ca_bundle.is_none(),
        "the base has no caBundle; overlays add it"
    );
}

#[test]
fn the_deployment_is_hardened_and_highly_available() {
    let docs = kustomize(&deploy().join("base"));
    let ns: Namespace = typed(find(&docs, "Namespace", certs::DEFAULT_NAMESPACE));
    let ns_name = ns.metadata.name.unwrap();
    for d in &docs {
        let namespaced = !matches!(
            kind(d).1,
            "Namespace"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "MutatingWebhookConfiguration"
                | "CustomResourceDefinition"
        );
        assert_eq!(
            d["metadata"]["namespace"].as_str().is_some(),
            namespaced,
            "{}",
            name(d)
        );
        if namespaced {
            assert_eq!(d["metadata"]["namespace"], ns_name.as_str());
        }
    }
    let dep: Deployment = typed(find(&docs, "Deployment", "rightsizer"));
    let spec = dep.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    assert!(selects(&spec.selector, &pod_labels));

    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    let term = &anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap()[0]
        .pod_affinity_term;
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    assert!(selects(term.label_selector.as_ref().unwrap(), &pod_labels));

    let pdb: PodDisruptionBudget = typed(all(&docs, "PodDisruptionBudget")[0]);
    let pdb_spec = pdb.spec.unwrap();
    assert!(selects(pdb_spec.selector.as_ref().unwrap(), &pod_labels));
    assert!(pdb_spec.min_available.is_some());

    // Service account token only where needed.
    let sa: ServiceAccount = typed(find(&docs, "ServiceAccount", "rightsizer"));
    assert_eq!(sa.automount_service_account_token, Some(false));
    assert_eq!(pod.automount_service_account_token, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("rightsizer"));

    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    let res = c.resources.as_ref().unwrap();
    for side in [&res.requests, &res.limits] {
        let side = side.as_ref().unwrap();
        assert!(
            side.contains_key("cpu") && side.contains_key("memory"),
            "{side:?}"
        );
    }

    // Probes hit the contract's endpoints on a declared port.
    let port_names: BTreeSet<String> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    for (probe, path) in [
        (&c.readiness_probe, "/readyz"),
        (&c.liveness_probe, "/healthz"),
    ] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n) => {
                assert!(port_names.contains(n))
            }
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(_) => {
                panic!("use a named port")
            }
        }
    }

    // TLS Secret mounted where --tls-cert/--tls-key point.
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "serve");
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
            .unwrap()
    };
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.secret.is_some())
        .unwrap();
    assert_eq!(
        vol.secret.as_ref().unwrap().secret_name.as_deref(),
        Some(certs::DEFAULT_SECRET)
    );
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == vol.name)
        .unwrap();
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(arg("--tls-cert"), format!("{}/tls.crt", mount.mount_path));
    assert_eq!(arg("--tls-key"), format!("{}/tls.key", mount.mount_path));
    let admin_port = arg("--admin-listen")
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<i32>()
        .unwrap();
    assert!(c
        .ports
        .iter()
        .flatten()
        .any(|p| p.container_port == admin_port));

    let env: BTreeMap<String, _> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.clone()))
        .collect();
    assert!(env["RIGHTSIZER_PROMETHEUS_URL"]
        .value
        .as_deref()
        .is_some_and(|v| v.starts_with("http")));
    let ns_ref = env["POD_NAMESPACE"]
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(ns_ref.field_path, "metadata.namespace");
}

fn verbs_by_resource(rules: &[PolicyRule]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rules {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                let key = match &r.resource_names {
                    Some(n) => format!("{g}/{res}@{}", n.join(",")),
                    None => format!("{g}/{res}"),
                };
                out.entry(key).or_default().extend(r.verbs.iter().cloned());
            }
        }
    }
    out
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_rightsizing_crd_has_a_status_subresource_and_the_columns() {
    let docs = kustomize(&deploy().join("base"));
    let crd: CustomResourceDefinition = typed(find(
        &docs,
        "CustomResourceDefinition",
        "rightsizings.rightsizer.io",
    ));
    assert_eq!(crd.spec.group, "rightsizer.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "Rightsizing");
    assert_eq!(crd.spec.names.plural, "rightsizings");
    assert_eq!(crd.spec.names.short_names, Some(vec!["rsz".to_string()]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, rightsizer::kube::rightsizing::VERSION);
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Workload",
            "Containers",
            "Memory-Committed",
            "Recommendation",
            "Last-Change",
            "Age"
        ]
    );
    // Structural: every property has a type (the apiserver refuses v1 CRDs otherwise).
    fn typed_everywhere(s: &Value, path: &str) {
        if s.get("x-kubernetes-preserve-unknown-fields") == Some(&serde_json::json!(true)) {
            return;
        }
        assert!(s.get("type").is_some(), "{path} has no type");
        for (k, p) in s
            .get("properties")
            .and_then(|p| p.as_object())
            .into_iter()
            .flatten()
        {
            typed_everywhere(p, &format!("{path}.{k}"));
        }
        if let Some(i) = s.get("items") {
            typed_everywhere(i, &format!("{path}[]"));
        }
    }
    let schema = serde_json::to_value(&v.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
    typed_everywhere(&schema, "");
    // The analyzer's status shape deserializes from what the schema allows.
    let status = &schema["properties"]["status"]["properties"];
    for field in [
        "workload",
        "containerNames",
        "memoryCommitted",
        "memoryRecommended",
        "lastChange",
        "containers",
    ] {
        assert!(status.get(field).is_some(), "status.{field}");
    }
}

#[test]
fn rbac_is_least_privilege() {
    let docs = kustomize(&deploy().join("base"));
    let cr: ClusterRole = typed(find(&docs, "ClusterRole", "rightsizer"));
    // The watchers only list and watch; committed state is written to Rightsizings,
    // never to a workload.
    let watch = set(&["list", "watch"]);
    let mut expected = BTreeMap::new();
    for r in [
        // The node cap: the largest allocatable of the nodes a Pod can land on.
        "/nodes",
        "/namespaces",
        "/limitranges",
        "/resourcequotas",
        "scheduling.k8s.io/priorityclasses",
        "autoscaling/horizontalpodautoscalers",
        "apps/deployments",
        "apps/statefulsets",
        "apps/daemonsets",
        "apps/replicasets",
        "batch/jobs",
        "batch/cronjobs",
        // Where Knative is installed: the owners of their Rightsizings.
        "serving.knative.dev/services",
        "serving.knative.dev/configurations",
    ] {
        expected.insert(r.to_string(), watch.clone());
    }
    expected.insert(
        "rightsizer.io/rightsizings".to_string(),
        set(&["get", "list", "watch", "create"]),
    );
    expected.insert(
        "rightsizer.io/rightsizings/status".to_string(),
        set(&["update"]),
    );
    expected.insert("/events".to_string(), set(&["create"]));
    assert_eq!(verbs_by_resource(&cr.rules.unwrap()), expected);

    let role: Role = typed(find(&docs, "Role", "rightsizer"));
    let expected = BTreeMap::from([
        ("/configmaps".to_string(), watch.clone()),
        ("coordination.k8s.io/leases".to_string(), set(&["create"])),
        (
            "coordination.k8s.io/leases@rightsizer-leader".to_string(),
            set(&["get", "update"]),
        ),
    ]);
    assert_eq!(verbs_by_resource(&role.rules.unwrap()), expected);

    // Both bindings give exactly these roles to the webhook's ServiceAccount.
    let crb: ClusterRoleBinding = typed(find(&docs, "ClusterRoleBinding", "rightsizer"));
    let rb: RoleBinding = typed(find(&docs, "RoleBinding", "rightsizer"));
    assert_eq!(
        (crb.role_ref.kind.as_str(), crb.role_ref.name.as_str()),
        ("ClusterRole", "rightsizer")
    );
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("Role", "rightsizer")
    );
    for subjects in [crb.subjects.unwrap(), rb.subjects.unwrap()] {
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "rightsizer");
        assert_eq!(
            subjects[0].namespace.as_deref(),
            Some(certs::DEFAULT_NAMESPACE)
        );
    }
}

/// Every write on Pods in a render: (resource, verbs) of rules naming pods or a subresource.
fn pod_writes(docs: &[Value]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for d in all(docs, "ClusterRole")
        .into_iter()
        .chain(all(docs, "Role"))
    {
        let rules = d["rules"].clone();
        let rules: Vec<PolicyRule> = serde_json::from_value(rules).unwrap_or_default();
        for (res, verbs) in verbs_by_resource(&rules) {
            let writes: BTreeSet<String> = verbs
                .into_iter()
                .filter(|v| !["get", "list", "watch"].contains(&v.as_str()))
                .collect();
            if res.starts_with("/pods") && !writes.is_empty() {
                out.entry(res).or_insert_with(BTreeSet::new).extend(writes);
            }
        }
    }
    out
}

#[test]
fn the_base_install_has_no_write_on_pods_and_the_updater_overlay_adds_only_evict_and_resize() {
    for k in ["base", "overlays/self-managed", "overlays/cert-manager"] {
        assert_eq!(
            pod_writes(&kustomize(&deploy().join(k))),
            BTreeMap::new(),
            "{k}"
        );
    }
    let docs = kustomize(&deploy().join("overlays/updater"));
    assert_eq!(
        pod_writes(&docs),
        BTreeMap::from([
            ("/pods/eviction".to_string(), set(&["create"])),
            ("/pods/resize".to_string(), set(&["patch"])),
        ])
    );
    // Reads: listing Pods (the base has none) and the budgets it skips Pods by, nothing
    // cluster-wide beyond them.
    let role: ClusterRole = typed(find(&docs, "ClusterRole", "rightsizer-updater"));
    let reads: Vec<(String, BTreeSet<String>)> = verbs_by_resource(&role.rules.unwrap_or_default())
        .into_iter()
        .filter(|(r, _)| r == "/pods" || r.ends_with("poddisruptionbudgets"))
        .collect();
    assert_eq!(
        reads,
        [
            ("/pods".to_string(), set(&["list"])),
            ("policy/poddisruptionbudgets".to_string(), set(&["list"]))
        ]
    );
    let crb: ClusterRoleBinding = typed(find(&docs, "ClusterRoleBinding", "rightsizer-updater"));
    let subjects = crb.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].name.as_str(), subjects[0].namespace.as_deref()),
        ("rightsizer", Some(certs::DEFAULT_NAMESPACE))
    );
    // The same install as overlays/self-managed otherwise, with `serve --updater` on.
    let d: Deployment = typed(find(&docs, "Deployment", "rightsizer"));
    let env = d.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(env
        .iter()
        .any(|e| e.name == "RIGHTSIZER_UPDATER" && e.value.as_deref() == Some("true")));
}

/// Every verb on Knative Services in a render.
fn knative_service_verbs(docs: &[Value]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in all(docs, "ClusterRole")
        .into_iter()
        .chain(all(docs, "Role"))
    {
        let rules: Vec<PolicyRule> = serde_json::from_value(d["rules"].clone()).unwrap_or_default();
        for (res, verbs) in verbs_by_resource(&rules) {
            if res == "serving.knative.dev/services" {
                out.extend(verbs);
            }
        }
    }
    out
}

#[test]
fn only_the_updater_overlay_may_patch_knative_services_and_it_turns_the_knative_writer_on() {
    for k in ["base", "overlays/self-managed", "overlays/cert-manager"] {
        let verbs = knative_service_verbs(&kustomize(&deploy().join(k)));
        assert!(!verbs.contains("patch"), "{k}: {verbs:?}");
    }
    let docs = kustomize(&deploy().join("overlays/updater"));
    let role: ClusterRole = typed(find(&docs, "ClusterRole", "rightsizer-updater"));
    let knative: Vec<(String, BTreeSet<String>)> =
        verbs_by_resource(&role.rules.unwrap_or_default())
            .into_iter()
            .filter(|(r, _)| r.starts_with("serving.knative.dev/"))
            .collect();
    // A server-side apply (a patch) of rightsizer's fields (the base lists Services): no
    // update, no delete, nothing on Configurations or Revisions.
    assert_eq!(
        knative,
        [("serving.knative.dev/services".to_string(), set(&["patch"]))]
    );
    let d: Deployment = typed(find(&docs, "Deployment", "rightsizer"));
    let env = d.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(env
        .iter()
        .any(|e| e.name == "RIGHTSIZER_KNATIVE_WRITER" && e.value.as_deref() == Some("true")));
}

#[test]
fn the_five_priority_classes() {
    let docs = kustomize(&deploy().join("priority-classes"));
    let got: BTreeMap<String, (i32, Option<bool>)> = docs
        .iter()
        .map(|d| {
            let pc: PriorityClass = typed(d);
            (pc.metadata.name.unwrap(), (pc.value, pc.global_default))
        })
        .collect();
    let expected = BTreeMap::from([
        ("gpu-workload".to_string(), (1000, Some(false))),
        ("high-priority".to_string(), (900, Some(false))),
        ("cpu-workload".to_string(), (500, Some(false))),
        ("normal-priority".to_string(), (100, Some(false))),
        ("low-priority".to_string(), (50, Some(false))),
    ]);
    assert_eq!(got, expected);
}

#[test]
fn the_cert_manager_overlay_chains_issuers_and_injects_the_ca() {
    let docs = kustomize(&deploy().join("overlays/cert-manager"));
    let cfg = find(
        &docs,
        "MutatingWebhookConfiguration",
        certs::WEBHOOK_CONFIGURATION,
    );
    let inject = cfg["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        .as_str()
        .unwrap();
    let (ns, cert_name) = inject.split_once('/').unwrap();
    assert_eq!(ns, certs::DEFAULT_NAMESPACE);

    // The injected Certificate writes the Secret the Deployment mounts, for the Service's names.
    let serving = find(&docs, "Certificate", cert_name);
    assert_eq!(serving["metadata"]["namespace"], ns);
    assert_eq!(serving["spec"]["secretName"], certs::DEFAULT_SECRET);
    let dns: BTreeSet<&str> = serving["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for n in certs::service_dns_names(certs::DEFAULT_SERVICE, certs::DEFAULT_NAMESPACE) {
        assert!(dns.contains(n.as_str()), "missing {n}");
    }
    assert!(serving["spec"]["usages"]
        .as_array()
        .unwrap()
        .contains(&Value::from("server auth")));

    // serving <- CA Issuer (ca.secretName) <- CA Certificate (isCA) <- self-signed Issuer.
    let ca_issuer = find(
        &docs,
        "Issuer",
        serving["spec"]["issuerRef"]["name"].as_str().unwrap(),
    );
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"].as_str().unwrap();
    let ca_cert = all(&docs, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["secretName"] == ca_secret)
        .unwrap();
    assert_eq!(ca_cert["spec"]["isCA"], true);
    let root = find(
        &docs,
        "Issuer",
        ca_cert["spec"]["issuerRef"]["name"].as_str().unwrap(),
    );
    assert!(root["spec"].get("selfSigned").is_some());
    assert!(cfg["webhooks"][0]["clientConfig"].get("caBundle").is_none());
}

// ----------------------------------------------------------------- certs

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_name() == "generated" {
            continue; // a developer's own generated material stays out of the test
        }
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

pub(crate) fn run_certs(out: &Path, extra: &[&str]) {
    let status = Command::new(crate::exe::rightsizer())
        .arg("certs")
        .arg("--out-dir")
        .arg(out)
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success());
}

fn pem_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

/// webpki's verdict on `leaf` for `host`, trusting only the certificates in `bundle`.
fn verify(bundle: &[u8], leaf: &[u8], host: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(bundle) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    let leaf = pem_certs(leaf).remove(0);
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
        .map(|_| ())
}

fn keys_match(cert: &[u8], key: &[u8]) -> bool {
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key).unwrap();
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .unwrap();
    rustls::sign::CertifiedKey::new(pem_certs(cert), signer)
        .keys_match()
        .is_ok()
}

#[test]
fn certs_output_verifies_and_the_self_signed_overlay_renders_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("deploy");
    copy_dir(&deploy(), &copy);
    let overlay = copy.join("overlays/self-signed");
    let out = overlay.join("generated");
    run_certs(&out, &["--san", "127.0.0.1"]);

    let read = |n: &str| fs::read(out.join(n)).unwrap();
    let (ca, crt, key) = (read("ca.crt"), read("tls.crt"), read("tls.key"));
    for host in certs::service_dns_names(certs::DEFAULT_SERVICE, certs::DEFAULT_NAMESPACE)
        .iter()
        .map(String::as_str)
        .chain(["127.0.0.1"])
    {
        verify(&ca, &crt, host).unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    assert!(
        verify(&ca, &crt, "rightsizer.other-namespace.svc").is_err(),
        "a name outside the SANs must fail"
    );
    let stranger = certs::Ca::generate("stranger", 1).unwrap();
    assert!(verify(
        stranger.cert_pem().as_bytes(),
        &crt,
        "rightsizer.rightsizer-system.svc"
    )
    .is_err());
    assert!(keys_match(&crt, &key));
    assert!(!keys_match(&crt, &read("ca.key")));

    // A second opinion from openssl.
    let openssl = Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(out.join("tls.crt"))
        .output()
        .unwrap();
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stdout)
    );

    #[cfg(unix)]
    for private in ["ca.key", "tls.key", "secret.yaml"] {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(out.join(private))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "{private}"
        );
    }
    assert!(fs::read_to_string(out.join(".gitignore"))
        .unwrap()
        .lines()
        .any(|l| l == "*"));

    // The overlay renders: Secret with the generated pair, caBundle = the CA.
    let docs = kustomize(&overlay);
    for d in &docs {
        check_strict(d);
    }
    let secret: Secret = typed(find(&docs, "Secret", certs::DEFAULT_SECRET));
    assert_eq!(
        secret.metadata.namespace.as_deref(),
        Some(certs::DEFAULT_NAMESPACE)
    );
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.unwrap();
    assert_eq!(data["tls.crt"].0, crt);
    assert_eq!(data["tls.key"].0, key);
    let cfg: MutatingWebhookConfiguration = typed(find(
        &docs,
        "MutatingWebhookConfiguration",
        certs::WEBHOOK_CONFIGURATION,
    ));
    let hook = &cfg.webhooks.unwrap()[0];
    assert_eq!(hook.client_config.ca_bundle.as_ref().unwrap().0, ca);
    // The patch only added the caBundle: everything else is still the base's.
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(
        hook.client_config.service.as_ref().unwrap().path.as_deref(),
        Some("/mutate")
    );
    assert_eq!(hook.rules.as_ref().unwrap().len(), 4);

    // Renewal reuses the CA (caBundle unchanged); --new-ca trusts old and new CA meanwhile.
    run_certs(&out, &[]);
    assert_eq!(read("ca.crt"), ca);
    assert_ne!(read("tls.crt"), crt);
    verify(&ca, &read("tls.crt"), "rightsizer.rightsizer-system.svc").unwrap();
    run_certs(&out, &["--new-ca"]);
    let new_ca = read("ca.crt");
    assert_ne!(new_ca, ca);
    let bundle = read("ca-bundle.crt");
    assert_eq!(pem_certs(&bundle).len(), 2);
    verify(
        &bundle,
        &read("tls.crt"),
        "rightsizer.rightsizer-system.svc",
    )
    .unwrap();
    assert!(verify(&ca, &read("tls.crt"), "rightsizer.rightsizer-system.svc").is_err());
    let docs = kustomize(&overlay);
    let cfg: MutatingWebhookConfiguration = typed(find(
        &docs,
        "MutatingWebhookConfiguration",
        certs::WEBHOOK_CONFIGURATION,
    ));
    assert_eq!(
        cfg.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .as_ref()
            .unwrap()
            .0,
        bundle
    );
}

/// A real TLS handshake on loopback: a rustls server with the generated pair, a client
/// that trusts only the generated bundle and asks for the Service's name.
fn handshake(bundle: &[u8], crt: &[u8], key: &[u8], host: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read as _, Write as _};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_cfg = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pem_certs(crt),
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key).unwrap(),
        )
        .map_err(|e| e.to_string())?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(server_cfg)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 4];
        if tls.read_exact(&mut buf).is_ok() {
            let _ = tls.write_all(b"pong");
            let _ = tls.flush();
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(bundle) {
        roots.add(c).unwrap();
    }
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(client_cfg), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let result = tls
        .write_all(b"ping")
        .and_then(|()| tls.flush())
        .and_then(|()| {
            let mut reply = vec![0u8; 4];
            tls.read_exact(&mut reply).map(|()| reply)
        })
        .map_err(|e| e.to_string());
    drop(tls);
    server.join().unwrap();
    result
}

#[test]
fn the_generated_pair_serves_tls_to_a_client_trusting_the_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    run_certs(tmp.path(), &[]);
    let read = |n: &str| fs::read(tmp.path().join(n)).unwrap();
    let (bundle, crt, key) = (read("ca-bundle.crt"), read("tls.crt"), read("tls.key"));
    assert_eq!(
        handshake(&bundle, &crt, &key, "rightsizer.rightsizer-system.svc").unwrap(),
        b"pong"
    );
    // The client refuses a name the certificate does not carry, and a CA it does not trust.
    let err = handshake(&bundle, &crt, &key, "rightsizer.default.svc").unwrap_err();
    assert!(
        err.contains("NotValidForName") || err.contains("name"),
        "{err}"
    );
    let stranger = certs::Ca::generate("stranger", 1).unwrap();
    assert!(handshake(
        stranger.cert_pem().as_bytes(),
        &crt,
        &key,
        "rightsizer.rightsizer-system.svc"
    )
    .is_err());
}

#[test]
fn generated_material_is_git_ignored() {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args([
            "check-ignore",
            "-q",
            "deploy/overlays/self-signed/generated/tls.key",
        ])
        .status()
        .expect("git on PATH");
    assert!(
        out.success(),
        "deploy/overlays/self-signed/generated/ must be git-ignored"
    );
}

// ------------------------------------------------------------ monitoring

#[test]
fn the_promql_lexer_finds_names_and_labels() {
    let got = promql_metrics(
        r#"sum by (le, pod) (rate(a_b_bucket{job="x", le!~"1|2"}[5m] offset 1h)) / on (pod) group_left (q)
           max without (side) (rec:x:sum{side="request"}) and b > bool 0.5 * 1e3 or label_replace(c, "d", "$1", "e", "(.+)") unless ${v} + $w"#,
    );
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a_b_bucket", "rec:x:sum", "b", "c"]);
    assert_eq!(got[0].1, set(&["job", "le"]));
    assert_eq!(got[1].1, set(&["side"]));
}

struct Rules {
    groups: Value,
    records: BTreeSet<String>,
    exprs: Vec<(String, String)>,
}

fn rules() -> Rules {
    let docs = kustomize(&deploy().join("monitoring"));
    let rule = find(&docs, "PrometheusRule", "rightsizer");
    let groups = rule["spec"].clone();
    let mut records = BTreeSet::new();
    let mut exprs = Vec::new();
    for g in groups["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let id = r
                .get("record")
                .or(r.get("alert"))
                .unwrap()
                .as_str()
                .unwrap()
                .to_string();
            if let Some(rec) = r.get("record") {
                records.insert(rec.as_str().unwrap().to_string());
            }
            exprs.push((id, r["expr"].as_str().unwrap().to_string()));
        }
    }
    Rules {
        groups,
        records,
        exprs,
    }
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool must be on PATH (tests/run installs Debian's prometheus)");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let r = rules();
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("rightsizer-rules.yaml"),
        serde_norway::to_string(&r.groups).unwrap(),
    )
    .unwrap();
    promtool(&["check", "rules", "rightsizer-rules.yaml"], tmp.path());
    fs::copy(
        deploy().join("monitoring/rules.test.yaml"),
        tmp.path().join("rules.test.yaml"),
    )
    .unwrap();
    promtool(&["test", "rules", "rules.test.yaml"], tmp.path());

    // The seed alerts and the webhook's own are all there.
    let alerts: BTreeSet<&str> = r
        .exprs
        .iter()
        .map(|(id, _)| id.as_str())
        .filter(|id| !id.contains(':'))
        .collect();
    for a in [
        "ContainerMemoryNearLimit",
        "ContainerOOMKilled",
        "HPAScalingLimited",
        "ContainerCPUThrottled",
        "ClusterAutoscalerNotSafeToScale",
        "ClusterAutoscalerScaleUpFailing",
        "RightsizerAdmissionErrors",
        "RightsizerAdmissionLatencyHigh",
        "RightsizerAnalyzerStale",
        "RightsizerPolicyRejected",
        "HPAScalingStuck",
        "ContainerOOMKilledNotRestarted",
        "PodUnschedulable",
        "RightsizerWatchErrors",
    ] {
        assert!(alerts.contains(a), "missing alert {a}");
    }
    // Every alert is exercised by the unit tests.
    let tests = fs::read_to_string(deploy().join("monitoring/rules.test.yaml")).unwrap();
    for a in alerts {
        assert!(
            tests.contains(&format!("alertname: {a}")),
            "no promtool test for {a}"
        );
    }
}

/// The alerts the seeds name, with their severity and how long the condition must hold.
#[test]
fn the_seed_alerts_have_their_severity_and_duration() {
    let r = rules();
    let all: Vec<&Value> = r.groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    for (alert, severity, hold, reads) in [
        (
            "ContainerOOMKilled",
            "critical",
            None,
            "kube_pod_container_status_last_terminated_reason",
        ),
        ("HPAScalingLimited", "warning", Some("5m"), "ScalingLimited"),
        (
            "ContainerCPUThrottled",
            "warning",
            Some("15m"),
            "rightsizer:container_cpu_throttled:ratio",
        ),
        (
            "ClusterAutoscalerNotSafeToScale",
            "warning",
            Some("10m"),
            "cluster_autoscaler_cluster_safe_to_autoscale",
        ),
        (
            "ClusterAutoscalerScaleUpFailing",
            "warning",
            Some("15m"),
            "cluster_autoscaler_failed_scale_ups_total",
        ),
    ] {
        let rule = all
            .iter()
            .find(|x| x["alert"] == alert)
            .unwrap_or_else(|| panic!("no alert {alert}"));
        assert_eq!(rule["labels"]["severity"], severity, "{alert}");
        assert_eq!(rule["for"].as_str(), hold, "{alert}");
        assert!(rule["expr"].as_str().unwrap().contains(reads), "{alert}");
    }
}

/// Target labels Prometheus (via prometheus-operator) attaches to scraped series.
const TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "pod",
    "namespace",
    "service",
    "endpoint",
    "container",
];

fn check_names(origin: &str, expr: &str, list: &MetricList, records: &BTreeSet<String>) -> usize {
    let found = promql_metrics(expr);
    for (n, labels) in &found {
        if let Some((kind_, declared)) = list.webhook_metric(n) {
            for l in labels {
                let ok = declared.contains(l)
                    || TARGET_LABELS.contains(&l.as_str())
                    || (l == "le" && kind_ == "histogram");
                assert!(ok, "{origin}: {n} has no label {l:?} (metrics.txt)");
            }
        } else {
            assert!(
                list.external.contains(n) || records.contains(n),
                "{origin}: metric {n} is neither exported by the webhook, nor a known cAdvisor/kube-state-metrics name, nor a recording rule (deploy/monitoring/metrics.txt)"
            );
        }
    }
    found.len()
}

struct Dashboard {
    file: String,
    json: Value,
    /// (panel title or variable, PromQL)
    exprs: Vec<(String, String)>,
}

fn dashboards() -> Vec<Dashboard> {
    let mut out = Vec::new();
    for e in fs::read_dir(deploy().join("monitoring/dashboards")).unwrap() {
        let path = e.unwrap().path();
        let json: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let exprs = dashboard_queries(&json);
        out.push(Dashboard {
            file: path.file_name().unwrap().to_string_lossy().into_owned(),
            json,
            exprs,
        });
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

#[test]
fn every_metric_in_rules_and_dashboards_is_known() {
    let list = metric_list();
    let r = rules();
    let mut used = BTreeSet::new();
    for (id, expr) in &r.exprs {
        assert!(
            check_names(&format!("rule {id}"), expr, &list, &r.records) > 0,
            "{id}: no metric found"
        );
        used.extend(promql_metrics(expr).into_iter().map(|(n, _)| n));
    }
    let boards = dashboards();
    assert_eq!(boards.len(), 4);
    for d in &boards {
        for (title, expr) in &d.exprs {
            assert!(
                check_names(&format!("{} / {title}", d.file), expr, &list, &r.records) > 0,
                "{title}: no metric"
            );
            used.extend(promql_metrics(expr).into_iter().map(|(n, _)| n));
        }
    }
    // Every recording rule is used by something (a dashboard or another rule).
    for rec in &r.records {
        assert!(used.contains(rec), "recording rule {rec} is never used");
    }
    // The recommendation lines and webhook health are on the dashboards.
    let all_dash: String = boards
        .iter()
        .flat_map(|d| d.exprs.iter().map(|(_, e)| e.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    for must in [
        "rightsizer_recommendation_bytes",
        "kube_pod_container_resource_requests",
        "kube_pod_container_resource_limits",
        "container_memory_working_set_bytes",
        "rightsizer_admission_duration_seconds_bucket",
        "rightsizer_admission_reviews_total",
        "rightsizer_analyzer_last_success_timestamp_seconds",
        "rightsizer:workload_memory_efficiency:ratio",
        "rightsizer:memory_freed_by_sizing_bytes:sum",
        // capacity planning and scaling operations
        "rightsizer:workload_container_memory_recommended_request_bytes:sum",
        "kube_node_status_allocatable",
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_pod_status_unschedulable",
        "rightsizer_updater_evictions_total",
        "rightsizer_updater_resizes_total",
        "rightsizer_watch_errors_total",
    ] {
        assert!(all_dash.contains(must), "no dashboard shows {must}");
    }
}

#[test]
fn dashboards_are_well_formed_and_their_queries_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rules = Vec::new();
    let mut uids = BTreeSet::new();
    for d in dashboards() {
        assert!(uids.insert(d.json["uid"].as_str().unwrap().to_string()));
        let vars: BTreeSet<String> = d.json["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        let mut ids = BTreeSet::new();
        for p in d.json["panels"].as_array().unwrap() {
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "{}: duplicate panel id",
                d.file
            );
            let g = &p["gridPos"];
            assert!(
                g["x"].as_i64().unwrap() + g["w"].as_i64().unwrap() <= 24,
                "{}: panel wider than the grid",
                d.file
            );
            if p["type"] != "row" {
                assert!(
                    !p["targets"].as_array().unwrap().is_empty(),
                    "{}: {} has no query",
                    d.file,
                    p["title"]
                );
            }
        }
        for (i, (title, expr)) in d.exprs.iter().enumerate() {
            // Grafana variables must be defined; then substitute them so promtool can parse.
            let mut promql = expr.replace("$__rate_interval", "5m");
            for word in promql
                .clone()
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            {
                if let Some(var) = word.strip_prefix('$') {
                    assert!(
                        vars.contains(var),
                        "{} / {title}: undefined variable ${var}",
                        d.file
                    );
                }
            }
            for v in &vars {
                promql = promql.replace(&format!("${v}"), "x");
            }
            rules.push(serde_json::json!({"record": format!("dashboard:q{}_{i}", rules.len()), "expr": promql}));
        }
        // The ConfigMap generator ships this file unchanged, labelled for Grafana's sidecar.
        let docs = kustomize(&deploy().join("monitoring"));
        let cm: ConfigMap = typed(find(&docs, "ConfigMap", "rightsizer-dashboards"));
        assert_eq!(cm.metadata.labels.unwrap()["grafana_dashboard"], "1");
        let shipped: Value = serde_json::from_str(&cm.data.unwrap()[&d.file]).unwrap();
        assert_eq!(shipped, d.json);
    }
    let file = serde_json::json!({"groups": [{"name": "dashboards", "rules": rules}]});
    fs::write(
        tmp.path().join("dashboards.yaml"),
        serde_norway::to_string(&file).unwrap(),
    )
    .unwrap();
    promtool(&["check", "rules", "dashboards.yaml"], tmp.path());
}

#[test]
fn the_service_monitor_scrapes_the_webhook_service() {
    let base = kustomize(&deploy().join("base"));
    let mon = kustomize(&deploy().join("monitoring"));
    let svc: Service = typed(find(&base, "Service", certs::DEFAULT_SERVICE));
    let sm = find(&mon, "ServiceMonitor", "rightsizer");
    let sel: LabelSelector = typed(&sm["spec"]["selector"]);
    assert!(selects(&sel, svc.metadata.labels.as_ref().unwrap()));
    let svc_ns = svc.metadata.namespace.clone().unwrap();
    assert!(sm["spec"]["namespaceSelector"]["matchNames"]
        .as_array()
        .unwrap()
        .contains(&Value::from(svc_ns)));
    let ports: BTreeSet<String> = svc
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    let ep = &sm["spec"]["endpoints"][0];
    assert!(ports.contains(ep["port"].as_str().unwrap()));
    assert_eq!(ep["path"], "/metrics");
    // The recommendation metric's own `namespace` label must survive the scrape.
    assert_eq!(ep["honorLabels"], true);
}

/// The NetworkPolicy (opt-in, as the CIDR example applies it) isolates exactly the
/// webhook's pods and admits the apiserver's block to the HTTPS port and the monitoring
/// namespace to the admin port, by the container's named ports, and nothing else.
#[test]
fn the_network_policy_admits_the_apiserver_and_monitoring_only() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let docs = kustomize(&deploy().join("examples/network-policy-cidr"));
    let np: NetworkPolicy = typed(find(&docs, "NetworkPolicy", "rightsizer"));
    let dep: Deployment = typed(find(&docs, "Deployment", "rightsizer"));
    let pod_labels = dep
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap();
    let spec = np.spec.unwrap();
    assert!(
        selects(spec.pod_selector.as_ref().unwrap(), &pod_labels),
        "does not select the webhook pods"
    );
    assert_eq!(
        np.metadata.namespace.as_deref(),
        Some(certs::DEFAULT_NAMESPACE)
    );
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));

    let ports: BTreeMap<String, i32> = dep.spec.unwrap().template.spec.unwrap().containers[0]
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|p| Some((p.name?, p.container_port)))
        .collect();
    let ingress = spec.ingress.unwrap();
    assert_eq!(ingress.len(), 3);
    let port_of = |i: usize| {
        let p = ingress[i].ports.as_ref().unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].protocol.as_deref(), Some("TCP"));
        match p[0].port.as_ref().unwrap() {
            IntOrString::String(name) => *ports
                .get(name)
                .unwrap_or_else(|| panic!("no container port named {name}")),
            IntOrString::Int(n) => *n,
        }
    };
    // Rule 0: the apiserver (an address block: it is not a pod) to the HTTPS port.
    assert_eq!(port_of(0), 8443);
    let from = ingress[0].from.as_ref().unwrap();
    assert_eq!(from.len(), 1);
    assert!(from[0].namespace_selector.is_none());
    assert_eq!(
        from[0].ip_block.as_ref().map(|b| b.cidr.as_str()),
        Some("192.168.10.0/24"),
        "the example's control-plane CIDR, never everything"
    );
    // Rule 1: the monitoring namespace to the admin port, and no one else.
    assert_eq!(port_of(1), 9090);
    let from = ingress[1].from.as_ref().unwrap();
    assert_eq!(from.len(), 1);
    assert!(from[0].ip_block.is_none());
    let ns = from[0].namespace_selector.as_ref().unwrap();
    assert!(selects(ns, &ns_labels("monitoring", &[])));
    assert!(!selects(ns, &ns_labels("shop", &[])));
    assert!(!selects(ns, &ns_labels(certs::DEFAULT_NAMESPACE, &[])));
    // Rule 2: the certificate Job's Pods (their own namespace) to the HTTPS port.
    assert_eq!(port_of(2), 8443);
    let from = ingress[2].from.as_ref().unwrap();
    assert_eq!(from.len(), 1);
    assert!(from[0].namespace_selector.is_none() && from[0].ip_block.is_none());
    let job: k8s_openapi::api::batch::v1::Job = typed(find(&docs, "Job", "rightsizer-certs"));
    let job_labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert!(selects(from[0].pod_selector.as_ref().unwrap(), &job_labels));
    assert!(!selects(
        from[0].pod_selector.as_ref().unwrap(),
        &pod_labels
    ));
}

/// Every query the analyzer sends, for the whole cluster and scoped (cluster matcher, one
/// namespace, a namespace split), plus the load model's default memory query; each with
/// where it came from.
fn analyzer_queries() -> Vec<(String, String)> {
    use rightsizer_core::analysis::queries::Builder;
    use rightsizer_core::analysis::queries::QueryConfig;

    let plain = QueryConfig::default();
    let scoped = QueryConfig {
        cluster_matcher: Some(r#"cluster="prod-eu""#.into()),
        namespace: Some("shop".into()),
        ..QueryConfig::default()
    };
    let split = ["shop".to_string(), "team.a".to_string()];
    let mut exprs: Vec<(String, String)> = Vec::new();
    for (name, cfg, namespaces) in [
        ("all", &plain, None),
        ("scoped", &scoped, None),
        ("split", &plain, Some(&split[..])),
    ] {
        let b = Builder::new(cfg, namespaces);
        let kinds = b.owners().into_iter().chain(b.scoped()).chain(b.global());
        for (kind, q) in kinds {
            exprs.push((format!("{name} {kind:?}"), q));
        }
        for (kind, q) in b.memory_intervals(300) {
            exprs.push((format!("{name} interval {kind:?}"), q));
        }
        exprs.push((format!("{name} namespace sizes"), b.namespace_sizes()));
    }
    let web = rightsizer_core::workload::WorkloadKey {
        namespace: "shop".into(),
        kind: rightsizer_core::workload::kind::WorkloadKind::Deployment,
        name: "checkout.v2".into(),
    };
    exprs.push((
        "load model default memory".into(),
        rightsizer::loadfit::fitter::default_memory_query(&web, "app"),
    ));
    exprs
}

/// Every query the analyzer sends parses (promtool, as recording rules).
#[test]
fn promtool_parses_every_query_the_analyzer_sends() {
    let exprs = analyzer_queries();
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, q))| serde_json::json!({"record": format!("analyzer:q{i}"), "expr": q}))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let file = serde_json::json!({"groups": [{"name": "analyzer", "rules": rules}]});
    fs::write(
        tmp.path().join("analyzer.yaml"),
        serde_json::to_string(&file).unwrap(),
    )
    .unwrap();
    promtool(&["check", "rules", "analyzer.yaml"], tmp.path());
}

/// The analyzer queries only series that metrics.txt documents, so that list is also what
/// an operator's Prometheus must scrape.
#[test]
fn every_series_the_analyzer_queries_is_listed_in_metrics_txt() {
    let list = metric_list();
    for (origin, q) in &analyzer_queries() {
        check_names(
            &format!("analyzer query {origin}"),
            q,
            &list,
            &BTreeSet::new(),
        );
    }
}
