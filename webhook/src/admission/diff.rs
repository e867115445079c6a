//! JSON Patch from the object as received to the object as sized.
//!
//! Same operations, in the same order, as `json_patch::diff`, but equal subtrees are
//! skipped before a path is built for them: sizing touches a few fields, and building
//! (and escaping) a JSON pointer for every unchanged field was a fifth of a review's
//! cost in the profile. Only the parts the merge may write are compared (the merge
//! copies just those, [`Written`]): walking and comparing the rest of the object, equal
//! by construction, was another tenth.

use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use jsonptr::PointerBuf;
use serde_json::{Map, Value};

use rightsizer_core::sizing::written::{Part, Written};

/// The patch that makes `from` (the object the merge read) what `written` says its
/// writable parts should be: the same operations as a whole-object diff to the object
/// with those parts put back (`Written::apply_to`), since nothing else differs.
pub fn diff_written(from: &Value, written: &Written) -> Patch {
    let mut ops = Vec::new();
    let mut path = PointerBuf::new();
    sparse(
        from,
        written.value(),
        written,
        &mut Vec::new(),
        &mut path,
        &mut ops,
    );
    Patch(ops)
}

/// `to` holds, of an object on the way to writable parts, only the keys on the way:
/// the keys it lacks are unchanged, not removed.
fn sparse<'a>(
    from: &'a Value,
    to: &'a Value,
    written: &Written,
    at: &mut Vec<&'a str>,
    path: &mut PointerBuf,
    ops: &mut Vec<PatchOperation>,
) {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) if written.part(at) == Part::Way => {
            for (key, new) in b {
                path.push_back(key);
                at.push(key);
                match a.get(key) {
                    Some(old) => sparse(old, new, written, at, path, ops),
                    None => ops.push(PatchOperation::Add(AddOperation {
                        path: path.clone(),
                        value: new.clone(),
                    })),
                }
                at.pop();
                path.pop_back();
            }
            // A writable part a writer removed (the others were not copied).
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                at.push(key);
                let writable = written.part(at) != Part::Outside;
                at.pop();
                if writable {
                    path.push_back(key);
                    ops.push(PatchOperation::Remove(RemoveOperation {
                        path: path.clone(),
                    }));
                    path.pop_back();
                }
            }
        }
        _ => walk(from, to, path, ops),
    }
}

/// The whole-object diff, kept as the reference `diff_written` must agree with.
#[cfg(test)]
pub fn diff(from: &Value, to: &Value) -> Patch {
    let mut ops = Vec::new();
    let mut path = PointerBuf::new();
    walk(from, to, &mut path, &mut ops);
    Patch(ops)
}

fn walk(from: &Value, to: &Value, path: &mut PointerBuf, ops: &mut Vec<PatchOperation>) {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => object(a, b, path, ops),
        (Value::Array(a), Value::Array(b)) => array(a, b, path, ops),
        _ if from == to => {}
        _ => ops.push(PatchOperation::Replace(ReplaceOperation {
            path: path.clone(),
            value: to.clone(),
        })),
    }
}

fn object(
    from: &Map<String, Value>,
    to: &Map<String, Value>,
    path: &mut PointerBuf,
    ops: &mut Vec<PatchOperation>,
) {
    for (key, new) in to {
        match from.get(key) {
            Some(old) if old == new => {}
            Some(old) => {
                path.push_back(key);
                walk(old, new, path, ops);
                path.pop_back();
            }
            None => {
                path.push_back(key);
                ops.push(PatchOperation::Add(AddOperation {
                    path: path.clone(),
                    value: new.clone(),
                }));
                path.pop_back();
            }
        }
    }
    for key in from.keys().filter(|k| !to.contains_key(*k)) {
        path.push_back(key);
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: path.clone(),
        }));
        path.pop_back();
    }
}

