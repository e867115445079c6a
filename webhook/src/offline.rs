//! `rightsizer mutate`: what the webhook would make of manifests, without a cluster.
//! Reads multi-document YAML or JSON (or AdmissionReviews); Namespace, LimitRange and
//! PriorityClass objects in the input become the cluster facts for the others. With no
//! cluster to ask, a class the policy declares in `priority.classes` is set too, with a
//! warning that the cluster must have it (the webhook itself sets only watched classes).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use std::collections::BTreeMap;

use rightsizer_core::cluster::{ClassSource, NamespaceFacts, StaticFacts};
use rightsizer_core::object::OPT_IN_LABEL;
use rightsizer_core::policy::schema::Policy;
use rightsizer_core::recommendation::RecommendationSource;
use rightsizer_core::workload::kind::kind_of_manifest;
use rightsizer_core::workload::WorkloadKey;

use crate::admission::{AdmitConfig, Admitter, Outcome};
use crate::policies::store::PolicyStore;

pub mod changes;
pub mod preview;

/// Why the input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("document {index}: {message}")]
    Syntax { index: usize, message: String },
    #[error("document {index}: AdmissionReview has no request.object")]
    EmptyReview { index: usize },
}

/// One input object, with the namespace it is admitted into.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub object: Value,
    /// From the AdmissionReview's request.namespace, else metadata.namespace, else the default.
    pub namespace: String,
}

/// The result for one input object.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutated {
    pub object: Value,
    pub patch: json_patch::Patch,
    pub warnings: Vec<String>,
    /// Whether rightsizer looked at it (a handled kind in an unprotected namespace).
    pub handled: bool,
    /// Whose recommendations apply, when it was looked at.
    pub workload: Option<WorkloadKey>,
    /// The policy in force for it (composed from every matching one).
    pub policy: Option<Arc<Policy>>,
    /// Why an object of a handled kind was left alone.
    pub skipped: Option<String>,
}

/// Parse YAML/JSON documents; AdmissionReviews are replaced by their request object.
pub fn parse_documents(text: &str, default_namespace: &str) -> Result<Vec<Document>, InputError> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let v: Value = Value::deserialize(doc).map_err(|e| InputError::Syntax {
            index,
            message: e.to_string(),
        })?;
        if v.is_null() {
            continue;
        }
        // A `kind: List` (kubectl get -o yaml) holds its objects in items.
        if v.get("kind").and_then(Value::as_str) == Some("List") {
            for item in v
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push(document(item.clone(), None, default_namespace));
            }
            continue;
        }
        if v.get("kind").and_then(Value::as_str) == Some("AdmissionReview") {
            let req = v.get("request");
            let obj = req
                .and_then(|r| r.get("object"))
                .filter(|o| !o.is_null())
                .ok_or(InputError::EmptyReview { index })?;
            let ns = req.and_then(|r| r.get("namespace")).and_then(Value::as_str);
            out.push(document(obj.clone(), ns, default_namespace));
            continue;
        }
        out.push(document(v, None, default_namespace));
    }
    Ok(out)
}

fn document(object: Value, ns: Option<&str>, default_namespace: &str) -> Document {
    let namespace = ns
        .filter(|s| !s.is_empty())
        .or_else(|| {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
        })
        .filter(|s| !s.is_empty())
        .unwrap_or(default_namespace)
        .to_string();
    Document { object, namespace }
}

/// Cluster facts from the input, plus namespace labels for namespaces it does not describe.
pub fn facts_from(docs: &[Document], default_labels: &BTreeMap<String, String>) -> StaticFacts {
    let mut facts = StaticFacts {
        class_source: ClassSource::Offline,
        ..StaticFacts::default()
    };
    for d in docs {
        facts.absorb(&d.object, &d.namespace);
    }
    for d in docs {
        let entry = facts
            .namespaces
            .entry(d.namespace.clone())
            .or_insert_with(|| Arc::new(NamespaceFacts::default()));
        if entry.labels.is_empty() {
            Arc::make_mut(entry).labels = default_labels.clone();
        }
    }
    facts
}

/// Run every document through the admission logic.
pub fn mutate_all(
    docs: &[Document],
    policies: Arc<PolicyStore>,
    recs: Arc<dyn RecommendationSource>,
    facts: StaticFacts,
    config: AdmitConfig,
) -> Vec<Mutated> {
    let admitter = Admitter::new(policies, recs, Arc::new(facts), config);
    mutate_all_with(&admitter, docs)
}

