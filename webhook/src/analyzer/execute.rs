//! Carrying out the analyzer's effects: the one place that checks leadership and
//! does I/O for decisions (store writes, Events through the hooks, the commit counter).

use rightsizer_core::analysis::decide::Effect;

use crate::analyzer::Analyzer;

impl Analyzer {
    /// Carry out a cycle's effects: the one place that checks leadership. A replica
    /// that does not lead drops them; its next cycle starts again from the store.
    pub(super) async fn execute(&self, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        if !(self.leading)() {
            tracing::debug!(effects = effects.len(), "not leading: effects dropped");
            return;
        }
        let mut saves = Vec::new();
        let mut told = Vec::new();
        for e in effects {
            match e {
                Effect::Persist(s) => saves.push(*s),
                other => told.push(other),
            }
        }
        let saved = saves.is_empty() || {
            match self.store.save(saves).await {
                Ok(()) => true,
                Err(e) => {
                    // Recommendations are still good; count it and retry next cycle.
                    self.metrics.errors.inc();
                    tracing::warn!(error = %e, "could not persist committed state");
                    false
                }
            }
        };
        for e in told {
            match e {
                Effect::Commit {
                    key,
                    resource,
                    value,
                    previous,
                } if saved => {
                    self.metrics.commits.inc();
                    if let Some(h) = &self.hooks {
                        h.committed(&key, resource, &value, previous.as_ref());
                    }
                }
                Effect::Revised {
                    key,
                    resource,
                    before,
                    after,
                    reason,
                } => {
                    if let Some(h) = &self.hooks {
                        h.revised(&key, resource, before, after, &reason);
                    }
                }
                _ => {}
            }
        }
    }
}
