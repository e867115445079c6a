//! AdmissionReview in, AdmissionReview out. Knows nothing about HTTP: the server
//! passes the body bytes and sends back what this returns.
//!
//! Every answer is `allowed: true`: rightsizer never blocks a deploy. Objects it cannot
//! handle are admitted unchanged with a warning saying why.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::cluster::{ClusterFacts, NoFacts};
use crate::object::{check_decodes, kind_for, View};
use crate::policy::{PolicyStore, Subject};
use crate::recommendation::{
    ContainerKey, ContainerRecommendation, NoRecommendations, RecommendationSource, WorkloadKind,
};
use crate::sizing::{self, Context};

mod diff;

/// Namespaces never mutated, whatever the configuration.
pub const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// The most warnings returned, and the longest one (the apiserver truncates beyond).
const MAX_WARNINGS: usize = 8;
const MAX_WARNING_LEN: usize = 256;

/// Why a request body is not a review we can answer (the HTTP layer maps this to 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("not an AdmissionReview admission.k8s.io/v1: {0}")]
    NotReview(String),
}

/// How a review ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A patch was returned.
    Patched,
    /// Looked at, nothing to change.
    Unchanged,
    /// Not ours to change (other kind, system namespace, no policy, subresource...).
    Skipped,
    /// Admitted unchanged because the object could not be handled (warning returned).
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Invalid => "invalid",
        }
    }
}

/// A finished review.
#[derive(Debug)]
pub struct Reviewed {
    /// The AdmissionReview response document, serialized.
    pub body: Vec<u8>,
    /// `request.kind.kind`, e.g. "Pod".
    pub kind: String,
    /// `request.operation`, e.g. "CREATE".
    pub operation: String,
    pub outcome: Outcome,
    /// Number of JSONPatch operations returned.
    pub patch_ops: usize,
    /// `request.dryRun`: callers must not cause side effects (Events, commits).
    pub dry_run: bool,
    /// The workload the object belongs to, when it was looked at.
    pub workload: Option<crate::recommendation::WorkloadKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: String,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    kind: String,
}

/// How the admitter behaves.
#[derive(Debug, Clone, Default)]
pub struct AdmitConfig {
    /// `RIGHTSIZER_ENFORCEMENT=true`.
    pub enforcement: bool,
    /// The webhook's own namespace (never mutated).
    pub own_namespace: Option<String>,
}

/// The result of looking at one object, before it is wrapped in a response.
#[derive(Debug)]
pub struct Mutation {
    pub patch: json_patch::Patch,
    pub warnings: Vec<String>,
    pub outcome: Outcome,
    pub workload: Option<crate::recommendation::WorkloadKey>,
}

impl Mutation {
    fn skipped(outcome: Outcome, warning: Option<String>) -> Self {
        Mutation {
            patch: json_patch::Patch(Vec::new()),
            warnings: warning.into_iter().collect(),
            outcome,
            workload: None,
        }
    }
}

/// Answers reviews from the policies, recommendations and cluster facts it holds.
pub struct Admitter {
    policies: Arc<PolicyStore>,
    recs: Arc<dyn RecommendationSource>,
    facts: Arc<dyn ClusterFacts>,
    config: AdmitConfig,
}

impl Default for Admitter {
    fn default() -> Self {
        Admitter::new(
            Arc::new(PolicyStore::new()),
            Arc::new(NoRecommendations),
            Arc::new(NoFacts),
            AdmitConfig::default(),
        )
    }
}

impl Admitter {
    pub fn new(
        policies: Arc<PolicyStore>,
        recs: Arc<dyn RecommendationSource>,
        facts: Arc<dyn ClusterFacts>,
        config: AdmitConfig,
    ) -> Self {
        Admitter {
            policies,
            recs,
            facts,
            config,
        }
    }

    pub fn policies(&self) -> &Arc<PolicyStore> {
        &self.policies
    }

    pub fn recommendations(&self) -> &Arc<dyn RecommendationSource> {
        &self.recs
    }

    /// Ready once policies are loaded.
    pub fn is_ready(&self) -> bool {
        self.policies.is_ready()
    }

