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
//!    a rollout;
//! 3. the updater (`deploy/overlays/updater`): Pods replaced within their budgets
//!    (node_e2e/updater.rs), and a container looping on OOM kills replaced with the floor
//!    (node_e2e/oomloop.rs).
//!
//! One node per machine (cgroups, the bridge and /var/log/pods are machine-wide), so the
//! whole story is one test, in stages that print their timings. Without root, the
//! packages or the binaries, libtest reports it ignored with the reason (tests/build.rs
//! sets `has_node`), except under `CI=true`, where that is a failure.

use crate::cluster;
use crate::node;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cluster::{repo_root, ControlPlane};
use node::{build_image, http_get, wait_for, Node, ScrapingProm, Stages};
use rightsizer_core::quantity::Resource;
use rightsizer_core::recommendation::{ContainerKey, ResourceRecommendation, Snapshot};
use rightsizer_core::rules::{Observed, Rules};
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::WorkloadKey;
use serde_json::Value;

mod oomloop;
mod updater;

/// The image reference the test installs (the only change to deploy/ besides the URL).
const IMAGE: &str = "rightsizer:e2e";
const NS: &str = "loop";

/// The test's policy: enforce in `loop` with the seed rules (the default `adaptive`
/// strategy needs hours of 5-minute intervals), evidence in minutes instead of hours (6 cAdvisor
/// samples, about 1.5 min; history is 0 because the analyzer measures it in slices of
/// 1/96 of its 24 h window, 15 min), one step all the way (so one commit reaches the
/// recommendation), no cooldown.
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
    recommender: seed
    rules:
      evidence: {minSamples: 6, minHistorySeconds: 0}
      safeguards: {maxStepRatio: 4, cooldownSeconds: 0}
"#;

/// 40 MiB held steadily by busybox awk, with a 20 MiB spike for 20 s of every 45 s
/// (MALLOC_MMAP_THRESHOLD_ keeps glibc returning the spike at once). The spike outlasts
/// the kubelet cAdvisor's gap between two samples (10 s, growing while nothing changes):
/// a 10 s spike could fall between samples, and once did in CI.
fn holder(name: &str, memory: &str, base_bytes: u64, spike_bytes: u64) -> String {
    let prog = format!(
        "BEGIN {{ base = sprintf(\\\"%{base_bytes}s\\\", \\\"\\\"); for (;;) {{ spike = sprintf(\\\"%{spike_bytes}s\\\", \\\"\\\"); system(\\\"sleep 20\\\"); spike = \\\"\\\"; system(\\\"sleep 25\\\") }} }}"
    );
    deployment(name, memory, &prog)
}

/// 20 MiB for 25 s (long enough for cAdvisor to report the container), then 40 MiB more,
/// held: what a container that outgrows its limit does.
fn grower(name: &str, memory: &str) -> String {
    grower_declaring(name, memory, memory)
}

/// `grower` declaring its own request and limit.
fn grower_declaring(name: &str, request: &str, limit: &str) -> String {
    let prog = format!(
        "BEGIN {{ base = sprintf(\\\"%{}s\\\", \\\"\\\"); system(\\\"sleep 25\\\"); more = sprintf(\\\"%{}s\\\", \\\"\\\"); for (;;) system(\\\"sleep 3600\\\") }}",
        20 * MIB,
        40 * MIB
    );
    deployment_declaring(name, request, limit, &prog)
}

fn deployment(name: &str, memory: &str, prog: &str) -> String {
    deployment_declaring(name, memory, memory, prog)
}

fn deployment_declaring(name: &str, request: &str, limit: &str, prog: &str) -> String {
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
            requests: {{memory: {request}}}
            limits: {{memory: {limit}}}
"#
    )
}

struct Env {
    plane: ControlPlane,
    node: Node,
    prom: ScrapingProm,
    _dir: tempfile::TempDir,
}

