//! The Knative writer's decision (issue 22): which of rightsizer's own Knative settings
//! to send to a Service with server-side apply, under rightsizer's field manager.
//!
//! The values are the ones admission would write (the same merge, run on the live
//! Service with rightsizer's applied fields taken out, so it revises its own values);
//! this module only picks the fields: the autoscaling annotations of the template and
//! `containerConcurrency`, never anything else. A field the apiserver refused with a
//! conflict (another manager owns it: the user's) is not tried again.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::knative::{MAX_SCALE, METRIC, MIN_SCALE, TARGET, UTILIZATION};

/// The field manager rightsizer applies under.
pub const MANAGER: &str = "rightsizer";

/// The settings the writer may own: annotation keys, and `containerConcurrency`.
pub const FIELDS: [&str; 6] = [
    TARGET,
    UTILIZATION,
    MIN_SCALE,
    MAX_SCALE,
    METRIC,
    CONCURRENCY,
];
const CONCURRENCY: &str = "containerConcurrency";

fn pointer(field: &str) -> String {
    if field == CONCURRENCY {
        "/spec/template/spec/containerConcurrency".into()
    } else {
        // JSON pointer escape of '/' in the annotation key.
        format!(
            "/spec/template/metadata/annotations/{}",
            field.replace('~', "~0").replace('/', "~1")
        )
    }
}

/// The field's value in `obj` as text (`None`: absent).
fn value_of(obj: &Value, field: &str) -> Option<String> {
    match obj.pointer(&pointer(field))? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        v => Some(v.to_string()),
    }
}

/// The settings `manager` holds by an apply, from the object's `metadata.managedFields`.
pub fn owned_by(obj: &Value, manager: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let entries = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array);
    for e in entries.into_iter().flatten() {
        let ours = e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply");
        let Some(t) = e
            .get("fieldsV1")
            .and_then(|f| f.pointer("/f:spec/f:template"))
        else {
            continue;
        };
        if !ours {
            continue;
        }
        for f in FIELDS {
            let at = if f == CONCURRENCY {
                t.pointer("/f:spec/f:containerConcurrency")
            } else {
                t.pointer("/f:metadata/f:annotations")
                    .and_then(|a| a.get(format!("f:{f}")))
            };
            if at.is_some() {
                out.insert(f.to_string());
            }
        }
    }
    out
}

/// The Service as admission would see it without what rightsizer applied: its own
/// values are taken out so the merge computes them afresh instead of keeping them as
/// the user's.
pub fn without(obj: &Value, owned: &BTreeSet<String>) -> Value {
    let mut o = obj.clone();
    for f in owned {
        let p = pointer(f);
        let (parent, key) = p.rsplit_once('/').unwrap_or(("", ""));
        let key = key.replace("~1", "/").replace("~0", "~");
        if let Some(m) = o.pointer_mut(parent).and_then(Value::as_object_mut) {
            m.remove(&key);
        }
    }
    o
}

/// What to apply: the settings rightsizer keeps, with their values.
#[derive(Debug, Clone, PartialEq)]
pub struct Apply {
    pub fields: Vec<(String, String)>,
    /// The fields whose value changes (what the Event names).
    pub changed: Vec<String>,
}

/// The apply for one Service, or `None` when its template already carries every value.
///
/// `live`: the Service; `sized`: what the merge writes for it (run on [`without`]);
/// `owned`: what rightsizer holds ([`owned_by`]); `refused`: fields a conflict showed to
/// be another manager's. A field is kept when rightsizer owns it or the merge writes a
/// value the template does not carry; an apply names every field rightsizer keeps (one
/// left out would be dropped from its ownership, and deleted where only it held it).
pub fn plan(
    live: &Value,
    sized: &Value,
    owned: &BTreeSet<String>,
    refused: &BTreeSet<String>,
) -> Option<Apply> {
    let mut fields = Vec::new();
    let mut changed = Vec::new();
    for f in FIELDS {
        if refused.contains(f) {
            continue;
        }
        let (have, want) = (value_of(live, f), value_of(sized, f));
        let Some(want) = want else { continue };
        // Knative leaves 0 (unbounded) when nothing bounds it: not a value to own.
        if f == CONCURRENCY && want == "0" {
            continue;
        }
        let differs = have.as_deref() != Some(want.as_str());
        if differs || owned.contains(f) {
            fields.push((f.to_string(), want));
        }
        if differs {
            changed.push(f.to_string());
        }
    }
    (!changed.is_empty()).then_some(Apply { fields, changed })
}

impl Apply {
    /// The apply body: the Service's identity and these fields only.
    pub fn body(&self, api_version: &str, namespace: &str, name: &str) -> Value {
        let mut ann = Map::new();
        let mut spec = Map::new();
        for (f, v) in &self.fields {
            if f == CONCURRENCY {
                let n: u64 = v.parse().unwrap_or(0);
                spec.insert(CONCURRENCY.into(), json!(n));
            } else {
                ann.insert(f.clone(), json!(v));
            }
        }
        let mut template = Map::new();
        if !ann.is_empty() {
            template.insert("metadata".into(), json!({ "annotations": ann }));
        }
        if !spec.is_empty() {
            template.insert("spec".into(), Value::Object(spec));
        }
        json!({
            "apiVersion": api_version,
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"template": template},
        })
    }

    /// The fields a 409's message names (the apiserver lists each conflicting path); all
    /// of them when it names none it can be matched to (never retried blindly).
    pub fn conflicts(&self, message: &str) -> BTreeSet<String> {
        let named: BTreeSet<String> = self
            .fields
            .iter()
            .map(|(f, _)| f.clone())
            .filter(|f| {
                let path = if f == CONCURRENCY {
                    ".spec.template.spec.containerConcurrency".to_string()
                } else {
                    format!(".spec.template.metadata.annotations.{f}")
                };
                message.contains(&path)
            })
            .collect();
        if named.is_empty() {
            self.fields.iter().map(|(f, _)| f.clone()).collect()
        } else {
            named
        }
    }
}

#[cfg(test)]
#[path = "knative_writes_tests.rs"]
mod tests;
