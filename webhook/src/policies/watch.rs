//! Keep policies from folders current: re-read every interval (cheap: unchanged files
//! are skipped), so edits, additions and deletions take effect without a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::policies::store::PolicyStore;

/// Load the folders once; returns the refusals so a caller can report them.
pub fn load_dirs(store: &PolicyStore, dirs: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    for dir in dirs {
        match store.sync_dir(dir) {
            Ok(report) => {
                for e in report.refused {
                    tracing::warn!(error = %e, "policy refused; last good policy stays");
                    problems.push(e.to_string());
                }
                for s in report.applied {
                    tracing::info!(source = %s, "policy loaded");
                }
                for s in report.removed {
                    tracing::info!(source = %s, "policy removed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "policy folder unreadable");
                problems.push(e.to_string());
            }
        }
    }
    problems
}

/// Re-read the folders every `interval`, forever (spawn it; abort to stop).
pub async fn watch_dirs(store: Arc<PolicyStore>, dirs: Vec<PathBuf>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        load_dirs(&store, &dirs);
    }
}
