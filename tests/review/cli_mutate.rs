//! `rightsizer mutate` as a user runs it: the binary, real files, stdout and stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(name)
}

fn mutate(args: &[&str]) -> std::process::Output {
    Command::new(crate::exe::rightsizer())
        .arg("mutate")
        .args(args)
        .env_remove("RIGHTSIZER_ENFORCEMENT")
        .env_remove("RUST_LOG")
        .output()
        .expect("binary runs")
}

#[test]
fn yaml_output_matches_the_golden_case() {
    let dir = case("03-pod-enforce-steps-towards-recommendation");
    let out = mutate(&[
        "-f",
        dir.join("input.yaml").to_str().unwrap(),
        "--policies",
        dir.to_str().unwrap(),
        "--recommendations",
        dir.join("recommendations.json").to_str().unwrap(),
        "--enforcement",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_norway::from_slice(&out.stdout).unwrap();
    let want: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("expected.yaml")).unwrap())
            .unwrap();
    assert_eq!(got, want);
}

#[test]
fn patch_output_and_warnings() {
    let dir = case("18-limitrange-container-bounds");
    let out = mutate(&[
        "-f",
        dir.join("input.yaml").to_str().unwrap(),
        "--policies",
        dir.to_str().unwrap(),
        "--recommendations",
        dir.join("recommendations.json").to_str().unwrap(),
        "--enforcement",
        "-o",
        "patch",
    ]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one line per handled object");
    assert_eq!(lines[0]["object"], "Pod tight/big");
    assert!(lines[0]["patch"].as_array().unwrap().len() >= 2);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("LimitRange max"), "{stderr}");
}

#[test]
fn bad_input_fails_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, "a: [").unwrap();
    let out = mutate(&["-f", f.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("document 1"));
    let p = dir.path().join("pol");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(
        p.join("p.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: p, labels: {rightsizer.io/policy: \"true\"}}\ndata:\n  policy.yaml: \"mode: sideways\"\n",
    )
    .unwrap();
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: []}\n",
    )
    .unwrap();
    let out = mutate(&["-f", f.to_str().unwrap(), "--policies", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mode"), "{err}");
}

// ------------------------------------------- a user's own manifests: what their Pods get

const APP: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: web:1
        resources: {requests: {memory: 1Gi, cpu: 500m}, limits: {memory: 2Gi}}
      - name: exporter
        image: exporter:1
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: shop}
data: {greeting: hello}
"#;

/// What the analyzer would serve for the Deployment's `app` container.
const SNAPSHOT: &str = r#"{"recommendations": {"shop/Deployment/web/app": {"memory": {
    "observed": {"avg": 400000000, "p95": 450000000, "max": 500000000, "samples": 5000, "historySeconds": 86400},
    "recommended": {"request": 545259520, "limit": 838860800}}}}}"#;

