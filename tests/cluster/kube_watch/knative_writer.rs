//! The Knative writer against the real v1.20.2 apiserver, as the webhook's ServiceAccount
//! with the rights of deploy/overlays/updater, on a minimal Knative Service CRD: a Service
//! without values gets rightsizer's by server-side apply (managedFields name
//! `rightsizer`); a user's value stays the user's, and a conflict is counted, never
//! forced; a policy without `knative.apply` gets nothing written.

use super::*;

use rightsizer::updater::knative::{KnativeWriter, Written};
use rightsizer_core::recommendation::NoRecommendations;

const NS: &str = "kw-kn";
const NS_OFF: &str = "kw-kn-off";
const TARGET: &str = "autoscaling.knative.dev/target";
const MIN_SCALE: &str = "autoscaling.knative.dev/min-scale";

/// A Knative Service CRD with a structural schema: the template's annotations and
/// containerConcurrency typed (so server-side apply tracks them field by field), the rest
/// preserved as it comes.
fn knative_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "services.serving.knative.dev"},
        "spec": {
            "group": "serving.knative.dev", "scope": "Namespaced",
            "names": {"kind": "Service", "plural": "services", "singular": "service", "listKind": "ServiceList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                        "template": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                                "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}},
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                                "containerConcurrency": {"type": "integer"}}}}}}},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]
        }
    })
}

fn service(ns: &str, name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"template": {
            "metadata": {"annotations": annotations},
            "spec": {"containers": [{"image": "registry.local/app:1"}]}}}
    })
}

fn resource() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "serving.knative.dev".into(),
        version: "v1".into(),
        api_version: "serving.knative.dev/v1".into(),
        kind: "Service".into(),
        plural: "services".into(),
    }
}

