//! Committed (enforced) values on the workload itself: the annotation
//! `rightsizer.io/committed` on the workload's top-level metadata (never the pod
//! template, which would roll it out). The leader writes it with server-side apply;
//! every replica reads it through its watch and overlays it on the recommendations.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::kube::facts::KubeFacts;
use crate::quantity::Resource;
use crate::recommendation::{
    Committed, ContainerKey, ContainerRecommendation, RecommendationSource, ResourceRecommendation,
    Snapshot,
};
use crate::rules::Sizes;

/// The annotation holding committed values.
pub const COMMITTED_ANNOTATION: &str = "rightsizer.io/committed";
/// Earlier values kept per container and resource.
pub const HISTORY_LEN: usize = 5;

/// One committed value as written in the annotation (quantities as strings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommittedValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub at: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The current value of one resource and the ones before it (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommittedEntry {
    #[serde(flatten)]
    pub current: CommittedValue,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<CommittedValue>,
}

/// The annotation's document: container -> resource -> entry.
pub type CommittedDoc = BTreeMap<String, BTreeMap<Resource, CommittedEntry>>;

/// Parsed committed values of one container.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerCommits {
    pub memory: Option<Committed>,
    pub cpu: Option<Committed>,
}

impl ContainerCommits {
    pub fn get(&self, r: Resource) -> Option<&Committed> {
        match r {
            Resource::Memory => self.memory.as_ref(),
            Resource::Cpu => self.cpu.as_ref(),
        }
    }
    fn set(&mut self, r: Resource, c: Committed) {
        match r {
            Resource::Memory => self.memory = Some(c),
            Resource::Cpu => self.cpu = Some(c),
        }
    }
}

impl CommittedValue {
    pub fn from_committed(r: Resource, c: &Committed) -> Self {
        CommittedValue {
            request: c.sizes.request.map(|v| r.format(v)),
            limit: c.sizes.limit.map(|v| r.format(v)),
            at: c.at,
            reason: c.reason.clone(),
        }
    }

    /// Back to units; `None` when a quantity does not parse.
    pub fn to_committed(&self, r: Resource) -> Option<Committed> {
        let parse = |q: &Option<String>| -> Option<Option<u64>> {
            match q {
                None => Some(None),
                Some(s) => r.parse(s).ok().map(Some),
            }
        };
        Some(Committed {
            sizes: Sizes {
                request: parse(&self.request)?,
                limit: parse(&self.limit)?,
            },
            at: self.at,
            reason: self.reason.clone(),
        })
    }
}

/// Parse the annotation text; entries whose quantities do not parse are dropped
/// (returned as warnings) so one bad value does not hide the others.
pub fn parse_annotation(
    text: &str,
) -> Result<(BTreeMap<String, ContainerCommits>, Vec<String>), serde_json::Error> {
    let doc: CommittedDoc = serde_json::from_str(text)?;
    let mut out = BTreeMap::new();
    let mut warnings = Vec::new();
    for (container, resources) in doc {
        let mut commits = ContainerCommits::default();
        for (r, entry) in resources {
            match entry.current.to_committed(r) {
                Some(c) => commits.set(r, c),
                None => warnings.push(format!("{container}.{}: bad quantity", r.as_str())),
            }
        }
        out.insert(container, commits);
    }
    Ok((out, warnings))
}

/// Put a new value into a document, moving the previous one into the history.
pub fn record(doc: &mut CommittedDoc, container: &str, r: Resource, value: &Committed) {
    let new = CommittedValue::from_committed(r, value);
    let resources = doc.entry(container.to_string()).or_default();
    match resources.get_mut(&r) {
        Some(entry) => {
            let previous = std::mem::replace(&mut entry.current, new);
            entry.history.insert(0, previous);
            entry.history.truncate(HISTORY_LEN);
        }
        None => {
            resources.insert(
                r,
                CommittedEntry {
                    current: new,
                    history: Vec::new(),
                },
            );
        }
    }
}

