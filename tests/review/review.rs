//! The review handler exactly as the apiserver drives it: AdmissionReview v1 bodies in,
//! AdmissionReview responses out (no HTTP here; the HTTPS tests cover the transport).

use std::sync::Arc;

use base64::Engine;
use rightsizer::admission::{AdmitConfig, Admitter, Outcome, ReviewError};
use rightsizer::policies::load::parse_manifests;
use rightsizer::policies::store::PolicyStore;
use rightsizer_core::cluster::NoFacts;
use rightsizer_core::recommendation::{RecommendationSource, Snapshot};
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

/// Corrupted bodies (bytes overwritten, bodies cut short) are either refused as not a
/// review, with a reason, or answered with a valid AdmissionReview that admits the object:
/// never a panic, never a refusal of the object, and any patch applies to it.
#[test]
fn arbitrary_bytes_are_refused_or_admitted() {
    let a = admitter(true);
    // A deterministic pseudo-random walk over mutations of a valid review.
    let base = serde_json::to_vec(&review("", "Pod", "CREATE", "shop", deployment_pod())).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let (mut refused, mut answered) = (0, 0);
    let mut check = |b: &[u8]| match a.review(b) {
        Err(e) => {
            assert!(
                matches!(e, ReviewError::NotJson(_) | ReviewError::NotReview(_)),
                "{e:?}"
            );
            assert!(e.to_string().len() > "body is not JSON: ".len(), "{e}");
            refused += 1;
        }
        Ok(r) => {
            assert_ne!(
                r.outcome,
                Outcome::Panicked,
                "{}",
                String::from_utf8_lossy(b)
            );
            let resp: Value = serde_json::from_slice(&r.body).expect("the answer is JSON");
            assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(resp["kind"], "AdmissionReview");
            assert_eq!(resp["response"]["allowed"], true, "{resp}");
            let uid = resp["response"]["uid"].as_str().expect("uid");
            assert!(!uid.is_empty());
            let sent: Option<Value> = serde_json::from_slice(b).ok();
            if let Some(sent_uid) = sent.as_ref().and_then(|v| v["request"]["uid"].as_str()) {
                assert_eq!(uid, sent_uid);
            }
            if let Some(patch) = decoded_patch(&resp) {
                let mut object = sent.expect("a patched body is JSON")["request"]["object"].clone();
                json_patch::patch(&mut object, &patch).expect("the patch applies");
            }
            answered += 1;
        }
    };
    // Printable replacements keep many bodies JSON, so the answer side is reached too.
    const PRINTABLE: &[u8] = b"{}[]\":,.-0123456789aeflnrstuxyzAEINPT \\";
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let (mut raw, mut printable) = (base.clone(), base.clone());
        for _ in 0..4 {
            let r = next();
            raw[(r as usize) % base.len()] = (r >> 32) as u8;
            let r = next();
            printable[(r as usize) % base.len()] = PRINTABLE[(r >> 32) as usize % PRINTABLE.len()];
        }
        check(&raw);
        check(&printable);
        raw.truncate((next() as usize) % base.len());
        check(&raw);
    }
    // The walk reaches both sides (else it would check nothing on one of them).
    assert!(
        refused > 100 && answered > 100,
        "{refused} refused, {answered} answered"
    );
}

/// The watchers' owner mirrors: ReplicaSet api-6c9f7 belongs to Deployment api,
/// canary-6c9f7 to an Argo Rollout.
impl rightsizer_core::workload::resolve::OwnerFacts for WatchedFacts {
    fn controller(
        &self,
        _namespace: &str,
        kind: &str,
        name: &str,
    ) -> Option<Option<rightsizer_core::workload::resolve::Owner>> {
        let owner = |kind: &str, name: &str| {
            Some(Some(rightsizer_core::workload::resolve::Owner {
                kind: kind.into(),
                name: name.into(),
                uid: None,
            }))
        };
        match (kind, name) {
            ("ReplicaSet", "api-6c9f7") => owner("Deployment", "api"),
            ("ReplicaSet", "canary-6c9f7") => owner("Rollout", "canary"),
            _ => None,
        }
    }
}

/// Cluster facts from watchers: exact owner chains and workload annotations.
struct WatchedFacts;

