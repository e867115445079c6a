use super::*;

fn svc(ann: Value, cc: Option<u64>) -> Value {
    let mut spec = json!({"containers": [{"image": "app"}]});
    if let Some(c) = cc {
        spec["containerConcurrency"] = json!(c);
    }
    json!({"spec": {"template": {"metadata": {"annotations": ann}, "spec": spec}}})
}

fn set(fields: &[&str]) -> BTreeSet<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect()
}

/// (live, sized, owned, refused, the expected fields and changed ones)
type Case = (
    Value,
    Value,
    BTreeSet<String>,
    BTreeSet<String>,
    Option<(Vec<(String, String)>, Vec<&'static str>)>,
);

#[test]
fn only_values_the_template_lacks_or_rightsizer_owns_are_applied() {
    let cases: Vec<Case> = vec![
        // Nothing there: the merge's values are applied.
        (
            svc(json!({}), None),
            svc(json!({TARGET: "8"}), Some(12)),
            set(&[]),
            set(&[]),
            Some((
                pairs(&[(TARGET, "8"), (CONCURRENCY, "12")]),
                vec![TARGET, CONCURRENCY],
            )),
        ),
        // Already as wanted: nothing to send.
        (
            svc(json!({TARGET: "8"}), Some(12)),
            svc(json!({TARGET: "8"}), Some(12)),
            set(&[TARGET, CONCURRENCY]),
            set(&[]),
            None,
        ),
        // rightsizer revises its own target and keeps naming its concurrency.
        (
            svc(json!({TARGET: "8"}), Some(12)),
            svc(json!({TARGET: "6"}), Some(12)),
            set(&[TARGET, CONCURRENCY]),
            set(&[]),
            Some((pairs(&[(TARGET, "6"), (CONCURRENCY, "12")]), vec![TARGET])),
        ),
        // The user's value equal to the merge's (the merge keeps it): not taken over.
        (
            svc(json!({TARGET: "10"}), Some(5)),
            svc(json!({TARGET: "10", MIN_SCALE: "1"}), Some(5)),
            set(&[]),
            set(&[]),
            Some((pairs(&[(MIN_SCALE, "1")]), vec![MIN_SCALE])),
        ),
        // A field a conflict showed to be the user's is not tried again.
        (
            svc(json!({TARGET: "10"}), None),
            svc(json!({TARGET: "8"}), None),
            set(&[]),
            set(&[TARGET]),
            None,
        ),
        // Knative's unbounded 0 is no value to own.
        (
            svc(json!({}), None),
            svc(json!({}), Some(0)),
            set(&[]),
            set(&[]),
            None,
        ),
    ];
    for (i, (live, sized, owned, refused, want)) in cases.into_iter().enumerate() {
        let got = plan(&live, &sized, &owned, &refused);
        let want = want.map(|(fields, changed)| Apply {
            fields,
            changed: changed.into_iter().map(String::from).collect(),
        });
        assert_eq!(got, want, "case {i}");
    }
}

#[test]
fn ownership_is_read_from_rightsizers_apply_entries_only() {
    let obj = json!({"metadata": {"managedFields": [
        {"manager": "rightsizer", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {
            "f:metadata": {"f:annotations": {format!("f:{TARGET}"): {}}},
            "f:spec": {"f:containerConcurrency": {}}}}}},
        {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {
            "f:metadata": {"f:annotations": {format!("f:{MIN_SCALE}"): {}}}}}}},
        // An admission-time write under rightsizer's name would be an Update: not an apply.
        {"manager": "rightsizer", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {
            "f:metadata": {"f:annotations": {format!("f:{MAX_SCALE}"): {}}}}}}},
    ]}});
    assert_eq!(owned_by(&obj, MANAGER), set(&[TARGET, CONCURRENCY]));
    assert_eq!(owned_by(&obj, "kubectl"), set(&[MIN_SCALE]));
}

#[test]
fn rightsizers_own_values_are_taken_out_before_the_merge() {
    let live = svc(json!({TARGET: "8", MIN_SCALE: "1"}), Some(12));
    let out = without(&live, &set(&[TARGET, CONCURRENCY]));
    assert_eq!(out, {
        let mut s = svc(json!({MIN_SCALE: "1"}), None);
        s["spec"]["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove(CONCURRENCY);
        s
    });
}

#[test]
fn the_body_names_the_service_and_the_fields_only() {
    let a = Apply {
        fields: pairs(&[(TARGET, "8"), (CONCURRENCY, "12")]),
        changed: vec![TARGET.into()],
    };
    assert_eq!(
        a.body("serving.knative.dev/v1", "shop", "api"),
        json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"template": {
                "metadata": {"annotations": {TARGET: "8"}},
                "spec": {"containerConcurrency": 12}}},
        })
    );
}

#[test]
fn a_conflict_names_the_fields_it_refused() {
    let a = Apply {
        fields: pairs(&[(TARGET, "8"), (CONCURRENCY, "12")]),
        changed: vec![TARGET.into()],
    };
    // (the apiserver's message, the fields taken as the user's)
    let cases = [
        (
            "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.template.metadata.annotations.autoscaling.knative.dev/target",
            set(&[TARGET]),
        ),
        (
            "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.template.spec.containerConcurrency",
            set(&[CONCURRENCY]),
        ),
        ("something else", set(&[TARGET, CONCURRENCY])),
    ];
    for (msg, want) in cases {
        assert_eq!(a.conflicts(msg), want, "{msg}");
    }
}
