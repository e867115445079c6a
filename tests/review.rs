//! The review handler exactly as the apiserver drives it: AdmissionReview v1 bodies in,
//! AdmissionReview responses out (no HTTP here; the HTTPS tests cover the transport).

use std::sync::Arc;

use base64::Engine;
use rightsizer::admission::{AdmitConfig, Admitter, Outcome, ReviewError};
use rightsizer::cluster::NoFacts;
use rightsizer::policy::{parse_manifests, PolicyStore};
use rightsizer::recommendation::{RecommendationSource, Snapshot};
use rstest::rstest;
use serde_json::{json, Value};

const POLICY: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: p, namespace: rightsizer-system, labels: {rightsizer.io/policy: "true"}}
data:
  policy.yaml: |
    mode: enforce
    defaults:
      memory: {request: 128Mi, limit: 256Mi}
"#;

fn admitter(enforcement: bool) -> Admitter {
    let policies = parse_manifests("test", POLICY).expect("policy");
    let snap: Snapshot = serde_json::from_value(json!({"recommendations": {
        "shop/Deployment/api/app": {"memory": {"recommended": {"request": 512u64 << 20, "limit": 768u64 << 20}}}
    }}))
    .expect("snapshot");
    let recs: Arc<dyn RecommendationSource> = Arc::new(snap);
    Admitter::new(
        Arc::new(PolicyStore::with_policies(policies)),
        recs,
        Arc::new(NoFacts),
        AdmitConfig {
            enforcement,
            own_namespace: Some("rightsizer-system".into()),
        },
    )
}

fn deployment_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "api-6c9f7-", "namespace": "shop",
            "labels": {"app": "api", "pod-template-hash": "6c9f7"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-6c9f7", "uid": "u1", "controller": true}]
        },
        "spec": {"containers": [{"name": "app", "image": "api:1"}]}
    })
}

fn review(group: &str, kind: &str, op: &str, ns: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "namespace": ns,
            "operation": op,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

fn answer(a: &Admitter, body: &Value) -> (Value, Outcome) {
    let r = a
        .review(&serde_json::to_vec(body).unwrap())
        .expect("review answered");
    (serde_json::from_slice(&r.body).unwrap(), r.outcome)
}

fn decoded_patch(resp: &Value) -> Option<json_patch::Patch> {
    let b64 = resp.pointer("/response/patch")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[test]
fn pod_review_gets_a_patch_keyed_to_its_deployment() {
    let a = admitter(true);
    let pod = deployment_pod();
    let (resp, outcome) = answer(&a, &review("", "Pod", "CREATE", "shop", pod.clone()));
    assert_eq!(outcome, Outcome::Patched);
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(
        resp["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(resp["response"]["allowed"], true);
    assert_eq!(resp["response"]["patchType"], "JSONPatch");
    let patch = decoded_patch(&resp).expect("base64 JSONPatch");
    let mut patched = pod;
    json_patch::patch(&mut patched, &patch).expect("patch applies");
    let typed: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(patched.clone()).expect("still a Pod");
    let res = typed.spec.unwrap().containers[0].resources.clone().unwrap();
    assert_eq!(res.requests.unwrap()["memory"].0, "512Mi");
    assert_eq!(res.limits.unwrap()["memory"].0, "768Mi");
    // The webhook on its own output: no patch (reinvocationPolicy IfNeeded is safe).
    let (again, outcome) = answer(&a, &review("", "Pod", "CREATE", "shop", patched));
    assert!(again["response"].get("patch").is_none());
    assert_eq!(outcome, Outcome::Unchanged);
}

#[test]
fn dry_run_gives_the_same_patch() {
    let a = admitter(true);
    let mut body = review("", "Pod", "CREATE", "shop", deployment_pod());
    let (plain, _) = answer(&a, &body);
    body["request"]["dryRun"] = json!(true);
    let r = a.review(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert!(r.dry_run);
    let dry: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(plain["response"]["patch"], dry["response"]["patch"]);
}

#[rstest]
#[case::delete("", "Pod", "DELETE", "shop")]
#[case::connect("", "Pod", "CONNECT", "shop")]
#[case::pod_update("", "Pod", "UPDATE", "shop")]
#[case::other_kind("", "ConfigMap", "CREATE", "shop")]
#[case::kube_system("", "Pod", "CREATE", "kube-system")]
#[case::kube_public("", "Pod", "CREATE", "kube-public")]
#[case::kube_node_lease("", "Pod", "CREATE", "kube-node-lease")]
#[case::own_namespace("", "Pod", "CREATE", "rightsizer-system")]
fn admitted_unchanged(#[case] group: &str, #[case] kind: &str, #[case] op: &str, #[case] ns: &str) {
    let a = admitter(true);
    let (resp, outcome) = answer(&a, &review(group, kind, op, ns, deployment_pod()));
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none());
    assert_eq!(outcome, Outcome::Skipped);
}

#[test]
fn subresource_is_admitted_unchanged() {
    let a = admitter(true);
    let mut body = review("", "Pod", "CREATE", "shop", deployment_pod());
    body["request"]["subResource"] = json!("binding");
    let (resp, outcome) = answer(&a, &body);
    assert!(resp["response"].get("patch").is_none());
    assert_eq!(outcome, Outcome::Skipped);
}

#[test]
fn undecodable_object_is_admitted_with_a_warning() {
    let a = admitter(true);
    let mut pod = deployment_pod();
    pod["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": ["nope"]}});
    let (resp, outcome) = answer(&a, &review("", "Pod", "CREATE", "shop", pod));
    assert_eq!(outcome, Outcome::Invalid);
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none());
    let w = resp["response"]["warnings"][0].as_str().unwrap();
    assert!(w.starts_with("rightsizer: Pod does not decode"), "{w}");
}

#[rstest]
#[case::not_json(b"{not json".to_vec(), "not JSON")]
#[case::empty(b"".to_vec(), "not JSON")]
#[case::wrong_version(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE"}}"#.to_vec(), "apiVersion")]
#[case::wrong_kind(br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#.to_vec(), "kind")]
#[case::no_request(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), "no request")]
#[case::no_uid(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE"}}"#.to_vec(), "uid")]
#[case::wrong_types(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5}}"#.to_vec(), "invalid type")]
#[case::not_utf8(vec![0xff, 0xfe, 0x00], "not JSON")]
fn malformed_reviews_are_refused_with_a_reason(#[case] body: Vec<u8>, #[case] reason: &str) {
    let err = admitter(true).review(&body).expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains(reason), "{msg:?} should mention {reason:?}");
    assert!(matches!(
        err,
        ReviewError::NotJson(_) | ReviewError::NotReview(_)
    ));
}

