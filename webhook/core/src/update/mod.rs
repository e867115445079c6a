//! The updater's decision: given a workload's committed values, its running Pods and
//! what the cluster allows, what to do next — nothing (and why), resize one Pod in
//! place (the exact patch), or evict one Pod. Pure: the analyzer's leader gathers the
//! inputs and carries out the one [`Decision`] (`rightsizer::updater`).
//!
//! One Pod at a time per workload: nothing happens while a Pod of the workload is
//! terminating, not ready, or mid-resize. An OOM-restarting container comes first (a Pod
//! not ready because it loops is no replacement settling), waits for no backoff or round
//! pause, and only for a budget that would surely refuse it.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::quantity::{PerResource, Resource};
use crate::rules::{Rules, Sizes};
use crate::workload::kind::WorkloadKind;

pub mod budget;
pub mod observe;
pub mod pace;
pub mod policy;
pub mod qos;

use budget::Budget;
use observe::{PodView, ResizePhase, RunningContainer};
use pace::Refusals;
use policy::{UpdateMode, UpdatePolicy};
use qos::{qos_class, QosClass};

/// What the apiserver offers, from its version and discovery (never guessed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiSupport {
    /// Server (major, minor).
    pub version: (u32, u32),
    /// Discovery of `v1` lists `pods/resize`.
    pub resize_subresource: bool,
}

impl ApiSupport {
    /// In-place resize through the `resize` subresource: served from v1.33 (beta; before
    /// it the alpha wrote the Pod spec directly, which rightsizer does not do).
    pub fn in_place(&self) -> bool {
        self.resize_subresource && self.version >= (1, 33)
    }

    /// Lowering a memory limit in place is refused before v1.34.
    pub fn memory_limit_decrease(&self) -> bool {
        self.version >= (1, 34)
    }
}

/// The Eviction API to post to, from the group versions discovery lists for `policy`:
/// `policy/v1` where served (1.22+), else `policy/v1beta1` (v1.20, v1.21).
pub fn eviction_version(served: &[&str]) -> Option<&'static str> {
    ["policy/v1", "policy/v1beta1"]
        .into_iter()
        .find(|v| served.contains(v))
}

/// Whether a workload's controller replaces an evicted Pod. Bare Pods (and Pods of
/// controllers rightsizer does not know, which resolve to themselves) and Jobs are
/// never evicted: nothing would bring them back, or a run would be lost. Nor are Pods
/// of scaled controllers (Argo Rollouts), whose rollout state rightsizer does not read.
pub fn recreates(kind: WorkloadKind) -> bool {
    match kind {
        WorkloadKind::Deployment
        | WorkloadKind::StatefulSet
        | WorkloadKind::DaemonSet
        | WorkloadKind::ReplicaSet
        | WorkloadKind::KnativeService
        | WorkloadKind::KnativeConfiguration => true,
        WorkloadKind::Pod | WorkloadKind::Job | WorkloadKind::CronJob => false,
        // Its ReplicaSet would bring a Pod back, but the controller may be mid-rollout
        // (canary steps, a paused analysis) in ways rightsizer cannot read: its Pods
        // take committed values when it next creates them.
        WorkloadKind::Scaled(_) => false,
    }
}

/// The values running Pods should carry, per container: the committed sides (a side
/// left `None` is not managed) and an active OOM floor (bytes of memory).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    pub containers: BTreeMap<String, PerResource<Sizes>>,
    pub oom_floor: BTreeMap<String, u64>,
    /// Unix seconds of the newest commit among these values.
    pub committed_at: i64,
}

/// How long after a commit a new Pod may still have been admitted without it (the
/// webhook replicas learn commits through a watch; clocks differ a little).
pub const COMMIT_SPREAD_SECONDS: i64 = 30;

/// Everything the decision reads about one workload.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub kind: WorkloadKind,
    pub policy: &'a UpdatePolicy,
    /// The selected policy's rules (their hysteresis says what differs enough).
    pub rules: &'a Rules,
    pub target: &'a Target,
    pub pods: &'a [PodView],
    /// `spec.replicas` where the workload has one.
    pub desired_replicas: Option<u32>,
    /// The PodDisruptionBudgets of the namespace (a Pod one of them surely refuses is
    /// skipped; the Eviction API still enforces them all).
    pub budgets: &'a [Budget],
    pub api: ApiSupport,
    /// Unix seconds now.
    pub now: i64,
    /// The cluster-wide rate has room for one more action.
    pub rate_ok: bool,
    /// Evictions of this workload its budget refused in a row.
    pub refusals: Refusals,
    /// Unix seconds the last round of updates of this workload ended (every Pod carried
    /// the values after the updater acted), if one did.
    pub round_ended_at: Option<i64>,
}