fn policy(target: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: p, labels: {{rightsizer.io/policy: \"true\"}}}}\ndata:\n  policy.yaml: |\n    mode: enforce\n    target: {target}\n    recommender: seed\n    defaults: {{memory: {{request: 128Mi, limit: 256Mi}}, cpu: {{request: 50m}}}}\n"
    )
}

/// Runs `mutate` on APP with a `target` policy, the snapshot and `--enforcement`.
fn mutate_app(target: &str, extra: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("pol");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(pol.join("p.yaml"), policy(target)).unwrap();
    std::fs::write(dir.path().join("app.yaml"), APP).unwrap();
    std::fs::write(dir.path().join("recs.json"), SNAPSHOT).unwrap();
    let mut args = vec![
        "-f".to_string(),
        dir.path().join("app.yaml").to_string_lossy().into_owned(),
        "--policies".to_string(),
        pol.to_string_lossy().into_owned(),
        "--recommendations".to_string(),
        dir.path().join("recs.json").to_string_lossy().into_owned(),
        "--enforcement".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = mutate(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const TABLE: &str = "\
WORKLOAD             CONTAINER  RESOURCE        BEFORE -> AFTER  SOURCE
shop/Deployment/web  app        memory request  1Gi -> 720Mi     recommendation
shop/Deployment/web  app        memory limit    2Gi -> 1440Mi    recommendation
shop/Deployment/web  app        cpu request     500m -> 500m     template
shop/Deployment/web  exporter   memory request  - -> 128Mi       default
shop/Deployment/web  exporter   memory limit    - -> 256Mi       default
shop/Deployment/web  exporter   cpu request     - -> 50m         default
";

/// `-o table` shows what the Pods get whichever target the policy has: under `pods` the
/// Pod is sized at admission, under `templates` it comes from the sized template.
#[rstest::rstest]
#[case::target_pods("pods")]
#[case::target_templates("templates")]
fn the_table_shows_what_the_pods_get(#[case] target: &str) {
    let (stdout, stderr) = mutate_app(target, &["-o", "table"]);
    assert_eq!(stdout, TABLE);
    assert_eq!(stderr, NOT_CHECKED);
}

/// APP has no Namespace object: the opt-in label could not be checked, and a note says so.
const NOT_CHECKED: &str = "note: namespace shop: its opt-in label rightsizer.io/enabled was not checked (the input has no Namespace object for it); the webhook sizes only opted-in namespaces\n";

/// (target, flags, documents printed, stderr)
#[rstest::rstest]
#[case::pods_target_says_where_to_look("pods", &[], 3,
    "note: Deployment shop/web: its template is left as is (policy target: pods); its Pods are sized when created: add --pods to see them, or -o table for a summary\n")]
#[case::templates_target_needs_no_note("templates", &[], 3, "")]
#[case::pods_flag_adds_the_pod("pods", &["--pods"], 4, "")]
fn yaml_output_and_the_pods_view(
    #[case] target: &str,
    #[case] flags: &[&str],
    #[case] documents: usize,
    #[case] want_stderr: &str,
) {
    let (stdout, stderr) = mutate_app(target, flags);
    assert_eq!(stderr, format!("{NOT_CHECKED}{want_stderr}"));
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), documents, "{stdout}");
    let input: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(APP)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs[0], input[0], "the Service is unchanged");
    assert_eq!(docs.last().unwrap()["kind"], "ConfigMap");
    if target == "pods" {
        assert_eq!(docs[1], input[1], "the template is left as is");
    }
    if documents == 4 {
        assert!(stdout.contains(
            "---\n# the Pod Deployment shop/web would create, as admitted (a preview, not a manifest to apply)\n"
        ));
        let pod = &docs[2];
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        let res = |c: usize| pod["spec"]["containers"][c]["resources"].clone();
        assert_eq!(
            res(0),
            serde_json::json!({"requests": {"memory": "720Mi", "cpu": "500m"}, "limits": {"memory": "1440Mi"}})
        );
        assert_eq!(
            res(1),
            serde_json::json!({"requests": {"memory": "128Mi", "cpu": "50m"}, "limits": {"memory": "256Mi"}})
        );
    }
}

