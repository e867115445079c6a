//! The parts of an object the merge may write, copied out of it.
//!
//! The merge used to work on a copy of the whole object, and the caller diffed the two
//! whole trees to find the change: copy and diff were a sixth of a Pod review in the
//! profile. The writers (containers, placement, GPU, priority, Knative, the records) only
//! touch a few fields, each declared beside its writer (`WRITES`, a list of [`Field`]s)
//! and collected in [`WRITERS`]; only those are copied ([`Written::part`]), inside
//! objects that hold just the keys on the way to them (in the received order), so the
//! writers' pointers still reach them and what they add lands where it would in the
//! whole copy. A writer must read from this copy only the fields it may write: anything
//! else is absent here (read it from the received object or the `View`).
//!
//! A field a writer writes but does not declare would not be copied, and what the writer
//! put there would replace the user's value whole. So the merge writes only through
//! [`Written::write`], which in debug builds (every test and golden case) panics on a
//! change outside the fields the step's writers declare.

use serde_json::{Map, Value};

use super::field::Field;
use super::{containers, gpu, knative, priority, record};
use crate::object::View;

/// Every writer of the merge (its module) with the fields it declares there: the merge
/// copies these and nothing else. A test checks that every module of `sizing` that
/// declares `WRITES` is listed.
pub const WRITERS: [(&str, &[Field]); 5] = [
    ("containers", containers::WRITES),
    ("record", record::WRITES),
    ("gpu", gpu::WRITES),
    ("priority", priority::WRITES),
    ("knative", knative::WRITES),
];

/// Whether a registered writer declares the pod spec key `key`.
fn spec_key(key: &str) -> bool {
    WRITERS
        .iter()
        .flat_map(|(_, fields)| fields.iter())
        .any(|f| matches!(f, Field::Spec(k) if *k == key))
}

/// Whether a registered writer declares `field`.
fn registered(field: Field) -> bool {
    WRITERS.iter().any(|(_, fields)| fields.contains(&field))
}

