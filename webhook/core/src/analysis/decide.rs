//! The analyzer's decision for one workload container, as a pure function:
//! (observations, previous state from the store, policy, clock) -> (new cache entry,
//! new state, effects). No I/O here: effects (commits, Events, writes to the store) are
//! carried out by `Analyzer::execute`, the one place that checks leadership.

use crate::analysis::compute::{self, Previous, ResourceInput};
use crate::analysis::container_state::{ContainerState, OomHold, Saved};
use crate::analysis::entry::Entry;
use crate::analysis::knative::KnativeInput;
use crate::policy::schema::Mode;
use crate::quantity::Resource;
use crate::recommendation::{
    Committed, ContainerKey, KnativeRecommendation, ResourceRecommendation,
};
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
    /// Pods running the container now.
    pub pods: u32,
    /// Resources an HPA scales the workload on.
    pub hpa: Vec<Resource>,
    /// The memory strategy's own decision, when a strategy other than `seed` decides.
    pub strategy: Option<Option<strategy::MemorySizes>>,
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
    let restarted = restart_oom_hold(rules, prev_state.oom.as_ref(), &obs.ooms, now);
    let floor = oom_floor(restarted.as_ref().or(prev_state.oom.as_ref()), now);
    let resources = [Resource::Memory, Resource::Cpu]
        .map(|res| decide_resource(res, obs, policy, prev_entry, prev_state, floor, now));
    let knative = knative_proposal(key, rules, obs.knative.as_ref(), prev_entry, now);

    let mut effects: Vec<Effect> = resources.iter().flat_map(|r| r.effects(key)).collect();
    let changed = restarted.is_some() || resources.iter().any(|r| r.committed.is_some());
    let revised = resources.iter().any(|r| r.revised);
    let state = next_state(prev_state, restarted, &resources);
    let entry = next_entry(prev_entry, obs, resources, knative, now);
    effects.extend(persist(key, policy, &state, &entry, changed, revised));
    Outcome {
        entry,
        state,
        effects,
    }
}

/// The hold a new OOM kill starts, or `None` when no kill restarts it. A kill by the
/// pod behind the current hold is the same kill reported again and does not extend
/// it; another pod's kill sets the floor for its limit (never below a floor still
/// held) and restarts the hold.
fn restart_oom_hold(
    rules: &Rules,
    held: Option<&OomHold>,
    ooms: &[(String, u64)],
    now: u64,
) -> Option<OomHold> {
    let mut restarted: Option<OomHold> = None;
    for (pod, limit) in ooms {
        let current = restarted.as_ref().or(held);
        if current.is_some_and(|h| &h.pod == pod) {
            continue;
        }
        let mut floor = rules.oom_floor(*limit);
        if let Some(h) = current.filter(|h| now < h.until) {
            floor = floor.max(h.floor);
        }
        restarted = Some(OomHold {
            floor,
            until: now.saturating_add(rules.oom.hold_seconds),
            pod: pod.clone(),
        });
    }
    restarted
}

/// The memory floor while `hold` lasts (none once it has ended).
fn oom_floor(hold: Option<&OomHold>, now: u64) -> Option<u64> {
    hold.and_then(|h| h.floor_at(now))
}

/// One resource's part of a decision, before it is folded into the cache entry, the
/// stored state and the effects.
#[derive(Debug)]
struct ResourceOutcome {
    resource: Resource,
    /// The recommendation, `committed` being what is committed after this cycle.
    rec: ResourceRecommendation,
    /// The recommended values changed (restarts the cooldown).
    revised: bool,
    /// What was recommended before this cycle (for the revision Event).
    before: Option<Sizes>,
    /// A value committed in this cycle, and the one it replaces.
    committed: Option<Committed>,
    last: Option<Committed>,
}

