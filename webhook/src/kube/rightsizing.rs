//! The `Rightsizing` custom resource (`rightsizings.rightsizer.io`): one per workload,
//! the one home of committed state. This file holds its shape, its name scheme and the
//! conversion to and from the analyzer's `ContainerState`; `kube/store.rs` reads and
//! writes it.
//!
//! Name scheme: `<kind>-<name>` lower-cased (`deployment-checkout`). Workload names are
//! DNS subdomains, so the result is one too, except that it may exceed 253 characters:
//! then it is cut and a stable hash of the full name is appended (`-` + 10 hex digits),
//! so two long names never share an object.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::discovery::ApiResource;
use serde::{Deserialize, Serialize};

use rightsizer_core::analysis::container_state::{ContainerState, HistoryEntry, OomHold, Saved};
use rightsizer_core::quantity::Resource;
use rightsizer_core::recommendation::Committed;
use rightsizer_core::rules::Sizes;
use rightsizer_core::workload::kind::{group_of, WorkloadKind};
use rightsizer_core::workload::WorkloadKey;

pub const GROUP: &str = "rightsizer.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "Rightsizing";
pub const PLURAL: &str = "rightsizings";
/// Changes kept per container and resource (newest first).
pub const CHANGES_KEPT: usize = 10;
/// Longest object name the apiserver accepts.
const MAX_NAME: usize = 253;

/// The API resource for `Api::namespaced_with`.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

/// FNV-1a: stable across builds and versions (unlike `DefaultHasher`).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The object name of a workload's Rightsizing.
pub fn object_name(kind: WorkloadKind, name: &str) -> String {
    let full = format!("{}-{}", kind.as_str(), name).to_ascii_lowercase();
    // Anything outside a DNS subdomain becomes '-' (workload names never have any;
    // this only keeps a malformed key from producing an invalid request).
    let clean: String = full
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            _ => '-',
        })
        .collect();
    if clean.len() <= MAX_NAME && clean == full {
        return clean;
    }
    let suffix = format!("-{:010x}", fnv1a(&full) & 0xff_ffff_ffff);
    let keep = clean.len().min(MAX_NAME - suffix.len());
    let head = clean[..keep].trim_end_matches(['-', '.']);
    format!("{head}{suffix}")
}

/// The workload a Rightsizing describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RightsizingWorkload {
    #[serde(default)]
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RightsizingSpec {
    pub workload: RightsizingWorkload,
}

/// One committed value or change, quantities as strings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The recommendation and its inputs, for `kubectl describe`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecommendationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub strategy: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<RecommendationStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<ChangeStatus>,
    /// No further commit before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_until: Option<String>,
    /// The last `CHANGES_KEPT` changes, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ChangeStatus>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OomHoldStatus {
    pub floor: String,
    pub until: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_time: Option<String>,
    #[serde(default)]
    pub pod: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ResourceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<ResourceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_hold: Option<OomHoldStatus>,
}

impl ContainerStatus {
    fn resource(&self, r: Resource) -> Option<&ResourceStatus> {
        match r {
            Resource::Memory => self.memory.as_ref(),
            Resource::Cpu => self.cpu.as_ref(),
        }
    }
    fn resource_mut(&mut self, r: Resource) -> &mut Option<ResourceStatus> {
        match r {
            Resource::Memory => &mut self.memory,
            Resource::Cpu => &mut self.cpu,
        }
    }
}

/// The status: summary strings for the printer columns, then the details.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub workload: String,
    #[serde(default)]
    pub container_names: String,
    #[serde(default)]
    pub memory_committed: String,
    #[serde(default)]
    pub memory_recommended: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<String>,
    #[serde(default)]
    pub containers: Vec<ContainerStatus>,
    /// The updater's last actions on running Pods, newest last (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<String>,
}

/// Updater lines kept in a Rightsizing's status.
pub const UPDATES_KEPT: usize = 10;

impl Status {
    /// Whether two statuses say the same apart from the observed usage figures (avg,
    /// p95, max, samples, window), which move every cycle: a write that would change only
    /// those is skipped, so a new leader does not rewrite every status.
    pub fn says_the_same(&self, other: &Status) -> bool {
        fn decided(s: &Status) -> Status {
            let mut s = s.clone();
            for c in &mut s.containers {
                for r in [&mut c.memory, &mut c.cpu].into_iter().flatten() {
                    if let Some(rec) = &mut r.recommendation {
                        rec.avg = None;
                        rec.p95 = None;
                        rec.max = None;
                        rec.samples = None;
                        rec.window_seconds = None;
                    }
                }
            }
            s
        }
        decided(self) == decided(other)
    }
}

/// RFC 3339 of unix seconds.
pub fn rfc3339(unix: u64) -> Option<String> {
    Timestamp::from_second(i64::try_from(unix).ok()?)
        .ok()
        .map(|t| t.to_string())
}