fn start_env(stages: &mut Stages) -> Env {
    if let Some(why) = node::missing_prerequisite() {
        // Where tests/build.rs found it missing, the test is ignored and never gets here.
        panic!("the node cannot run here: {why}");
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
    Env {
        plane,
        node,
        prom,
        _dir: dir,
    }
}

#[test]
#[cfg_attr(
    not(has_node),
    ignore = "no node here: needs root, containerd, runc, CNI, busybox, prometheus (tests/run installs them) and tests/cluster/build.sh"
)]
fn rightsizer_on_a_real_node() {
    let mut stages = Stages::new("node e2e");
    let mut env = start_env(&mut stages);
    stages.run("install as the README says", || {
        install_as_the_readme_says(&env)
    });
    stages.run(
        "the apiserver calls the webhook Pods through the Service",
        || the_apiserver_calls_the_webhook_through_its_service(&env),
    );
    stages.run("enforcement on, workloads started", || start_loop(&env));
    let rec = stages.run("1. recommendation from the real working set", || {
        recommendation_follows_the_real_working_set(&env)
    });
    stages.run("2. committed, rollout restart stores it", || {
        enforce_mode_commits_and_a_rollout_applies_it(&env, &rec)
    });
    stages.run("3. OOM kill seen, limit raised, next Pod runs", || {
        an_oom_kill_raises_the_limit(&env)
    });
    stages.run("4. webhook Pods deleted during a rollout", || {
        webhook_pods_deleted_during_a_rollout(&env, &rec)
    });
    stages.run(
        "5. the updater overlay installed, workloads started",
        || updater::install_the_updater(&env),
    );
    stages.run(
        "5. the updater replaces Pods within their budgets, leaves the rest",
        || updater::the_updater_replaces_pods_within_their_budgets(&env),
    );
    stages.run("6. a Deployment looping on OOM kills started", || {
        oomloop::install(&env)
    });
    stages.run(
        "6. the OOM-looping Pods replaced with the floor, not killed again",
        || oomloop::an_oom_loop_is_replaced_with_the_floor(&env),
    );
    let teardown = env.node.stop();
    eprintln!("node teardown: {:.1} s", teardown.as_secs_f64());
    eprintln!("{}", env.node.log_text());
}

// ----------------------------------------------------------------------- install