fn mutate_all_with(admitter: &Admitter, docs: &[Document]) -> Vec<Mutated> {
    let opt_in = OptIn::of(docs);
    docs.iter()
        .map(|d| {
            let Some(kind) = kind_of_manifest(&d.object) else {
                return unchanged(d, None);
            };
            if opt_in.0.get(&d.namespace) == Some(&false) {
                let why = format!(
                    "namespace {} is not opted in (no label {OPT_IN_LABEL}=\"true\": the webhook never sees it)",
                    d.namespace
                );
                return unchanged(d, Some(why));
            }
            let m = admitter.mutate_object(kind, &d.namespace, &d.object);
            Mutated {
                // The merge's own result: the patch is the difference to it.
                object: sized(&d.object, m.sized),
                patch: m.patch,
                warnings: m.warnings,
                handled: m.outcome != Outcome::Skipped,
                workload: m.workload,
                policy: m.policy,
                skipped: m.skipped,
            }
        })
        .collect()
}

/// The namespaces the input describes (a Namespace object), each with whether it carries
/// the opt-in label. Objects in a namespace described without it are left alone, as the
/// webhook's namespaceSelector leaves them; for the others the label is not known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptIn(pub BTreeMap<String, bool>);

impl OptIn {
    pub fn of(docs: &[Document]) -> OptIn {
        let mut out = BTreeMap::new();
        for d in docs {
            if d.object.get("kind").and_then(Value::as_str) != Some("Namespace")
                || d.object.get("apiVersion").and_then(Value::as_str) != Some("v1")
            {
                continue;
            }
            let Some(name) = d.object.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let on = d
                .object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(OPT_IN_LABEL))
                .and_then(Value::as_str)
                == Some("true");
            out.insert(name.to_string(), on);
        }
        OptIn(out)
    }

    /// Namespaces of handled objects whose opt-in label could not be checked.
    pub fn unchecked<'a>(&self, docs: &'a [Document], results: &[Mutated]) -> Vec<&'a str> {
        let mut out: Vec<&str> = docs
            .iter()
            .zip(results)
            .filter(|(d, r)| r.handled && !self.0.contains_key(&d.namespace))
            .map(|(d, _)| d.namespace.as_str())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The object with the merge's writable parts put back (itself when not merged).
fn sized(obj: &Value, written: Option<rightsizer_core::sizing::written::Written>) -> Value {
    let mut out = obj.clone();
    if let Some(w) = written {
        w.apply_to(&mut out);
    }
    out
}

fn unchanged(d: &Document, skipped: Option<String>) -> Mutated {
    Mutated {
        object: d.object.clone(),
        patch: json_patch::Patch(Vec::new()),
        warnings: Vec::new(),
        handled: false,
        workload: None,
        policy: None,
        skipped,
    }
}

/// A workload's Pod as its controller would create it and admission would leave it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPreview {
    /// Index of the workload in the input.
    pub index: usize,
    /// The Pod sent for admission (from the workload as admission left it).
    pub pod: Value,
    pub result: Mutated,
}

/// The Pods the input's workloads would create, each admitted as the webhook would
/// (`results` are `mutate_all`'s for the same documents).
pub fn preview_pods(
    docs: &[Document],
    results: &[Mutated],
    policies: Arc<PolicyStore>,
    recs: Arc<dyn RecommendationSource>,
    facts: StaticFacts,
    config: AdmitConfig,
) -> Vec<PodPreview> {
    let mut workload_annotations = BTreeMap::new();
    for (d, r) in docs.iter().zip(results) {
        if let (Some(key), Some(a)) = (&r.workload, d.object.pointer("/metadata/annotations")) {
            if let Ok(a) = serde_json::from_value(a.clone()) {
                workload_annotations.insert(key.clone(), Arc::new(a));
            }
        }
    }
    let facts = preview::PreviewFacts {
        base: facts,
        workload_annotations,
    };
    let admitter = Admitter::new(policies, recs, Arc::new(facts), config);
    let mut out = Vec::new();
    for (index, (d, r)) in docs.iter().zip(results).enumerate() {
        let Some(kind) = kind_of_manifest(&d.object) else {
            continue;
        };
        // Left alone (not opted in, protected): its Pods would be too.
        if r.skipped.is_some() && r.workload.is_none() {
            continue;
        }
        let Some(pod) = preview::controller_pod(kind, &d.namespace, &r.object) else {
            continue;
        };
        let result = mutate_all_with(
            &admitter,
            &[Document {
                object: pod.clone(),
                namespace: d.namespace.clone(),
            }],
        )
        .remove(0);
        out.push(PodPreview { index, pod, result });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yaml_json_lists_and_reviews() {
        let text = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "x"}}]}
---
apiVersion: admission.k8s.io/v1
kind: AdmissionReview
request:
  uid: "1"
  namespace: shop
  object: {apiVersion: v1, kind: Pod, metadata: {generateName: b-}}
"#;
        let docs = parse_documents(text, "default").unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].namespace, "x");
        assert_eq!(docs[2].namespace, "shop");
        assert!(matches!(
            parse_documents("kind: AdmissionReview\nrequest: {}\n", "d"),
            Err(InputError::EmptyReview { index: 1 })
        ));
        assert!(matches!(
            parse_documents("a: [", "d"),
            Err(InputError::Syntax { index: 1, .. })
        ));
    }
}