fn change_status(r: Resource, c: &Committed) -> ChangeStatus {
    let (source, reason) = match c.reason.split_once(": ") {
        Some((s @ ("enforced" | "migrated"), rest)) => (s.to_string(), rest.to_string()),
        _ => ("enforced".to_string(), c.reason.clone()),
    };
    ChangeStatus {
        request: c.sizes.request.map(|v| r.format(v)),
        limit: c.sizes.limit.map(|v| r.format(v)),
        at: c.at,
        time: rfc3339(c.at),
        source,
        reason,
    }
}

fn committed_of(r: Resource, c: &ChangeStatus) -> Option<Committed> {
    let parse = |q: &Option<String>| -> Option<Option<u64>> {
        match q {
            None => Some(None),
            Some(s) => r.parse(s).ok().map(Some),
        }
    };
    let reason = match c.source.as_str() {
        "" | "enforced" => c.reason.clone(),
        s => format!("{s}: {}", c.reason),
    };
    Some(Committed {
        sizes: Sizes {
            request: parse(&c.request)?,
            limit: parse(&c.limit)?,
        },
        at: c.at,
        reason,
    })
}

fn pair(r: Resource, s: Option<Sizes>) -> String {
    let q = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| r.format(v));
    s.map_or_else(String::new, |s| format!("{}/{}", q(s.request), q(s.limit)))
}

fn recommendation_status(
    r: Resource,
    rec: &rightsizer_core::recommendation::ResourceRecommendation,
    strategy: &str,
) -> RecommendationStatus {
    let f = |v: f64| r.format(v.max(0.0).round() as u64);
    RecommendationStatus {
        request: rec.recommended.and_then(|s| s.request).map(|v| r.format(v)),
        limit: rec.recommended.and_then(|s| s.limit).map(|v| r.format(v)),
        avg: rec.observed.map(|o| f(o.avg)),
        p95: rec.observed.map(|o| f(o.p95)),
        max: rec.observed.map(|o| f(o.max)),
        samples: rec.observed.map(|o| o.samples),
        window_seconds: rec.observed.map(|o| o.history_seconds),
        strategy: if r == Resource::Memory {
            strategy.to_string()
        } else {
            "seed".to_string()
        },
        reasons: rec.reasons.clone(),
    }
}

/// Put one container's state (and what is recommended for it) into `status`.
pub fn put_container(status: &mut Status, container: &str, saved: &Saved) {
    let state = &saved.state;
    let idx = match status.containers.iter().position(|c| c.name == container) {
        Some(i) => i,
        None => {
            status.containers.push(ContainerStatus {
                name: container.to_string(),
                ..Default::default()
            });
            status.containers.sort_by(|a, b| a.name.cmp(&b.name));
            status
                .containers
                .iter()
                .position(|c| c.name == container)
                .unwrap_or_default()
        }
    };
    let c = &mut status.containers[idx];
    for r in Resource::ALL {
        let slot = c.resource_mut(r);
        let mut rs = slot.take().unwrap_or_default();
        if let Some(rec) = saved.rec.as_ref().and_then(|c| c.resource(r)) {
            rs.recommendation = Some(recommendation_status(r, rec, &saved.strategy));
        }
        rs.committed = state.committed(r).map(|v| change_status(r, v));
        rs.cooldown_until = state
            .committed(r)
            .and_then(|v| rfc3339(v.at.saturating_add(saved.cooldown_seconds)));
        rs.changes = state
            .history
            .iter()
            .rev()
            .filter(|h| h.resource == r)
            .take(CHANGES_KEPT)
            .map(|h| change_status(r, &h.committed))
            .collect();
        if rs != ResourceStatus::default() {
            *slot = Some(rs);
        }
    }
    c.oom_hold = state.oom.as_ref().map(|h| OomHoldStatus {
        floor: Resource::Memory.format(h.floor),
        until: h.until,
        until_time: rfc3339(h.until),
        pod: h.pod.clone(),
    });
    summarize(status);
}

/// Refresh the summary strings the printer columns show.
fn summarize(status: &mut Status) {
    let names: Vec<&str> = status.containers.iter().map(|c| c.name.as_str()).collect();
    status.container_names = names.join(",");
    let mut committed = Vec::new();
    let mut recommended = Vec::new();
    let mut last = 0u64;
    for c in &status.containers {
        if let Some(m) = &c.memory {
            if let Some(v) = m
                .committed
                .as_ref()
                .and_then(|v| committed_of(Resource::Memory, v))
            {
                committed.push(format!(
                    "{}={}",
                    c.name,
                    pair(Resource::Memory, Some(v.sizes))
                ));
            }
            if let Some(r) = &m.recommendation {
                let q = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                recommended.push(format!("{}={}/{}", c.name, q(&r.request), q(&r.limit)));
            }
        }
        for r in Resource::ALL {
            if let Some(v) = c.resource(r).and_then(|s| s.committed.as_ref()) {
                last = last.max(v.at);
            }
        }
    }
    status.memory_committed = committed.join(" ");
    status.memory_recommended = recommended.join(" ");
    status.last_change = (last > 0).then(|| rfc3339(last)).flatten();
}

