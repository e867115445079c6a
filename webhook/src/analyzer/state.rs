//! Committed (enforced) values, OOM holds and recent changes: the analyzer's state
//! between cycles, and `CommitStore`, where it lives. In a cluster that is the
//! `Rightsizing` custom resource (`kube::store`); without one, the JSON state file here
//! (written atomically: temp file + rename). Every cycle starts from what the store
//! holds, so a restarted or new leader continues where the last one stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use rightsizer_core::recommendation::ContainerKey;

use crate::lock::LockExt;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

use rightsizer_core::analysis::container_state::{ContainerState, Saved};

/// The whole state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    #[serde(default)]
    pub containers: BTreeMap<ContainerKey, ContainerState>,
}

impl State {
    /// Load from `path`; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<State, StateError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StateError::Parse {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let werr = |source| StateError::Write {
            path: path.to_path_buf(),
            source,
        };
        let body = serde_json::to_vec_pretty(self).map_err(|e| StateError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body).map_err(werr)?;
        std::fs::rename(&tmp, path).map_err(werr)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    File(#[from] StateError),
    #[error("{0}")]
    Kube(String),
}

/// Where committed state lives between cycles and across restarts.
pub trait CommitStore: Send + Sync {
    /// Everything stored: the previous state of a cycle. Must not block (a cluster
    /// store answers from its watch).
    fn load(&self) -> State;
    /// Persist these containers' states (the leader only; the caller checks).
    fn save(&self, batch: Vec<Saved>) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The JSON state file (or memory only, without a path): `serve` without a cluster,
/// `recommend`, tests.
pub struct FileStore {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

impl FileStore {
    /// Load `path` (a missing file is an empty state); `None` keeps state in memory.
    pub fn open(path: Option<PathBuf>) -> Result<FileStore, StateError> {
        let state = match &path {
            Some(p) => State::load(p)?,
            None => State::default(),
        };
        Ok(FileStore {
            path,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.locked()
    }

    fn save_now(&self, batch: Vec<Saved>) -> Result<(), StoreError> {
        let mut state = self.lock();
        for s in batch {
            if s.state == ContainerState::default() {
                state.containers.remove(&s.key);
            } else {
                state.containers.insert(s.key, s.state);
            }
        }
        match &self.path {
            Some(p) => state.save(p).map_err(StoreError::from),
            None => Ok(()),
        }
    }
}

impl CommitStore for FileStore {
    fn load(&self) -> State {
        self.lock().clone()
    }

    fn save(&self, batch: Vec<Saved>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(self.save_now(batch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rightsizer_core::quantity::Resource;
    use rightsizer_core::recommendation::Committed;
    use rightsizer_core::rules::Sizes;

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert_eq!(State::load(&p).unwrap(), State::default());
        let mut s = State::default();
        let k = ContainerKey::parse("a/Deployment/web/app").unwrap();
        let c = Committed {
            sizes: Sizes {
                request: Some(1),
                limit: Some(2),
            },
            at: 7,
            reason: "why".into(),
        };
        s.containers
            .entry(k.clone())
            .or_default()
            .record(Resource::Memory, c.clone());
        s.save(&p).unwrap();
        let back = State::load(&p).unwrap();
        assert_eq!(back.containers[&k].memory, Some(c));
        assert_eq!(back.containers[&k].history.len(), 1);
        std::fs::write(&p, b"{not json").unwrap();
        assert!(matches!(State::load(&p), Err(StateError::Parse { .. })));
    }
}
