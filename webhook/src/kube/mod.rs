//! The webhook's Kubernetes side: watchers that mirror what admission needs (policy
//! ConfigMaps, namespaces, LimitRanges, PriorityClasses, owner chains, HPAs, workload
//! metadata), committed state in `Rightsizing` objects, Events, and leader election.
//!
//! `start` spawns it all and returns the handles `serve` wires in: `facts` for the
//! `Admitter` and the analyzer's policy selection, `overlay` around the recommendation
//! source, `store` (the analyzer's `CommitStore`), `writer` for Events, `leader` for the
//! analyzer's one leadership check, `pods` (started only when the analyzer needs it) in
//! place of kube-state-metrics.

pub mod bare_pods;
pub mod certjob;
pub mod certsecret;
pub mod committed;
pub(crate) mod discovery;
pub mod error;
pub mod events;
pub mod facts;
pub mod leader;
pub mod mirror;
pub mod pod_access;
pub mod pods;
pub(crate) mod policies;
#[cfg(feature = "test-support")]
pub mod rightsizing;
#[cfg(not(feature = "test-support"))]
pub(crate) mod rightsizing;
pub mod selfcert;
pub mod store;
pub mod sync;
mod watchers;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use error::KubeError;
pub use events::{EventLimits, Published, Recorder};
use facts::KubeFacts;
use leader::{Leader, LeaseTimings};
use store::{CommittedOverlay, KubeStore};
use sync::WatchBoard;
use writer::KubeWriter;

use rightsizer_core::recommendation::RecommendationSource;

use crate::analyzer::state::CommitStore;
use crate::policies::store::PolicyStore;

/// How the Kubernetes side runs.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// This replica's name in the Lease and Events (the pod name in a cluster).
    pub identity: String,
    pub lease: LeaseTimings,
    pub events: EventLimits,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            identity: default_identity(),
            lease: LeaseTimings::default(),
            events: EventLimits::default(),
        }
    }
}