#[test]
fn arbitrary_bytes_never_panic() {
    let a = admitter(true);
    // A deterministic pseudo-random walk over mutations of a valid review.
    let base = serde_json::to_vec(&review("", "Pod", "CREATE", "shop", deployment_pod())).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..3000 {
        let mut b = base.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % b.len();
            b[i] = (x >> 32) as u8;
        }
        let _ = a.review(&b);
        b.truncate((x as usize) % base.len());
        let _ = a.review(&b);
    }
}

/// Cluster facts from watchers: exact owner chains and workload annotations.
struct WatchedFacts;

impl rightsizer::cluster::ClusterFacts for WatchedFacts {
    fn namespace(&self, _name: &str) -> Arc<rightsizer::cluster::NamespaceFacts> {
        Arc::default()
    }
    fn priority_classes(
        &self,
    ) -> Arc<std::collections::BTreeMap<String, rightsizer::policy::schema::PriorityClassInfo>>
    {
        Arc::default()
    }
    fn resolve_owner(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Option<rightsizer::recommendation::WorkloadKey> {
        (kind == "ReplicaSet" && name == "api-6c9f7").then(|| {
            rightsizer::recommendation::WorkloadKey {
                namespace: namespace.into(),
                kind: rightsizer::recommendation::WorkloadKind::Deployment,
                name: "api".into(),
            }
        })
    }
    fn workload_annotations(
        &self,
        key: &rightsizer::recommendation::WorkloadKey,
    ) -> Option<Arc<std::collections::BTreeMap<String, String>>> {
        (key.name == "quiet").then(|| {
            Arc::new(std::collections::BTreeMap::from([(
                "rightsizer.io/mode".to_string(),
                "off".to_string(),
            )]))
        })
    }
}

fn watched_admitter() -> Admitter {
    let policies = parse_manifests("test", POLICY).expect("policy");
    let snap: Snapshot = serde_json::from_value(json!({"recommendations": {
        "shop/Deployment/api/app": {"memory": {"recommended": {"request": 512u64 << 20, "limit": 768u64 << 20}}},
        "shop/Deployment/quiet/app": {"memory": {"recommended": {"request": 512u64 << 20, "limit": 768u64 << 20}}}
    }}))
    .unwrap();
    Admitter::new(
        Arc::new(PolicyStore::with_policies(policies)),
        Arc::new(snap),
        Arc::new(WatchedFacts),
        AdmitConfig {
            enforcement: true,
            own_namespace: None,
        },
    )
}

#[test]
fn watched_owner_chain_beats_the_name_heuristic() {
    // No pod-template-hash label: by name alone this Pod would be keyed to the ReplicaSet.
    let mut pod = deployment_pod();
    pod["metadata"]["labels"] = json!({"app": "api"});
    let r = watched_admitter()
        .review(&serde_json::to_vec(&review("", "Pod", "CREATE", "shop", pod)).unwrap())
        .unwrap();
    assert_eq!(r.workload.unwrap().to_string(), "shop/Deployment/api");
    assert_eq!(r.outcome, Outcome::Patched);
}

#[test]
fn mode_off_on_the_deployment_reaches_its_pods() {
    let mut pod = deployment_pod();
    pod["metadata"]["generateName"] = json!("quiet-7b8c9-");
    pod["metadata"]["labels"] = json!({"pod-template-hash": "7b8c9"});
    pod["metadata"]["ownerReferences"][0]["name"] = json!("quiet-7b8c9");
    let r = watched_admitter()
        .review(&serde_json::to_vec(&review("", "Pod", "CREATE", "shop", pod)).unwrap())
        .unwrap();
    assert_eq!(r.workload.unwrap().to_string(), "shop/Deployment/quiet");
    assert_eq!(r.outcome, Outcome::Unchanged);
}

// ---------------------------------------------------------------------------------------
// Knative concurrency tuned revision after revision: rightsizer revises the settings it
// wrote (recorded in `rightsizer.io/sized`) and never a value the user wrote.

const KNATIVE_POLICY: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: kn, namespace: rightsizer-system, labels: {rightsizer.io/policy: "true"}}
data:
  policy.yaml: |
    mode: enforce
    selector: {kinds: [KnativeService]}
    knative: {applyRecommendations: true}