fn array(from: &[Value], to: &[Value], path: &mut PointerBuf, ops: &mut Vec<PatchOperation>) {
    // Removals shift later elements down: each removal's index is the first one left.
    let mut removed = 0usize;
    for i in 0..from.len().max(to.len()) {
        match (from.get(i), to.get(i)) {
            (Some(old), Some(new)) if old == new => {}
            (Some(old), Some(new)) => {
                path.push_back(i - removed);
                walk(old, new, path, ops);
                path.pop_back();
            }
            (Some(_), None) => {
                path.push_back(i - removed);
                ops.push(PatchOperation::Remove(RemoveOperation {
                    path: path.clone(),
                }));
                path.pop_back();
                removed += 1;
            }
            (None, Some(new)) => {
                path.push_back(i - removed);
                ops.push(PatchOperation::Add(AddOperation {
                    path: path.clone(),
                    value: new.clone(),
                }));
                path.pop_back();
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The same patch as `json_patch::diff` on shapes sizing produces (and some it does
    /// not), and applying it gives the target.
    #[test]
    fn same_as_json_patch_diff() {
        let cases = [
            (json!({"a": 1}), json!({"a": 1})),
            (
                json!({"a": 1, "b": {"c": [1, 2, 3]}}),
                json!({"a": 2, "b": {"c": [1, 3]}, "d": "x"}),
            ),
            (json!([1, 2, 3, 4]), json!([1])),
            (json!([1]), json!([1, {"x": 1}, 3])),
            (
                json!({"a/b": {"~k": 1}, "z": null}),
                json!({"a/b": {"~k": 2}}),
            ),
            (
                json!({"spec": {"containers": [{"name": "app", "resources": {}}, {"name": "s"}]}}),
                json!({"spec": {"containers": [{"name": "app", "resources": {"requests": {"memory": "1Gi"}}}, {"name": "s", "resources": {"limits": {"cpu": "1"}}}]},
                    "metadata": {"annotations": {"rightsizer.io/sized": "{}"}}}),
            ),
            (json!("x"), json!({"a": 1})),
        ];
        for (from, to) in cases {
            let ours = diff(&from, &to);
            assert_eq!(ours, json_patch::diff(&from, &to), "{from} -> {to}");
            let mut applied = from.clone();
            json_patch::patch(&mut applied, &ours).unwrap();
            assert_eq!(applied, to);
        }
    }

    /// Diffing only the written parts gives the patch the whole-object diff gives, for
    /// changes, additions and removals of writable parts, on templates and Pods (with and
    /// without metadata, and with a path that is not an object).
    #[test]
    fn written_parts_give_the_whole_patch() {
        use rightsizer_core::object::View;
        use rightsizer_core::workload::kind::WorkloadKind;
        type Edit = fn(&mut Value);
        let deploy = json!({"kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "b"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "app", "image": "x"}],
                "tolerations": [{"key": "k"}], "volumes": []}}}});
        let pod = json!({"kind": "Pod", "metadata": {"name": "p", "annotations": {"x": "1"}},
            "spec": {"containers": [{"name": "app", "resources": {}}], "nodeName": ""}, "status": {}});
        let edits: [(WorkloadKind, &Value, Edit); 6] = [
            (WorkloadKind::Deployment, &deploy, |_| {}),
            (WorkloadKind::Deployment, &deploy, |v| {
                v["spec"]["template"]["spec"]["containers"][0]["resources"] =
                    json!({"requests": {"cpu": "1"}});
                v["spec"]["template"]["metadata"] =
                    json!({"annotations": {"rightsizer.io/sized": "{}"}});
                v["metadata"]["annotations"] = json!({"r": "x"});
            }),
            (WorkloadKind::Deployment, &deploy, |v| {
                let spec = v["spec"]["template"]["spec"].as_object_mut().unwrap();
                spec.remove("tolerations");
                spec.insert("priorityClassName".into(), json!("high"));
                spec.insert("priority".into(), json!(1000));
            }),
            (WorkloadKind::Pod, &pod, |v| {
                v["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove("x");
                v["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "1Gi"}});
                v["spec"]["affinity"] = json!({"nodeAffinity": {}});
            }),
            (WorkloadKind::Pod, &pod, |v| {
                v["metadata"].as_object_mut().unwrap().remove("annotations");
            }),
            (WorkloadKind::Pod, &pod, |v| {
                v["metadata"]["annotations"] = json!("not a map")
            }),
        ];
        for (i, (kind, obj, edit)) in edits.into_iter().enumerate() {
            let view = View::new(kind, "ns", obj).expect("view");
            let mut w = Written::of(obj, &view);
            let all: Vec<_> = rightsizer_core::sizing::written::WRITERS
                .map(|(_, f)| f)
                .into();
            w.write(&all, edit);
            let mut whole = (*obj).clone();
            w.clone().apply_to(&mut whole);
            assert_eq!(diff_written(obj, &w), diff(obj, &whole), "case {i}");
        }
    }
}