/// Recommendations with the committed values read from the cluster filled in.
/// The cluster's value wins over whatever the inner source holds: it is what every
/// replica agrees on.
pub struct CommittedOverlay {
    inner: Arc<dyn RecommendationSource>,
    facts: Arc<KubeFacts>,
}

impl CommittedOverlay {
    pub fn new(inner: Arc<dyn RecommendationSource>, facts: Arc<KubeFacts>) -> Self {
        CommittedOverlay { inner, facts }
    }
}

fn overlay(rec: &mut ContainerRecommendation, commits: &ContainerCommits) {
    for r in Resource::ALL {
        if let Some(c) = commits.get(r) {
            rec.resource_mut(r)
                .get_or_insert_with(ResourceRecommendation::default)
                .committed = Some(c.clone());
        }
    }
}

impl RecommendationSource for CommittedOverlay {
    fn get(&self, key: &ContainerKey) -> Option<ContainerRecommendation> {
        let inner = self.inner.get(key);
        let commits = self
            .facts
            .workload(&key.workload)
            .and_then(|w| w.committed.get(&key.container).cloned());
        let hpa = self.facts.hpa_resources(&key.workload);
        let mut rec = match (inner, commits) {
            (inner, Some(c)) => {
                let mut rec = inner.unwrap_or_default();
                overlay(&mut rec, &c);
                Some(rec)
            }
            (inner, None) => inner,
        };
        // The watched HPAs are the truth on which requests an HPA depends on.
        if let Some(r) = rec.as_mut() {
            for res in hpa {
                if !r.hpa_resources.contains(&res) {
                    r.hpa_resources.push(res);
                }
            }
        }
        rec
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = self.inner.snapshot();
        for (workload, containers) in self.facts.all_committed() {
            for (container, commits) in containers.iter() {
                let key = ContainerKey::new(workload.clone(), container.clone());
                overlay(snap.recommendations.entry(key).or_default(), commits);
            }
        }
        snap
    }
}

/// Why a commit was not persisted.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("not the leader: only the leader commits")]
    NotLeader,
    #[error(transparent)]
    Kube(#[from] crate::kube::error::KubeError),
}

/// Where the analyzer persists commits. The cluster implementation writes the
/// workload annotation; local runs keep their state file.
pub trait CommitSink: Send + Sync {
    /// Persist `value` as the committed `resource` of `key`'s container.
    fn commit<'a>(
        &'a self,
        key: &'a ContainerKey,
        resource: Resource,
        value: Committed,
    ) -> BoxFuture<'a, Result<(), CommitError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_newest_first_and_is_bounded() {
        let mut doc = CommittedDoc::new();
        for i in 1..=8u64 {
            let c = Committed {
                sizes: Sizes {
                    request: Some(i << 20),
                    limit: Some(i << 21),
                },
                at: i,
                reason: format!("step {i}"),
            };
            record(&mut doc, "app", Resource::Memory, &c);
        }
        let e = &doc["app"][&Resource::Memory];
        assert_eq!(e.current.request.as_deref(), Some("8Mi"));
        assert_eq!(e.history.len(), HISTORY_LEN);
        assert_eq!(e.history[0].at, 7);
        let text = serde_json::to_string(&doc).unwrap();
        let (parsed, warnings) = parse_annotation(&text).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            parsed["app"].memory.as_ref().unwrap().sizes.limit,
            Some(16 << 20)
        );
    }

    #[test]
    fn bad_quantities_are_dropped_with_a_warning() {
        let text =
            r#"{"app":{"memory":{"request":"lots","at":1},"cpu":{"request":"250m","at":1}}}"#;
        let (parsed, warnings) = parse_annotation(text).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(parsed["app"].memory.is_none());
        assert_eq!(parsed["app"].cpu.as_ref().unwrap().sizes.request, Some(250));
    }
}