/// `POD_NAME` (downward API), else the host name (the pod name in a cluster), else
/// a name with the process id.
pub fn default_identity() -> String {
    ["POD_NAME", "HOSTNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("rightsizer-{}", std::process::id()))
}

/// The running Kubernetes side.
pub struct KubeHandles {
    /// Cluster facts for the `Admitter`.
    pub facts: Arc<KubeFacts>,
    pub leader: Arc<Leader>,
    /// Committed state in Rightsizing objects (written by the leader).
    pub store: Arc<KubeStore>,
    /// Posts Events (leader only).
    pub writer: Arc<KubeWriter>,
    pub recorder: Arc<Recorder>,
    /// Pods for the analyzer when kube-state-metrics is absent. Not on the board's
    /// readiness gate: admission never reads them, and the watch starts and stops with
    /// kube-state-metrics' absence.
    pub pods: Arc<pods::PodWatch>,
    /// Which watchers have their first list (`/readyz`, `rightsizer_watch_synced`).
    pub board: Arc<WatchBoard>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeHandles {
    /// `inner` with the committed values read from the Rightsizings filled in.
    pub fn overlay(&self, inner: Arc<dyn RecommendationSource>) -> Arc<CommittedOverlay> {
        Arc::new(CommittedOverlay::new(inner, self.store.clone()))
    }

    /// Whether the analyzer acts on a namespace: the one opt-in predicate
    /// (`rightsizer_core::cluster::opt_in::acts_on`) with the watched labels (a namespace
    /// not seen yet is not acted on).
    pub fn opted_in(&self, own_namespace: &str) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let (facts, own) = (self.facts.clone(), own_namespace.to_string());
        move |ns| {
            use rightsizer_core::cluster::ClusterFacts;
            let labels = &facts.namespace(ns).labels;
            rightsizer_core::cluster::opt_in::acts_on(ns, Some(labels), Some(&own))
        }
    }

    /// The store as the analyzer's `CommitStore`.
    pub fn commit_store(&self) -> Arc<dyn CommitStore> {
        self.store.clone()
    }

    /// Wait for every watcher's first complete list (policies and Rightsizings included).
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), KubeError> {
        tokio::time::timeout(timeout, self.board.synced())
            .await
            .map_err(|_| KubeError::SyncTimeout(timeout))
    }

    /// Stop: give the Lease up (so another replica leads at once) and end the watchers.
    pub async fn shutdown(self) -> Result<(), KubeError> {
        let released = self.leader.release().await;
        self.pods.stop();
        for t in &self.tasks {
            t.abort();
        }
        released
    }

    /// Stop without releasing the Lease (as a crashed replica would): the others take
    /// over once it expires.
    pub fn abandon(self) {
        self.pods.stop();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Start with the default options (identity from `POD_NAME`/`HOSTNAME`).
pub async fn start(
    client: Client,
    own_namespace: &str,
    policies: Arc<PolicyStore>,
    registry: &mut Registry,
) -> Result<KubeHandles, KubeError> {
    start_with(
        client,
        own_namespace,
        policies,
        registry,
        KubeOptions::default(),
    )
    .await
}

/// Discover API versions, spawn the watchers and the election, and return at once
/// (use `wait_synced` to wait for the first lists).
pub async fn start_with(
    client: Client,
    own_namespace: &str,
    policies: Arc<PolicyStore>,
    registry: &mut Registry,
    options: KubeOptions,
) -> Result<KubeHandles, KubeError> {
    let workloads = discovery::workloads(&client).await?;
    let hpas = discovery::hpas(&client).await?;
    // Optional: without it, Pods of scaled controllers stay with their ReplicaSets.
    let scaled = discovery::scaled(&client).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "discovering scaled controllers failed; their Pods are keyed to their ReplicaSets");
        Default::default()
    });
    let versions = workloads
        .values()
        .map(|r| format!("{}={}", r.plural, r.api_version));
    let workload_versions = versions.collect::<Vec<_>>().join(", ");
    tracing::info!(workloads = %workload_versions, hpas = %hpas.api_version, "API versions in use");

    let recorder = Arc::new(Recorder::new(
        client.clone(),
        options.identity.clone(),
        options.events,
    ));
    recorder.register_metrics(registry);
    let leader = Leader::new(
        client.clone(),
        own_namespace,
        options.identity.clone(),
        options.lease,
    );
    leader.register_metrics(registry);

    let mut w = watchers::Watches {
        client: client.clone(),
        board: WatchBoard::new(registry),
        tasks: Vec::new(),
    };
    let facts = watchers::spawn(&mut w, &workloads, &hpas, scaled);
    policies::watch(
        &mut w,
        own_namespace.to_string(),
        policies,
        recorder.clone(),
    );
    w.tasks.push(tokio::spawn(leader.clone().run()));

    let pods = pods::PodWatch::new(client.clone(), facts.clone(), w.board.size("pods"));
    let rsz_mirror = w.new_mirror("rightsizings");
    let writer = Arc::new(KubeWriter::new(facts.clone(), recorder.clone(), workloads));
    KubeStore::watch(&mut w, rsz_mirror.clone());
    let still_leading = {
        let leader = leader.clone();
        Arc::new(move || leader.is_leader())
    };
    let store = Arc::new(KubeStore::new(
        client,
        rsz_mirror,
        writer.clone(),
        facts.clone(),
        still_leading,
    ));
    w.tasks
        .push(tokio::spawn(migrate_once(store.clone(), leader.clone())));
    Ok(KubeHandles {
        facts,
        leader,
        store,
        writer,
        recorder,
        pods,
        board: w.board,
        tasks: w.tasks,
    })
}

/// Import the legacy committed annotations once, as soon as this replica leads with
/// complete lists (the Rightsizings tell which workloads are already imported).
async fn migrate_once(store: Arc<KubeStore>, leader: Arc<Leader>) {
    store.synced().await;
    store.facts_synced().await;
    let mut changes = leader.subscribe();
    loop {
        if leader.is_leader() {
            let n = store.migrate().await;
            if n > 0 {
                tracing::info!(workloads = n, "legacy committed annotations imported");
            }
            return;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}
