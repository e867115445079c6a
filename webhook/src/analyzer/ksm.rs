//! Where owners, current requests/limits, OOM kills and HPA targets come from:
//! kube-state-metrics series, or, when a cluster does not run it, the Kubernetes API
//! through the webhook's watchers (`kube::pods`). Both give the same rows to the same
//! [`FactsSink`], so the rest of a cycle cannot tell them apart.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use rightsizer_core::analysis::queries::{QueryConfig, QueryKind};

use super::gather::Acc;

/// `--kube-state-metrics`: whether its series are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KsmMode {
    /// Read them; when a cycle finds no `kube_pod_owner` series, take the facts from the
    /// Kubernetes API for that cycle.
    #[default]
    Auto,
    /// Always read them (the API is never asked).
    Always,
    /// Never query them; always take the facts from the Kubernetes API.
    Never,
}

/// The rows kube-state-metrics answers with (defined beside the accumulator that takes
/// them, so the two files do not import each other).
pub use super::gather::FactsSink;

/// The same facts read from somewhere else than Prometheus (the Kubernetes API).
pub trait WorkloadFacts: Send + Sync {
    /// Start watching if not yet, and wait up to `timeout` for the first complete list.
    fn ready(&self, timeout: Duration) -> BoxFuture<'_, bool>;
    /// Feed the pods alive now and those deleted after `since` (unix seconds), with
    /// the OOM kills that finished after `since`; only `namespace` when given. Every
    /// pod gets an owner row (`mapping::NO_OWNER` when it has none).
    fn feed(&self, since: u64, namespace: Option<&str>, sink: &mut dyn FactsSink);
}

/// The watched state's side of workloads' homes (`kube::facts`): where the live bare
/// Pods a cycle learned go, the owners of bare-Pod workloads' `Rightsizing`s (the Pod
/// watch's `feed` fills them itself; a cycle that read kube-state-metrics hands over
/// `kube_pod_info{created_by_kind="<none>"}`'s rows, so the base install, without Pod
/// access, gives bare Pods a home too); and the scaled controllers discovery found,
/// which the cycle's owner index resolves to as admission does.
pub trait HomeFacts: Send + Sync {
    /// Replace what is known of `namespace` (every one when `None`) with these live
    /// bare Pods (namespace, name, uid).
    fn refresh_bare_pods(&self, namespace: Option<&str>, live: &[(String, String, String)]);
    /// The scaled controllers (`workload::kind::ScaledKinds`).
    fn scaled(&self) -> rightsizer_core::workload::kind::ScaledKinds;
}

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("kube-state-metrics series are absent and the Pod watch has not listed all pods within {0:?}; retrying next cycle")]
    NotReady(Duration),
}

/// How long a cycle waits for the Pod watch's first list (later cycles do not wait).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Which source a cycle used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactsSource {
    KubeStateMetrics,
    KubernetesApi,
}

/// Which source a cycle uses: the API only when there is one, and kube-state-metrics is
/// not to be read or answered no `kube_pod_owner` row.
pub fn choose(mode: KsmMode, has_api: bool, ksm_answered: bool) -> FactsSource {
    match (has_api, mode) {
        (true, KsmMode::Never) => FactsSource::KubernetesApi,
        (true, KsmMode::Auto) if !ksm_answered => FactsSource::KubernetesApi,
        _ => FactsSource::KubeStateMetrics,
    }
}

/// The analyzer's choice of source, made per cycle.
pub struct Sources {
    mode: KsmMode,
    api: Option<Arc<dyn WorkloadFacts>>,
    /// See [`HomeFacts`].
    pub(super) homes: Option<Arc<dyn HomeFacts>>,
    /// The last cycle's source (0 none yet), to log changes once.
    last: AtomicU8,
}

impl Default for Sources {
    fn default() -> Self {
        Sources::new(KsmMode::Always, None)
    }
}

impl Sources {
    /// Without `api`, kube-state-metrics is the only source whatever the mode.
    pub fn new(mode: KsmMode, api: Option<Arc<dyn WorkloadFacts>>) -> Self {
        Sources {
            mode,
            api,
            homes: None,
            last: AtomicU8::new(0),
        }
    }

    /// Drop the kube-state-metrics queries when they are never to be read.
    pub(super) fn plan(&self, list: &mut Vec<(QueryKind, String)>) {
        if self.mode == KsmMode::Never && self.api.is_some() {
            list.retain(|(k, _)| !k.from_kube_state_metrics());
        }
    }

