//! The one resolver from a Pod (or a pod controller) to its top-level workload, used by
//! admission (the Pod being created, plus the watchers' owner mirrors), the analyzer
//! (Prometheus `pod` labels, plus kube-state-metrics or Pod-watch owner rows) and the
//! watchers. Callers differ only in the [`OwnerFacts`] they know.

use serde_json::Value;

use super::kind::{WorkloadKind, LINKS};
use super::names;
use super::WorkloadKey;

/// An object's controller as a fact source records it (API kind and name, and its uid
/// where the source has it: the watchers' mirrors, for a scaled controller's
/// `Rightsizing` owner reference).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    pub kind: String,
    pub name: String,
    pub uid: Option<String>,
}

/// One owner reference, borrowed. `api_version` is `None` where the source does not
/// give it (kube-state-metrics rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerRef<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub api_version: Option<&'a str>,
    pub controller: bool,
}

/// The controller among owner references: the one marked `controller: true`. Other
/// owners (garbage-collection parents) do not manage the object and are not followed.
pub fn controller<'a>(refs: impl IntoIterator<Item = OwnerRef<'a>>) -> Option<OwnerRef<'a>> {
    refs.into_iter().find(|r| r.controller)
}

/// Owner facts a caller knows: the watchers' ReplicaSet and Job mirrors, the
/// analyzer's owner rows.
pub trait OwnerFacts {
    /// The controller of API kind `kind` named `name`: `None` when not known,
    /// `Some(None)` when known to have none.
    fn controller(&self, namespace: &str, kind: &str, name: &str) -> Option<Option<Owner>>;

    /// The scaled controller (served with `/scale`, found by discovery) of API kind
    /// `api_kind`, when the cluster has exactly one ([`super::kind::ScaledKinds`]).
    fn scaled(&self, _api_kind: &str) -> Option<WorkloadKind> {
        None
    }
}

/// Nothing known: names alone decide.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoOwners;

impl OwnerFacts for NoOwners {
    fn controller(&self, _: &str, _: &str, _: &str) -> Option<Option<Owner>> {
        None
    }
}

/// What the resolver reads of a Pod. Empty strings stand for absent fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub generate_name: &'a str,
    pub controller: Option<OwnerRef<'a>>,
    /// Labels `serving.knative.dev/service` and `serving.knative.dev/configuration`.
    pub knative_service: &'a str,
    pub knative_configuration: &'a str,
    /// Label `pod-template-hash`, when the source has the Pod's labels.
    pub template_hash: Option<&'a str>,
}

const KN_SERVICE: &str = "serving.knative.dev/service";
const KN_CONFIGURATION: &str = "serving.knative.dev/configuration";
const TEMPLATE_HASH: &str = "pod-template-hash";

impl<'a> PodRef<'a> {
    /// From a Pod's JSON metadata; `namespace` is used when the metadata has none (Pods
    /// of a ReplicaSet arrive at admission without one).
    pub fn from_meta(namespace: &'a str, meta: &'a Value) -> Self {
        let s = |v: Option<&'a Value>| v.and_then(Value::as_str).unwrap_or_default();
        let labels = meta.get("labels");
        let label = |k: &str| s(labels.and_then(|l| l.get(k)));
        let refs = meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|o| OwnerRef {
                kind: s(o.get("kind")),
                name: s(o.get("name")),
                api_version: o.get("apiVersion").and_then(Value::as_str),
                controller: o.get("controller").and_then(Value::as_bool) == Some(true),
            });
        PodRef {
            namespace: Some(s(meta.get("namespace")))
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace),
            name: s(meta.get("name")),
            generate_name: s(meta.get("generateName")),
            controller: controller(refs),
            knative_service: label(KN_SERVICE),
            knative_configuration: label(KN_CONFIGURATION),
            template_hash: labels.and_then(|l| l.get(TEMPLATE_HASH)?.as_str()),
        }
    }
}

/// A Pod's workload, and whether a workload controller made the Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodWorkload {
    pub key: WorkloadKey,
    pub controlled: bool,
}