#[test]
fn patch_output_with_pods_adds_a_line_for_the_pod() {
    let (stdout, _) = mutate_app("pods", &["--pods", "-o", "patch"]);
    let objects: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["object"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(objects.len(), 2, "{stdout}");
    assert_eq!(objects[0], "Deployment shop/web");
    assert!(
        objects[1].starts_with("Pod shop/web-")
            && objects[1].ends_with(" (from Deployment shop/web)"),
        "{}",
        objects[1]
    );
}

/// CLI commands log through the one subscriber: warnings by default, more with RUST_LOG.
#[rstest::rstest]
#[case::default_is_warn(None, false)]
#[case::rust_log_info(Some("info"), true)]
#[case::rust_log_for_the_crate(Some("rightsizer=debug"), true)]
fn a_cli_commands_log_reaches_stderr(#[case] rust_log: Option<&str>, #[case] shown: bool) {
    let dir = case("03-pod-enforce-steps-towards-recommendation");
    let mut cmd = Command::new(crate::exe::rightsizer());
    cmd.args(["mutate", "-f"])
        .arg(dir.join("input.yaml"))
        .arg("--policies")
        .arg(&dir)
        .env_remove("RUST_LOG");
    if let Some(l) = rust_log {
        cmd.env("RUST_LOG", l);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.contains("input read"), shown, "{stderr}");
    if shown {
        assert!(stderr.contains("documents=1"), "{stderr}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("input read"));
}

// ------------------------------------------- the README's small-pod policy

const SMALL_PODS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: frontend, namespace: shop}
spec:
  selector: {matchLabels: {app: frontend}}
  template:
    metadata: {labels: {app: frontend}}
    spec:
      containers:
      - {name: web, image: nginx, resources: {requests: {memory: 16Mi}, limits: {memory: 32Mi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis, namespace: shop}
spec:
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      containers:
      - {name: redis, image: redis, resources: {requests: {memory: 32Mi}, limits: {memory: 48Mi}}}
"#;

const SMALL_USAGE: &str = r#"{"recommendations": {
 "shop/Deployment/frontend/web": {"memory": {"observed": {"avg": 11000000, "p95": 12582912, "max": 13000000, "samples": 5000, "historySeconds": 86400}}},
 "shop/Deployment/redis/redis": {"memory": {"observed": {"avg": 25000000, "p95": 27000000, "max": 28000000, "samples": 5000, "historySeconds": 86400}}}}}"#;

/// The policy of the README's "Small pods" section, as printed there.
fn readme_small_pod_policy() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let section = readme
        .split("### Small pods: the memory floor is a policy setting")
        .nth(1)
        .expect("README section");
    let block = section.split("```yaml\n").nth(1).unwrap();
    block.split("```").next().unwrap().to_string()
}

/// Under a catch-all enforce policy small pods are walked up towards the 64Mi floor (limits
/// keeping their declared ratio: 2 and 1.5); the README's policy keeps them where they are.
#[rstest::rstest]
#[case::default_floor(
    false,
    "\
WORKLOAD                  CONTAINER  RESOURCE        BEFORE -> AFTER  SOURCE
shop/Deployment/frontend  web        memory request  16Mi -> 32Mi     recommendation
shop/Deployment/frontend  web        memory limit    32Mi -> 64Mi     recommendation
shop/Deployment/redis     redis      memory request  32Mi -> 48Mi     recommendation
shop/Deployment/redis     redis      memory limit    48Mi -> 80Mi     recommendation
"
)]
#[case::readme_policy(
    true,
    "\
WORKLOAD                  CONTAINER  RESOURCE        BEFORE -> AFTER  SOURCE
shop/Deployment/frontend  web        memory request  16Mi -> 16Mi     template
shop/Deployment/frontend  web        memory limit    32Mi -> 32Mi     template
shop/Deployment/redis     redis      memory request  32Mi -> 32Mi     template
shop/Deployment/redis     redis      memory limit    48Mi -> 48Mi     template
"
)]
fn the_memory_floor_is_a_policy_setting(#[case] readme_policy: bool, #[case] want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("pol");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(
        pol.join("catch-all.yaml"),
        // The snapshot has observed usage only: the seed rules compute from it. The
        // README's policy writes no recommender and inherits this one.
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: all, labels: {rightsizer.io/policy: \"true\"}}\ndata:\n  policy.yaml: \"mode: enforce\\nrecommender: seed\"\n",
    )
    .unwrap();
    if readme_policy {
        std::fs::write(pol.join("small.yaml"), readme_small_pod_policy()).unwrap();
    }
    std::fs::write(dir.path().join("app.yaml"), SMALL_PODS).unwrap();
    std::fs::write(dir.path().join("recs.json"), SMALL_USAGE).unwrap();
    let path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let out = mutate(&[
        "-f",
        &path("app.yaml"),
        "--policies",
        pol.to_str().unwrap(),
        "--recommendations",
        &path("recs.json"),
        "--enforcement",
        "-o",
        "table",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}
