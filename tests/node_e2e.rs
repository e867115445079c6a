//! rightsizer on a real node (containerd, runc, kubelet, kube-proxy, kube-scheduler
//! v1.20.2, tests/cluster/node.sh) next to the real control plane:
//!
//! 1. installed exactly as the README's Deploy section says (`kubectl apply -k
//!    deploy/overlays/self-managed`, only the image reference and the Prometheus URL
//!    changed): the webhook runs as Pods from the image (tests/image/build.sh, built from
//!    the binary under test) under its own ServiceAccount and RBAC, manages its own serving
//!    certificate, and the apiserver calls it through its Service;
//! 2. the closed loop on real containers, with a real Prometheus scraping the kubelet's
//!    cAdvisor endpoint: recommendation from the real working set, enforcement through a
//!    rollout restart, an OOM kill seen by the analyzer, and the webhook Pod deleted during
//!    a rollout.
//!
//! One node per machine (cgroups, the bridge and /var/log/pods are machine-wide), so the
//! whole story is one test, in stages that print their timings. Without root, the
//! packages or the binaries, the test says why and skips, except under `CI=true`, where
//! that is a failure.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/node.rs"]
mod node;

use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{in_ci, repo_root, ControlPlane};
use node::{build_image, http_get, Node, ScrapingProm};
use rightsizer::quantity::{Resource, MI};
use rightsizer::recommendation::{ContainerKey, Snapshot, WorkloadKey, WorkloadKind};
use rightsizer::rules::{Observed, Rules};
use serde_json::Value;

/// The image reference the test installs (the only change to deploy/ besides the URL).
const IMAGE: &str = "rightsizer:e2e";
const NS: &str = "loop";

/// The test's policy: enforce in `loop`, evidence in minutes instead of hours, one step
/// all the way (so one commit reaches the recommendation), no cooldown.
const POLICY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: rightsizer-node-e2e
  namespace: rightsizer-system
  labels:
    rightsizer.io/policy: "true"
data:
  policy.yaml: |
    precedence: 20
    selector:
      namespaces: ["loop"]
    mode: enforce
    target: pods
    rules:
      evidence: {minSamples: 4, minHistorySeconds: 60}
      safeguards: {maxStepRatio: 0.9, cooldownSeconds: 0}
"#;

/// 40 MiB held steadily by busybox awk, with a 20 MiB spike for 10 s of every 30 s
/// (MALLOC_MMAP_THRESHOLD_ keeps glibc returning the spike at once).
fn holder(name: &str, memory: &str, base_bytes: u64, spike_bytes: u64) -> String {
    let prog = format!(
        "BEGIN {{ base = sprintf(\\\"%{base_bytes}s\\\", \\\"\\\"); for (;;) {{ spike = sprintf(\\\"%{spike_bytes}s\\\", \\\"\\\"); system(\\\"sleep 10\\\"); spike = \\\"\\\"; system(\\\"sleep 20\\\") }} }}"
    );
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: app
          image: rightsizer.test/busybox:1
          imagePullPolicy: Never
          env: [{{name: MALLOC_MMAP_THRESHOLD_, value: "131072"}}]
          command: ["/bin/awk", "{prog}"]
          resources:
            requests: {{memory: {memory}}}
            limits: {{memory: {memory}}}
"#
    )
}

struct Env {
    plane: ControlPlane,
    node: Node,
    prom: ScrapingProm,
    _dir: tempfile::TempDir,
}

/// Stage timings, printed at the end (and as they go).
struct Stages(Vec<(String, Duration)>, Instant);

impl Stages {
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        eprintln!("--- {name}");
        let t = Instant::now();
        let out = f();
        eprintln!("--- {name}: {:.1} s", t.elapsed().as_secs_f64());
        self.0.push((name.to_string(), t.elapsed()));
        out
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        eprintln!("node e2e stages:");
        for (n, d) in &self.0 {
            eprintln!("  {:>6.1} s  {n}", d.as_secs_f64());
        }
        eprintln!("  {:>6.1} s  total", self.1.elapsed().as_secs_f64());
    }
}

