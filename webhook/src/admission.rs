//! AdmissionReview in, AdmissionReview out. Knows nothing about HTTP: the server
//! passes the body bytes and sends back what this returns.
//!
//! Every answer is `allowed: true`: rightsizer never blocks a deploy. Objects it cannot
//! handle are admitted unchanged with a warning saying why.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use rightsizer_core::cluster::opt_in::acts_on;
use rightsizer_core::cluster::{ClusterFacts, NoFacts};
use rightsizer_core::object::{check_decodes, View};
use rightsizer_core::policy::schema::Policy;
use rightsizer_core::recommendation::{
    ContainerRecommendation, NoRecommendations, RecommendationSource,
};
use rightsizer_core::sizing::{self, Context};
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::WorkloadKey;

use crate::policies::store::PolicyStore;

mod answer;
pub mod caps;
mod diff;

use answer::{encode_patch, response};
pub use answer::{operation_label, Envelope};

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
    /// Admitted unchanged because the object or the answer passed a cap in [`caps`].
    Capped,
    /// Admitted unchanged because the review panicked (a bug; the process keeps serving).
    Panicked,
    /// Admitted unchanged because the review did not finish before its deadline.
    TimedOut,
    /// Admitted unchanged because the replica was overloaded (no slot, memory or worker).
    Shed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Invalid => "invalid",
            Outcome::Capped => "capped",
            Outcome::Panicked => "panic",
            Outcome::TimedOut => "timeout",
            Outcome::Shed => "shed",
        }
    }
}

/// A finished review.
#[derive(Debug)]
pub struct Reviewed {
    /// The AdmissionReview response document, serialized.
    pub body: Vec<u8>,
    /// The object's kind as a metric label: a handled kind ([`WorkloadKind::as_str`]) or
    /// `other`. A closed set, so a forged kind cannot grow `/metrics`.
    pub kind: &'static str,
    /// `request.operation` as a metric label: CREATE, UPDATE, DELETE, CONNECT or `other`.
    pub operation: &'static str,
    pub outcome: Outcome,
    /// Number of JSONPatch operations returned.
    pub patch_ops: usize,
    /// Admission plugins after the webhooks a change was held back for
    /// ([`rightsizer_core::cluster::withheld_by`]).
    pub withheld: Vec<&'static str>,
    /// Resources whose raise the node cap held back (`rightsizer_admission_node_capped`).
    pub node_capped: Vec<rightsizer_core::quantity::Resource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

/// The `request` of a parsed AdmissionReview (the object still as raw JSON text).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn<'a> {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    /// Empty on a CREATE with `generateName` (the apiserver names it later).
    #[serde(default)]
    name: Option<String>,
    operation: String,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub struct GroupVersionKind {
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
    pub workload: Option<WorkloadKey>,
    /// The object's writable parts as sized, when it was merged (what the patch makes of
    /// them; the offline path puts them back into the object instead of applying the
    /// patch again).
    pub sized: Option<sizing::written::Written>,
    /// Resources whose raise the node cap held back.
    pub node_capped: Vec<rightsizer_core::quantity::Resource>,
    /// The policy in force (composed from every matching one), when one selected it.
    pub policy: Option<Arc<Policy>>,
    /// Why a handled kind was left alone (for `mutate`; reviews carry no such warning).
    pub skipped: Option<String>,
}

impl Mutation {
    fn skipped(outcome: Outcome, warning: Option<String>) -> Self {
        Mutation {
            patch: json_patch::Patch(Vec::new()),
            warnings: warning.into_iter().collect(),
            outcome,
            workload: None,
            sized: None,
            node_capped: Vec::new(),
            policy: None,
            skipped: None,
        }
    }

    fn left_alone(workload: Option<WorkloadKey>, why: String) -> Self {
        Mutation {
            workload,
            skipped: Some(why),
            ..Mutation::skipped(Outcome::Skipped, None)
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
        let req = parse(body)?;
        Ok(self.answer(&req))
    }

    /// Answer a parsed request. Never fails and never panics: a panic inside the review
    /// (a bug) and an object or answer over a cap are admitted unchanged with a warning.
    pub fn answer(&self, req: &RequestIn) -> Reviewed {
        let m = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.mutate(req))) {
            Ok(m) => m,
            Err(payload) => {
                let what = panic_message(payload.as_ref());
                tracing::error!(uid = %req.uid, panic = %what, "review panicked; admitted unchanged");
                Mutation::skipped(
                    Outcome::Panicked,
                    Some("internal error while reviewing; admitted unchanged".into()),
                )
            }
        };
        let mut outcome = if m.patch.0.is_empty() {
            m.outcome
        } else {
            Outcome::Patched
        };
        let withheld = rightsizer_core::cluster::withheld_by(&m.warnings);
        if !m.node_capped.is_empty() {
            // No Event: at admission the Pod does not exist yet; the warning, this line,
            // the metric and the `rightsizer.io/sized` record tell.
            tracing::warn!(
                uid = %req.uid,
                workload = ?m.workload,
                resources = ?m.node_capped,
                "raise capped at the largest allocatable of the nodes the Pod can run on"
            );
        }
        let node_capped = m.node_capped;
        let mut warnings = m.warnings;
        let mut patch = match encode_patch(&m.patch) {
            Ok(p) => p,
            Err(cap) => {
                outcome = Outcome::Capped;
                warnings.insert(
                    0,
                    format!("the change would make {cap}; admitted unchanged"),
                );
                None
            }
        };
        let mut patch_ops = if patch.is_some() { m.patch.0.len() } else { 0 };
        let mut body = response(&req.uid, patch.as_deref(), &warnings);
        if body.len() > caps::MAX_RESPONSE_BYTES {
            outcome = Outcome::Capped;
            patch = None;
            patch_ops = 0;
            let why = format!(
                "the answer would be {}; admitted unchanged",
                caps::Cap::ResponseBytes
            );
            body = response(&req.uid, patch.as_deref(), &[why]);
        }
        Reviewed {
            body,
            kind: req.kind_label(),
            operation: req.operation_label(),
            outcome,
            patch_ops,
            withheld,
            node_capped,
        }
    }

