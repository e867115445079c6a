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
        // Nothing is written where the webhook is not called (the namespace opt-in).
        let before = effects.len();
        let effects: Vec<Effect> = effects
            .into_iter()
            .filter(|e| (self.scope)(&namespace_of(e)))
            .collect();
        if effects.len() < before {
            tracing::debug!(
                dropped = before - effects.len(),
                "effects outside opted-in namespaces dropped"
            );
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

fn namespace_of(e: &Effect) -> String {
    match e {
        Effect::Commit { key, .. } | Effect::Revised { key, .. } => key.workload.namespace.clone(),
        Effect::Persist(s) => s.key.workload.namespace.clone(),
    }
}
