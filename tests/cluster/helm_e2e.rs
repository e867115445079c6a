//! The Helm chart on a real node (tests/cluster/node.sh) next to the real v1.20.2 control
//! plane, with the real helm of tests/tools/helm.sh:
//!
//! 1. `helm install` as the README says (one command; only the image tag and an inline
//!    policy set): the webhook Pods Ready from the image built from the binary under test,
//!    their self-managed certificate trusted by the apiserver, and a Pod in an opted-in
//!    namespace sized by the inline policy;
//! 2. `helm upgrade` with the policy changed and the replicas changed: the cluster follows
//!    both (the Deployment's Pods, the PodDisruptionBudget dropped at one replica, a new
//!    Pod sized by the new policy), and the certificate the webhook wrote survives;
//! 3. `helm uninstall`: nothing of the release is left, in the namespace or cluster-wide,
//!    but the Rightsizing CRD (Helm never deletes what `crds/` installed).
//!
//! One node per machine, so one test in stages that print their timings. Without the node's
//! prerequisites or helm it is ignored with the reason (tests/build.rs sets `has_node` and
//! `has_helm`); under `CI=true` both are set and a missing one fails.

use crate::cluster;
use crate::helm_path::helm_path;
use crate::node;

use std::process::Command;

use cluster::{repo_root, ControlPlane};
use node::{build_image, wait_for, Node, Stages};
use serde_json::Value;

const IMAGE_REPOSITORY: &str = "rightsizer";
const IMAGE_TAG: &str = "helm-e2e";
const SYS: &str = "rightsizer-system";
const SHOP: &str = "shop";

/// The values of the install: the image, no Prometheus (admission needs none), and a policy
/// for `shop` whose defaults only the webhook can have put on a Pod.
fn values(replicas: u32, request: &str, limit: &str) -> String {
    format!(
        r#"image: {{repository: {IMAGE_REPOSITORY}, tag: {IMAGE_TAG}, digest: "", pullPolicy: Never}}
replicas: {replicas}
prometheus: {{url: ""}}
policies:
  shop:
    precedence: 10
    selector: {{namespaces: [{SHOP}]}}
    mode: observe
    defaults:
      memory: {{request: {request}, limit: {limit}}}
"#
    )
}

/// helm against `plane`; stdout, or a panic with what helm said.
fn helm(plane: &ControlPlane, args: &[&str]) -> String {
    let tmp = std::env::temp_dir().join("rightsizer-helm-e2e");
    let out = Command::new(helm_path())
        .args(args)
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .env("HELM_CONFIG_HOME", tmp.join("config"))
        .env("HELM_CACHE_HOME", tmp.join("cache"))
        .env("HELM_DATA_HOME", tmp.join("data"))
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubectl_json(plane: &ControlPlane, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&plane.kubectl_ok(&a, None)).unwrap()
}