fn start_env(stages: &mut Stages) -> Option<Env> {
    if let Some(why) = node::missing_prerequisite() {
        if in_ci() {
            panic!("CI=true and the node cannot run: {why}");
        }
        eprintln!("SKIPPED node_e2e: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = stages.run("image from the binary under test", || {
        build_image(IMAGE, dir.path()).expect("image builds")
    });
    let plane = stages.run("control plane", || {
        ControlPlane::start_with_env(&[("RIGHTSIZER_CLUSTER_NODE", "1")]).expect("control plane")
    });
    let node = stages.run(
        "node Ready (containerd, kubelet, kube-proxy, scheduler)",
        || Node::start(&plane, &[image]).expect("node starts"),
    );
    let prom = stages.run("Prometheus scraping cAdvisor", || {
        ScrapingProm::start(&node, "5s").expect("prometheus starts")
    });
    Some(Env {
        plane,
        node,
        prom,
        _dir: dir,
    })
}

#[test]
fn rightsizer_on_a_real_node() {
    let mut stages = Stages(Vec::new(), Instant::now());
    let Some(mut env) = start_env(&mut stages) else {
        return;
    };
    stages.run("install as the README says", || {
        install_as_the_readme_says(&env)
    });
    stages.run(
        "the apiserver calls the webhook Pods through the Service",
        || the_apiserver_calls_the_webhook_through_its_service(&env),
    );
    let teardown = env.node.stop();
    eprintln!("node teardown: {:.1} s", teardown.as_secs_f64());
    eprintln!("{}", env.node.log_text());
}

// ----------------------------------------------------------------------- install

/// deploy/ copied, with the two changes the README asks of a user: the image (what
/// `kustomize edit set image` writes) and RIGHTSIZER_PROMETHEUS_URL.
fn deploy_copy(dest: &Path, prometheus_url: &str) {
    let src = repo_root().join("deploy");
    copy_dir(&src, &dest.join("deploy"));
    let base = dest.join("deploy/base");
    let (name, tag) = IMAGE.split_once(':').unwrap();
    let k = base.join("kustomization.yaml");
    let mut text = std::fs::read_to_string(&k).unwrap();
    text.push_str(&format!(
        "images:\n- name: rightsizer\n  newName: {name}\n  newTag: {tag}\n"
    ));
    std::fs::write(&k, text).unwrap();
    let d = base.join("deployment.yaml");
    let text = std::fs::read_to_string(&d).unwrap();
    let placeholder = "http://prometheus-operated.monitoring.svc:9090";
    assert!(
        text.contains(placeholder),
        "the README's Prometheus placeholder moved"
    );
    std::fs::write(&d, text.replace(placeholder, prometheus_url)).unwrap();
    // Not a user step: the test cluster is v1.20, which serves PodDisruptionBudget only
    // as policy/v1beta1 (policy/v1 is 1.21+, what the manifests are written for).
    let p = base.join("pdb.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("policy/v1\n", "policy/v1beta1\n")).unwrap();
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

fn kubectl_json(env: &Env, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&env.plane.kubectl_ok(&a, None)).unwrap()
}

/// Poll `f` every second until it returns Some, or panic after `secs` with `what`.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn install_as_the_readme_says(env: &Env) {
    let tmp = tempfile::tempdir().unwrap();
    deploy_copy(tmp.path(), &env.prom.url);
    let overlay = tmp.path().join("deploy/overlays/self-managed");
    // README, Deploy: "without cert-manager" is this one command; then the policy.
    env.plane
        .kubectl_ok(&["apply", "-k", overlay.to_str().unwrap()], None);
    let policy = repo_root().join("policies/default-observe.yaml");
    env.plane
        .kubectl_ok(&["apply", "-f", policy.to_str().unwrap()], None);

    let sys = "rightsizer-system";
    let dep = wait_for(
        120,
        "the rightsizer Deployment has 2 available replicas",
        || {
            let d = kubectl_json(env, &["-n", sys, "get", "deployment", "rightsizer"]);
            (d["status"]["availableReplicas"].as_u64() == Some(2)).then_some(d)
        },
    );
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        IMAGE
    );
    // Under its own ServiceAccount, as the non-root user of the image.
    let pods = kubectl_json(
        env,
        &[
            "-n",
            sys,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=rightsizer",
        ],
    );
    for p in pods["items"].as_array().unwrap() {
        assert_eq!(p["spec"]["serviceAccountName"], "rightsizer");
        assert_eq!(p["spec"]["nodeName"], env.node.name.as_str());
        assert_eq!(p["status"]["phase"], "Running");
    }
    // The webhook made its serving certificate and made the apiserver trust it.
    let secret = kubectl_json(env, &["-n", sys, "get", "secret", "rightsizer-tls"]);
    let ca = secret["data"]["ca.crt"]
        .as_str()
        .expect("ca.crt in the Secret");
    let mwc = kubectl_json(env, &["get", "mutatingwebhookconfiguration", "rightsizer"]);
    assert_eq!(mwc["webhooks"][0]["clientConfig"]["caBundle"], ca);
    assert!(
        secret["data"]["tls.crt"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "tls.crt in the Secret"
    );
}