    /// After a cycle's queries: take the facts from the API when kube-state-metrics is
    /// not read (`never`) or did not answer (`auto`: no `kube_pod_owner` rows).
    pub(super) async fn complete(
        &self,
        acc: &mut Acc,
        now: u64,
        cfg: &QueryConfig,
    ) -> Result<FactsSource, FactsError> {
        if let Some(homes) = &self.homes {
            acc.owners.scaled = homes.scaled();
        }
        let source = choose(self.mode, self.api.is_some(), acc.owners.has_pod_owners());
        if let (FactsSource::KubernetesApi, Some(api)) = (source, &self.api) {
            if !api.ready(READY_TIMEOUT).await {
                return Err(FactsError::NotReady(READY_TIMEOUT));
            }
            let since = now.saturating_sub(cfg.long_window_secs);
            api.feed(since, cfg.namespace.as_deref(), acc);
            // Usage of pods deleted before the watch began: their owner is unknown, and
            // counting them as bare Pods would invent workloads.
            let before = acc.pods.len();
            let owners = &acc.owners;
            acc.pods.retain(|(ns, pod, _), _| owners.knows_pod(ns, pod));
            if acc.pods.len() < before {
                tracing::debug!(
                    containers = before - acc.pods.len(),
                    "usage of pods the Pod watch never saw is left out"
                );
            }
        }
        if let (FactsSource::KubeStateMetrics, Some(homes)) = (source, &self.homes) {
            // Rows without a uid (kube-state-metrics before v2) cannot be owners.
            acc.bare_pods.retain(|(_, _, uid)| !uid.is_empty());
            homes.refresh_bare_pods(cfg.namespace.as_deref(), &acc.bare_pods);
        }
        let code = source as u8 + 1;
        if self.last.swap(code, Ordering::Relaxed) != code {
            tracing::info!(source = ?source, mode = ?self.mode, "analyzer reads owners, requests/limits and OOM kills from {source:?}");
        }
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rightsizer_core::workload::kind::{ScaledKinds, WorkloadKind};
    use std::sync::Mutex;
    use FactsSource::*;
    use KsmMode::*;

    /// The watched state's side, recording the bare Pods it is told.
    struct Homes(ScaledKinds, Mutex<Vec<(String, String, String)>>);

    impl HomeFacts for Homes {
        fn refresh_bare_pods(&self, _: Option<&str>, live: &[(String, String, String)]) {
            *self.1.lock().unwrap() = live.to_vec();
        }
        fn scaled(&self) -> ScaledKinds {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn a_kube_state_metrics_cycle_gives_bare_pods_their_owners_and_resolves_scaled_controllers(
    ) {
        let rollout = WorkloadKind::scaled("argoproj.io", "v1alpha1", "Rollout", "rollouts");
        let homes = Arc::new(Homes(
            ScaledKinds(rollout.into_iter().collect()),
            Mutex::default(),
        ));
        let sources = Sources {
            homes: Some(homes.clone()),
            ..Sources::default()
        };
        let mut acc = Acc::default();
        acc.owners
            .pod_owner("a", "roll-7d9f8-x2k4p", "ReplicaSet", "roll-7d9f8");
        acc.owners
            .replicaset_owner("a", "roll-7d9f8", "Rollout", "roll");
        acc.owners.pod_owner("a", "debug", "<none>", "<none>");
        let row = |pod: &str, uid: &str| ("a".to_string(), pod.to_string(), uid.to_string());
        // kube-state-metrics before v2 has no uid: such a row cannot be an owner.
        acc.bare_pods = vec![row("debug", "u1"), row("old", "")];
        let source = sources
            .complete(&mut acc, 0, &QueryConfig::default())
            .await
            .unwrap();
        assert_eq!(source, KubeStateMetrics);
        assert_eq!(*homes.1.lock().unwrap(), vec![row("debug", "u1")]);
        assert_eq!(
            acc.owners.workload("a", "roll-7d9f8-x2k4p").to_string(),
            "a/Rollout.argoproj.io/roll"
        );
    }

    #[test]
    fn the_api_stands_in_only_when_there_is_one_and_the_series_are_not_read_or_absent() {
        // (mode, API watch available, kube_pod_owner answered) → source
        let table = [
            (Auto, true, true, KubeStateMetrics),
            (Auto, true, false, KubernetesApi),
            (Auto, false, false, KubeStateMetrics),
            (Always, true, false, KubeStateMetrics),
            (Never, true, true, KubernetesApi),
            (Never, false, false, KubeStateMetrics),
        ];
        for (mode, api, answered, want) in table {
            assert_eq!(
                choose(mode, api, answered),
                want,
                "{mode:?} {api} {answered}"
            );
        }
    }
}