/// Decide one resource: recommend, then (where admission enforces) commit a step
/// towards the recommendation. Memory and CPU are decided independently, so each
/// reads only its own slice of the previous entry and state.
fn decide_resource(
    res: Resource,
    obs: &Observation,
    policy: &PolicyView,
    prev_entry: &Entry,
    prev_state: &ContainerState,
    oom_floor: Option<u64>,
    now: u64,
) -> ResourceOutcome {
    let input = resource_input(res, obs, oom_floor);
    let previous = previous(res, prev_entry);
    let mut d = recommend(&policy.rules, res, &input, previous, obs.strategy, now);
    let last = prev_state.committed(res).cloned();
    let committed = commit_step(policy, res, last.as_ref(), &input, d.rec.recommended, now);
    d.rec.committed = committed.clone().or_else(|| last.clone());
    ResourceOutcome {
        resource: res,
        rec: d.rec,
        revised: d.revised,
        before: previous.rec.and_then(|p| p.recommended),
        committed,
        last,
    }
}

/// What the rules look at for one resource; the OOM floor concerns memory only.
fn resource_input(res: Resource, obs: &Observation, oom_floor: Option<u64>) -> ResourceInput {
    let (observed, current) = match res {
        Resource::Memory => (obs.memory, obs.current_memory),
        Resource::Cpu => (obs.cpu, obs.current_cpu),
    };
    ResourceInput {
        observed,
        current,
        hpa: obs.hpa.contains(&res),
        oom_floor: oom_floor.filter(|_| res == Resource::Memory),
    }
}

/// The resource's recommendation in the previous entry, and when it was last revised
/// (for the cooldown).
fn previous(res: Resource, prev_entry: &Entry) -> Previous<'_> {
    let (rec, revised_at) = match res {
        Resource::Memory => (prev_entry.rec.memory.as_ref(), prev_entry.memory_revised_at),
        Resource::Cpu => (prev_entry.rec.cpu.as_ref(), prev_entry.cpu_revised_at),
    };
    Previous { rec, revised_at }
}

/// Where strategy decisions become recommendations: memory follows the strategy's
/// own decision when a strategy other than `seed` decides (within the policy's
/// bounds, whichever strategy decided); everything else follows the seed rules.
fn recommend(
    rules: &Rules,
    res: Resource,
    input: &ResourceInput,
    previous: Previous<'_>,
    strategy: Option<Option<strategy::MemorySizes>>,
    now: u64,
) -> compute::ResourceDecision {
    match (res, strategy) {
        (Resource::Memory, Some(own)) => {
            let own = own.map(|o| strategy::clamp(rules, o));
            let mut d = compute::from_strategy(input, own.map(|o| Sizes::from(o.0)), previous);
            if own.is_some_and(|o| o.1) {
                d.rec.reasons.push(strategy::REASON_CLAMPED.into());
            }
            d
        }
        _ => compute::decide(rules, res, input, previous, now),
    }
}

/// Enforcement: the committed value moved one guarded step towards `target`, or
/// `None`. Values are committed only where admission would apply them.
fn commit_step(
    policy: &PolicyView,
    res: Resource,
    last: Option<&Committed>,
    input: &ResourceInput,
    target: Option<Sizes>,
    now: u64,
) -> Option<Committed> {
    if !policy.commits() {
        return None;
    }
    let p95 = input.observed.map(|o| o.p95);
    compute::commit(
        &policy.rules,
        res,
        last,
        input.current,
        target?,
        p95,
        input.oom_floor,
        now,
    )
}

impl ResourceOutcome {
    /// The Events this resource's decision posts: the commit, then the revision (a
    /// revision without a recommended value has nothing to show).
    fn effects(&self, key: &ContainerKey) -> Vec<Effect> {
        let commit = self.committed.clone().map(|value| Effect::Commit {
            key: key.clone(),
            resource: self.resource,
            value,
            previous: self.last.clone(),
        });
        let revised = self.rec.recommended.filter(|_| self.revised).map(|after| {
            let reason = self.rec.reasons.first().map_or("usage", String::as_str);
            Effect::Revised {
                key: key.clone(),
                resource: self.resource,
                before: self.before,
                after,
                reason: reason.to_string(),
            }
        });
        commit.into_iter().chain(revised).collect()
    }
}