    /// Answer one AdmissionReview body.
    pub fn review(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let text = std::str::from_utf8(body).map_err(|e| ReviewError::NotJson(e.to_string()))?;
        let review: ReviewIn = serde_json::from_str(text).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ReviewError::NotJson(e.to_string())
            } else {
                ReviewError::NotReview(e.to_string())
            }
        })?;
        if review.api_version.as_deref() != Some("admission.k8s.io/v1") {
            return Err(ReviewError::NotReview(format!(
                "apiVersion is {:?}",
                review.api_version.unwrap_or_default()
            )));
        }
        if review.kind.as_deref() != Some("AdmissionReview") {
            return Err(ReviewError::NotReview(format!(
                "kind is {:?}",
                review.kind.unwrap_or_default()
            )));
        }
        let req = review
            .request
            .ok_or_else(|| ReviewError::NotReview("no request".into()))?;
        if req.uid.is_empty() {
            return Err(ReviewError::NotReview("request.uid is empty".into()));
        }
        let dry_run = req.dry_run.unwrap_or(false);
        let m = self.mutate(&req);
        let patch_ops = m.patch.0.len();
        let mut response = json!({"uid": req.uid, "allowed": true});
        if patch_ops > 0 {
            let bytes =
                serde_json::to_vec(&m.patch).map_err(|e| ReviewError::NotJson(e.to_string()))?;
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        if !m.warnings.is_empty() {
            response["warnings"] = json!(m
                .warnings
                .iter()
                .take(MAX_WARNINGS)
                .map(|w| truncate(&format!("rightsizer: {w}"), MAX_WARNING_LEN))
                .collect::<Vec<_>>());
        }
        let out = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        });
        Ok(Reviewed {
            body: serde_json::to_vec(&out).map_err(|e| ReviewError::NotJson(e.to_string()))?,
            kind: req.kind.kind,
            operation: req.operation,
            outcome: if patch_ops > 0 {
                Outcome::Patched
            } else {
                m.outcome
            },
            patch_ops,
            dry_run,
            workload: m.workload,
        })
    }

    fn mutate(&self, req: &RequestIn) -> Mutation {
        if req.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
            return Mutation::skipped(Outcome::Skipped, None);
        }
        let Some(kind) = kind_for(&req.kind.group, &req.kind.kind) else {
            return Mutation::skipped(Outcome::Skipped, None);
        };
        let allowed_op = match (kind, req.operation.as_str()) {
            (WorkloadKind::Pod, "CREATE") => true,
            (WorkloadKind::Pod, _) => false,
            (_, "CREATE" | "UPDATE") => true,
            _ => false,
        };
        if !allowed_op {
            return Mutation::skipped(Outcome::Skipped, None);
        }
        let namespace = req.namespace.as_deref().unwrap_or_default();
        if self.is_protected(namespace) {
            return Mutation::skipped(Outcome::Skipped, None);
        }
        let Some(raw) = req.object else {
            return Mutation::skipped(
                Outcome::Invalid,
                Some("request has no object; admitted unchanged".into()),
            );
        };
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(obj) => self.mutate_object(kind, namespace, &obj),
            Err(e) => Mutation::skipped(Outcome::Invalid, Some(format!("{e}; admitted unchanged"))),
        }
    }

    fn is_protected(&self, namespace: &str) -> bool {
        SYSTEM_NAMESPACES.contains(&namespace)
            || self.config.own_namespace.as_deref() == Some(namespace)
    }

    /// Look at one object of a handled kind (also used offline by `mutate`).
    pub fn mutate_object(&self, kind: WorkloadKind, namespace: &str, obj: &Value) -> Mutation {
        if let Err(e) = check_decodes(kind, obj) {
            return Mutation::skipped(Outcome::Invalid, Some(format!("{e}; admitted unchanged")));
        }
        let view = match View::new(kind, namespace, obj) {
            Ok(v) => self.refine(v),
            Err(e) => {
                return Mutation::skipped(
                    Outcome::Invalid,
                    Some(format!("{e}; admitted unchanged")),
                )
            }
        };
        if self.is_protected(&view.identity.namespace) {
            return Mutation::skipped(Outcome::Skipped, None);
        }
        let ns = self.facts.namespace(&view.identity.namespace);
        let policies = self.policies.current();
        let subject = Subject {
            key: &view.identity,
            labels: &view.labels,
            namespace_labels: &ns.labels,
        };
        let Some(policy) = policies.select(&subject) else {
            return Mutation {
                workload: Some(view.identity),
                ..Mutation::skipped(Outcome::Skipped, None)
            };
        };
        let recs = self.lookup(&view, obj);
        let classes = self.facts.priority_classes();
        let ctx = Context {
            namespace_labels: &ns.labels,
            limit_ranges: &ns.limit_ranges,
            quotas: &ns.quotas,
            priority_classes: &classes,
            enforcement: self.config.enforcement,
        };
        let decision = sizing::plan(obj, &view, policy, &recs, &ctx);
        let patch = diff::diff(obj, &decision.object);
        let outcome = if patch.0.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Patched
        };
        Mutation {
            patch,
            warnings: decision.warnings,
            outcome,
            workload: Some(view.identity),
        }
    }

    /// Use what the cluster knows: the exact owner chain of a Pod, and annotations set
    /// on its workload (the Pod only carries its template's).
    fn refine(&self, mut view: View) -> View {
        if let Some((kind, name)) = &view.owner {
            let knative = crate::object::is_knative(view.identity.kind);
            if !knative {
                if let Some(key) = self
                    .facts
                    .resolve_owner(&view.identity.namespace, kind, name)
                {
                    view.identity = key;
                }
            }
        }
        if view.kind == WorkloadKind::Pod && view.controlled {
            if let Some(a) = self.facts.workload_annotations(&view.identity) {
                for (k, v) in a.iter() {
                    view.annotations
                        .entry(k.clone())
                        .or_insert_with(|| v.clone());
                }
            }
        }
        view
    }

    /// Recommendations of the app containers, init containers and sidecars (names are
    /// unique across both lists).
    fn lookup(&self, view: &View, obj: &Value) -> BTreeMap<String, ContainerRecommendation> {
        let knative = crate::object::is_knative(view.identity.kind);
        let spec = obj.pointer(view.pod_spec);
        let list = |key: &str| spec.and_then(|s| s.get(key)).and_then(Value::as_array);
        let init = list("initContainers")
            .into_iter()
            .flatten()
            .map(|c| (c, false));
        let app = list("containers")
            .into_iter()
            .flatten()
            .map(|c| (c, knative));
        init.chain(app)
            .filter_map(|(c, knative)| {
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .or(knative.then_some("user-container"))?;
                let key = ContainerKey::new(view.identity.clone(), name);
                self.recs.get(&key).map(|r| (name.to_string(), r))
            })
            .collect()
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
