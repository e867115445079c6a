//! `KubeStore`: the `CommitStore` of a cluster, on `Rightsizing` objects. Every replica
//! watches them into a mirror that keeps only the committed state (committed values,
//! OOM holds, recent changes; not the shown recommendations); admission overlays the
//! committed values from it and the analyzer starts each cycle from it. The leader
//! writes: create the object (owned by the workload, so it is garbage-collected with
//! it), then replace its status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use kube::api::{DynamicObject, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use rightsizer_core::analysis::container_state::{ContainerState, Saved};
use rightsizer_core::quantity::Resource;
use rightsizer_core::recommendation::{
    ContainerKey, ContainerRecommendation, RecommendationSource, ResourceRecommendation, Snapshot,
};
use rightsizer_core::workload::WorkloadKey;

use crate::analyzer::state::{CommitStore, State, StoreError};
use crate::kube::error::KubeError;
use crate::kube::facts::{KubeFacts, NsName};
use crate::kube::mirror::Mirror;
use crate::kube::rightsizing::{self, RightsizingSpec, RightsizingWorkload, Status};
use crate::kube::watchers::Watches;
use crate::kube::writer::KubeWriter;
use crate::lock::LockExt;

/// What the mirror keeps of one Rightsizing.
#[derive(Debug, Clone)]
pub struct Stored {
    pub workload: WorkloadKey,
    pub containers: Arc<BTreeMap<String, ContainerState>>,
    /// The status as stored, and the version it was read at: a write starts from these
    /// and is conditional on that version (see `KubeStore::save_workload`).
    pub(crate) status: Arc<Status>,
    pub(crate) resource_version: Option<String>,
}

/// Label on every Rightsizing rightsizer creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "rightsizer");

fn stored(o: &DynamicObject) -> Option<(NsName, Stored)> {
    let ns = o.metadata.namespace.clone()?;
    let name = o.metadata.name.clone()?;
    let spec: RightsizingSpec = serde_json::from_value(o.data.get("spec")?.clone()).ok()?;
    let workload = rightsizing::workload_key(&ns, &spec)?;
    let status: Status = o
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    Some((
        (ns, name),
        Stored {
            workload,
            containers: Arc::new(rightsizing::states(&status)),
            status: Arc::new(status),
            resource_version: o.metadata.resource_version.clone(),
        },
    ))
}

pub struct KubeStore {
    client: Client,
    mirror: Arc<Mirror<NsName, Stored>>,
    writer: Arc<KubeWriter>,
    facts: Arc<KubeFacts>,
    /// State of workloads whose owner is not known (no `Home` for their kind, a CRD
    /// not served, a bare Pod without the Pod watch, not yet seen): kept for this
    /// process's life, so their cooldowns still hold.
    unowned: std::sync::Mutex<BTreeMap<ContainerKey, ContainerState>>,
    /// The Rightsizings as the last `load` gave them to the analyzer: its decisions start
    /// from these, so its writes are conditional on their versions. A write by anyone
    /// else since (a new leader) makes this replica's write fail (409) instead of
    /// overwriting it.
    loaded: std::sync::Mutex<HashMap<NsName, Stored>>,
    /// Whether this replica still leads, checked before each workload's write.
    fence: Arc<dyn Fn() -> bool + Send + Sync>,
    /// When the next write may go out (writes are paced, see [`WRITE_SPACING`]).
    next_write: std::sync::Mutex<tokio::time::Instant>,
}

/// Rightsizing writes (creates and status replaces) go out at most this often: 50/s,
/// so a first cycle over 10,000 workloads spreads its writes over minutes instead of
/// bursting at the apiserver (Events have their own limits, `kube::events`).
const WRITE_SPACING: std::time::Duration = std::time::Duration::from_millis(20);

