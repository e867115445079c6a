//! The updater: brings running Pods of enforce-mode workloads to their committed values
//! (issue 22), in the analyzer's leader. Off unless `serve --updater` (the
//! `deploy/overlays/updater` overlay, chart value `updater.enabled`) grants it the
//! rights AND a policy's `update.mode` turns it on for a workload.
//!
//! Each pass: the committed values from the Rightsizings, the Pods of the workloads
//! whose policy enables it, one decision per workload (`rightsizer_core::update::decide`),
//! at most one action per workload, within a cluster-wide rate. Nothing is forced: an
//! eviction a PodDisruptionBudget refuses is tried again on a later pass.

#[cfg(feature = "test-support")]
pub mod access;
#[cfg(not(feature = "test-support"))]
mod access;
mod act;
mod gather;
pub mod knative;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use rightsizer_core::policy::schema::Mode;
use rightsizer_core::update::budget::Budget;
use rightsizer_core::update::pace::Refusals;
use rightsizer_core::update::policy::UpdateMode;
use rightsizer_core::update::{decide, Decision, Hold, Inputs};
use rightsizer_core::workload::WorkloadKey;

use crate::analyzer::policies::{PoliciesLookup, PolicyLookup};
use crate::analyzer::state::CommitStore;
use crate::clock::unix_now;
use crate::kube::KubeHandles;
use crate::lock::LockExt;
use access::Served;
use act::{Executor, Outcome, UpdaterMetrics};

/// How the updater runs (`serve --updater-*`).
#[derive(Debug, Clone, Copy)]
pub struct UpdaterOptions {
    /// Time between passes.
    pub interval: Duration,
    /// Cluster-wide cap on evictions and resizes per minute.
    pub per_minute: u32,
    /// `serve --enforcement`: without it nothing is committed, so nothing to bring Pods to.
    pub enforcement: bool,
}

/// Whether the updater can do its work: `/readyz` says so when it cannot.
#[derive(Debug, Default)]
pub struct UpdaterHealth(Mutex<Option<String>>);

impl UpdaterHealth {
    pub fn check(&self) -> Result<(), String> {
        match self.0.locked().clone() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    fn set(&self, why: Option<String>) {
        *self.0.locked() = why;
    }
}

struct Updater {
    client: Client,
    handles: Handles,
    lookup: Arc<PoliciesLookup>,
    options: UpdaterOptions,
    served: Served,
    exec: Executor,
    last_action: Mutex<Option<Instant>>,
    /// The last hold logged per workload (each new reason is logged once).
    holds: Mutex<BTreeMap<WorkloadKey, String>>,
    /// Per workload: evictions refused in a row, and its rounds of updates.
    paces: Mutex<BTreeMap<WorkloadKey, Pace>>,
    /// Listing budgets failed once (logged once).
    budgets_unread: AtomicBool,
}

/// What the updater remembers of one workload between passes (the leader's memory: a
/// new leader starts afresh, which at worst tries a refused eviction early once).
#[derive(Debug, Clone, Copy, Default)]
struct Pace {
    refusals: Refusals,
    /// It acted since the last round ended.
    acted: bool,
    round_ended_at: Option<i64>,
}

/// The parts of the Kubernetes side the updater reads.
struct Handles {
    facts: Arc<crate::kube::facts::KubeFacts>,
    store: Arc<crate::kube::store::KubeStore>,
    leader: Arc<crate::kube::leader::Leader>,
}

/// Discover what the apiserver serves, check the permissions, and spawn the passes.
/// Returns the task and the health `/readyz` reports. `client` must not retry 429
/// answers itself (`Config::default_retry` off): a PodDisruptionBudget's refusal is one.
pub async fn start(
    client: Client,
    k: &KubeHandles,
    lookup: Arc<PoliciesLookup>,
    registry: &mut Registry,
    options: UpdaterOptions,
) -> Result<(JoinHandle<()>, Arc<UpdaterHealth>), crate::kube::error::KubeError> {
    let mut served = access::discover(&client).await?;
    let health = Arc::new(UpdaterHealth::default());
    let eviction = served.eviction.unwrap_or("policy/v1");
    // Listing the Pods of the namespace it acts in comes with the overlay too (the base
    // grants nothing on Pods).
    let may_evict = access::may(&client, "create", "eviction").await?
        && access::may(&client, "list", "").await?;
    if served.api.in_place() && !access::may(&client, "patch", "resize").await? {
        tracing::warn!("updater: the apiserver serves pods/resize but this identity may not patch it; resizing by eviction only");
        served.api.resize_subresource = false;
    }
    tracing::info!(
        version = ?served.api.version,
        in_place = served.api.in_place(),
        eviction = ?served.eviction,
        "updater: what the apiserver serves"
    );
    if served.eviction.is_none() {
        health.set(Some("updater: the apiserver serves no Eviction API".into()));
    } else if !may_evict {
        let why = "updater: this identity may not list pods or create pods/eviction (apply deploy/overlays/updater or set the chart value updater.enabled)";
        tracing::error!("{why}");
        health.set(Some(why.into()));
    }
    let updater = Arc::new(Updater {
        exec: Executor {
            client: client.clone(),
            recorder: k.recorder.clone(),
            writer: k.writer.clone(),
            store: k.store.clone(),
            metrics: UpdaterMetrics::register(registry),
            eviction_version: eviction,
        },
        client,
        handles: Handles {
            facts: k.facts.clone(),
            store: k.store.clone(),
            leader: k.leader.clone(),
        },
        lookup,
        options,
        served,
        last_action: Mutex::new(None),
        holds: Mutex::new(BTreeMap::new()),
        paces: Mutex::new(BTreeMap::new()),
        budgets_unread: AtomicBool::new(false),
    });
    let h = health.clone();
    let task = tokio::spawn(async move {
        updater.handles.store.synced().await;
        updater.handles.facts.synced().await;
        loop {
            tokio::time::sleep(updater.options.interval).await;
            if h.check().is_ok() && updater.handles.leader.is_leader() {
                updater.pass().await;
            }
        }
    });
    Ok((task, health))
}

impl Updater {
    /// The namespace's budgets; none when they cannot be read (the Eviction API still
    /// enforces them: only the refusals known beforehand are lost).
    async fn budgets(&self, ns: &str) -> Vec<Budget> {
        match gather::budgets(&self.client, ns, self.exec.eviction_version).await {
            Ok(b) => b,
            Err(e) => {
                if !self.budgets_unread.swap(true, Ordering::Relaxed) {
                    tracing::warn!(namespace = %ns, error = %e, "updater: cannot list PodDisruptionBudgets (deploy/overlays/updater grants it); evictions they refuse are tried and refused");
                }
                Vec::new()
            }
        }
    }