/// Why a Pod is acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Restarting after OOM kills, below the committed memory.
    OomLoop { container: String },
    /// Memory below the OOM floor.
    BelowFloor { container: String },
    /// Differs from the committed values beyond the hysteresis.
    Drift {
        container: String,
        resource: Resource,
    },
    /// A resize the node cannot fit.
    ResizeInfeasible,
    /// A resize still deferred after the policy's timeout.
    ResizeDeferred,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::OomLoop { container } => {
                write!(f, "container {container} restarts after OOM kills")
            }
            Why::BelowFloor { container } => {
                write!(f, "container {container} is below its OOM floor")
            }
            Why::Drift {
                container,
                resource,
            } => {
                write!(
                    f,
                    "{} of container {container} differs from the committed value",
                    resource.as_str()
                )
            }
            Why::ResizeInfeasible => f.write_str("the node cannot fit the resize in place"),
            Why::ResizeDeferred => f.write_str("the resize stayed deferred past the timeout"),
        }
    }
}

/// Why nothing happens now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Off,
    NotRecreated,
    UpToDate,
    /// A Pod is terminating or not ready: the previous replacement has not settled.
    Settling {
        pod: String,
    },
    ResizeInProgress {
        pod: String,
    },
    OutsideWindow,
    RateLimited,
    DoNotDisrupt {
        pod: String,
        annotation: &'static str,
    },
    LastReplica,
    /// This budget would refuse evicting the Pod now.
    Budget {
        name: String,
    },
    /// Evictions refused by the budget in a row: the next try waits.
    BackingOff {
        refusals: u32,
        seconds: i64,
    },
    /// The last round ended less than the policy's `roundIntervalSeconds` ago.
    BetweenRounds,
    /// A Pod created after the commit does not carry the committed values: admission
    /// gives new Pods something else (an override, a value the user wrote, the webhook
    /// unreachable), so replacing more Pods would change nothing.
    NotConverging {
        pod: String,
    },
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Off => f.write_str("update is off"),
            Hold::NotRecreated => f.write_str("no controller would recreate its Pods"),
            Hold::UpToDate => f.write_str("running Pods carry the committed values"),
            Hold::Settling { pod } => write!(f, "waiting for Pod {pod} to be ready or gone"),
            Hold::ResizeInProgress { pod } => write!(f, "Pod {pod} is being resized"),
            Hold::OutsideWindow => f.write_str("outside the update window"),
            Hold::RateLimited => f.write_str("the cluster-wide update rate is used up"),
            Hold::DoNotDisrupt { pod, annotation } => write!(f, "Pod {pod} is marked {annotation}"),
            Hold::LastReplica => f.write_str("it would take the last ready replica"),
            Hold::Budget { name } => {
                write!(f, "its PodDisruptionBudget {name} allows no disruption now")
            }
            Hold::BackingOff { refusals, seconds } => write!(
                f,
                "its PodDisruptionBudget refused {refusals} evictions in a row: trying again {seconds} s after the last"
            ),
            Hold::BetweenRounds => {
                f.write_str("the last round of updates ended less than roundIntervalSeconds ago")
            }
            Hold::NotConverging { pod } => write!(
                f,
                "Pod {pod}, created after the commit, does not carry the committed values: admission gives new Pods other values"
            ),
        }
    }
}

/// What to do next for one workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Nothing(Hold),
    /// Strategic-merge patch `body` to the Pod's `resize` subresource.
    Resize {
        pod: String,
        body: Value,
        why: Why,
    },
    Evict {
        pod: String,
        why: Why,
    },
}

/// The memory a container is judged by against a floor: its limit, else its request.
fn memory_bound(c: &RunningContainer) -> Option<u64> {
    c.memory.limit.or(c.memory.request)
}

fn side_differs(rules: &Rules, r: Resource, cur: Sizes, want: Sizes) -> bool {
    let d =
        |cur: Option<u64>, want: Option<u64>| want.is_some_and(|w| rules.worth_changing(r, cur, w));
    d(cur.request, want.request) || d(cur.limit, want.limit)
}

/// Why a Pod needs an update (most urgent first), if it does.
fn needs(inputs: &Inputs<'_>, pod: &PodView) -> Option<Why> {
    let mut drift = None;
    for c in &pod.containers {
        let want = inputs.target.containers.get(&c.name);
        let floor = inputs.target.oom_floor.get(&c.name).copied();
        let below_floor = floor.is_some_and(|f| memory_bound(c).is_some_and(|m| m < f));
        let mem_differs =
            want.is_some_and(|w| side_differs(inputs.rules, Resource::Memory, c.memory, w.memory));
        if c.oom_restarted && (below_floor || mem_differs) {
            return Some(Why::OomLoop {
                container: c.name.clone(),
            });
        }
        if below_floor {
            drift = Some(Why::BelowFloor {
                container: c.name.clone(),
            });
            continue;
        }
        if drift.is_some() {
            continue;
        }
        for r in [Resource::Memory, Resource::Cpu] {
            if want.is_some_and(|w| side_differs(inputs.rules, r, *c.get(r), w[r])) {
                drift = Some(Why::Drift {
                    container: c.name.clone(),
                    resource: r,
                });
                break;
            }
        }
    }
    drift
}