/// A container's state back from the status (unparsable quantities are dropped with a
/// warning, so one bad value does not hide the others).
pub fn container_state(c: &ContainerStatus) -> ContainerState {
    let mut s = ContainerState::default();
    let mut history: Vec<HistoryEntry> = Vec::new();
    for r in Resource::ALL {
        let Some(rs) = c.resource(r) else { continue };
        let committed = rs.committed.as_ref().and_then(|v| committed_of(r, v));
        if rs.committed.is_some() && committed.is_none() {
            tracing::warn!(container = %c.name, resource = r.as_str(), "unreadable committed value in a Rightsizing; ignored");
        }
        match r {
            Resource::Memory => s.memory = committed,
            Resource::Cpu => s.cpu = committed,
        }
        history.extend(rs.changes.iter().filter_map(|v| {
            Some(HistoryEntry {
                resource: r,
                committed: committed_of(r, v)?,
            })
        }));
    }
    // Oldest first, as the analyzer keeps it.
    history.sort_by_key(|h| h.committed.at);
    s.history = history;
    s.oom = c.oom_hold.as_ref().and_then(|h| {
        Some(OomHold {
            floor: Resource::Memory.parse(&h.floor).ok()?,
            until: h.until,
            pod: h.pod.clone(),
        })
    });
    s
}

/// The workload key a Rightsizing describes.
pub fn workload_key(namespace: &str, spec: &RightsizingSpec) -> Option<WorkloadKey> {
    let w = &spec.workload;
    let api_version = Some(w.api_version.as_str()).filter(|v| !v.is_empty());
    let kind = match api_version {
        // A scaled controller's (registered by discovery) as well as the table's.
        Some(v) => WorkloadKind::from_api_or_scaled(group_of(v), &w.kind),
        None => WorkloadKind::from_kind(None, &w.kind),
    };
    Some(WorkloadKey {
        namespace: namespace.to_string(),
        kind: kind?,
        name: w.name.clone(),
    })
}

/// Every container's state in a status.
pub fn states(status: &Status) -> BTreeMap<String, ContainerState> {
    status
        .containers
        .iter()
        .map(|c| (c.name.clone(), container_state(c)))
        .filter(|(_, s)| *s != ContainerState::default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rightsizer_core::quantity::MI;

    #[test]
    fn names_are_kind_dash_name_and_long_ones_get_a_stable_hash() {
        assert_eq!(
            object_name(WorkloadKind::Deployment, "checkout"),
            "deployment-checkout"
        );
        assert_eq!(
            object_name(WorkloadKind::CronJob, "nightly.report"),
            "cronjob-nightly.report"
        );
        let long = "a".repeat(253);
        let n = object_name(WorkloadKind::StatefulSet, &long);
        assert_eq!(n.len(), 253);
        assert_eq!(n, object_name(WorkloadKind::StatefulSet, &long));
        let other = object_name(WorkloadKind::StatefulSet, &format!("{}b", "a".repeat(252)));
        assert_ne!(n, other, "two long names never share an object");
        let odd = object_name(WorkloadKind::Deployment, "Web_App");
        assert!(
            odd.starts_with("deployment-web-app-") && odd.len() == 29,
            "{odd}"
        );
    }

    #[test]
    fn state_round_trips_through_the_status() {
        let mut s = ContainerState::default();
        for i in 1..=12u64 {
            s.record(
                Resource::Memory,
                Committed {
                    sizes: Sizes {
                        request: Some(i * 16 * MI),
                        limit: Some(i * 32 * MI),
                    },
                    at: 1_700_000_000 + i,
                    reason: format!("step {i}"),
                },
            );
        }
        s.oom = Some(OomHold {
            floor: 300 * MI,
            until: 1_700_003_600,
            pod: "web-1".into(),
        });
        let mut status = Status::default();
        let saved = Saved {
            key: rightsizer_core::recommendation::ContainerKey::parse("a/Deployment/web/app")
                .unwrap(),
            state: s.clone(),
            rec: None,
            strategy: "seed".into(),
            cooldown_seconds: 1800,
        };
        put_container(&mut status, "app", &saved);
        let m = status.containers[0].memory.as_ref().unwrap();
        assert_eq!(m.changes.len(), CHANGES_KEPT);
        assert_eq!(m.changes[0].at, 1_700_000_012, "newest first");
        assert_eq!(status.memory_committed, "app=192Mi/384Mi");
        assert_eq!(status.last_change.as_deref(), Some("2023-11-14T22:13:32Z"));
        let back = container_state(&status.containers[0]);
        assert_eq!(back.memory, s.memory);
        assert_eq!(back.oom, s.oom);
        assert_eq!(back.history.len(), CHANGES_KEPT);
        assert_eq!(back.history.last(), s.history.last());
    }
}