impl rightsizer_core::cluster::ClusterFacts for WatchedFacts {
    fn namespace(&self, _name: &str) -> Arc<rightsizer_core::cluster::NamespaceFacts> {
        Arc::default()
    }
    fn priority_classes(&self) -> rightsizer_core::cluster::PriorityClasses {
        rightsizer_core::cluster::PriorityClasses::default()
    }
    fn owners(&self) -> &dyn rightsizer_core::workload::resolve::OwnerFacts {
        self
    }
    fn workload_annotations(
        &self,
        key: &rightsizer_core::workload::WorkloadKey,
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
fn a_watched_deployments_pods_get_its_recommendation() {
    let mut pod = deployment_pod();
    pod["metadata"]["labels"] = json!({"app": "api"});
    // `mutate_object` is what a review runs on the decoded object (and what `mutate` runs
    // offline); it says which workload's recommendations applied.
    let m = watched_admitter().mutate_object(
        rightsizer_core::workload::kind::WorkloadKind::Pod,
        "shop",
        &pod,
    );
    assert_eq!(m.workload.unwrap().to_string(), "shop/Deployment/api");
    assert_eq!(m.outcome, Outcome::Patched);
}

#[test]
fn watched_owner_chain_beats_the_name_heuristic() {
    // A Rollout's ReplicaSet is named like a Deployment's; the watchers know its owner.
    let mut pod = deployment_pod();
    pod["metadata"]["generateName"] = json!("canary-6c9f7-");
    pod["metadata"]["ownerReferences"][0]["name"] = json!("canary-6c9f7");
    let m = watched_admitter().mutate_object(
        rightsizer_core::workload::kind::WorkloadKind::Pod,
        "shop",
        &pod,
    );
    assert_eq!(
        m.workload.unwrap().to_string(),
        "shop/ReplicaSet/canary-6c9f7"
    );
}

#[test]
fn mode_off_on_the_deployment_reaches_its_pods() {
    let mut pod = deployment_pod();
    pod["metadata"]["generateName"] = json!("quiet-7b8c9-");
    pod["metadata"]["labels"] = json!({"pod-template-hash": "7b8c9"});
    pod["metadata"]["ownerReferences"][0]["name"] = json!("quiet-7b8c9");
    let m = watched_admitter().mutate_object(
        rightsizer_core::workload::kind::WorkloadKind::Pod,
        "shop",
        &pod,
    );
    assert_eq!(m.workload.unwrap().to_string(), "shop/Deployment/quiet");
    assert_eq!(m.outcome, Outcome::Unchanged);
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
    // Created without containerConcurrency; the analyzer proposes none yet, so rightsizer
    // leaves it to Knative's defaulting, which writes 0 (unbounded), and records that 0.
    let mut svc = json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "serverless", "uid": "s1"},
        "spec": {"template": {"spec": {"containers": [{"image": "hello:1"}]}}}
    });
    svc = admit_service(&knative_admitter(100.0, None), &svc);
    assert_eq!(target_and_cc(&svc), (Some("100"), None));
    svc["spec"]["template"]["spec"]["containerConcurrency"] = json!(0);
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

/// A containerConcurrency of 0 the user wrote (no record of rightsizer's says it left the
/// field to Knative) is never replaced, whatever the analyzer proposes.
#[test]
fn a_users_unbounded_concurrency_is_kept_over_revisions() {
    let mut svc = json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "serverless", "uid": "s1"},
        "spec": {"template": {"spec": {"containerConcurrency": 0, "containers": [{"image": "hello:1"}]}}}
    });
    for (n, (target, cc)) in [(80.0, Some(115)), (64.0, Some(92)), (76.8, None)]
        .into_iter()
        .enumerate()
    {
        new_revision(&mut svc, n as u32 + 2);
        svc = admit_service(&knative_admitter(target, cc), &svc);
        assert_eq!(target_and_cc(&svc).1, Some(0), "revision {}", n + 2);
    }
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

// ---------------------------------------------------------------------------------------
// Generated input at scale: every supported kind with random resources, odd quantities,
// valid and malformed annotations, policies, LimitRanges, quotas, PriorityClasses and
// recommendations, through the real `Admitter::review`. 2,000 cases by default;
// `RIGHTSIZER_FUZZ_CASES=1000000 cargo test --release -p rightsizer-tests --test review fuzz` for the long run
// (`RIGHTSIZER_FUZZ_SEED` sets the first seed; a failure prints its seed).

use crate::gen;
use crate::invariants;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn case_admitter(case: &gen::Case) -> Admitter {
    let store = match parse_manifests("fuzz", &case.policies) {
        Ok(p) => PolicyStore::with_policies(p),
        // A policy the loader refuses is never used: nothing selects the object.
        Err(_) => PolicyStore::new(),
    };
    let snap: Snapshot = serde_json::from_value(case.snapshot.clone()).expect("snapshot");
    Admitter::new(
        Arc::new(store),
        Arc::new(snap),
        Arc::new(case.facts.clone()),
        AdmitConfig {
            enforcement: case.enforcement,
            own_namespace: Some("rightsizer-system".into()),
        },
    )
}

