//! What the analyzer remembers per container between cycles (committed values, OOM
//! holds, recent changes). Where it is stored (`CommitStore`, the state file, the
//! `Rightsizing` resource) is the I/O crate's (`rightsizer::analyzer::state`).

use serde::{Deserialize, Serialize};

use crate::recommendation::{Committed, ContainerKey, ContainerRecommendation};

/// An OOM kill being held: memory is not recommended below `floor` until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OomHold {
    pub floor: u64,
    pub until: u64,
    /// The pod whose kill set this hold (a pod that keeps reporting the same kill
    /// does not extend it).
    pub pod: String,
}

impl OomHold {
    /// The memory floor at `now`: none once the hold has ended.
    pub fn floor_at(&self, now: u64) -> Option<u64> {
        (now < self.until).then_some(self.floor)
    }
}

/// One change, for the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub resource: crate::quantity::Resource,
    #[serde(flatten)]
    pub committed: Committed,
}

/// What is remembered per container.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Committed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Committed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom: Option<OomHold>,
    /// The last changes, newest last (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// Changes kept per container (both resources; the Rightsizing shows 10 per resource).
const HISTORY_KEPT: usize = 20;

impl ContainerState {
    pub fn committed(&self, r: crate::quantity::Resource) -> Option<&Committed> {
        match r {
            crate::quantity::Resource::Memory => self.memory.as_ref(),
            crate::quantity::Resource::Cpu => self.cpu.as_ref(),
        }
    }

    pub fn record(&mut self, r: crate::quantity::Resource, c: Committed) {
        self.history.push(HistoryEntry {
            resource: r,
            committed: c.clone(),
        });
        if self.history.len() > HISTORY_KEPT {
            let extra = self.history.len() - HISTORY_KEPT;
            self.history.drain(..extra);
        }
        match r {
            crate::quantity::Resource::Memory => self.memory = Some(c),
            crate::quantity::Resource::Cpu => self.cpu = Some(c),
        }
    }
}

/// One container's state to persist, with what is recommended for it (shown in the
/// Rightsizing, not read back).
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub key: ContainerKey,
    pub state: ContainerState,
    pub rec: Option<ContainerRecommendation>,
    /// The memory strategy's name (`seed` for the seed rules).
    pub strategy: String,
    /// The policy's cooldown, for the shown deadline.
    pub cooldown_seconds: u64,
}
