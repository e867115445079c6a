//! The upgrade test's inputs: the usage history, the objects, the Pod it creates, and what
//! admission sized in it.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{json, Value};

use super::{H, NS, SYS};
use crate::scenario;

/// Two Deployments' usage, flat and running past the test's end, so that every cycle of
/// either version decides the same (a rewrite then is a rewrite of the same status); `cache`
/// was OOM-killed two hours ago (an OOM hold).
pub(super) fn history(t0: u64) -> scenario::Cluster {
    let (start, end) = (t0 - 26 * H, t0 + 2 * H);
    let mut c = scenario::Cluster::new(t0);
    for (name, ws) in [("web", 200.0), ("cache", 180.0)] {
        let rs = format!("{name}-1");
        c.owner(
            "kube_replicaset_owner",
            NS,
            "replicaset",
            &rs,
            "Deployment",
            name,
            start,
            end,
        );
        let pod = format!("{rs}-a");
        let spec = scenario::PodSpec {
            ns: NS,
            pod: &pod,
            owner_kind: "ReplicaSet",
            owner_name: &rs,
            from: start,
            to: end,
        };
        c.pod(&spec, &format!("{NS}/Deployment/{name}")).container(
            "app",
            move |_| ws,
            |_| 100.0,
            (Some(128), Some(256)),
            Some(0.3),
        );
        c.constant(
            "kube_pod_container_resource_requests",
            &format!(r#"namespace="{NS}",pod="{pod}",container="app",node="n1",resource="cpu",unit="core""#),
            0.1,
            start,
            end,
        );
    }
    c.constant(
        "kube_pod_container_status_last_terminated_reason",
        &format!(r#"namespace="{NS}",pod="cache-1-a",container="app",reason="OOMKilled""#),
        1.0,
        t0 - 2 * H,
        end,
    );
    c
}

pub(super) fn fixtures() -> String {
    let deployment = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "busybox",
                        "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]}}}})
        .to_string()
    };
    let policy = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "upgrade", "namespace": SYS, "labels": {"rightsizer.io/policy": "true"}},
        "data": {"policy.yaml": format!("mode: enforce\nrecommender: seed\nselector:\n  namespaces: [{NS}]\n")}});
    [
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n  labels:\n    rightsizer.io/enabled: \"true\"\n"),
        // v1.20 does not label namespaces with their name yet; the shipped selector
        // excludes the webhook's own namespace by that label.
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {SYS}\n  labels:\n    kubernetes.io/metadata.name: {SYS}\n"),
        deployment("web"),
        deployment("cache"),
        policy.to_string(),
    ]
    .join("\n---\n")
}

/// The webhook configuration a tree ships, called at `url` (the proxy) with the test's CA.
pub(super) fn registration(tree: &Path, url: &str, ca_pem: &str) -> String {
    use base64::Engine;
    let text = std::fs::read_to_string(tree.join("deploy/base/mutatingwebhookconfiguration.yaml"))
        .expect("the tree ships a webhook configuration");
    let mut doc: Value = serde_norway::from_str(&text).unwrap();
    for w in doc["webhooks"].as_array_mut().unwrap() {
        w["clientConfig"] = json!({"url": url,
            "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem)});
    }
    doc.to_string()
}

/// What admission sized in the first container: memory request and limit (bytes), CPU
/// request (millicores).
pub(super) type Sized = (Option<u64>, Option<u64>, Option<u64>);

pub(super) fn sized(pod: &Value) -> Sized {
    use rightsizer_core::quantity::{parse_bytes, parse_millicores};
    let r = &pod["spec"]["containers"][0]["resources"];
    let mem = |v: &Value| v["memory"].as_str().map(|q| parse_bytes(q).unwrap());
    let cpu = r["requests"]["cpu"]
        .as_str()
        .map(|q| parse_millicores(q).unwrap());
    (mem(&r["requests"]), mem(&r["limits"]), cpu)
}

/// A Pod of web's ReplicaSet, as its controller would create it.
pub(super) fn web_pod(rs: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-probe-", "namespace": NS,
            "labels": rs["spec"]["selector"]["matchLabels"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": rs["metadata"]["name"], "uid": rs["metadata"]["uid"], "controller": true}]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox",
            "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]}})
}

/// The patch a replica answers for a Pod review, applied: what it sized.
pub(super) async fn review(addr: SocketAddr, ca_pem: &str, pod: &Value) -> Sized {
    use base64::Engine;
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "upgrade", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NS, "operation": "CREATE", "object": pod}});
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let reply: Value = client
        .post(format!("https://{addr}/mutate?timeout=3s"))
        .json(&review)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut obj = pod.clone();
    if let Some(p) = reply["response"]["patch"].as_str() {
        let patch: json_patch::Patch =
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(p).unwrap())
                .unwrap();
        json_patch::patch(&mut obj, &patch).unwrap();
    }
    sized(&obj)
}