    fn rate_ok(&self) -> bool {
        let gap = Duration::from_secs(60) / self.options.per_minute.max(1);
        self.last_action.locked().is_none_or(|t| t.elapsed() >= gap)
    }

    /// One pass over the workloads whose policy enables the updater.
    async fn pass(&self) {
        if !self.options.enforcement {
            return;
        }
        let now = unix_now();
        let targets = gather::targets(&self.handles.store.load(), now);
        let mut by_ns: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for (w, target) in targets {
            let policy = self.lookup.update_policy(&w);
            if policy.mode == UpdateMode::Off || self.lookup.mode(&w) != Mode::Enforce {
                continue;
            }
            let rules = self.lookup.rules(&w);
            by_ns
                .entry(w.namespace.clone())
                .or_default()
                .push((w, target, policy, rules));
        }
        // Decide every workload first, then act most urgent first: an OOM loop never
        // waits behind a plain update for the cluster-wide rate.
        let mut decided = Vec::new();
        for (ns, items) in by_ns {
            let pods = match gather::pods_by_workload(&self.client, &self.handles.facts, &ns).await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "updater: listing pods");
                    continue;
                }
            };
            let budgets = self.budgets(&ns).await;
            for (w, target, policy, rules) in items {
                let Some(views) = pods.get(&w).filter(|v| !v.is_empty()) else {
                    continue;
                };
                let pace = self.paces.locked().get(&w).copied().unwrap_or_default();
                let d = decide(&Inputs {
                    kind: w.kind,
                    policy: &policy,
                    rules: &rules,
                    target: &target,
                    pods: views,
                    desired_replicas: self.handles.facts.workload(&w).and_then(|m| m.replicas),
                    budgets: &budgets,
                    api: self.served.api,
                    now: now as i64,
                    // Checked when acting, in order of urgency.
                    rate_ok: true,
                    refusals: pace.refusals,
                    round_ended_at: pace.round_ended_at,
                });
                decided.push((w, d));
            }
        }
        decided.sort_by_key(|(_, d)| d.urgency());
        for (w, mut d) in decided {
            if !self.handles.leader.is_leader() {
                return;
            }
            if !matches!(d, Decision::Nothing(_)) && !self.rate_ok() {
                d = Decision::Nothing(Hold::RateLimited);
            }
            match &d {
                Decision::Nothing(hold) => {
                    if *hold == Hold::UpToDate {
                        let mut paces = self.paces.locked();
                        let p = paces.entry(w.clone()).or_default();
                        if p.acted {
                            p.acted = false;
                            p.round_ended_at = Some(now as i64);
                        }
                    }
                    let why = hold.to_string();
                    let mut holds = self.holds.locked();
                    if holds.get(&w) != Some(&why) {
                        tracing::info!(workload = %w, "updater: nothing to do: {why}");
                        holds.insert(w.clone(), why);
                    }
                }
                _ => {
                    self.holds.locked().remove(&w);
                    // Only what disrupted a Pod uses the rate: a refused eviction
                    // (tried again every pass) must not starve the other workloads.
                    let outcome = self.exec.execute(&w, &d).await;
                    if outcome == Some(Outcome::Done) {
                        *self.last_action.locked() = Some(Instant::now());
                    }
                    let mut paces = self.paces.locked();
                    let p = paces.entry(w.clone()).or_default();
                    match outcome {
                        Some(Outcome::Done) => {
                            p.acted = true;
                            p.refusals = Refusals::default();
                        }
                        Some(Outcome::RefusedByBudget) => {
                            p.refusals = p.refusals.after(true, unix_now() as i64);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