    fn mutate(&self, req: &RequestIn) -> Mutation {
        if req.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
            return Mutation::skipped(Outcome::Skipped, None);
        }
        let Some(kind) = WorkloadKind::from_api(&req.kind.group, &req.kind.kind) else {
            return Mutation::skipped(Outcome::Skipped, None);
        };
        if !kind.operations().contains(&req.operation.as_str()) {
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
        // Measured before a tree is built: the caps bound what follows.
        match caps::check_object(raw.get()) {
            Ok(()) => {}
            Err(caps::Measure::Over(cap)) => {
                return Mutation::skipped(
                    Outcome::Capped,
                    Some(format!("object has {cap}; admitted unchanged")),
                )
            }
            Err(caps::Measure::Bad(e)) => {
                return Mutation::skipped(
                    Outcome::Invalid,
                    Some(format!("{e}; admitted unchanged")),
                )
            }
        }
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(obj) => self.mutate_object(kind, namespace, &obj),
            Err(e) => Mutation::skipped(Outcome::Invalid, Some(format!("{e}; admitted unchanged"))),
        }
    }

    /// Not a namespace rightsizer acts on (the opt-in label was checked by the
    /// apiserver's namespaceSelector before calling; the exclusions are checked here).
    fn is_protected(&self, namespace: &str) -> bool {
        !acts_on(namespace, None, self.config.own_namespace.as_deref())
    }

    /// Look at one object of a handled kind (also used offline by `mutate`).
    pub fn mutate_object(&self, kind: WorkloadKind, namespace: &str, obj: &Value) -> Mutation {
        if let Err(e) = check_decodes(kind, obj) {
            return Mutation::skipped(Outcome::Invalid, Some(format!("{e}; admitted unchanged")));
        }
        let view = match View::with_owners(kind, namespace, obj, self.facts.owners()) {
            Ok(v) => self.refine(v),
            Err(e) => {
                return Mutation::skipped(
                    Outcome::Invalid,
                    Some(format!("{e}; admitted unchanged")),
                )
            }
        };
        if self.is_protected(&view.identity.namespace) {
            let why = format!(
                "namespace {} is never touched (a system namespace or the webhook's own)",
                view.identity.namespace
            );
            return Mutation::left_alone(None, why);
        }
        let ns = self.facts.namespace(&view.identity.namespace);
        let policies = self.policies.current();
        // A Pod carries its template's labels; its workload's own come from the watchers
        // (a workload object carries both, already in `view.labels`).
        let own = if view.kind == WorkloadKind::Pod && view.controlled {
            self.facts.workload_labels(&view.identity)
        } else {
            None
        };
        let selected = policies.select_workload(
            &view.identity,
            own.as_deref(),
            Some(&view.labels),
            &ns.labels,
        );
        let Some(policy) = selected else {
            return Mutation::left_alone(Some(view.identity), "no policy selects it".into());
        };
        let recs = self.lookup(&view, obj);
        let classes = self.facts.priority_classes();
        let nodes = self.facts.nodes();
        let ctx = Context {
            namespace_labels: &ns.labels,
            limit_ranges: &ns.limit_ranges,
            quotas: &ns.quotas,
            tolerations: &ns.tolerations,
            priority_classes: &classes,
            enforcement: self.config.enforcement,
            nodes: &nodes,
        };
        let decision = sizing::plan(obj, &view, &policy, &recs, &ctx);
        let patch = diff::diff_written(obj, &decision.object);
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
            sized: Some(decision.object),
            node_capped: decision.node_capped,
            policy: Some(policy),
            skipped: None,
        }
    }

    /// Use what the cluster knows: annotations set on a Pod's workload (the Pod only
    /// carries its template's).
    fn refine(&self, mut view: View) -> View {
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
    /// unique across both lists), looked up together: one workload, one lookup.
    fn lookup(&self, view: &View, obj: &Value) -> BTreeMap<String, ContainerRecommendation> {
        let knative = view.identity.kind.is_knative();
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
        let names: Vec<&str> = init
            .chain(app)
            .filter_map(|(c, knative)| {
                c.get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .or(knative.then_some("user-container"))
            })
            .collect();
        let recs = self.recs.get_workload(&view.identity, &names);
        names
            .into_iter()
            .zip(recs)
            .filter_map(|(name, r)| Some((name.to_string(), r?)))
            .collect()
    }
}

/// Parse an AdmissionReview v1 body down to its request (the object stays raw text).
pub fn parse(body: &[u8]) -> Result<RequestIn<'_>, ReviewError> {
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
    Ok(req)
}

impl RequestIn<'_> {
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// See [`Reviewed::kind`].
    pub fn kind_label(&self) -> &'static str {
        WorkloadKind::from_api(&self.kind.group, &self.kind.kind)
            .map_or("other", WorkloadKind::as_str)
    }

    /// See [`Reviewed::operation`].
    pub fn operation_label(&self) -> &'static str {
        operation_label(&self.operation)
    }

    /// `request.namespace` (empty for cluster-scoped objects), for logs.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    /// `request.name`, for logs.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// What answering it unchanged needs, owned (it outlives the body).
    pub fn envelope(&self) -> Envelope {
        Envelope {
            uid: self.uid.clone(),
            kind: self.kind_label(),
            operation: self.operation_label(),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_string())
}
