//! `rightsizer mutate` tells the truth about every change and every object it leaves
//! alone, and `rightsizer explain` names the policy behind each section and value: the
//! shipped policies on the `shop` example, run as a user runs them.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn run(args: &[&str]) -> (String, String) {
    let out = Command::new(crate::exe::rightsizer())
        .args(args)
        .env_remove("RIGHTSIZER_ENFORCEMENT")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("binary runs");
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The shipped policies: default-observe, enforce-shop and knative compose.
fn shipped() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .to_string_lossy()
        .into_owned()
}

const SHOP: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {rightsizer.io/enabled: "true"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: serverless, labels: {rightsizer.io/enabled: "true"}}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: gpu-workload}
value: 1000
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: trainer, namespace: shop}
spec:
  selector: {matchLabels: {app: trainer}}
  template:
    metadata: {labels: {app: trainer}}
    spec:
      containers:
      - {name: app, image: trainer:1, resources: {limits: {nvidia.com/gpu: "1"}}}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello, namespace: serverless}
spec:
  template:
    spec:
      containerConcurrency: 0
      timeoutSeconds: 30
      containers:
      - image: hello:1
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// Every change is a row: resources, the GPU placement, the priority class and the
/// Knative settings (the user's `containerConcurrency: 0` is kept, so it has none).
#[test]
fn the_table_shows_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "shop.yaml", SHOP);
    let (stdout, stderr) = run(&[
        "mutate",
        "-f",
        &input,
        "--policies",
        &shipped(),
        "-o",
        "table",
    ]);
    let rows: Vec<&str> = stdout.lines().map(str::trim_end).collect();
    let want = [
        "shop/Deployment/trainer          -               priorityClassName                                      - -> gpu-workload",
        "shop/Deployment/trainer          -               required node affinity                                 - -> nvidia.com/gpu.present In true",
        "shop/Deployment/trainer          -               tolerations                                            - -> nvidia.com/gpu Exists NoSchedule",
        "serverless/KnativeService/hello  -               priorityClassName                                      - -> normal-priority",
        "serverless/KnativeService/hello  -               autoscaling.knative.dev/target                         - -> 50",
        "serverless/KnativeService/hello  user-container  cpu request                                            - -> 50m",
    ];
    for w in want {
        assert!(
            rows.iter().any(|r| r.starts_with(w)),
            "no row {w:?} in\n{stdout}\n{stderr}"
        );
    }
    assert!(!stdout.contains("containerConcurrency"), "{stdout}");
}

/// The Pod a Knative Service's preview shows is a Pod: revision-only fields
/// (`containerConcurrency`, `timeoutSeconds`) are not in its spec.
#[test]
fn the_knative_pod_preview_is_a_valid_pod() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "shop.yaml", SHOP);
    let (stdout, _) = run(&[
        "mutate",
        "-f",
        &input,
        "--policies",
        &shipped(),
        "--pods",
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&stdout).unwrap();
    let pods: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "Pod")
        .collect();
    assert_eq!(pods.len(), 2);
    for pod in pods {
        let spec = &pod["spec"];
        // Decoding as a PodSpec drops what a PodSpec lacks: nothing may be dropped.
        let typed: k8s_openapi::api::core::v1::PodSpec =
            serde_json::from_value(spec.clone()).unwrap();
        assert_eq!(&serde_json::to_value(typed).unwrap(), spec, "{pod}");
    }
}

/// Objects left alone say why: a system namespace, and a namespace whose Namespace
/// object lacks the opt-in label; where the input has no Namespace, a note says the label
/// was not checked.
#[test]
fn skipped_objects_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.yaml",
        r#"apiVersion: v1
kind: Namespace
metadata: {name: quiet}
---
apiVersion: v1
kind: Pod
metadata: {name: dns, namespace: kube-system}
spec: {containers: [{name: c, image: c:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: quiet}
spec: {containers: [{name: c, image: c:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: loud}
spec: {containers: [{name: c, image: c:1}]}
"#,
    );
    let (stdout, stderr) = run(&["mutate", "-f", &input, "--policies", &shipped()]);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "note: namespace loud: its opt-in label rightsizer.io/enabled was not checked (the input has no Namespace object for it); the webhook sizes only opted-in namespaces",
            "note: Pod kube-system/dns: left unchanged: namespace kube-system is never touched (a system namespace or the webhook's own)",
            "note: Pod quiet/a: left unchanged: namespace quiet is not opted in (no label rightsizer.io/enabled=\"true\": the webhook never sees it)",
            "warning: Pod loud/b: priority class \"normal-priority\" set from the policy's priority.classes (offline): the cluster must have it, or its Pods are refused",
        ]
    );
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert!(docs[1].pointer("/metadata/annotations").is_none());
    assert!(docs[2].pointer("/metadata/annotations").is_none());
    assert!(
        docs[3].pointer("/metadata/annotations").is_some(),
        "b is sized"
    );
}