"#;

/// An admitter whose analyzer proposes `target` (and `cc`) for the `hello` service.
fn knative_admitter(target: f64, cc: Option<u64>) -> Admitter {
    let mut proposal = json!({"target": target});
    if let Some(cc) = cc {
        proposal["containerConcurrency"] = json!(cc);
    }
    let snap: Snapshot = serde_json::from_value(json!({"recommendations": {
        "serverless/KnativeService/hello/user-container": {"knative": proposal}
    }}))
    .expect("snapshot");
    Admitter::new(
        Arc::new(PolicyStore::with_policies(
            parse_manifests("test", KNATIVE_POLICY).expect("policy"),
        )),
        Arc::new(snap),
        Arc::new(NoFacts),
        AdmitConfig {
            enforcement: true,
            own_namespace: Some("rightsizer-system".into()),
        },
    )
}

/// The stored Service after the webhook's patch.
fn admit_service(a: &Admitter, svc: &Value) -> Value {
    let (resp, _) = answer(
        a,
        &review(
            "serving.knative.dev",
            "Service",
            "UPDATE",
            "serverless",
            svc.clone(),
        ),
    );
    let mut out = svc.clone();
    if let Some(p) = decoded_patch(&resp) {
        json_patch::patch(&mut out, &p).expect("patch applies");
    }
    out
}

/// A new revision: the user changes the image and keeps everything else as stored.
fn new_revision(svc: &mut Value, n: u32) {
    svc["spec"]["template"]["spec"]["containers"][0]["image"] = json!(format!("hello:{n}"));
}

fn target_and_cc(svc: &Value) -> (Option<&str>, Option<u64>) {
    (
        svc.pointer("/spec/template/metadata/annotations/autoscaling.knative.dev~1target")
            .and_then(Value::as_str),
        svc.pointer("/spec/template/spec/containerConcurrency")
            .and_then(Value::as_u64),
    )
}

#[test]
fn knative_target_follows_the_recommendation_over_three_revisions() {
    // As stored after Knative's defaulting: containerConcurrency 0 (unbounded).
    let mut svc = json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "serverless", "uid": "s1"},
        "spec": {"template": {"spec": {"containerConcurrency": 0, "containers": [{"image": "hello:1"}]}}}
    });
    let revisions = [
        // memory near the limit, concurrency above the target: 100 -> 80, bounded
        ((80.0, Some(115)), (Some("80"), Some(115))),
        // still near the limit: 80 -> 64; both values are rightsizer's, both revised
        ((64.0, Some(92)), (Some("64"), Some(92))),
        // ample headroom with queueing: 64 -> 76.8; rightsizer's bound follows the target
        ((76.8, None), (Some("76.8"), Some(110))),
    ];
    for (n, ((target, cc), want)) in revisions.into_iter().enumerate() {
        new_revision(&mut svc, n as u32 + 2);
        svc = admit_service(&knative_admitter(target, cc), &svc);
        assert_eq!(target_and_cc(&svc), want, "revision {}", n + 2);
    }
    let sized: Value = serde_json::from_str(
        svc.pointer("/spec/template/metadata/annotations/rightsizer.io~1sized")
            .and_then(Value::as_str)
            .expect("sized record"),
    )
    .unwrap();
    assert_eq!(
        sized["autoscaling.knative.dev"],
        json!({"target": "76.8", "containerConcurrency": "110"})
    );
}

#[test]
fn knative_user_values_are_never_touched() {
    let mut svc = json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "serverless", "uid": "s1"},
        "spec": {"template": {"spec": {"containers": [{"image": "hello:1"}]}}}
    });
    svc = admit_service(&knative_admitter(80.0, Some(115)), &svc);
    assert_eq!(target_and_cc(&svc), (Some("80"), Some(115)));
    // The user takes both over: their values stay through later proposals.
    svc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/target"] =
        json!("30");
    svc["spec"]["template"]["spec"]["containerConcurrency"] = json!(20);
    for (n, target) in [(3, 64.0), (4, 51.2)] {
        new_revision(&mut svc, n);
        svc = admit_service(&knative_admitter(target, Some(92)), &svc);
        assert_eq!(target_and_cc(&svc), (Some("30"), Some(20)), "revision {n}");
    }
    // Nothing is rightsizer's any more: no record of it either.
    assert!(svc
        .pointer("/spec/template/metadata/annotations/rightsizer.io~1sized")
        .is_none());
}