/// deploy/ copied, with the two changes the README asks of a user: the image (what
/// `kustomize edit set image` writes) and RIGHTSIZER_PROMETHEUS_URL; and, as this cluster has
/// no kube-state-metrics, the pod-watch component the README names for that case.
fn deploy_copy(dest: &Path, prometheus_url: &str) {
    let src = repo_root().join("deploy");
    copy_dir(&src, &dest.join("deploy"));
    let base = dest.join("deploy/base");
    let (name, tag) = IMAGE.split_once(':').unwrap();
    // In the overlay: its certificate Job runs the same image as the base's Deployment.
    let k = dest.join("deploy/overlays/self-managed/kustomization.yaml");
    let mut text = std::fs::read_to_string(&k).unwrap();
    text.push_str(&format!(
        "images:\n- name: rightsizer\n  newName: {name}\n  newTag: {tag}\ncomponents:\n- ../../components/pod-watch\n"
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
    // Likewise CronJob: batch/v1beta1 before 1.21.
    let p = dest.join("deploy/overlays/self-managed/certs-job.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    let text = text.replace(
        "apiVersion: batch/v1\nkind: CronJob",
        "apiVersion: batch/v1beta1\nkind: CronJob",
    );
    std::fs::write(&p, text).unwrap();
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
            "app.kubernetes.io/name=rightsizer,app.kubernetes.io/component=webhook",
        ],
    );
    for p in pods["items"].as_array().unwrap() {
        assert_eq!(p["spec"]["serviceAccountName"], "rightsizer");
        assert_eq!(p["spec"]["nodeName"], env.node.name.as_str());
        assert_eq!(p["status"]["phase"], "Running");
    }
    // The certificate Job (its own ServiceAccount) made the serving certificate and made
    // the apiserver trust it; the webhook only read it.
    wait_for(120, "the certificate Job succeeded", || {
        let j = kubectl_json(env, &["-n", sys, "get", "job", "rightsizer-certs"]);
        (j["status"]["succeeded"].as_u64() == Some(1)).then_some(())
    });
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

/// The running webhook Pods' IPs.
fn webhook_pod_ips(env: &Env) -> Vec<String> {
    let pods = kubectl_json(
        env,
        &[
            "-n",
            "rightsizer-system",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=rightsizer,app.kubernetes.io/component=webhook",
            "--field-selector=status.phase=Running",
        ],
    );
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect()
}

/// Admission reviews counted by all webhook Pods (each admin port, by Pod IP).
fn reviews_counted(env: &Env) -> f64 {
    webhook_pod_ips(env)
        .iter()
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

// ------------------------------------------------------------------- closed loop

fn key(workload: &str) -> ContainerKey {
    ContainerKey::new(
        WorkloadKey {
            namespace: NS.into(),
            kind: WorkloadKind::Deployment,
            name: workload.into(),
        },
        "app",
    )
}

/// The memory entry for `workload`'s container `app` in `/recommendations`, once `done`.
fn memory_rec(
    env: &Env,
    workload: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&ResourceRecommendation) -> bool,
) -> ResourceRecommendation {
    let k = key(workload);
    wait_for(secs, what, || {
        let body = webhook_admin(env, "/recommendations").ok()?;
        let snap: Snapshot = serde_json::from_str(&body).ok()?;
        let m = snap.recommendations.get(&k)?.memory.clone()?;
        done(&m).then_some(m)
    })
}

/// The committed memory of `workload`'s `app` as one replica (by Pod IP) serves it.
fn committed_on(ip: &str, workload: &str) -> Option<rightsizer_core::rules::Sizes> {
    let body = http_get(&format!("{ip}:9090"), "/recommendations").ok()?;
    let snap: Snapshot = serde_json::from_str(&body).ok()?;
    let m = snap.recommendations.get(&key(workload))?.memory.clone()?;
    m.committed.map(|c| c.sizes)
}

/// Every replica answers admission: wait until both serve `sizes` as committed.
fn every_replica_serves(env: &Env, workload: &str, sizes: rightsizer_core::rules::Sizes) {
    wait_for(
        90,
        "every webhook replica serves the committed value",
        || {
            let all: Vec<_> = webhook_pod_ips(env)
                .iter()
                .map(|ip| committed_on(ip, workload))
                .collect();
            (all.len() == 2 && all.iter().all(|c| *c == Some(sizes))).then_some(())
        },
    );
}

fn memory_of(pod: &Value, side: &str) -> Option<u64> {
    let q = pod["spec"]["containers"][0]["resources"][side]["memory"].as_str()?;
    Resource::Memory.parse(q).ok()
}

/// Pods of `app=<name>` in the loop namespace, newest first.
fn pods_of(env: &Env, name: &str) -> Vec<Value> {
    let v = kubectl_json(
        env,
        &[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            &format!("app={name}"),
            "--sort-by=.metadata.creationTimestamp",
        ],
    );
    let mut items = v["items"].as_array().cloned().unwrap_or_default();
    items.reverse();
    items
}

fn rollout_restart(env: &Env, name: &str) {
    env.plane.kubectl_ok(
        &[
            "-n",
            NS,
            "rollout",
            "restart",
            &format!("deployment/{name}"),
        ],
        None,
    );
    env.plane.kubectl_ok(
        &[
            "-n",
            NS,
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=120s",
        ],
        None,
    );
}

const MIB: u64 = 1024 * 1024;

fn start_loop(env: &Env) {
    let sys = "rightsizer-system";
    env.plane.kubectl_ok(&["apply", "-f", "-"], Some(POLICY));
    // README: enforce mode needs the webhook's permission; shorter cycles for the test.
    env.plane.kubectl_ok(
        &[
            "-n",
            sys,
            "set",
            "env",
            "deployment/rightsizer",
            "RIGHTSIZER_ENFORCEMENT=true",
            "RIGHTSIZER_ANALYZER_INTERVAL=15s",
        ],
        None,
    );
    env.plane.kubectl_ok(
        &[
            "-n",
            sys,
            "rollout",
            "status",
            "deployment/rightsizer",
            "--timeout=120s",
        ],
        None,
    );
    env.plane.kubectl_ok(&["create", "namespace", NS], None);
    env.plane.kubectl_ok(
        &["label", "namespace", NS, "rightsizer.io/enabled=true"],
        None,
    );
    // 40 MiB steady with a 60 MiB peak, asking 512Mi; and two that grow to 60 MiB under a
    // 32Mi limit (OOM-killed by the kernel after 25 s, again after each restart), one of them
    // declaring a 16Mi request under the policy's default step limit (DECLARED_POLICY).
    env.plane
        .kubectl_ok(&["apply", "-f", "-"], Some(DECLARED_POLICY));
    let yaml = format!(
        "{}---\n{}---\n{}",
        holder("holder", "512Mi", 40 * MIB, 20 * MIB),
        grower("oomer", "32Mi"),
        grower_declaring("oomer-declared", "16Mi", "32Mi")
    );
    env.plane.kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
}

/// For `oomer-declared` only: the seed rules with their default safeguards (30% a step, a
/// 30 min cooldown), so its next Pod reaching the OOM floor shows the floor is not held back
/// by the step limit from the declared 16Mi/32Mi.
const DECLARED_POLICY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: rightsizer-node-e2e-declared
  namespace: rightsizer-system
  labels:
    rightsizer.io/policy: "true"
data:
  policy.yaml: |
    precedence: 30
    selector:
      namespaces: ["loop"]
      names: ["oomer-declared"]
    mode: enforce
    target: pods
    recommender: seed
    rules:
      evidence: {minSamples: 6, minHistorySeconds: 0}
"#;

/// Lowest and highest memory the `app` container of `workload` showed (working set and
/// RSS, the two signals the analyzer reads), as Prometheus scraped them from cAdvisor.
fn real_memory_range(env: &Env, workload: &str) -> (f64, f64) {
    let sel = format!(r#"{{namespace="{NS}",pod=~"{workload}-.*",container="app"}}"#);
    let one = |q: String| -> f64 {
        let r = env.prom.query(&q).expect("query");
        r[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let lo = one(format!(
        "min(min_over_time(container_memory_working_set_bytes{sel}[30m]))"
    ));
    let hi = one(format!(
        "max(max_over_time(container_memory_working_set_bytes{sel}[30m]) or max_over_time(container_memory_rss{sel}[30m]))"
    ));
    (lo, hi)
}

fn recommendation_follows_the_real_working_set(env: &Env) -> ResourceRecommendation {
    // Wait until the analyzer has seen the spike in both its p95 and its max: before that
    // the recommendation is still moving (and cAdvisor reports a new container only after
    // 10-15 s, so the first spike is usually missed).
    let spiked = |v: f64| v >= 56.0 * MIB as f64;
    let rec = memory_rec(
        env,
        "holder",
        240,
        "a memory recommendation for loop/holder that saw its spike",
        |m| {
            m.recommended.is_some_and(|s| s.request.is_some())
                && m.observed.is_some_and(|o| spiked(o.p95) && spiked(o.max))
        },
    );
    let (lo, hi) = real_memory_range(env, "holder");
    let obs = rec
        .observed
        .expect("observed usage with the recommendation");
    eprintln!(
        "real working set {:.1}..{:.1} MiB; analyzer observed avg {:.1} p95 {:.1} max {:.1} MiB \
         ({} samples, {} s); recommended {:?}",
        lo / MIB as f64,
        hi / MIB as f64,
        obs.avg / MIB as f64,
        obs.p95 / MIB as f64,
        obs.max / MIB as f64,
        obs.samples,
        obs.history_seconds,
        rec.recommended
    );
    // The program peaks at 60 MiB (plus the runtime's own pages); the lowest sample can be
    // from before it allocated its steady 40 MiB.
    assert!(
        hi >= 60.0 * MIB as f64 && hi < 72.0 * MIB as f64 && obs.avg >= 36.0 * MIB as f64,
        "{lo}..{hi}"
    );
    assert!(
        obs.max <= hi && obs.avg >= lo && obs.p95 <= obs.max,
        "{obs:?} vs {lo}..{hi}"
    );
    // The rules are monotone in usage: the recommendation lies between what they give for
    // the lowest and the highest usage seen.
    let rules = Rules::default().memory;
    let flat = |v: f64| Observed {
        avg: v,
        p95: v,
        max: v,
        samples: 0,
        history_seconds: 0,
    };
    let (low, high) = (rules.recommend(&flat(lo)), rules.recommend(&flat(hi)));
    let got = rec.recommended.unwrap();
    for (side, g, l, h) in [
        ("request", got.request, low.request, high.request),
        ("limit", got.limit, low.limit, high.limit),
    ] {
        let (g, l, h) = (g.unwrap(), l.unwrap(), h.unwrap());
        assert!(l <= g && g <= h, "{side} {g} outside [{l}, {h}]");
    }
    rec
}

fn enforce_mode_commits_and_a_rollout_applies_it(env: &Env, rec: &ResourceRecommendation) {
    // maxStepRatio 4 and no cooldown: one step reaches the recommendation, and the commit
    // follows it in the same analyzer pass, so one snapshot shows both equal.
    let now = memory_rec(
        env,
        "holder",
        90,
        "a committed memory value for loop/holder equal to its recommendation",
        |m| {
            m.committed
                .as_ref()
                .is_some_and(|c| Some(c.sizes) == m.recommended)
        },
    );
    let committed = now.committed.unwrap();
    assert_eq!(now.recommended, rec.recommended, "{}", committed.reason);
    every_replica_serves(env, "holder", committed.sizes);
    rollout_restart(env, "holder");
    let pod = pods_of(env, "holder")
        .into_iter()
        .next()
        .expect("a new holder Pod");
    // What the apiserver stored for the new Pod equals the committed values.
    assert_eq!(
        memory_of(&pod, "requests"),
        committed.sizes.request,
        "{pod}"
    );
    assert_eq!(memory_of(&pod, "limits"), committed.sizes.limit, "{pod}");
    let sized: BTreeMap<String, Value> = serde_json::from_str(
        pod["metadata"]["annotations"]["rightsizer.io/sized"]
            .as_str()
            .expect("sized annotation"),
    )
    .unwrap();
    let mem = &sized["app"]["memory"];
    assert_eq!(mem["request"]["source"], "enforced", "{mem}");
    assert_eq!(
        Resource::Memory
            .parse(mem["request"]["value"].as_str().unwrap())
            .ok(),
        committed.sizes.request
    );
}

fn an_oom_kill_raises_the_limit(env: &Env) {
    // The kernel killed it: the stored status says so.
    let killed = wait_for(60, "the oomer container OOM-killed", || {
        pods_of(env, "oomer").into_iter().find(|p| {
            let st = &p["status"]["containerStatuses"][0];
            st["lastState"]["terminated"]["reason"] == "OOMKilled"
                || st["state"]["terminated"]["reason"] == "OOMKilled"
        })
    });
    assert_eq!(memory_of(&killed, "limits"), Some(32 * MIB));
    // The analyzer saw it: memory at least max(limit x 1.2, limit + 100Mi) (the OOM rule).
    let oom = Rules::default().oom;
    let floor = ((32 * MIB) as f64 * oom.factor).max((32 * MIB + oom.add.0) as f64) as u64;
    let rec = memory_rec(
        env,
        "oomer",
        120,
        "a committed OOM floor for loop/oomer",
        |m| {
            m.committed
                .as_ref()
                .is_some_and(|c| c.sizes.limit.unwrap_or(0) >= floor)
        },
    );
    assert!(rec.oom_floor.is_some_and(|f| f >= floor), "{rec:?}");
    rollout_restart(env, "oomer");
    let pod = pods_of(env, "oomer").into_iter().next().unwrap();
    let limit = memory_of(&pod, "limits").unwrap();
    assert!(
        limit >= floor,
        "new Pod limit {limit} below the OOM floor {floor}"
    );
    // The next Pod grows past the old limit (at 25 s) and runs on without being killed.
    std::thread::sleep(Duration::from_secs(35));
    let name = pod["metadata"]["name"].as_str().unwrap();
    let now = kubectl_json(env, &["-n", NS, "get", "pod", name]);
    let st = &now["status"]["containerStatuses"][0];
    assert_eq!(st["restartCount"], 0, "{st}");
    assert!(st["state"]["running"].is_object(), "{st}");
    a_declared_limit_reaches_the_oom_floor(env, floor);
}

/// A container OOM-killed under a declared 16Mi/32Mi, sized with the default 30% step: its
/// next Pod runs with request and limit at the OOM floor at once (issue 21, item 1), not
/// 30% above the declared values.
fn a_declared_limit_reaches_the_oom_floor(env: &Env, floor: u64) {
    wait_for(60, "the oomer-declared container OOM-killed", || {
        pods_of(env, "oomer-declared").into_iter().find(|p| {
            let st = &p["status"]["containerStatuses"][0];
            st["lastState"]["terminated"]["reason"] == "OOMKilled"
                || st["state"]["terminated"]["reason"] == "OOMKilled"
        })
    });
    let rec = memory_rec(
        env,
        "oomer-declared",
        120,
        "an OOM floor for loop/oomer-declared",
        |m| m.oom_floor.is_some_and(|f| f >= floor),
    );
    let floor = rec.oom_floor.unwrap_or(floor);
    rollout_restart(env, "oomer-declared");
    let pod = pods_of(env, "oomer-declared").into_iter().next().unwrap();
    let (request, limit) = (
        memory_of(&pod, "requests").unwrap(),
        memory_of(&pod, "limits").unwrap(),
    );
    assert!(
        request >= floor && limit >= floor,
        "next Pod {request}/{limit} below the OOM floor {floor} (declared 16Mi/32Mi)"
    );
    std::thread::sleep(Duration::from_secs(35));
    let name = pod["metadata"]["name"].as_str().unwrap();
    let now = kubectl_json(env, &["-n", NS, "get", "pod", name]);
    let st = &now["status"]["containerStatuses"][0];
    assert_eq!(st["restartCount"], 0, "{st}");
    assert!(st["state"]["running"].is_object(), "{st}");
}

fn webhook_pods_deleted_during_a_rollout(env: &Env, rec: &ResourceRecommendation) {
    let sys = "rightsizer-system";
    let before = memory_rec(env, "holder", 30, "holder committed", |m| {
        m.committed.is_some()
    })
    .committed
    .unwrap();
    env.plane
        .kubectl_ok(&["-n", NS, "rollout", "restart", "deployment/holder"], None);
    env.plane.kubectl_ok(
        &[
            "-n",
            sys,
            "delete",
            "pod",
            "-l",
            "app.kubernetes.io/name=rightsizer,app.kubernetes.io/component=webhook",
            "--wait=false",
        ],
        None,
    );
    // Fail-open: the rollout completes whether or not a webhook answered.
    env.plane.kubectl_ok(
        &[
            "-n",
            NS,
            "rollout",
            "status",
            "deployment/holder",
            "--timeout=120s",
        ],
        None,
    );
    env.plane.kubectl_ok(
        &[
            "-n",
            sys,
            "rollout",
            "status",
            "deployment/rightsizer",
            "--timeout=120s",
        ],
        None,
    );
    // The new webhook Pods serve the same committed values ...
    every_replica_serves(env, "holder", before.sizes);
    assert_eq!(Some(before.sizes), rec.recommended);
    // ... and apply them to the next Pods.
    rollout_restart(env, "holder");
    let pod = pods_of(env, "holder").into_iter().next().unwrap();
    assert_eq!(memory_of(&pod, "requests"), before.sizes.request, "{pod}");
    assert_eq!(memory_of(&pod, "limits"), before.sizes.limit, "{pod}");
}
