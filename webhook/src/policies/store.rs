//! The policies in force. Each source (a file or a ConfigMap) is replaced as a whole
//! when its new content is valid; when it is not, the source's last good policies
//! stay in force and the error is kept for `/metrics`, logs and Events.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use rightsizer_core::policy::error::PolicyError;
use rightsizer_core::policy::schema::Policy;
use rightsizer_core::policy::select::PolicySet;

use crate::lock::LockExt;
use crate::policies::load::{parse_manifests, read_dir_sources};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Default)]
struct SourceState {
    /// The text last seen (valid or not), to skip unchanged re-reads.
    text: String,
    /// Last good policies of this source.
    good: Vec<Arc<Policy>>,
    /// Why the current text was refused.
    error: Option<String>,
}

/// Policies in force, swapped atomically; admission reads without locking.
pub struct PolicyStore {
    current: ArcSwap<PolicySet>,
    sources: Mutex<BTreeMap<String, SourceState>>,
    ready: AtomicBool,
    reloads: Family<ResultLabel, Counter>,
    rejected: Gauge,
}

impl Default for PolicyStore {
    fn default() -> Self {
        Self::new()
    }
}

/// What one sync changed.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Sources whose new content was applied.
    pub applied: Vec<String>,
    /// Sources refused this time (their last good policies stay).
    pub refused: Vec<PolicyError>,
    /// Sources that disappeared.
    pub removed: Vec<String>,
}

impl PolicyStore {
    pub fn new() -> Self {
        PolicyStore {
            current: ArcSwap::from_pointee(PolicySet::default()),
            sources: Mutex::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            reloads: Family::default(),
            rejected: Gauge::default(),
        }
    }

    /// A store holding exactly these policies (tests, offline runs).
    pub fn with_policies(policies: Vec<Policy>) -> Self {
        let s = Self::new();
        {
            let mut src = s.lock();
            src.insert(
                "inline".into(),
                SourceState {
                    good: policies.into_iter().map(Arc::new).collect(),
                    ..Default::default()
                },
            );
            s.rebuild(&src);
        }
        s.mark_ready();
        s
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, SourceState>> {
        // A panic while holding the lock cannot leave the map half-updated in a way
        // that matters: every update replaces one entry. Keep serving.
        self.sources.locked()
    }

    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "rightsizer_policy_reloads",
            "Policy sources read, by result",
            self.reloads.clone(),
        );
        registry.register(
            "rightsizer_policy_rejected",
            "Policy sources whose current content is refused (last good kept)",
            self.rejected.clone(),
        );
    }

    /// The policies in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Current refusals: (source, error).
    pub fn errors(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter_map(|(k, v)| v.error.clone().map(|e| (k.clone(), e)))
            .collect()
    }

    fn rebuild(&self, sources: &BTreeMap<String, SourceState>) {
        let all = sources
            .values()
            .flat_map(|s| s.good.iter().cloned())
            .collect();
        self.current.store(Arc::new(PolicySet::new(all)));
        self.rejected
            .set(sources.values().filter(|s| s.error.is_some()).count() as i64);
    }

    /// Apply new content for one source (a manifest text with policy ConfigMaps).
    /// Returns Ok(true) when applied, Ok(false) when unchanged, Err when refused.
    pub fn apply(&self, source: &str, text: &str) -> Result<bool, PolicyError> {
        let mut sources = self.lock();
        if sources.get(source).is_some_and(|s| s.text == text) {
            return Ok(false);
        }
        let parsed = parse_manifests(source, text);
        let state = sources.entry(source.to_string()).or_default();
        state.text = text.to_string();
        let result = match parsed {
            Ok(policies) => {
                state.good = policies.into_iter().map(Arc::new).collect();
                state.error = None;
                self.reloads
                    .get_or_create(&ResultLabel { result: "ok" })
                    .inc();
                Ok(true)
            }
            Err(e) => {
                state.error = Some(e.to_string());
                self.reloads
                    .get_or_create(&ResultLabel { result: "error" })
                    .inc();
                Err(e)
            }
        };
        self.rebuild(&sources);
        result
    }

    /// Forget a source (file deleted, ConfigMap removed).
    pub fn remove(&self, source: &str) -> bool {
        let mut sources = self.lock();
        let removed = sources.remove(source).is_some();
        if removed {
            self.rebuild(&sources);
        }
        removed
    }

    /// Bring the sources under `dir` in line with the folder's files.
    pub fn sync_dir(&self, dir: &Path) -> Result<SyncReport, PolicyError> {
        let files = read_dir_sources(dir)?;
        let mut report = SyncReport::default();
        let prefix = format!("{}/", dir.display());
        let stale: Vec<String> = self
            .lock()
            .keys()
            .filter(|k| k.starts_with(&prefix) && !files.iter().any(|(n, _)| n == *k))
            .cloned()
            .collect();
        for k in stale {
            if self.remove(&k) {
                report.removed.push(k);
            }
        }
        for (name, text) in files {
            match self.apply(&name, &text) {
                Ok(true) => report.applied.push(name),
                Ok(false) => {}
                Err(e) => report.refused.push(e),
            }
        }
        Ok(report)
    }
}