/// Knative: the target to adopt for the serving containers of Knative workloads, or
/// `None` to keep what the entry has. A new proposal replaces a different one only
/// after the cooldown (revised together with memory, under the same cooldown).
fn knative_proposal(
    key: &ContainerKey,
    rules: &Rules,
    input: Option<&KnativeInput>,
    prev_entry: &Entry,
    now: u64,
) -> Option<KnativeRecommendation> {
    if !key.workload.kind.is_knative() || key.container == "queue-proxy" {
        return None;
    }
    let proposal = input.and_then(|i| rules.knative.propose(i))?;
    let cooling = now
        < prev_entry
            .knative_revised_at
            .saturating_add(rules.safeguards.cooldown_seconds);
    match &prev_entry.rec.knative {
        Some(p) if p.target == proposal.target => None,
        Some(_) if cooling => None,
        _ => Some(proposal),
    }
}

/// The state to store: the restarted OOM hold, and each commit recorded (memory's
/// before CPU's, the order the history keeps).
fn next_state(
    prev_state: &ContainerState,
    restarted: Option<OomHold>,
    resources: &[ResourceOutcome],
) -> ContainerState {
    let mut state = prev_state.clone();
    if restarted.is_some() {
        state.oom = restarted;
    }
    for r in resources {
        if let Some(c) = &r.committed {
            state.record(r.resource, c.clone());
        }
    }
    state
}

/// The cache entry for this cycle: what runs now, each resource's recommendation
/// (a revision restarts its cooldown), the HPA resources and the adopted Knative
/// proposal, fresh as of `now`.
fn next_entry(
    prev_entry: &Entry,
    obs: &Observation,
    resources: [ResourceOutcome; 2],
    knative: Option<KnativeRecommendation>,
    now: u64,
) -> Entry {
    let mut entry = Entry {
        current_memory: obs.current_memory,
        current_cpu: obs.current_cpu,
        pods: obs.pods,
        oom_kills: u32::try_from(obs.ooms.len()).unwrap_or(u32::MAX),
        ..prev_entry.clone()
    };
    for r in resources {
        if r.revised {
            match r.resource {
                Resource::Memory => entry.memory_revised_at = now,
                Resource::Cpu => entry.cpu_revised_at = now,
            }
        }
        *entry.rec.resource_mut(r.resource) = Some(r.rec);
    }
    entry.rec.hpa_resources = obs.hpa.clone();
    entry.rec.updated_at = now;
    entry.rec.stale = false;
    if let Some(k) = knative {
        entry.rec.knative = Some(k);
        entry.knative_revised_at = now;
    }
    entry
}