/// The user's own server-side apply (field manager `user`).
async fn user_applies(plane: &ControlPlane, svc: &Value) {
    let ns = svc["metadata"]["namespace"].as_str().unwrap();
    let name = svc["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(plane.client().await, ns, &resource());
    api.patch(name, &PatchParams::apply("user"), &Patch::Apply(svc))
        .await
        .expect("the user's apply");
}

async fn live(plane: &ControlPlane, ns: &str, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(plane.client().await, ns, &resource());
    serde_json::to_value(api.get(name).await.expect("the Service")).unwrap()
}

fn annotation(svc: &Value, key: &str) -> Option<String> {
    svc["spec"]["template"]["metadata"]["annotations"][key]
        .as_str()
        .map(String::from)
}

/// The managers holding the template annotation `key`.
fn holders(svc: &Value, key: &str) -> Vec<String> {
    svc["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e.pointer("/fieldsV1/f:spec/f:template/f:metadata/f:annotations")
                .and_then(|a| a.get(format!("f:{key}")))
                .is_some()
        })
        .filter_map(|e| e["manager"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn the_knative_writer_applies_only_rightsizers_fields_and_leaves_the_users_to_them() {
    let (_g, plane) = setup().await;
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&knative_crd().to_string()));
    plane.kubectl_ok(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=20s",
            "crd/services.serving.knative.dev",
        ],
        None,
    );
    namespace(plane, NS, &[("rightsizer.io/enabled", "true")]);
    namespace(plane, NS_OFF, &[("rightsizer.io/enabled", "true")]);
    let on = format!("precedence: 5\nmode: enforce\ntarget: templates\nselector:\n  namespaces: [{NS}]\nknative:\n  target: 8\n  minScale: 1\n  containerConcurrency: 12\n  apply: true\n");
    let off = format!("precedence: 5\nmode: enforce\ntarget: templates\nselector:\n  namespaces: [{NS_OFF}]\nknative:\n  target: 8\n");
    for (name, p) in [("kw-kn-on", &on), ("kw-kn-off", &off)] {
        let cm = serde_json::to_string(&policy_cm(name, "rightsizer-system", p)).unwrap();
        plane.kubectl_ok(&["-n", "rightsizer-system", "apply", "-f", "-"], Some(&cm));
    }
    // No values; the user's own target; a target admission wrote at create (recorded as
    // rightsizer's, yet held by the user's manager, as admission's writes are).
    user_applies(plane, &service(NS, "plain", json!({}))).await;
    user_applies(plane, &service(NS, "mine", json!({TARGET: "20"}))).await;
    let recorded = json!({TARGET: "10", "rightsizer.io/sized": "{\"autoscaling.knative.dev\":{\"target\":\"10\"}}"});
    user_applies(plane, &service(NS, "recorded", recorded)).await;
    user_applies(plane, &service(NS_OFF, "untouched", json!({}))).await;

    let r = sa_replica(plane, "knative-writer").await;
    until(Duration::from_secs(5), || {
        (r.handles.leader.is_leader()
            && policy_precedence(&r.policies, "kw-kn-on") == Some(5)
            && policy_precedence(&r.policies, "kw-kn-off") == Some(5)
            && r.handles.opted_in("rightsizer-system")(NS)
            && r.handles.opted_in("rightsizer-system")(NS_OFF))
        .then_some(())
    })
    .await
    .expect("leader, policies and namespaces loaded");
    let admitter = Arc::new(Admitter::new(
        r.policies.clone(),
        Arc::new(NoRecommendations),
        r.handles.facts.clone(),
        AdmitConfig {
            enforcement: true,
            own_namespace: Some("rightsizer-system".into()),
        },
    ));
    let mut registry = Registry::default();
    let writer = KnativeWriter::new(
        plane.client_as(cluster::WEBHOOK_USER).await,
        admitter,
        r.handles.recorder.clone(),
        r.handles.leader.clone(),
        Box::new(r.handles.opted_in("rightsizer-system")),
        &mut registry,
    );

    // Without the overlay's rights it says so (what `/readyz` reports).
    let why = writer.check_access().await.expect("access review").unwrap();
    assert!(why.contains("deploy/overlays/updater"), "{why}");
    let rbac = cluster::repo_root().join("deploy/overlays/updater/rbac-updater.yaml");
    let rbac = rbac.to_str().unwrap();
    plane.kubectl_ok(&["apply", "-f", rbac], None);
    let mut access = None;
    for _ in 0..40 {
        access = Some(writer.check_access().await.expect("access review"));
        if access == Some(None) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let first = writer.pass().await;
    let second = writer.pass().await;
    let third = writer.pass().await;
    let plain = live(plane, NS, "plain").await;
    let mine = live(plane, NS, "mine").await;
    let rec = live(plane, NS, "recorded").await;
    let untouched = live(plane, NS_OFF, "untouched").await;
    let refused = writer.refused(NS, "recorded");
    let text = metrics(&registry);
    plane.kubectl_ok(&["delete", "-f", rbac], None);
    let events: Api<Event> = Api::namespaced(plane.client().await, NS);
    let reasons = until_async(Duration::from_secs(5), || {
        let events = events.clone();
        async move {
            let got: Vec<(String, String)> =
                (events.list(&ListParams::default()).await.ok()?.items)
                    .into_iter()
                    .filter(|e| {
                        e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("rightsizer")
                    })
                    .map(|e| {
                        (
                            e.involved_object.name.unwrap_or_default(),
                            e.reason.unwrap_or_default(),
                        )
                    })
                    .collect();
            (got.len() >= 3).then_some(got)
        }
    })
    .await;
    r.handles.shutdown().await.unwrap();

    assert_eq!(access, Some(None), "the overlay's rights are seen");
    let sorted = |mut v: Vec<(String, Written)>| {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    // First pass: an apply per Service of the opted-in policy; the one whose recorded
    // target the user's manager holds is refused whole (no force).
    assert_eq!(
        sorted(first.expect("first pass")),
        [
            (format!("{NS}/mine"), Written::Applied),
            (format!("{NS}/plain"), Written::Applied),
            (format!("{NS}/recorded"), Written::Conflict),
        ]
    );
    // Second: the refused target left out, the rest of rightsizer's values go through.
    assert_eq!(
        second.expect("second pass"),
        [(format!("{NS}/recorded"), Written::Applied)]
    );
    // Third: everything carries its values: nothing is sent.
    assert_eq!(third.expect("third pass"), []);

    assert_eq!(annotation(&plain, TARGET).as_deref(), Some("8"));
    assert_eq!(annotation(&plain, MIN_SCALE).as_deref(), Some("1"));
    assert_eq!(
        plain["spec"]["template"]["spec"]["containerConcurrency"],
        json!(12)
    );
    assert_eq!(holders(&plain, TARGET), ["rightsizer"]);
    // The user's own target stays theirs; rightsizer adds what the user left open.
    assert_eq!(annotation(&mine, TARGET).as_deref(), Some("20"));
    assert_eq!(holders(&mine, TARGET), ["user"]);
    assert_eq!(annotation(&mine, MIN_SCALE).as_deref(), Some("1"));
    assert_eq!(holders(&mine, MIN_SCALE), ["rightsizer"]);
    // The conflict: counted, remembered, the value not taken over.
    assert_eq!(annotation(&rec, TARGET).as_deref(), Some("10"));
    assert_eq!(holders(&rec, TARGET), ["user"]);
    assert_eq!(annotation(&rec, MIN_SCALE).as_deref(), Some("1"));
    assert_eq!(refused.into_iter().collect::<Vec<_>>(), [TARGET]);
    assert!(
        text.contains("rightsizer_knative_writes_total{outcome=\"conflict\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("rightsizer_knative_writes_total{outcome=\"applied\"} 3"),
        "{text}"
    );
    // Without `knative.apply`, nothing is written.
    assert_eq!(annotation(&untouched, TARGET), None);
    assert!(holders(&untouched, MIN_SCALE).is_empty());
    let reasons = reasons.expect("the writer's Events");
    assert!(
        reasons.contains(&("plain".into(), "KnativeValuesApplied".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("recorded".into(), "KnativeValueLeftToUser".into())),
        "{reasons:?}"
    );
}