impl KubeStore {
    pub(crate) fn new(
        client: Client,
        mirror: Arc<Mirror<NsName, Stored>>,
        writer: Arc<KubeWriter>,
        facts: Arc<KubeFacts>,
        fence: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Self {
        KubeStore {
            client,
            mirror,
            writer,
            facts,
            unowned: Default::default(),
            loaded: Default::default(),
            fence,
            next_write: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// The watch that fills the mirror (started by `kube::start`).
    pub(crate) fn watch(w: &mut Watches, m: Arc<Mirror<NsName, Stored>>) {
        let api = Api::<DynamicObject>::all_with(w.client.clone(), &rightsizing::api_resource());
        w.mirror(
            "rightsizings",
            api,
            watcher::Config::default(),
            m,
            stored,
            |_| {},
        );
    }

    pub fn is_synced(&self) -> bool {
        self.mirror.is_synced()
    }

    pub async fn synced(&self) {
        self.mirror.synced().await
    }

    /// Wait for the workload watchers (the migration reads their annotations).
    pub async fn facts_synced(&self) {
        self.facts.synced().await
    }

    /// The stored state of a workload.
    pub fn workload(&self, w: &WorkloadKey) -> Option<Stored> {
        let name = rightsizing::object_name(w.kind, &w.name);
        self.mirror
            .read()
            .get(&(w.namespace.clone(), name))
            .filter(|s| s.workload == *w)
            .cloned()
    }

    /// Wait for this write's turn.
    async fn pace(&self) {
        let at = {
            let mut next = self.next_write.locked();
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + WRITE_SPACING;
            at
        };
        tokio::time::sleep_until(at).await;
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &rightsizing::api_resource())
    }

    /// The workload's Rightsizing, created (owned by the workload) when missing.
    async fn get_or_create(&self, w: &WorkloadKey) -> Result<DynamicObject, KubeError> {
        let name = rightsizing::object_name(w.kind, &w.name);
        let api = self.api(&w.namespace);
        if let Some(o) = api.get_opt(&name).await.map_err(KubeError::api(format!(
            "reading Rightsizing {}/{name}",
            w.namespace
        )))? {
            return Ok(o);
        }
        let target = self.writer.target(w)?;
        let uid = target.uid.clone().ok_or_else(|| {
            KubeError::UnsupportedKind(format!("{w} (not seen by the watch yet)"))
        })?;
        let mut obj = DynamicObject::new(&name, &rightsizing::api_resource()).within(&w.namespace);
        obj.metadata = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(w.namespace.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_string(),
                MANAGED_BY.1.to_string(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: target.api_version.clone(),
                kind: target.kind.clone(),
                // A bare-Pod workload's live Pod has a name of its own.
                name: target.name.clone(),
                uid,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let spec = RightsizingSpec {
            workload: RightsizingWorkload {
                api_version: target.api_version,
                kind: target.kind,
                name: w.name.clone(),
            },
        };
        obj.data = json!({ "spec": spec });
        self.pace().await;
        match api.create(&PostParams::default(), &obj).await {
            Ok(o) => Ok(o),
            // Created meanwhile (a previous leader's late write): use that one.
            Err(kube::Error::Api(s)) if s.code == 409 => api.get(&name).await.map_err(
                KubeError::api(format!("reading Rightsizing {}/{name}", w.namespace)),
            ),
            Err(e) => Err(KubeError::api(format!(
                "creating Rightsizing {}/{name}",
                w.namespace
            ))(e)),
        }
    }

    /// Write the states of one workload's containers into its Rightsizing's status:
    /// nothing when the status would say the same; else a replace conditional on the
    /// version the analyzer's decision started from (`loaded`), or on the one just read
    /// for a Rightsizing it has not seen.
    async fn save_workload(&self, w: &WorkloadKey, items: &[Saved]) -> Result<(), KubeError> {
        let name = rightsizing::object_name(w.kind, &w.name);
        let key = (w.namespace.clone(), name.clone());
        let known = self
            .loaded
            .locked()
            .get(&key)
            .cloned()
            .or_else(|| self.mirror.read().get(&key).cloned());
        let (base, resource_version) = match known {
            Some(s) => ((*s.status).clone(), s.resource_version),
            None => {
                let obj = self.get_or_create(w).await?;
                let status: Status = obj
                    .data
                    .get("status")
                    .and_then(|s| serde_json::from_value(s.clone()).ok())
                    .unwrap_or_default();
                (status, obj.metadata.resource_version)
            }
        };
        let mut status = base.clone();
        status.workload = format!("{}/{}", w.kind, w.name);
        for s in items {
            rightsizing::put_container(&mut status, &s.key.container, s);
        }
        if status.says_the_same(&base) {
            return Ok(());
        }
        self.pace().await;
        if !(self.fence)() {
            return Err(KubeError::NotLeader);
        }
        let mut obj = DynamicObject::new(&name, &rightsizing::api_resource()).within(&w.namespace);
        obj.metadata.resource_version = resource_version;
        obj.data = json!({
            "status": serde_json::to_value(&status).map_err(|source| KubeError::Encode {
                what: "Rightsizing status".into(),
                source,
            })?
        });
        let written = self
            .api(&w.namespace)
            .replace_status(&name, &PostParams::default(), &obj)
            .await
            .map_err(KubeError::api(format!(
                "writing Rightsizing {}/{name} status",
                w.namespace
            )))?;
        // The watch will say the same; putting it now keeps the next cycle exact even
        // when the watch lags, and lets this cycle's next write build on this one.
        if let Some((k, v)) = stored(&written) {
            self.loaded.locked().insert(k.clone(), v.clone());
            self.mirror.put(k, v);
        }
        Ok(())
    }

    /// Add a line about the updater's action on one of the workload's Pods to its
    /// Rightsizing's status (the last `UPDATES_KEPT` stay).
    pub async fn note_update(&self, w: &WorkloadKey, line: String) -> Result<(), KubeError> {
        let mut obj = self.get_or_create(w).await?;
        let mut status: Status = obj
            .data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        status.updates.push(line);
        let extra = status
            .updates
            .len()
            .saturating_sub(rightsizing::UPDATES_KEPT);
        status.updates.drain(..extra);
        obj.data["status"] = serde_json::to_value(&status).map_err(|source| KubeError::Encode {
            what: "Rightsizing status".into(),
            source,
        })?;
        let name = obj.metadata.name.clone().unwrap_or_default();
        let written = self
            .api(&w.namespace)
            .replace_status(&name, &PostParams::default(), &obj)
            .await
            .map_err(KubeError::api(format!(
                "writing Rightsizing {}/{name} status",
                w.namespace
            )))?;
        if let Some((k, v)) = stored(&written) {
            self.mirror.put(k, v);
        }
        Ok(())
    }

    /// Import the legacy `rightsizer.io/committed` annotations of workloads that have no
    /// Rightsizing yet. Returns how many workloads were imported.
    pub async fn migrate(&self) -> usize {
        let mut n = 0;
        for (w, containers) in self.facts.legacy_committed() {
            if self.workload(&w).is_some() {
                continue;
            }
            let items: Vec<Saved> = containers
                .iter()
                .map(|(c, commits)| Saved {
                    key: ContainerKey::new(w.clone(), c.clone()),
                    state: commits.to_state(),
                    rec: None,
                    strategy: String::new(),
                    cooldown_seconds: 0,
                })
                .collect();
            match self.save_workload(&w, &items).await {
                Ok(()) => {
                    n += 1;
                    tracing::info!(workload = %w, "imported committed values from the legacy annotation");
                }
                Err(e) => {
                    tracing::warn!(workload = %w, error = %e, "could not import the legacy committed annotation")
                }
            }
        }
        n
    }
}

impl CommitStore for KubeStore {
    fn load(&self) -> State {
        let mut out = State {
            containers: self.unowned.locked().clone(),
        };
        let mirror = self.mirror.read();
        *self.loaded.locked() = mirror.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for s in mirror.values() {
            for (c, st) in s.containers.iter() {
                out.containers
                    .insert(ContainerKey::new(s.workload.clone(), c.clone()), st.clone());
            }
        }
        out
    }

    fn save(&self, batch: Vec<Saved>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut by_workload: HashMap<WorkloadKey, Vec<Saved>> = HashMap::new();
            for s in batch {
                by_workload
                    .entry(s.key.workload.clone())
                    .or_default()
                    .push(s);
            }
            let mut first_err = None;
            for (w, items) in by_workload {
                // Only workloads whose owner is known (see `WorkloadKind::home`).
                if self.writer.target(&w).ok().and_then(|t| t.uid).is_none() {
                    tracing::debug!(workload = %w, "no Rightsizing for an unwatched workload; kept in memory");
                    let mut unowned = self.unowned.locked();
                    for s in items {
                        unowned.insert(s.key, s.state);
                    }
                    continue;
                }
                if let Err(e) = self.save_workload(&w, &items).await {
                    tracing::warn!(workload = %w, error = %e, "could not write the Rightsizing");
                    first_err.get_or_insert(e);
                }
            }
            match first_err {
                Some(e) => Err(StoreError::Kube(e.to_string())),
                None => Ok(()),
            }
        })
    }
}

/// Recommendations with the committed values read from the Rightsizings filled in.
/// The stored value wins over whatever the inner source holds: it is what every
/// replica agrees on.
pub struct CommittedOverlay {
    inner: Arc<dyn RecommendationSource>,
    store: Arc<KubeStore>,
}

impl CommittedOverlay {
    pub fn new(inner: Arc<dyn RecommendationSource>, store: Arc<KubeStore>) -> Self {
        CommittedOverlay { inner, store }
    }
}

/// The stored commits, and the stored OOM hold's floor while it lasts: a replica that
/// does not lead (its own cache empty) gives a Pod the same floor the leader does.
fn overlay(rec: &mut ContainerRecommendation, state: &ContainerState, now: u64) {
    for r in Resource::ALL {
        if let Some(c) = state.committed(r) {
            rec.resource_mut(r)
                .get_or_insert_with(ResourceRecommendation::default)
                .committed = Some(c.clone());
        }
    }
    if let Some(floor) = state.oom.as_ref().and_then(|h| h.floor_at(now)) {
        let m = rec
            .resource_mut(Resource::Memory)
            .get_or_insert_with(ResourceRecommendation::default);
        m.oom_floor = Some(m.oom_floor.map_or(floor, |f| f.max(floor)));
    }
}

/// One container's recommendation: the inner source's, with the stored commits over it
/// and the watched HPAs' resources (the truth on which requests an HPA depends on).
fn merged(
    inner: Option<ContainerRecommendation>,
    stored: Option<&Stored>,
    container: &str,
    hpa: &[Resource],
    now: u64,
) -> Option<ContainerRecommendation> {
    let state = stored
        .and_then(|w| w.containers.get(container))
        .filter(|s| s.memory.is_some() || s.cpu.is_some() || s.oom.is_some());
    let mut rec = match (inner, state) {
        (inner, Some(s)) => {
            let mut rec = inner.unwrap_or_default();
            overlay(&mut rec, s, now);
            Some(rec)
        }
        (inner, None) => inner,
    };
    if let Some(r) = rec.as_mut() {
        for res in hpa {
            if !r.hpa_resources.contains(res) {
                r.hpa_resources.push(*res);
            }
        }
    }
    rec
}

impl RecommendationSource for CommittedOverlay {
    fn get(&self, key: &ContainerKey) -> Option<ContainerRecommendation> {
        let stored = self.store.workload(&key.workload);
        let hpa = self.store.facts.hpa_resources(&key.workload);
        let now = crate::clock::unix_now();
        merged(
            self.inner.get(key),
            stored.as_ref(),
            &key.container,
            &hpa,
            now,
        )
    }

    /// The workload's stored state and HPAs are looked up once for all its containers.
    fn get_workload(
        &self,
        workload: &WorkloadKey,
        containers: &[&str],
    ) -> Vec<Option<ContainerRecommendation>> {
        let stored = self.store.workload(workload);
        let hpa = self.store.facts.hpa_resources(workload);
        let inner = self.inner.get_workload(workload, containers);
        let now = crate::clock::unix_now();
        containers
            .iter()
            .zip(inner)
            .map(|(c, i)| merged(i, stored.as_ref(), c, &hpa, now))
            .collect()
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = self.inner.snapshot();
        let now = crate::clock::unix_now();
        for s in self.store.mirror.read().values() {
            for (container, state) in s.containers.iter() {
                if state.memory.is_none() && state.cpu.is_none() && state.oom.is_none() {
                    continue;
                }
                let key = ContainerKey::new(s.workload.clone(), container.clone());
                overlay(snap.recommendations.entry(key).or_default(), state, now);
            }
        }
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rightsizer_core::analysis::container_state::OomHold;
    use rightsizer_core::workload::kind::WorkloadKind;

    const MI: u64 = 1 << 20;

    fn stored_with_hold(floor: u64, until: u64) -> Stored {
        let state = ContainerState {
            oom: Some(OomHold {
                floor,
                until,
                pod: "web-1".into(),
            }),
            ..ContainerState::default()
        };
        Stored {
            workload: WorkloadKey {
                namespace: "shop".into(),
                kind: WorkloadKind::Deployment,
                name: "web".into(),
            },
            containers: Arc::new(BTreeMap::from([("app".to_string(), state)])),
            status: Arc::new(Status::default()),
            resource_version: None,
        }
    }

    fn floor(inner: Option<u64>, stored: &Stored, now: u64) -> Option<u64> {
        let inner = inner.map(|f| ContainerRecommendation {
            memory: Some(ResourceRecommendation {
                oom_floor: Some(f),
                ..Default::default()
            }),
            ..Default::default()
        });
        merged(inner, Some(stored), "app", &[], now)
            .and_then(|r| r.memory)
            .and_then(|m| m.oom_floor)
    }

    /// A replica that does not lead has no floor of its own: the stored hold gives it the
    /// leader's, while the hold lasts, and never lowers a floor the cache holds.
    #[rstest::rstest]
    #[case::held_nothing_cached(None, 100, Some(240))]
    #[case::hold_over(None, 200, None)]
    #[case::cache_higher(Some(300), 100, Some(300))]
    #[case::cache_lower(Some(200), 100, Some(240))]
    fn the_stored_oom_hold_reaches_every_replica(
        #[case] cached_mi: Option<u64>,
        #[case] now: u64,
        #[case] want_mi: Option<u64>,
    ) {
        let stored = stored_with_hold(240 * MI, 200);
        assert_eq!(
            floor(cached_mi.map(|m| m * MI), &stored, now),
            want_mi.map(|m| m * MI)
        );
    }
}
