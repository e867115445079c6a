//! The parts of an object the merge may write, copied out of it.
//!
//! The merge used to work on a copy of the whole object, and the caller diffed the two
//! whole trees to find the change: copy and diff were a sixth of a Pod review in the
//! profile. The writers (containers, placement, GPU, priority, Knative, the records) only
//! touch a few fields, listed in [`Written::part`]; only those are copied, inside objects
//! that hold just the keys on the way to them (in the received order), so the writers'
//! pointers still reach them and what they add lands where it would in the whole copy.
//! A writer must read from this copy only the fields it may write: anything else is
//! absent here (read it from the received object or the `View`).

use serde_json::{Map, Value};

use crate::object::View;

/// Keys of the pod spec a writer may write.
const SPEC_KEYS: &[&str] = &[
    "containers",
    "initContainers",
    "affinity",
    "tolerations",
    "priorityClassName",
    "priority",
    "preemptionPolicy",
    // Knative's concurrency bound, beside the containers in a Revision template.
    "containerConcurrency",
];

/// The writable parts of an object, as the merge left them.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The object cut down to the writable parts: the writers' pointers work on it.
    pub value: Value,
    /// The view's pointers as keys, split once: `part` runs for every key on the way.
    pod_spec: Vec<&'static str>,
    pod_meta: Vec<&'static str>,
}

/// What a node of the object is to the merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// Never written.
    Outside,
    /// On the way to writable parts (only those keys are copied).
    Way,
    /// Writable, or inside a writable part: copied whole.
    Whole,
}

impl Written {
    /// Copy the parts of `obj` the merge may write.
    pub fn of(obj: &Value, view: &View) -> Self {
        let mut w = Written {
            value: Value::Null,
            pod_spec: keys(view.pod_spec),
            pod_meta: keys(view.pod_meta),
        };
        w.value = w.copy(obj, &mut Vec::new());
        w
    }

    /// What the node at `at` (keys from the root) is.
    pub fn part(&self, at: &[&str]) -> Part {
        let spec = match relation(&self.pod_spec, at) {
            Rel::Below(k) if SPEC_KEYS.contains(&k) => Part::Whole,
            r => r.way(),
        };
        let annotations = |ptr: &[&str]| match relation(ptr, at) {
            Rel::Below("annotations") => Part::Whole,
            r => r.way(),
        };
        // Recommendations of a workload go on its own metadata (see `resize`).
        spec.max(annotations(&self.pod_meta))
            .max(annotations(&["metadata"]))
    }

    /// The whole object as sized: `obj` (the object this was copied from) with the
    /// writable parts replaced.
    pub fn apply_to(mut self, obj: &mut Value) {
        let value = std::mem::take(&mut self.value);
        self.overlay(obj, value, &mut Vec::new());
    }

    fn copy<'a>(&self, from: &'a Value, at: &mut Vec<&'a str>) -> Value {
        match from {
            Value::Object(m) if self.part(at) == Part::Way => {
                let mut out = Map::new();
                for (k, v) in m {
                    at.push(k);
                    if self.part(at) != Part::Outside {
                        out.insert(k.clone(), self.copy(v, at));
                    }
                    at.pop();
                }
                Value::Object(out)
            }
            // A node that is not an object on the way is copied whole: a writer that finds
            // it so replaces it, as it would in the whole object.
            _ => from.clone(),
        }
    }

    fn overlay(&self, full: &mut Value, part: Value, at: &mut Vec<String>) {
        let way = {
            let keys: Vec<&str> = at.iter().map(String::as_str).collect();
            self.part(&keys) == Part::Way
        };
        match (full, part) {
            (Value::Object(f), Value::Object(p)) if way => {
                // A writable part a writer removed.
                f.retain(|k, _| {
                    p.contains_key(k) || {
                        let mut keys: Vec<&str> = at.iter().map(String::as_str).collect();
                        keys.push(k);
                        self.part(&keys) == Part::Outside
                    }
                });
                for (k, v) in p {
                    at.push(k.clone());
                    match f.get_mut(&k) {
                        Some(slot) => self.overlay(slot, v, at),
                        None => {
                            f.insert(k, v);
                        }
                    }
                    at.pop();
                }
            }
            (full, part) => *full = part,
        }
    }
}

/// Where a node is relative to the node a pointer names.
enum Rel<'a> {
    /// On the way to it (or it).
    Above,
    /// Inside it, under this key.
    Below(&'a str),
    Apart,
}

impl Rel<'_> {
    fn way(&self) -> Part {
        match self {
            Rel::Above => Part::Way,
            _ => Part::Outside,
        }
    }
}

/// The keys of a view's pointer (fixed paths of plain keys: nothing to unescape).
fn keys(ptr: &'static str) -> Vec<&'static str> {
    ptr.split('/').skip(1).collect()
}

fn relation<'a>(ptr: &[&str], at: &[&'a str]) -> Rel<'a> {
    let mut tokens = ptr.iter();
    for (i, key) in at.iter().enumerate() {
        match tokens.next() {
            Some(t) if t == key => {}
            Some(_) => return Rel::Apart,
            None => return Rel::Below(at[i]),
        }
    }
    Rel::Above
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::kind::WorkloadKind;
    use serde_json::json;

    fn view(kind: WorkloadKind, obj: &Value) -> View {
        View::new(kind, "ns", obj).expect("view")
    }

    /// Only the writable parts are copied; what a writer changes there lands in the whole
    /// object, keys it removed included, and the rest is kept.
    #[test]
    fn copies_the_writable_parts_and_puts_them_back() {
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"a": "1"}},
                "spec": {"containers": [{"name": "app"}], "volumes": [], "tolerations": []}}}
        });
        let mut w = Written::of(&obj, &view(WorkloadKind::Deployment, &obj));
        assert_eq!(
            w.value,
            json!({"metadata": {}, "spec": {"template": {
                "metadata": {"annotations": {"a": "1"}},
                "spec": {"containers": [{"name": "app"}], "tolerations": []}}}})
        );
        let spec = w.value.pointer_mut("/spec/template/spec").unwrap();
        spec.as_object_mut().unwrap().remove("tolerations");
        spec["priorityClassName"] = json!("high");
        w.value["metadata"]["annotations"] = json!({"r": "x"});
        let mut want = obj.clone();
        let t = want.pointer_mut("/spec/template/spec").unwrap();
        t.as_object_mut().unwrap().remove("tolerations");
        t["priorityClassName"] = json!("high");
        want["metadata"]["annotations"] = json!({"r": "x"});
        let mut sized = obj.clone();
        w.apply_to(&mut sized);
        assert_eq!(sized, want);
    }
}