impl RunningContainer {
    fn get(&self, r: Resource) -> &Sizes {
        match r {
            Resource::Memory => &self.memory,
            Resource::Cpu => &self.cpu,
        }
    }
}

fn urgency(w: &Why) -> u8 {
    match w {
        Why::OomLoop { .. } => 0,
        Why::BelowFloor { .. } => 1,
        _ => 2,
    }
}

/// The order candidates of one workload go in: most urgent first; among OOM-looping Pods
/// a not-ready one first (a PodDisruptionBudget lets a not-ready Pod go while the ready
/// replicas still meet it, when it would refuse taking a ready one); then by name.
fn order<'a>(p: &'a PodView, w: &Why) -> (u8, bool, &'a str) {
    let oom = matches!(w, Why::OomLoop { .. });
    (urgency(w), oom && p.ready, p.name.as_str())
}

impl Decision {
    /// Which workload's action goes first in a pass, when the cluster-wide rate cannot
    /// take them all: an OOM loop, then a Pod below its floor, then the rest.
    pub fn urgency(&self) -> u8 {
        match self {
            Decision::Nothing(_) => u8::MAX,
            Decision::Resize { why, .. } | Decision::Evict { why, .. } => urgency(why),
        }
    }
}

/// The containers' values after the update: committed sides in place of the running
/// ones, memory raised to the floor.
fn updated(target: &Target, pod: &PodView) -> Vec<RunningContainer> {
    pod.containers
        .iter()
        .map(|c| {
            let mut n = c.clone();
            if let Some(w) = target.containers.get(&c.name) {
                let put = |s: &mut Sizes, w: Sizes| {
                    // Without a target limit (the updater manages requests: admission
                    // derives a new Pod's limit by the policy's limit rule, keepRatio by
                    // default), a resize keeps the running limit/request ratio, so the
                    // QoS class and the headroom stay.
                    let limit = match (w.limit, w.request, s.request, s.limit) {
                        (Some(l), ..) => Some(l),
                        (None, Some(new), Some(old), Some(lim)) if old > 0 => {
                            let scaled = u128::from(lim) * u128::from(new) / u128::from(old);
                            Some(u64::try_from(scaled).unwrap_or(u64::MAX).max(new))
                        }
                        _ => s.limit,
                    };
                    s.request = w.request.or(s.request);
                    s.limit = limit;
                };
                put(&mut n.memory, w.memory);
                put(&mut n.cpu, w.cpu);
            }
            n
        })
        .collect()
}

/// The patch for the `resize` subresource: the changed containers' resources only.
pub fn resize_body(before: &[RunningContainer], after: &[RunningContainer]) -> Value {
    let containers: Vec<Value> = before
        .iter()
        .zip(after)
        .filter(|(b, a)| b != a)
        .map(|(_, a)| {
            let mut requests = Map::new();
            let mut limits = Map::new();
            for r in [Resource::Memory, Resource::Cpu] {
                let s = a.get(r);
                if let Some(v) = s.request {
                    requests.insert(r.as_str().into(), r.format(v).into());
                }
                if let Some(v) = s.limit {
                    limits.insert(r.as_str().into(), r.format(v).into());
                }
            }
            json!({"name": a.name, "resources": {"requests": requests, "limits": limits}})
        })
        .collect();
    json!({ "spec": { "containers": containers } })
}

/// Whether the change can be made in place: served, same QoS class (the apiserver
/// refuses a class change), and no memory limit lowered where that is refused.
fn in_place_ok(api: ApiSupport, before: &[RunningContainer], after: &[RunningContainer]) -> bool {
    let lowers_memory_limit = before
        .iter()
        .zip(after)
        .any(|(b, a)| matches!((b.memory.limit, a.memory.limit), (Some(b), Some(a)) if a < b));
    api.in_place()
        && qos_class(before) == qos_class(after)
        && qos_class(after) != QosClass::BestEffort
        && (!lowers_memory_limit || api.memory_limit_decrease())
}