/// The store hears about changed state, and (outside mode off) about revised
/// recommendations, so `kubectl get rsz` shows what is recommended.
fn persist(
    key: &ContainerKey,
    policy: &PolicyView,
    state: &ContainerState,
    entry: &Entry,
    changed: bool,
    revised: bool,
) -> Option<Effect> {
    (changed || (revised && policy.mode != Mode::Off)).then(|| {
        Effect::Persist(Box::new(Saved {
            key: key.clone(),
            state: state.clone(),
            rec: Some(entry.rec.clone()),
            strategy: policy.strategy.clone(),
            cooldown_seconds: policy.rules.safeguards.cooldown_seconds,
        }))
    })
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

    fn hold(floor: u64, until: u64, pod: &str) -> OomHold {
        OomHold {
            floor,
            until,
            pod: pod.into(),
        }
    }

    #[test]
    fn a_new_kill_by_another_pod_restarts_the_hold() {
        let rules = Rules::default();
        let (now, f) = (1_000, |limit| rules.oom_floor(limit));
        let until = now + rules.oom.hold_seconds;
        let high = f(4096 * MI);
        let kill = |pod: &str, limit: u64| (pod.to_string(), limit);
        // (case, hold before, kills, restarted hold as (floor, pod))
        let cases = [
            ("no kill", None, vec![], None),
            ("no kill, held", Some(hold(high, 2_000, "a")), vec![], None),
            (
                "the held pod's kill again",
                Some(hold(high, 2_000, "a")),
                vec![kill("a", 512 * MI)],
                None,
            ),
            (
                "another pod while held keeps the higher floor",
                Some(hold(high, 2_000, "a")),
                vec![kill("b", 512 * MI)],
                Some((high, "b")),
            ),
            (
                "another pod once the hold ended",
                Some(hold(high, now, "a")),
                vec![kill("b", 512 * MI)],
                Some((f(512 * MI), "b")),
            ),
            (
                "two kills in one cycle: the higher floor, the last pod",
                None,
                vec![kill("a", 4096 * MI), kill("b", 512 * MI)],
                Some((high, "b")),
            ),
        ];
        for (case, held, kills, want) in cases {
            let got = restart_oom_hold(&rules, held.as_ref(), &kills, now);
            let want = want.map(|(floor, pod)| hold(floor, until, pod));
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn knative_proposals_replace_a_different_one_only_after_the_cooldown() {
        let rules = Rules::default();
        let cooldown = rules.safeguards.cooldown_seconds;
        // Near the memory limit with concurrency above target: lower the target.
        let input = KnativeInput {
            concurrency_p95: Some(15.0),
            target: Some(10.0),
            memory_max: Some(950.0),
            memory_limit: Some(1000),
            ..Default::default()
        };
        let proposal = rules.knative.propose(&input).expect("a proposal");
        let other = KnativeRecommendation {
            target: Some(42.0),
            ..proposal.clone()
        };
        let revised_at = 1_000;
        let entry = |prev: Option<&KnativeRecommendation>| {
            let mut e = Entry {
                knative_revised_at: revised_at,
                ..Default::default()
            };
            e.rec.knative = prev.cloned();
            e
        };
        let serving = "shop/KnativeService/hello/user-container";
        // (case, container, input, proposal before, seconds after the last revision, adopted)
        let cases = [
            ("first proposal", serving, Some(&input), None, 0, true),
            (
                "queue-proxy",
                "shop/KnativeService/hello/queue-proxy",
                Some(&input),
                None,
                0,
                false,
            ),
            (
                "not Knative",
                "shop/Deployment/web/app",
                Some(&input),
                None,
                0,
                false,
            ),
            ("no figures", serving, None, None, 0, false),
            (
                "same target",
                serving,
                Some(&input),
                Some(&proposal),
                cooldown,
                false,
            ),
            (
                "other target, cooling",
                serving,
                Some(&input),
                Some(&other),
                cooldown - 1,
                false,
            ),
            (
                "other target, cooled",
                serving,
                Some(&input),
                Some(&other),
                cooldown,
                true,
            ),
        ];
        for (case, container, input, prev, after, adopted) in cases {
            let k = ContainerKey::parse(container).unwrap();
            let got = knative_proposal(&k, &rules, input, &entry(prev), revised_at + after);
            assert_eq!(got, adopted.then(|| proposal.clone()), "{case}");
        }
    }

    #[test]
    fn persists_changed_state_and_revisions_outside_mode_off() {
        let (k, state, entry) = (key(), ContainerState::default(), Entry::default());
        // (state changed, recommendation revised, mode, persisted)
        for (changed, revised, mode, want) in [
            (false, false, Mode::Enforce, false),
            (true, false, Mode::Off, true),
            (false, true, Mode::Off, false),
            (false, true, Mode::Observe, true),
            (false, true, Mode::Enforce, true),
        ] {
            let p = policy(mode, false);
            let got = persist(&k, &p, &state, &entry, changed, revised);
            assert_eq!(got.is_some(), want, "{changed} {revised} {mode:?}");
        }
    }
}