/// The admin port through the Service's ClusterIP (kube-proxy's rules on this host).
fn webhook_admin(env: &Env, path: &str) -> Result<String, String> {
    let svc = kubectl_json(
        env,
        &["-n", "rightsizer-system", "get", "service", "rightsizer"],
    );
    let ip = svc["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    http_get(&format!("{ip}:9090"), path)
}

/// Admission reviews counted by all webhook Pods (each admin port, by Pod IP).
fn reviews_counted(env: &Env) -> f64 {
    let pods = kubectl_json(
        env,
        &[
            "-n",
            "rightsizer-system",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=rightsizer",
        ],
    );
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str())
        .filter_map(|ip| http_get(&format!("{ip}:9090"), "/metrics").ok())
        .map(|t| cluster::counter_sum(&t, "rightsizer_admission_reviews_total", &[]))
        .sum()
}

fn the_apiserver_calls_the_webhook_through_its_service(env: &Env) {
    env.plane.kubectl_ok(&["create", "namespace", "shop"], None);
    env.plane.kubectl_ok(
        &["label", "namespace", "shop", "rightsizer.io/enabled=true"],
        None,
    );
    let before = reviews_counted(env);
    // A Pod without resources gets the default policy's template values: only the webhook
    // can have put them there.
    let pod = r#"apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: shop}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: rightsizer.test/busybox:1
      imagePullPolicy: Never
      command: ["sleep", "3600"]
"#;
    // The caBundle was set a moment ago; the apiserver may still hold the old one.
    let stored = wait_for(30, "the apiserver sized a Pod through the webhook", || {
        env.plane.kubectl(
            &[
                "-n",
                "shop",
                "delete",
                "pod",
                "plain",
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
        env.plane.kubectl_ok(&["apply", "-f", "-"], Some(pod));
        let p = kubectl_json(env, &["-n", "shop", "get", "pod", "plain"]);
        p["metadata"]["annotations"]["rightsizer.io/sized"]
            .is_string()
            .then_some(p)
    });
    let res = &stored["spec"]["containers"][0]["resources"];
    assert_eq!(res["requests"]["memory"], "128Mi", "{res}");
    assert_eq!(res["limits"]["memory"], "256Mi", "{res}");
    // And it ran on the node.
    wait_for(60, "the sized Pod runs", || {
        let p = kubectl_json(env, &["-n", "shop", "get", "pod", "plain"]);
        (p["status"]["phase"] == "Running").then_some(())
    });
    // Counted by one of the replicas (each Pod's admin port, by Pod IP).
    assert!(reviews_counted(env) > before, "no review counted");
}

#[allow(dead_code)]
fn unused(
    _: Resource,
    _: Snapshot,
    _: ContainerKey,
    _: WorkloadKey,
    _: WorkloadKind,
    _: Observed,
    _: Rules,
) {
    let _ = (MI, POLICY, holder("x", "1Mi", 1, 1), NS);
}
