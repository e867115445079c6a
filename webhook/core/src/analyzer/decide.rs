//! The analyzer's decision for one workload container, as a pure function:
//! (observations, previous state from the store, policy, clock) -> (new cache entry,
//! new state, effects). No I/O here: effects (commits, Events, writes to the store) are
//! carried out by `Analyzer::execute`, the one place that checks leadership.

use crate::analyzer::cache::Entry;
use crate::analyzer::compute::{self, Previous, ResourceInput};
use crate::analyzer::knative::KnativeInput;
use crate::analyzer::state::{ContainerState, OomHold, Saved};
use crate::policy::Mode;
use crate::quantity::Resource;
use crate::recommendation::{Committed, ContainerKey};
use crate::rules::{Observed, Rules, Sizes};
use crate::strategy;

/// What one cycle observed for one workload container.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Memory and CPU usage (both windows merged).
    pub memory: Option<Observed>,
    pub cpu: Option<Observed>,
    /// What the running pods have now.
    pub current_memory: Sizes,
    pub current_cpu: Sizes,
    /// OOM kills seen: (pod, memory limit at the kill).
    pub ooms: Vec<(String, u64)>,
    /// Resources an HPA scales the workload on.
    pub hpa: Vec<Resource>,
    /// The memory strategy's own decision, when a strategy other than `seed` decides.
    pub strategy: Option<Option<strategy::Decision>>,
    /// Knative figures (serving containers of Knative workloads).
    pub knative: Option<KnativeInput>,
}

/// What the policy says for the workload (the same selection admission makes).
#[derive(Debug, Clone, Default)]
pub struct PolicyView {
    pub rules: Rules,
    /// The mode admission applies (policy narrowed by `rightsizer.io/mode`).
    pub mode: Mode,
    /// `RIGHTSIZER_ENFORCEMENT=true`.
    pub enforcement: bool,
    /// The memory strategy's name (`seed`: the seed rules).
    pub strategy: String,
}

impl PolicyView {
    /// Values are committed only where admission would apply them.
    pub fn commits(&self) -> bool {
        self.enforcement && self.mode == Mode::Enforce
    }
}

/// Something to do once decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A value was committed (post an Event; the state goes out with `Persist`).
    Commit {
        key: ContainerKey,
        resource: Resource,
        value: Committed,
        previous: Option<Committed>,
    },
    /// A recommendation was revised (post an Event).
    Revised {
        key: ContainerKey,
        resource: Resource,
        before: Option<Sizes>,
        after: Sizes,
        reason: String,
    },
    /// Write this container's state to the store.
    Persist(Box<Saved>),
}

/// The outcome of one decision.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub entry: Entry,
    pub state: ContainerState,
    pub effects: Vec<Effect>,
}