type Answer = (Value, Option<json_patch::Patch>, Vec<Value>);

/// The review's answer: response checks, then the patched object (or the input), the
/// patch and the warnings.
fn answered(a: &Admitter, body: &Value) -> Result<Answer, String> {
    let r = a
        .review(&serde_json::to_vec(body).unwrap())
        .map_err(|e| format!("review refused: {e}"))?;
    let resp: Value = serde_json::from_slice(&r.body).map_err(|e| format!("response JSON: {e}"))?;
    if resp["response"]["uid"] != body["request"]["uid"] {
        return Err(format!("uid {} != request's", resp["response"]["uid"]));
    }
    if resp["response"]["allowed"] != true {
        return Err("not allowed".into());
    }
    let warnings = resp["response"]["warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if warnings.len() > 8
        || warnings
            .iter()
            .any(|w| w.as_str().is_none_or(|w| w.len() > 256))
    {
        return Err(format!("warnings beyond the caps: {warnings:?}"));
    }
    let mut obj = body["request"]["object"].clone();
    let Some(patch) = decoded_patch(&resp) else {
        if resp["response"].get("patch").is_some() {
            return Err("patch is not base64 JSONPatch".into());
        }
        return Ok((obj, None, warnings));
    };
    if resp["response"]["patchType"] != "JSONPatch" {
        return Err("patch without patchType JSONPatch".into());
    }
    json_patch::patch(&mut obj, &patch).map_err(|e| format!("patch does not apply: {e}"))?;
    Ok((obj, Some(patch), warnings))
}

fn pod_spec_of(obj: &Value) -> Value {
    rightsizer_core::workload::kind::kind_of_manifest(obj)
        .and_then(|k| obj.pointer(k.pod_paths().0).cloned())
        .unwrap_or(Value::Null)
}

/// (memory bytes, CPU millicores) requested and limited by a Pod, after Pod defaulting.
fn pod_totals(spec: &Value, r: rightsizer_core::quantity::Resource) -> (u64, u64) {
    let mut t = (0u64, 0u64);
    for c in spec["containers"].as_array().into_iter().flatten() {
        let get = |side: &str| {
            c["resources"][side][r.as_str()]
                .as_str()
                .and_then(|s| r.parse(s).ok())
        };
        let (q, l) = (get("requests"), get("limits"));
        t.0 = t.0.saturating_add(q.or(l).unwrap_or(0));
        t.1 = t.1.saturating_add(l.unwrap_or(0));
    }
    t
}

/// What the webhook added must be accepted: priority, GPU placement, Knative values, quota.
fn added_fields_accepted(
    case: &gen::Case,
    before: &Value,
    after: &Value,
    warnings_offline: bool,
) -> Result<(), String> {
    use rightsizer_core::cluster::ClassSource;
    let (b, a) = (pod_spec_of(before), pod_spec_of(after));
    let is_pod = after["kind"] == "Pod";
    if let Some(class) = a["priorityClassName"]
        .as_str()
        .filter(|_| a["priorityClassName"] != b["priorityClassName"])
    {
        let known = case.facts.priority_classes.get(class);
        match case.facts.class_source {
            ClassSource::Unknown => return Err(format!("class {class} set with no cluster view")),
            ClassSource::Cluster if known.is_none() => {
                return Err(format!("class {class} set but the cluster lacks it"))
            }
            // (Unless the warnings were cut at the cap; offline `mutate` keeps them all.)
            ClassSource::Offline if known.is_none() && !warnings_offline => {
                return Err(format!("offline class {class} set without a label"))
            }
            _ => {}
        }
        if let Some(info) = known {
            let p = &a["priority"];
            if (is_pod || !p.is_null()) && p.as_i64() != Some(i64::from(info.value)) {
                return Err(format!(
                    "priority {p} differs from class {class}'s {}",
                    info.value
                ));
            }
        }
    }
    let added = |ptr: &str| -> Vec<Value> {
        let had = b
            .pointer(ptr)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        a.pointer(ptr)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| !had.contains(v))
            .cloned()
            .collect()
    };
    for t in added("/tolerations") {
        let t: k8s_openapi::api::core::v1::Toleration =
            serde_json::from_value(t).map_err(|e| e.to_string())?;
        if let Some(e) = rightsizer_core::policy::apiserver::toleration_error(&t) {
            return Err(format!("added toleration refused: {e}"));
        }
    }
    let terms =
        "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms";
    for term in a
        .pointer(terms)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let term: k8s_openapi::api::core::v1::NodeSelectorTerm =
            serde_json::from_value(term.clone()).map_err(|e| e.to_string())?;
        if let Some(e) = rightsizer_core::policy::apiserver::term_error(&term) {
            return Err(format!("node-selector term refused: {e}"));
        }
    }
    for p in added("/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution") {
        let p: k8s_openapi::api::core::v1::PreferredSchedulingTerm =
            serde_json::from_value(p).map_err(|e| e.to_string())?;
        if !(1..=100).contains(&p.weight)
            || rightsizer_core::policy::apiserver::term_error(&p.preference).is_some()
        {
            return Err("added preferred term refused".into());
        }
    }
    if after["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("serving.knative.dev"))
    {
        knative_accepted(before, after)?;
    }
    if is_pod {
        let ns = rightsizer_core::cluster::ClusterFacts::namespace(&case.facts, case.namespace());
        for r in rightsizer_core::quantity::Resource::ALL {
            let (tb, ta) = (pod_totals(&b, r), pod_totals(&a, r));
            for q in &ns.quotas {
                for (key, before, after) in [("requests", tb.0, ta.0), ("limits", tb.1, ta.1)] {
                    let room = q.room.get(&format!("{key}.{}", r.as_str()));
                    if room.is_some_and(|room| after > before && after > *room) {
                        return Err(format!(
                            "{key}.{r} raised to {after} past quota room {room:?}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Knative's own checks on the template annotations and containerConcurrency, for values
/// that were not already there.
fn knative_accepted(before: &Value, after: &Value) -> Result<(), String> {
    let ann = |o: &Value| {
        o.pointer("/spec/template/metadata/annotations")
            .cloned()
            .unwrap_or(json!({}))
    };
    let (b, a) = (ann(before), ann(after));
    let num = |k: &str| a[k].as_str().and_then(|v| v.parse::<f64>().ok());
    let new = |k: &str| a.get(k).is_some() && a.get(k) != b.get(k);
    let key = |k: &str| format!("autoscaling.knative.dev/{k}");
    if new(&key("target")) && num(&key("target")).is_none_or(|t| t < 0.01) {
        return Err(format!("target {}", a[key("target")]));
    }
    let util = key("target-utilization-percentage");
    if new(&util) && num(&util).is_none_or(|u| !(1.0..=100.0).contains(&u)) {
        return Err(format!("utilization {}", a[util]));
    }
    let scale = |o: &Value, k: &str, old: &str| -> Option<Option<i32>> {
        match o.get(key(k)).or(o.get(key(old))) {
            None => Some(Some(0)),
            Some(v) => Some(v.as_str()?.parse::<i32>().ok()),
        }
    };
    let ok = |o: &Value| match (
        scale(o, "min-scale", "minScale"),
        scale(o, "max-scale", "maxScale"),
    ) {
        (Some(Some(lo)), Some(Some(hi))) => lo >= 0 && hi >= 0 && (hi == 0 || hi >= lo),
        _ => false,
    };
    if (new(&key("min-scale")) || new(&key("max-scale"))) && !ok(&a) {
        return Err(format!("scale bounds refused: {a}"));
    }
    let metric = key("metric");
    if new(&metric) {
        let class = a[key("class")]
            .as_str()
            .unwrap_or("kpa.autoscaling.knative.dev");
        let m = a[&metric].as_str().unwrap_or("");
        if class == "kpa.autoscaling.knative.dev" && !["concurrency", "rps"].contains(&m) {
            return Err(format!("metric {m} with class {class}"));
        }
    }
    let cc = "/spec/template/spec/containerConcurrency";
    if after.pointer(cc) != before.pointer(cc)
        && after
            .pointer(cc)
            .and_then(Value::as_u64)
            .is_none_or(|c| c > 1000)
    {
        return Err(format!("containerConcurrency {:?}", after.pointer(cc)));
    }
    Ok(())
}

/// Every invariant for one case; whether it was patched.
fn check_case(case: &gen::Case) -> Result<bool, String> {
    let a = case_admitter(case);
    let before = case.object().clone();
    let (after, patch, warnings) = answered(&a, &case.review)?;
    let Some(patch) = patch else {
        return Ok(false);
    };
    let offline_label = warnings.len() >= 8
        || warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("(offline)")));
    // What was valid stays valid: the user's own mistakes are not ours to fix.
    if invariants::strict_type(&before).is_ok() {
        invariants::strict_type(&after).map_err(|e| format!("patched object: {e}"))?;
    }
    invariants::canonical_patch(&patch)?;
    invariants::declared_writes(&before, &after)?;
    let ns = rightsizer_core::cluster::ClusterFacts::namespace(&case.facts, case.namespace());
    if invariants::limit_range_refusal(&before, &ns.limit_ranges).is_none() {
        if let Some(e) = invariants::limit_range_refusal(&after, &ns.limit_ranges) {
            return Err(format!(
                "the apiserver would refuse the patched object: {e}"
            ));
        }
    }
    added_fields_accepted(case, &before, &after, offline_label)?;
    // The QoS class of a Pod is not changed unless explicit overrides say so (of objects
    // the apiserver would accept: a request above its limit is the user's to fix).
    let explicit = case.policies.contains("overrides")
        || serde_json::to_string(&before).is_ok_and(|t| t.contains("rightsizer.io/overrides"));
    if invariants::resource_rules(&before, &[]).is_ok() {
        invariants::qos_kept(&before, &after, explicit)?;
    }
    let mut again = case.review.clone();
    again["request"]["object"] = after;
    let (_, second, _) = answered(&a, &again)?;
    if let Some(p) = second {
        return Err(format!(
            "second pass patches: {}",
            serde_json::to_string(&p).unwrap()
        ));
    }
    Ok(true)
}

/// Seeds that once found a bug (with the generator of their day): always replayed.
const FOUND: [(u64, &str); 6] = [
    (
        1013568,
        "an 8Ei memory limit with a LimitRange ratio of 3 got a request that broke the ratio by f64 rounding",
    ),
    (
        1592599136,
        "a container with an unreadable memory request was left out of the quota sums, hiding its limit",
    ),
    (
        50130600,
        "a default CPU request broke the Pod maxLimitRequestRatio against the LimitRange's default limit",
    ),
    (
        90028973,
        "an override's CPU request of 0 was written under a maxLimitRequestRatio (zero breaks any ratio)",
    ),
    (
        1593075104,
        "a limit-only container got a request below the LimitRange min from the ratio fit",
    ),
    (
        1592615230,
        "the Pod's CPU total for priority rules overflowed (a panic in debug builds)",
    ),
];

#[test]
fn fuzz_seeds_that_found_bugs() {
    for (seed, what) in FOUND {
        if let Err(e) = check_case(&gen::case(seed)) {
            panic!("seed {seed} ({what}): {e}");
        }
    }
}

#[test]
fn fuzz_generated_reviews_hold_every_invariant() {
    let cases = env_u64("RIGHTSIZER_FUZZ_CASES", 2000);
    let first = env_u64("RIGHTSIZER_FUZZ_SEED", 0x5eed_0000);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let started = std::time::Instant::now();
    let patched = std::sync::atomic::AtomicU64::new(0);
    // Failures beyond the messages kept.
    let failing = std::sync::atomic::AtomicU64::new(0);
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (patched, failing) = (&patched, &failing);
                s.spawn(move || {
                    let mut failed = Vec::new();
                    let mut seed = first + t;
                    // Every case runs (the count is the count); the first 20 failures are kept.
                    while seed < first + cases {
                        let outcome = std::panic::catch_unwind(|| check_case(&gen::case(seed)));
                        match outcome {
                            Ok(Ok(p)) => {
                                patched.fetch_add(u64::from(p), std::sync::atomic::Ordering::Relaxed);
                            }
                            Ok(Err(e)) if cases <= 10 => {
                                // Replaying a few seeds: show the whole case.
                                let c = gen::case(seed);
                                failed.push(format!(
                                    "seed {seed}: {e}\nobject: {}\npolicies: {}\nfacts: {:?}\nsnapshot: {}",
                                    c.object(), c.policies, c.facts, c.snapshot
                                ))
                            }
                            Ok(Err(e)) => failed.push(format!("seed {seed}: {e}")),
                            Err(_) => failed.push(format!("seed {seed}: panicked")),
                        }
                        if failed.len() > 20 {
                            failing.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            failed.truncate(20);
                        }
                        seed += threads;
                    }
                    failed
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let failing = failing.into_inner() + failures.len() as u64;
    eprintln!(
        "fuzz: {cases} cases ({} patched, {failing} failing) from seed {first} in {:.1} s on {threads} threads",
        patched.into_inner(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{failing} failing cases; the first:\n{}",
        failures.join("\n")
    );
}