#[test]
#[cfg_attr(
    not(all(has_node, has_helm)),
    ignore = "needs a node (root, containerd, runc, CNI, busybox: tests/run installs them; tests/cluster/build.sh) and helm (tests/tools/helm.sh)"
)]
fn helm_install_upgrade_uninstall_on_a_real_node() {
    if let Some(why) = node::missing_prerequisite() {
        panic!("the node cannot run here: {why}");
    }
    assert!(
        helm_path().is_file(),
        "no helm at {} (run tests/tools/helm.sh)",
        helm_path().display()
    );
    let mut stages = Stages::new("helm e2e");
    let dir = tempfile::tempdir().unwrap();
    let image = stages.run("image from the binary under test", || {
        build_image(&format!("{IMAGE_REPOSITORY}:{IMAGE_TAG}"), dir.path()).expect("image")
    });
    let plane = stages.run("control plane", || {
        ControlPlane::start_with_env(&[("RIGHTSIZER_CLUSTER_NODE", "1")]).expect("control plane")
    });
    let mut node = stages.run("node Ready", || {
        Node::start(&plane, &[image]).expect("node starts")
    });
    plane.kubectl_ok(&["create", "namespace", SHOP], None);
    plane.kubectl_ok(
        &["label", "namespace", SHOP, "rightsizer.io/enabled=true"],
        None,
    );

    let chart = repo_root().join("deploy/chart/rightsizer");
    let chart = chart.to_str().unwrap();
    let install_values = dir.path().join("install.yaml");
    std::fs::write(&install_values, values(2, "160Mi", "320Mi")).unwrap();
    stages.run("helm install (--wait: webhook Pods Ready)", || {
        helm(
            &plane,
            &[
                "install",
                "rightsizer",
                chart,
                "--namespace",
                SYS,
                "--create-namespace",
                "--values",
                install_values.to_str().unwrap(),
                "--wait",
                "--timeout",
                "5m",
            ],
        )
    });
    let ca = stages.run(
        "installed: Pods Ready, certificate trusted, a Pod sized",
        || installed(&plane, &node),
    );

    let upgrade_values = dir.path().join("upgrade.yaml");
    std::fs::write(&upgrade_values, values(1, "224Mi", "448Mi")).unwrap();
    stages.run("helm upgrade (--wait)", || {
        helm(
            &plane,
            &[
                "upgrade",
                "rightsizer",
                chart,
                "--namespace",
                SYS,
                "--values",
                upgrade_values.to_str().unwrap(),
                "--wait",
                "--timeout",
                "5m",
            ],
        )
    });
    stages.run("upgraded: one replica, the new policy in force", || {
        upgraded(&plane, &ca)
    });

    stages.run("helm uninstall (--wait)", || {
        helm(
            &plane,
            &[
                "uninstall",
                "rightsizer",
                "--namespace",
                SYS,
                "--wait",
                "--timeout",
                "5m",
            ],
        )
    });
    stages.run("webhook Pods terminated (grace period, drain)", || {
        wait_for(120, "the webhook Pods are gone", || {
            let pods = kubectl_json(
                &plane,
                &[
                    "-n",
                    SYS,
                    "get",
                    "pods",
                    "-l",
                    "app.kubernetes.io/name=rightsizer",
                ],
            );
            pods["items"].as_array().unwrap().is_empty().then_some(())
        })
    });
    stages.run("uninstalled: nothing left but the CRD", || {
        nothing_left_but_the_crd(&plane)
    });
    let teardown = node.stop();
    eprintln!("node teardown: {:.1} s", teardown.as_secs_f64());
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The webhook Pods that are not being deleted.
fn webhook_pods(plane: &ControlPlane) -> Vec<Value> {
    let pods = kubectl_json(
        plane,
        &[
            "-n",
            SYS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=rightsizer,app.kubernetes.io/component=webhook",
        ],
    );
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

/// Create a bare Pod in `shop` until the webhook has sized it (the apiserver may still
/// hold a caBundle from before the webhook set it); its memory request and limit.
fn sized_pod(plane: &ControlPlane, name: &str) -> (String, String) {
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {SHOP}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: rightsizer.test/busybox:1
      imagePullPolicy: Never
      command: ["sleep", "3600"]
"#
    );
    let stored = wait_for(60, "the apiserver sized a Pod through the webhook", || {
        plane.kubectl(
            &[
                "-n",
                SHOP,
                "delete",
                "pod",
                name,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
        plane.kubectl_ok(&["apply", "-f", "-"], Some(&pod));
        let p = kubectl_json(plane, &["-n", SHOP, "get", "pod", name]);
        p["metadata"]["annotations"]["rightsizer.io/sized"]
            .is_string()
            .then_some(p)
    });
    let res = &stored["spec"]["containers"][0]["resources"];
    (
        res["requests"]["memory"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        res["limits"]["memory"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// After the install: two Ready webhook Pods from the image on the node, the Secret the
/// webhook filled and the caBundle it set, and a Pod in `shop` sized by the inline policy.
/// Returns the CA.
fn installed(plane: &ControlPlane, node: &Node) -> String {
    let dep = kubectl_json(plane, &["-n", SYS, "get", "deployment", "rightsizer"]);
    assert_eq!(dep["status"]["readyReplicas"], 2, "{}", dep["status"]);
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{IMAGE_REPOSITORY}:{IMAGE_TAG}")
    );
    let pods = webhook_pods(plane);
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert!(ready(p), "{}", p["status"]);
        assert_eq!(p["spec"]["nodeName"], node.name.as_str());
        assert_eq!(p["spec"]["serviceAccountName"], "rightsizer");
    }
    // v1.20 serves PodDisruptionBudget as policy/v1beta1 only: the chart asked the cluster.
    let pdb = kubectl_json(
        plane,
        &[
            "-n",
            SYS,
            "get",
            "poddisruptionbudgets.v1beta1.policy",
            "rightsizer",
        ],
    );
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let ca = wait_for(
        60,
        "the webhook filled Secret rightsizer-tls and set the caBundle",
        || {
            let secret = kubectl_json(plane, &["-n", SYS, "get", "secret", "rightsizer-tls"]);
            let ca = secret["data"]["ca.crt"].as_str()?.to_string();
            let mwc = kubectl_json(
                plane,
                &["get", "mutatingwebhookconfiguration", "rightsizer"],
            );
            (mwc["webhooks"][0]["clientConfig"]["caBundle"] == ca.as_str()).then_some(ca)
        },
    );
    assert_eq!(
        sized_pod(plane, "before-upgrade"),
        ("160Mi".to_string(), "320Mi".to_string())
    );
    ca
}

/// After the upgrade: one webhook Pod, no PodDisruptionBudget, the policy ConfigMap
/// changed and a new Pod sized by it; the Secret and caBundle as the webhook left them.
fn upgraded(plane: &ControlPlane, ca: &str) {
    let dep = kubectl_json(plane, &["-n", SYS, "get", "deployment", "rightsizer"]);
    assert_eq!(dep["spec"]["replicas"], 1);
    wait_for(60, "one webhook Pod left", || {
        let pods = webhook_pods(plane);
        (pods.len() == 1 && ready(&pods[0])).then_some(())
    });
    let pdb = plane.kubectl(
        &[
            "-n",
            SYS,
            "get",
            "poddisruptionbudgets.v1beta1.policy",
            "rightsizer",
        ],
        None,
    );
    assert!(
        !pdb.status.success(),
        "the PodDisruptionBudget outlived replicas: 1"
    );
    let cm = kubectl_json(plane, &["-n", SYS, "get", "configmap", "rightsizer-shop"]);
    assert!(cm["data"]["policy.yaml"]
        .as_str()
        .unwrap()
        .contains("224Mi"));
    // The webhook reads policy ConfigMaps as they change (within seconds).
    wait_for(60, "a new Pod is sized by the upgraded policy", || {
        let got = sized_pod(plane, "after-upgrade");
        (got == ("224Mi".to_string(), "448Mi".to_string())).then_some(())
    });
    // Helm's three-way merge left what the webhook wrote: the chart's Secret has no data.
    let secret = kubectl_json(plane, &["-n", SYS, "get", "secret", "rightsizer-tls"]);
    assert_eq!(secret["data"]["ca.crt"], ca);
    let mwc = kubectl_json(
        plane,
        &["get", "mutatingwebhookconfiguration", "rightsizer"],
    );
    assert_eq!(mwc["webhooks"][0]["clientConfig"]["caBundle"], ca);
    // The Lease is still the webhook's to hold: the upgrade did not reset it. Scaling 2 -> 1
    // may have stopped the leader, which releases the Lease on SIGTERM (no holder), so the
    // remaining replica takes it within its retry period.
    wait_for(
        30,
        "a webhook replica holds the Lease after the upgrade",
        || {
            let lease = kubectl_json(plane, &["-n", SYS, "get", "lease", "rightsizer-leader"]);
            lease["spec"]["holderIdentity"].is_string().then_some(())
        },
    );
}

/// What Kubernetes itself keeps in every namespace (not the release's).
fn kubernetes_own(kind: &str, name: &str) -> bool {
    match kind {
        "serviceaccounts" => name == "default",
        "secrets" => name.starts_with("default-token-"),
        "configmaps" => name == "kube-root-ca.crt",
        // Events expire on their own (an hour); the release never created one.
        "events" | "events.events.k8s.io" => true,
        _ => false,
    }
}

/// Every namespaced resource the apiserver serves, listed in the release namespace, holds
/// only Kubernetes' own objects (so also no Secret of Helm's release history, nor the
/// Secret and Lease the webhook wrote into); of the cluster-scoped ones labelled as rightsizer's only
/// the CRD is left.
fn nothing_left_but_the_crd(plane: &ControlPlane) {
    let kinds = plane.kubectl_ok(
        &[
            "api-resources",
            "--verbs=list",
            "--namespaced=true",
            "-o",
            "name",
        ],
        None,
    );
    wait_for(120, "every object of the release is gone", || {
        let mut left = Vec::new();
        for kind in kinds.lines().filter(|k| !k.is_empty()) {
            let names = plane.kubectl_ok(&["-n", SYS, "get", kind, "-o", "name"], None);
            for n in names.lines() {
                let short = n.rsplit('/').next().unwrap_or(n);
                if !kubernetes_own(kind, short) {
                    left.push(format!("{kind}/{short}"));
                }
            }
        }
        if left.is_empty() {
            return Some(());
        }
        eprintln!("still there: {left:?}");
        None
    });
    let cluster_kinds = plane.kubectl_ok(
        &[
            "api-resources",
            "--verbs=list",
            "--namespaced=false",
            "-o",
            "name",
        ],
        None,
    );
    let mut ours = Vec::new();
    for kind in cluster_kinds.lines().filter(|k| !k.is_empty()) {
        let by_label = plane.kubectl_ok(
            &[
                "get",
                kind,
                "-l",
                "app.kubernetes.io/name=rightsizer",
                "-o",
                "name",
            ],
            None,
        );
        ours.extend(by_label.lines().map(str::to_string));
    }
    assert_eq!(
        ours,
        ["customresourcedefinition.apiextensions.k8s.io/rightsizings.rightsizer.io"],
        "cluster-scoped objects left"
    );
    // And by name, whatever their labels.
    for (kind, name) in [
        ("mutatingwebhookconfiguration", "rightsizer"),
        ("clusterrole", "rightsizer"),
        ("clusterrole", "rightsizer-certs"),
        ("clusterrolebinding", "rightsizer"),
        ("clusterrolebinding", "rightsizer-certs"),
    ] {
        let out = plane.kubectl(&["get", kind, name], None);
        assert!(!out.status.success(), "{kind}/{name} is left");
    }
}