/// The writable parts of an object, as the merge left them.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The object cut down to the writable parts: the writers' pointers work on it.
    value: Value,
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

    /// The writable parts as the merge left them.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Run one step of the merge on the writable parts. `writes`: the fields of the
    /// writers the step runs (their `WRITES`). In debug builds a change outside them,
    /// or outside what [`WRITERS`] registers, panics with its pointer.
    pub fn write<R>(&mut self, writes: &[&[Field]], step: impl FnOnce(&mut Value) -> R) -> R {
        #[cfg(debug_assertions)]
        let before = self.value.clone();
        let out = step(&mut self.value);
        #[cfg(debug_assertions)]
        if let Some(at) = self.undeclared(writes.iter().copied().flatten(), &before, &self.value) {
            panic!("the merge wrote {at}, which none of its writers declares");
        }
        #[cfg(not(debug_assertions))]
        let _ = writes;
        out
    }

    /// The first pointer where `after` differs from `before` (the copy or the whole
    /// object, before and after writing) outside every field registered in [`WRITERS`].
    pub fn undeclared_change(&self, before: &Value, after: &Value) -> Option<String> {
        let all = WRITERS.iter().flat_map(|(_, fields)| fields.iter());
        self.undeclared(all, before, after)
    }

    fn undeclared<'f>(
        &self,
        fields: impl Iterator<Item = &'f Field>,
        before: &Value,
        after: &Value,
    ) -> Option<String> {
        let paths: Vec<Vec<&str>> = fields
            .filter(|f| registered(**f))
            .map(|f| self.path(*f))
            .collect();
        outside(&paths, Some(before), Some(after), &mut Vec::new())
    }

    /// The keys from the root to a field, for this object.
    fn path(&self, field: Field) -> Vec<&'static str> {
        let (base, key) = match field {
            Field::Spec(k) => (&self.pod_spec[..], k),
            Field::PodAnnotations => (&self.pod_meta[..], "annotations"),
            Field::Annotations => (&["metadata"][..], "annotations"),
        };
        base.iter().copied().chain([key]).collect()
    }

    /// What the node at `at` (keys from the root) is.
    pub fn part(&self, at: &[&str]) -> Part {
        let spec = match relation(&self.pod_spec, at) {
            Rel::Below(k) if spec_key(k) => Part::Whole,
            r => r.way(),
        };
        let annotations = |ptr: &[&str], field| match relation(ptr, at) {
            Rel::Below("annotations") if registered(field) => Part::Whole,
            r => r.way(),
        };
        // Recommendations of a workload go on its own metadata (see `resize`).
        spec.max(annotations(&self.pod_meta, Field::PodAnnotations))
            .max(annotations(&["metadata"], Field::Annotations))
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

/// The first node where `before` and `after` differ (at or below `at`) that is neither
/// inside one of `fields` nor an object on the way to one, as a JSON pointer.
fn outside<'a>(
    fields: &[Vec<&str>],
    before: Option<&'a Value>,
    after: Option<&'a Value>,
    at: &mut Vec<&'a str>,
) -> Option<String> {
    if before == after || fields.iter().any(|f| at.starts_with(f)) {
        return None;
    }
    let on_the_way = fields.iter().any(|f| f.starts_with(at));
    // A missing node on the way counts as an empty object (a writer may create it).
    let keys = |v: Option<&'a Value>| match v {
        None => Some(Vec::new()),
        Some(Value::Object(m)) => Some(m.keys().map(String::as_str).collect()),
        Some(_) => None,
    };
    let (Some(b), Some(a), true) = (keys(before), keys(after), on_the_way) else {
        return Some(
            at.iter()
                .map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1")))
                .collect(),
        );
    };
    for k in b.into_iter().chain(a) {
        at.push(k);
        let found = outside(
            fields,
            before.and_then(|v| v.get(k)),
            after.and_then(|v| v.get(k)),
            at,
        );
        at.pop();
        if found.is_some() {
            return found;
        }
    }
    None
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

    /// A change outside every declared field is found, with its pointer; changes inside
    /// declared fields (and objects created on the way to them) are not.
    #[test]
    fn finds_a_change_no_writer_declares() {
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {
                "spec": {"containers": [{"name": "app"}], "volumes": [{"name": "v"}]}}}
        });
        let w = Written::of(&obj, &view(WorkloadKind::Deployment, &obj));
        type Edit = fn(&mut Value);
        let cases: [(Edit, Option<&str>); 7] = [
            (|_| {}, None),
            (
                |v| {
                    v["spec"]["template"]["spec"]["containers"][0]["resources"] =
                        json!({"limits": {"cpu": "1"}});
                    v["spec"]["template"]["metadata"] = json!({"annotations": {"a": "1"}});
                    v["metadata"]["annotations"] = json!({"r": "x"});
                    v["spec"]["template"]["spec"]["priorityClassName"] = json!("high");
                },
                None,
            ),
            (
                |v| v["spec"]["template"]["spec"]["volumes"] = json!([]),
                Some("/spec/template/spec/volumes"),
            ),
            (
                |v| v["spec"]["template"]["spec"]["nodeName"] = json!("n"),
                Some("/spec/template/spec/nodeName"),
            ),
            (
                |v| v["metadata"]["labels"] = json!({}),
                Some("/metadata/labels"),
            ),
            (
                |v| v["spec"]["template"]["metadata"] = json!({"labels": {}}),
                Some("/spec/template/metadata/labels"),
            ),
            (
                |v| v["spec"]["template"] = json!(null),
                Some("/spec/template"),
            ),
        ];
        for (i, (edit, want)) in cases.into_iter().enumerate() {
            // On the copy, as the merge's steps write it, and on the whole object.
            let mut copy = w.value().clone();
            edit(&mut copy);
            assert_eq!(
                w.undeclared_change(w.value(), &copy).as_deref(),
                want,
                "case {i}"
            );
            let mut whole = obj.clone();
            edit(&mut whole);
            assert_eq!(
                w.undeclared_change(&obj, &whole).as_deref(),
                want,
                "case {i}"
            );
        }
    }

    /// A step that writes a field its own writers do not declare panics in debug builds,
    /// even when another writer declares it.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "the merge wrote /spec/template/spec/tolerations")]
    fn a_step_writing_past_its_writers_panics() {
        let obj = json!({"kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": []}}}});
        let mut w = Written::of(&obj, &view(WorkloadKind::Deployment, &obj));
        w.write(&[priority::WRITES], |v| {
            v["spec"]["template"]["spec"]["priorityClassName"] = json!("high");
            v["spec"]["template"]["spec"]["tolerations"] = json!([]);
        });
    }

    /// The sources of the merge's modules (`sizing/mod.rs` lists them: checked below).
    const SOURCES: [(&str, &str); 18] = [
        ("containers", include_str!("containers.rs")),
        ("control", include_str!("control.rs")),
        ("explicit", include_str!("explicit.rs")),
        ("field", include_str!("field.rs")),
        ("gpu", include_str!("gpu.rs")),
        ("jvm", include_str!("jvm.rs")),
        ("knative", include_str!("knative.rs")),
        ("knative_writes", include_str!("knative_writes.rs")),
        ("limits", include_str!("limits.rs")),
        ("load", include_str!("load.rs")),
        ("nodes", include_str!("nodes.rs")),
        ("placement", include_str!("placement.rs")),
        ("pod", include_str!("pod.rs")),
        ("priority", include_str!("priority.rs")),
        ("record", include_str!("record.rs")),
        ("resize", include_str!("resize.rs")),
        ("resources", include_str!("resources.rs")),
        ("written", include_str!("written.rs")),
    ];

    /// Every module of the merge that declares what it writes is registered in
    /// [`WRITERS`] (else its fields would not be copied), and every registered one does.
    #[test]
    fn every_declared_writer_is_registered() {
        let mut modules: Vec<&str> = include_str!("mod.rs")
            .lines()
            .filter_map(|l| {
                let l = l
                    .strip_prefix("pub(crate) mod ")
                    .or(l.strip_prefix("pub mod "))?;
                l.strip_suffix(';')
            })
            .collect();
        modules.sort_unstable();
        let sources: Vec<&str> = SOURCES.iter().map(|s| s.0).collect();
        assert_eq!(modules, sources, "SOURCES lists every module of sizing");
        let declaration = format!("pub const {}: &[Field]", "WRITES");
        let declaring: Vec<&str> = SOURCES
            .iter()
            .filter(|s| s.1.contains(&declaration))
            .map(|s| s.0)
            .collect();
        let mut registered: Vec<&str> = WRITERS.iter().map(|w| w.0).collect();
        registered.sort_unstable();
        assert_eq!(declaring, registered);
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