/// Decide one container at `now`, from the previous cache entry and stored state.
pub fn decide(
    key: &ContainerKey,
    obs: &Observation,
    policy: &PolicyView,
    prev_entry: &Entry,
    prev_state: &ContainerState,
    now: u64,
) -> Outcome {
    let rules = &policy.rules;
    let mut state = prev_state.clone();
    let mut effects = Vec::new();
    let mut state_changed = false;

    // OOM holds: a new kill (another pod than the one behind the hold) sets or raises
    // the floor and restarts the hold.
    for (pod, limit) in &obs.ooms {
        if state.oom.as_ref().is_some_and(|h| &h.pod == pod) {
            continue;
        }
        let mut floor = rules.oom_floor(*limit);
        if let Some(h) = state.oom.as_ref().filter(|h| now < h.until) {
            floor = floor.max(h.floor);
        }
        state.oom = Some(OomHold {
            floor,
            until: now.saturating_add(rules.oom.hold_seconds),
            pod: pod.clone(),
        });
        state_changed = true;
    }
    let oom_floor = state
        .oom
        .as_ref()
        .filter(|h| now < h.until)
        .map(|h| h.floor);

    let mut entry = Entry {
        current_memory: obs.current_memory,
        current_cpu: obs.current_cpu,
        ..prev_entry.clone()
    };
    let mut revised_any = false;
    for (res, observed, cur) in [
        (Resource::Memory, obs.memory, obs.current_memory),
        (Resource::Cpu, obs.cpu, obs.current_cpu),
    ] {
        let input = ResourceInput {
            observed,
            current: cur,
            hpa: obs.hpa.contains(&res),
            oom_floor: if res == Resource::Memory {
                oom_floor
            } else {
                None
            },
        };
        let (prev_rec, revised_at) = match res {
            Resource::Memory => (prev_entry.rec.memory.as_ref(), prev_entry.memory_revised_at),
            Resource::Cpu => (prev_entry.rec.cpu.as_ref(), prev_entry.cpu_revised_at),
        };
        let previous = Previous {
            rec: prev_rec,
            revised_at,
        };
        // Where strategy decisions become recommendations.
        let mut d = match (res, obs.strategy) {
            (Resource::Memory, Some(own)) => {
                // The policy's bounds hold whichever strategy decided.
                let own = own.map(|o| strategy::clamp(rules, o));
                let mut d = compute::from_strategy(&input, own.map(|o| Sizes::from(o.0)), previous);
                if own.is_some_and(|o| o.1) {
                    d.rec.reasons.push(strategy::REASON_CLAMPED.into());
                }
                d
            }
            _ => compute::decide(rules, res, &input, previous, now),
        };
        // Enforcement: move the committed value one guarded step.
        if policy.commits() {
            if let Some(target) = d.rec.recommended {
                let last = state.committed(res).cloned();
                if let Some(c) = compute::commit(
                    rules,
                    res,
                    last.as_ref(),
                    cur,
                    target,
                    observed.map(|o| o.p95),
                    input.oom_floor,
                    now,
                ) {
                    effects.push(Effect::Commit {
                        key: key.clone(),
                        resource: res,
                        value: c.clone(),
                        previous: last,
                    });
                    state.record(res, c);
                    state_changed = true;
                }
            }
        }
        d.rec.committed = state.committed(res).cloned();
        if d.revised {
            if let Some(after) = d.rec.recommended {
                let reason = d.rec.reasons.first().map_or("usage", String::as_str);
                effects.push(Effect::Revised {
                    key: key.clone(),
                    resource: res,
                    before: prev_rec.and_then(|p| p.recommended),
                    after,
                    reason: reason.to_string(),
                });
            }
            revised_any = true;
            match res {
                Resource::Memory => entry.memory_revised_at = now,
                Resource::Cpu => entry.cpu_revised_at = now,
            }
        }
        *entry.rec.resource_mut(res) = Some(d.rec);
    }
    entry.rec.hpa_resources = obs.hpa.clone();
    entry.rec.updated_at = now;
    entry.rec.stale = false;

    // Knative: on the serving containers of Knative workloads.
    if key.workload.kind.is_knative() && key.container != "queue-proxy" {
        let proposal = obs.knative.as_ref().and_then(|i| rules.knative.propose(i));
        let cooling = now
            < prev_entry
                .knative_revised_at
                .saturating_add(rules.safeguards.cooldown_seconds);
        match (&prev_entry.rec.knative, proposal) {
            (Some(p), Some(n)) if p.target == n.target => {}
            (Some(_), Some(_)) if cooling => {}
            (_, Some(n)) => {
                entry.rec.knative = Some(n);
                entry.knative_revised_at = now;
            }
            (_, None) => {}
        }
    }

    // The store hears about changed state, and (outside mode off) about revised
    // recommendations, so `kubectl get rsz` shows what is recommended.
    if state_changed || (revised_any && policy.mode != Mode::Off) {
        effects.push(Effect::Persist(Box::new(Saved {
            key: key.clone(),
            state: state.clone(),
            rec: Some(entry.rec.clone()),
            strategy: policy.strategy.clone(),
            cooldown_seconds: rules.safeguards.cooldown_seconds,
        })));
    }
    Outcome {
        entry,
        state,
        effects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::MI;

    fn key() -> ContainerKey {
        ContainerKey::parse("shop/Deployment/web/app").unwrap()
    }

    fn busy() -> Observation {
        let o = Observed {
            avg: (100 * MI) as f64,
            p95: (200 * MI) as f64,
            max: (300 * MI) as f64,
            samples: 1000,
            history_seconds: 86400,
        };
        Observation {
            memory: Some(o),
            current_memory: Sizes {
                request: Some(1000 * MI),
                limit: Some(2000 * MI),
            },
            ..Default::default()
        }
    }

    fn policy(mode: Mode, enforcement: bool) -> PolicyView {
        PolicyView {
            mode,
            enforcement,
            strategy: "seed".into(),
            ..Default::default()
        }
    }

    fn commits(o: &Outcome) -> usize {
        o.effects
            .iter()
            .filter(|e| matches!(e, Effect::Commit { .. }))
            .count()
    }

    #[test]
    fn commits_only_where_admission_enforces() {
        let k = key();
        let run = |p: &PolicyView| {
            decide(
                &k,
                &busy(),
                p,
                &Entry::default(),
                &ContainerState::default(),
                1_000,
            )
        };
        for (mode, enforcement, want) in [
            (Mode::Enforce, true, 1),
            (Mode::Enforce, false, 0),
            (Mode::Observe, true, 0),
            (Mode::Off, true, 0),
        ] {
            let o = run(&policy(mode, enforcement));
            assert_eq!(commits(&o), want, "{mode:?} enforcement={enforcement}");
            assert_eq!(o.state.memory.is_some(), want == 1);
        }
    }

    #[test]
    fn stored_commit_keeps_the_cooldown_for_a_new_leader() {
        let k = key();
        let p = policy(Mode::Enforce, true);
        let first = decide(
            &k,
            &busy(),
            &p,
            &Entry::default(),
            &ContainerState::default(),
            1_000,
        );
        assert_eq!(commits(&first), 1);
        // A new leader: empty cache, state from the store, inside the cooldown.
        let inside = decide(
            &k,
            &busy(),
            &p,
            &Entry::default(),
            &first.state,
            1_000 + 600,
        );
        assert_eq!(commits(&inside), 0);
        let after = decide(
            &k,
            &busy(),
            &p,
            &Entry::default(),
            &first.state,
            1_000 + p.rules.safeguards.cooldown_seconds,
        );
        assert_eq!(commits(&after), 1);
    }

    #[test]
    fn a_stored_oom_hold_floors_memory_until_it_ends() {
        let k = key();
        let p = policy(Mode::Observe, false);
        let killed = Observation {
            ooms: vec![("web-1".into(), 512 * MI)],
            ..busy()
        };
        let o = decide(
            &k,
            &killed,
            &p,
            &Entry::default(),
            &ContainerState::default(),
            1_000,
        );
        let hold = o.state.oom.clone().expect("a hold");
        assert!(o.effects.iter().any(|e| matches!(e, Effect::Persist(_))));
        // Restarted: no kill in the new observations, the hold comes from the store.
        let again = decide(&k, &busy(), &p, &Entry::default(), &o.state, 1_060);
        let rec = again.entry.rec.memory.unwrap();
        assert_eq!(rec.oom_floor, Some(hold.floor));
        assert!(rec.recommended.unwrap().limit >= Some(hold.floor));
        let later = decide(&k, &busy(), &p, &Entry::default(), &o.state, hold.until);
        assert_eq!(later.entry.rec.memory.unwrap().oom_floor, None);
    }
}