/// Decide the next step for one workload.
pub fn decide(i: &Inputs<'_>) -> Decision {
    use Decision::Nothing;
    if i.policy.mode == UpdateMode::Off {
        return Nothing(Hold::Off);
    }
    if !recreates(i.kind) {
        return Nothing(Hold::NotRecreated);
    }
    if let Some(p) = i.pods.iter().find(|p| p.terminating) {
        return Nothing(Hold::Settling {
            pod: p.name.clone(),
        });
    }
    // A resize that failed or waited too long falls back to eviction, below.
    let mut fallback = None;
    for p in i.pods {
        let Some(r) = p.resize else { continue };
        let waited = i.now.saturating_sub(r.since) >= i.policy.resize_timeout_seconds as i64;
        match r.phase {
            ResizePhase::Infeasible => fallback = Some((p, Why::ResizeInfeasible)),
            ResizePhase::Deferred if waited => fallback = Some((p, Why::ResizeDeferred)),
            _ => {
                return Nothing(Hold::ResizeInProgress {
                    pod: p.name.clone(),
                })
            }
        }
        break;
    }
    let (pod, why) = match fallback {
        Some(f) => f,
        None => {
            let mut candidates: Vec<(&PodView, Why)> = i
                .pods
                .iter()
                .filter_map(|p| needs(i, p).map(|w| (p, w)))
                .collect();
            candidates.sort_by_key(|(p, w)| order(p, w));
            let Some(first) = candidates.first() else {
                return Nothing(Hold::UpToDate);
            };
            if let Some((p, _)) = candidates
                .iter()
                .find(|(p, _)| p.created > i.target.committed_at + COMMIT_SPREAD_SECONDS)
            {
                return Nothing(Hold::NotConverging {
                    pod: p.name.clone(),
                });
            }
            // Another Pod not ready: the last replacement has not settled. A Pod that is
            // not ready because it loops on OOM kills is no replacement settling: it waits
            // its own turn (with every replica looping, none would ever be ready).
            let looping = |p: &PodView| {
                candidates
                    .iter()
                    .any(|(c, w)| c.name == p.name && matches!(w, Why::OomLoop { .. }))
            };
            if let Some(p) = i
                .pods
                .iter()
                .find(|p| !p.ready && p.name != first.0.name && !looping(p))
            {
                return Nothing(Hold::Settling {
                    pod: p.name.clone(),
                });
            }
            if let Some((p, _)) = candidates.iter().find(|(p, _)| p.do_not_disrupt.is_some()) {
                if candidates.iter().all(|(p, _)| p.do_not_disrupt.is_some()) {
                    return Nothing(Hold::DoNotDisrupt {
                        pod: p.name.clone(),
                        annotation: p.do_not_disrupt.unwrap_or_default(),
                    });
                }
            }
            let Some(c) = candidates
                .into_iter()
                .find(|(p, _)| p.do_not_disrupt.is_none())
            else {
                return Nothing(Hold::UpToDate);
            };
            c
        }
    };
    if let Some(annotation) = pod.do_not_disrupt {
        return Nothing(Hold::DoNotDisrupt {
            pod: pod.name.clone(),
            annotation,
        });
    }
    if i.policy.window.as_ref().is_some_and(|w| !w.contains(i.now)) {
        return Nothing(Hold::OutsideWindow);
    }
    // An OOM loop or a Pod below its floor waits for nothing but the budget.
    let urgent = matches!(why, Why::OomLoop { .. } | Why::BelowFloor { .. });
    let pause = i.policy.round_interval_seconds as i64;
    if !urgent
        && i.round_ended_at
            .is_some_and(|t| i.now < t.saturating_add(pause))
    {
        return Nothing(Hold::BetweenRounds);
    }
    if !i.rate_ok {
        return Nothing(Hold::RateLimited);
    }
    let after = updated(i.target, pod);
    let resize_failed = matches!(why, Why::ResizeInfeasible | Why::ResizeDeferred);
    if i.policy.mode == UpdateMode::InPlaceOrEvict
        && !resize_failed
        && in_place_ok(i.api, &pod.containers, &after)
    {
        return Decision::Resize {
            pod: pod.name.clone(),
            body: resize_body(&pod.containers, &after),
            why,
        };
    }
    // An OOM loop is tried every pass: a replica running between its kills opens the
    // budget for a few seconds only.
    if !urgent && i.refusals.waiting(i.now) {
        return Nothing(Hold::BackingOff {
            refusals: i.refusals.count,
            seconds: i.refusals.backoff_seconds(),
        });
    }
    // Eviction takes a ready Pod away: keep one ready replica unless allowed, and skip a
    // Pod a budget surely refuses (the Eviction API would refuse it anyway).
    if pod.ready && !i.policy.allow_last_replica {
        let ready = i.pods.iter().filter(|p| p.ready).count();
        if ready <= 1 || i.desired_replicas.is_some_and(|d| d <= 1) {
            return Nothing(Hold::LastReplica);
        }
    }
    if let Some(b) = i
        .budgets
        .iter()
        .find(|b| b.covers(&pod.labels) && b.refuses(pod.ready))
    {
        return Nothing(Hold::Budget {
            name: b.name.clone(),
        });
    }
    Decision::Evict {
        pod: pod.name.clone(),
        why,
    }
}

#[cfg(test)]
mod tests;
