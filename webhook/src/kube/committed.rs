//! The legacy home of committed values: the annotation `rightsizer.io/committed` that
//! earlier versions wrote on workloads. Only read now, to import its values once into
//! the `Rightsizing` objects (`kube::store::migrate`); nothing writes it any more.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use rightsizer_core::analysis::container_state::ContainerState;
use rightsizer_core::quantity::Resource;
use rightsizer_core::recommendation::Committed;
use rightsizer_core::rules::Sizes;

/// The legacy annotation.
pub const COMMITTED_ANNOTATION: &str = "rightsizer.io/committed";

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

    /// As the analyzer's state, marked as migrated.
    pub fn to_state(&self) -> ContainerState {
        let mark = |c: &Committed| Committed {
            reason: format!("migrated: {}", c.reason),
            ..c.clone()
        };
        ContainerState {
            memory: self.memory.as_ref().map(mark),
            cpu: self.cpu.as_ref().map(mark),
            ..Default::default()
        }
    }
}

impl CommittedValue {
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

#[cfg(test)]
mod tests {
    use super::*;

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