/// `explain` reads the input as `mutate` does (one set of flags, one evaluation): the
/// objects `mutate` leaves alone, the webhook's own namespace among them, are left alone
/// with the same reason.
#[test]
fn explain_leaves_alone_what_mutate_leaves_alone() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: dns, namespace: kube-system}
spec: {containers: [{name: c, image: c:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: own, namespace: rightsizer-system}
spec: {containers: [{name: c, image: c:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: loud}
spec: {containers: [{name: c, image: c:1}]}
"#,
    );
    let (stdout, stderr) = run(&[
        "explain",
        "-f",
        &input,
        "--policies",
        &shipped(),
        "-o",
        "json",
    ]);
    let all: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let skipped: Vec<(&str, Option<&str>)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["object"].as_str().unwrap(), e["skipped"].as_str()))
        .collect();
    let never = |ns: &str| {
        format!("namespace {ns} is never touched (a system namespace or the webhook's own)")
    };
    assert_eq!(
        skipped,
        [
            ("Pod kube-system/dns", Some(never("kube-system").as_str())),
            (
                "Pod rightsizer-system/own",
                Some(never("rightsizer-system").as_str())
            ),
            ("Pod loud/b", None),
        ]
    );
    let (_, mutate_stderr) = run(&["mutate", "-f", &input, "--policies", &shipped()]);
    assert!(
        mutate_stderr.contains(&format!(
            "Pod rightsizer-system/own: left unchanged: {}",
            never("rightsizer-system")
        )),
        "{mutate_stderr}"
    );
    assert!(
        stderr.contains("note: namespace loud: its opt-in label"),
        "{stderr}"
    );
}

/// Every refused policy and every refused field at once, each path named once.
#[test]
fn all_policy_errors_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("pol");
    std::fs::create_dir(&pol).unwrap();
    let cm = |name: &str, body: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{rightsizer.io/policy: \"true\"}}}}\ndata:\n  policy.yaml: |\n{body}")
    };
    write(
        &pol,
        "a.yaml",
        &cm("a", "    recommender: nope\n    gpu: {resources: []}\n"),
    );
    write(
        &pol,
        "b.yaml",
        &cm("b", "    defaults: {memory: {request: lots}}\n"),
    );
    let input = write(dir.path(), "shop.yaml", SHOP);
    let (_, stderr) = run(&["mutate", "-f", &input, "--policies", pol.to_str().unwrap()]);
    let head: Vec<&str> = stderr.lines().take(3).collect();
    assert_eq!(head[0], "Error: 2 policies refused:");
    assert!(
        head[1].contains("a.yaml (ConfigMap a): recommender: unknown recommender \"nope\"")
            && head[1].contains("; gpu.resources: must name at least one resource"),
        "{stderr}"
    );
    assert!(
        head[2].ends_with("b.yaml (ConfigMap b): defaults.memory.request: invalid quantity \"lots\" at line 1 column 20"),
        "{stderr}"
    );
}

/// `explain` names, per section and per value, the policy that decided it: enforce-shop
/// writes no `gpu:`, so the GPU placement is default-observe's; the Knative policy
/// writes no `defaults:` or `priority:`, so its Pods' CPU default and class are too.
#[test]
fn explain_names_the_policy_of_each_section_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "shop.yaml", SHOP);
    let (stdout, stderr) = run(&[
        "explain",
        "-f",
        &input,
        "--policies",
        &shipped(),
        "-o",
        "json",
    ]);
    let all: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let of = |object: &str| -> &Value {
        all.as_array()
            .unwrap()
            .iter()
            .find(|e| e["object"] == object)
            .unwrap_or_else(|| panic!("{object} in {stdout}"))
    };
    let trainer = of("Deployment shop/trainer");
    assert_eq!(trainer["policy"], "rightsizer-enforce-shop");
    for (section, by) in [
        ("mode", "rightsizer-enforce-shop"),
        ("defaults", "rightsizer-enforce-shop"),
        ("gpu", "rightsizer-default"),
        ("placement", "rightsizer-default"),
        ("knative", ""),
    ] {
        let got = trainer["sections"][section].as_str().unwrap_or_default();
        assert_eq!(got, by, "trainer: {section}");
    }
    let value = |e: &Value, field: &str| -> (String, String) {
        let v = e["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["field"] == field)
            .unwrap_or_else(|| panic!("{field} in {e}"));
        (
            v["value"].as_str().unwrap().to_string(),
            v["decidedBy"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        value(trainer, "cpu request"),
        ("100m".into(), "rightsizer-enforce-shop (defaults)".into())
    );
    assert!(value(trainer, "tolerations")
        .1
        .starts_with("rightsizer-default (gpu)"));
    let hello = of("Service serverless/hello");
    assert_eq!(hello["policy"], "rightsizer-knative");
    assert_eq!(hello["sections"]["defaults"], "rightsizer-default");
    assert_eq!(
        value(hello, "cpu request"),
        ("50m".into(), "rightsizer-default (defaults)".into())
    );
    assert_eq!(value(hello, "priorityClassName").0, "normal-priority");
    assert!(value(hello, "priorityClassName")
        .1
        .starts_with("rightsizer-default (priority)"));
    assert_eq!(
        value(hello, "autoscaling.knative.dev/target"),
        ("50".into(), "rightsizer-knative (knative)".into())
    );
    // The table carries the same facts.
    let (table, _) = run(&["explain", "-f", &input, "--policies", &shipped()]);
    assert!(
        table.contains("Deployment shop/trainer  (policy: rightsizer-enforce-shop)"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["gpu", "rightsizer-default"]),
        "{table}"
    );
}