/// The top-level workload of a Pod:
/// 1. Knative labels name the Service (else the Configuration): the ReplicaSet belongs
///    to one revision and would split the history per revision.
/// 2. A controller of a kind that runs pods, followed up the owner chain.
/// 3. Otherwise (no controller, or one rightsizer does not know) the Pod itself, by
///    [`names::bare_pod_name`].
pub fn resolve_pod(pod: &PodRef<'_>, facts: &dyn OwnerFacts) -> PodWorkload {
    let key = |kind, name: &str| WorkloadKey {
        namespace: pod.namespace.to_string(),
        kind,
        name: name.to_string(),
    };
    let knative = knative_workload(
        pod.namespace,
        pod.knative_service,
        pod.knative_configuration,
    );
    if let Some(k) = knative.or_else(|| {
        pod.controller
            .and_then(|o| resolve_owner(pod.namespace, o, pod.template_hash, facts))
    }) {
        return PodWorkload {
            key: k,
            controlled: true,
        };
    }
    PodWorkload {
        key: key(
            WorkloadKind::Pod,
            names::bare_pod_name(pod.name, pod.generate_name),
        ),
        controlled: false,
    }
}

/// A Knative workload from the names a Pod's labels or a revision's series carry:
/// the Service when one is named, else the Configuration.
pub fn knative_workload(
    namespace: &str,
    service: &str,
    configuration: &str,
) -> Option<WorkloadKey> {
    let (kind, name) = if !service.is_empty() {
        (WorkloadKind::KnativeService, service)
    } else if !configuration.is_empty() {
        (WorkloadKind::KnativeConfiguration, configuration)
    } else {
        return None;
    };
    Some(WorkloadKey {
        namespace: namespace.to_string(),
        kind,
        name: name.to_string(),
    })
}

/// The top-level workload of a pod controller (`None` when `owner` is not a kind that
/// runs pods). Each step up the chain uses the facts when they know the object, and
/// the controllers' naming when they do not; a known object with no controller, or
/// with one outside the table, is the workload itself, unless that controller serves
/// `/scale` (the facts say so, from discovery: an Argo Rollout), which is then the
/// workload, whatever revision's ReplicaSet runs the Pod.
pub fn resolve_owner(
    namespace: &str,
    owner: OwnerRef<'_>,
    template_hash: Option<&str>,
    facts: &dyn OwnerFacts,
) -> Option<WorkloadKey> {
    let start = WorkloadKind::from_kind(owner.api_version, owner.kind)
        .filter(|k| k.info().controls_pods)?;
    let mut top = (start, owner.name.to_string());
    let mut cur = (start.info().api_kind.to_string(), owner.name.to_string());
    let mut hash = template_hash;
    // Each link leads to another kind: the chain is at most as long as the table.
    for _ in 0..LINKS.len() {
        if !LINKS.iter().any(|l| l.child == cur.0) {
            break;
        }
        let parent = match facts.controller(namespace, &cur.0, &cur.1) {
            Some(Some(o)) => Some((o.kind, o.name)),
            Some(None) => None,
            None => guess(&cur.0, &cur.1, hash),
        };
        let Some((kind, name)) = parent else { break };
        let Some(link) = LINKS.iter().find(|l| l.child == cur.0 && l.parent == kind) else {
            if let Some(scaled) = facts.scaled(&kind) {
                top = (scaled, name);
            }
            break;
        };
        if let Some(w) = link.workload {
            top = (w, name.clone());
        }
        cur = (kind, name);
        // The Pod's hash names its own ReplicaSet only.
        hash = None;
    }
    Some(WorkloadKey {
        namespace: namespace.to_string(),
        kind: top.0,
        name: top.1,
    })
}

/// The parent a controller's naming implies, when the facts do not know the object.
fn guess(kind: &str, name: &str, template_hash: Option<&str>) -> Option<(String, String)> {
    LINKS.iter().find_map(|l| {
        let named = l.parent_named.filter(|_| l.child == kind)?;
        Some((
            l.parent.to_string(),
            named(name, template_hash)?.to_string(),
        ))
    })
}
