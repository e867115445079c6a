//! From per-pod figures to one recommendation per workload container. The arithmetic
//! itself is `crate::rules::Rules`; this file only decides which inputs it gets and
//! applies the guards (evidence, hysteresis, OOM floor, HPA, cooldown, enforcement step).

use crate::quantity::Resource;
use crate::recommendation::{Committed, ResourceRecommendation};
use crate::rules::{Observed, Rules, Sizes};

/// One pod-container's figures over one window, in the resource's unit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PodFigures {
    pub avg: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

/// Folds pod figures of one workload container into one `Observed`.
///
/// avg is weighted by sample counts; max is the max; p95 is the largest pod p95 (the
/// pooled p95 can only be lower, so this never under-sizes a replica).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fold {
    weighted_sum: f64,
    weight: f64,
    plain_sum: f64,
    plain_n: f64,
    p95: Option<f64>,
    max: Option<f64>,
    samples: u64,
    first: Option<f64>,
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Fold {
    pub fn add(&mut self, f: &PodFigures, samples: u64, first: Option<f64>) {
        if let Some(a) = f.avg {
            self.plain_sum += a;
            self.plain_n += 1.0;
            if samples > 0 {
                self.weighted_sum += a * samples as f64;
                self.weight += samples as f64;
            }
        }
        self.p95 = max_opt(self.p95, f.p95);
        self.max = max_opt(self.max, f.max);
        self.samples += samples;
        self.first = match (self.first, first) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, None) => x,
            (None, y) => y,
        };
    }

    /// `history_cap`: the window length (history cannot be longer than what was read).
    pub fn observed(&self, now: u64, history_cap: u64) -> Option<Observed> {
        let avg = if self.weight > 0.0 {
            self.weighted_sum / self.weight
        } else if self.plain_n > 0.0 {
            self.plain_sum / self.plain_n
        } else {
            return None;
        };
        let p95 = self.p95.unwrap_or(avg);
        let max = self.max.unwrap_or(p95).max(p95);
        let history = match self.first {
            Some(f) if f <= now as f64 => ((now as f64 - f).round() as u64).min(history_cap),
            _ => 0,
        };
        Some(Observed {
            avg,
            p95,
            max,
            samples: self.samples,
            history_seconds: history,
        })
    }
}

/// The long window's figures, with p95 and max raised to the short window's when those
/// are higher: a sudden rise shows within minutes instead of waiting for the long p95.
pub fn merge_windows(short: Option<Observed>, long: Option<Observed>) -> Option<Observed> {
    match (short, long) {
        (Some(s), Some(mut l)) => {
            l.p95 = l.p95.max(s.p95);
            l.max = l.max.max(s.max).max(l.p95);
            Some(l)
        }
        (s, l) => l.or(s),
    }
}

/// Inputs for one resource of one container.
#[derive(Debug, Clone, Default)]
pub struct ResourceInput {
    pub observed: Option<Observed>,
    /// What the running pods have now (kube-state-metrics).
    pub current: Sizes,
    /// An HPA scales the workload on this resource's utilization.
    pub hpa: bool,
    /// Active OOM floor (memory only).
    pub oom_floor: Option<u64>,
}

/// The previous state of this resource in the cache.
#[derive(Debug, Clone, Copy, Default)]
pub struct Previous<'a> {
    pub rec: Option<&'a ResourceRecommendation>,
    /// When the recommendation last changed (unix seconds).
    pub revised_at: u64,
}

/// Outcome of one decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDecision {
    pub rec: ResourceRecommendation,
    /// The recommended values changed in this decision (restarts the cooldown).
    pub revised: bool,
}

pub const REASON_NO_DATA: &str = "not enough data";
pub const REASON_OOM: &str = "oom";
pub const REASON_HPA: &str = "hpa";
pub const REASON_HYSTERESIS: &str = "within hysteresis";
pub const REASON_COOLDOWN: &str = "cooldown";

fn differs(rules: &Rules, r: Resource, a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => rules.worth_changing(r, Some(x), y),
        (None, None) => false,
        _ => true,
    }
}

fn push(reasons: &mut Vec<String>, r: &str) {
    if !reasons.iter().any(|x| x == r) {
        reasons.push(r.to_string());
    }
}

/// Decide the recommendation for one resource at `now`.
pub fn decide(
    rules: &Rules,
    resource: Resource,
    input: &ResourceInput,
    prev: Previous<'_>,
    now: u64,
) -> ResourceDecision {
    let mut reasons = Vec::new();
    let cur = input.current;
    let mut proposal = match input.observed.and_then(|o| rules.propose(resource, &o)) {
        Some(mut s) => {
            // Hysteresis against what runs now: a small difference is not worth a restart.
            if let (Some(c), Some(r)) = (cur.request, s.request) {
                if !rules.worth_changing(resource, Some(c), r) {
                    s.request = Some(c);
                    push(&mut reasons, REASON_HYSTERESIS);
                }
            }
            if let (Some(c), Some(l)) = (cur.limit, s.limit) {
                if !rules.worth_changing(resource, Some(c), l) {
                    s.limit = Some(c);
                    push(&mut reasons, REASON_HYSTERESIS);
                }
            }
            Some(s)
        }
        None => {
            push(&mut reasons, REASON_NO_DATA);
            None
        }
    };
    guard(resource, input, &mut proposal, &mut reasons);

    let prev_sizes = prev.rec.and_then(|r| r.recommended);
    let oom_raise = |n: &Sizes, p: &Sizes| {
        input.oom_floor.is_some()
            && (n.limit.unwrap_or(0) > p.limit.unwrap_or(0)
                || n.request.unwrap_or(0) > p.request.unwrap_or(0))
    };
    let (recommended, revised) = match (prev_sizes, proposal) {
        (Some(p), Some(n)) if p == n => (Some(p), false),
        (Some(p), Some(n)) => {
            let small = !differs(rules, resource, p.request, n.request)
                && !differs(rules, resource, p.limit, n.limit);
            let cooling = now
                < prev
                    .revised_at
                    .saturating_add(rules.safeguards.cooldown_seconds);
            if oom_raise(&n, &p) {
                (Some(n), true)
            } else if small {
                push(&mut reasons, REASON_HYSTERESIS);
                (Some(p), false)
            } else if cooling {
                push(&mut reasons, REASON_COOLDOWN);
                (Some(p), false)
            } else {
                (Some(n), true)
            }
        }
        // Evidence went away (e.g. fewer pods): keep what was recommended.
        (Some(p), None) => (Some(p), false),
        (None, n) => (n, n.is_some()),
    };
    ResourceDecision {
        rec: ResourceRecommendation {
            observed: input.observed,
            recommended,
            committed: prev.rec.and_then(|r| r.committed.clone()),
            oom_floor: input.oom_floor,
            reasons,
        },
        revised,
    }
}

/// The memory recommendation when a strategy (`crate::strategy`) decides: `own` is the
/// strategy's decision (its hysteresis and cooldown are its own); the OOM floor and HPA
/// handling apply on top as in [`decide`].
pub fn from_strategy(
    input: &ResourceInput,
    own: Option<Sizes>,
    prev: Previous<'_>,
) -> ResourceDecision {
    let mut reasons = Vec::new();
    let mut proposal = own;
    if proposal.is_none() {
        push(&mut reasons, REASON_NO_DATA);
    }
    guard(Resource::Memory, input, &mut proposal, &mut reasons);
    let prev_sizes = prev.rec.and_then(|r| r.recommended);
    // Without an answer yet, keep what was recommended before.
    let recommended = proposal.or(prev_sizes);
    ResourceDecision {
        revised: recommended.is_some() && recommended != prev_sizes,
        rec: ResourceRecommendation {
            observed: input.observed,
            recommended,
            committed: prev.rec.and_then(|r| r.committed.clone()),
            oom_floor: input.oom_floor,
            reasons,
        },
    }
}

/// One enforcement step: the next committed value on the way from the last committed
/// value (or what runs now) to the recommendation. `None` when nothing is to commit
/// now (no target, cooldown, or within hysteresis).
///
/// While an OOM floor holds (`oom_floor`, memory), a side the target sets is committed at
/// once at the floor or above (the target's value, if lower): neither the cooldown, nor the
/// step limit, nor hysteresis holds a raise to the floor back.
#[allow(clippy::too_many_arguments)]
pub fn commit(
    rules: &Rules,
    resource: Resource,
    last: Option<&Committed>,
    current: Sizes,
    target: Sizes,
    p95: Option<f64>,
    oom_floor: Option<u64>,
    now: u64,
) -> Option<Committed> {
    let base = last.map(|c| c.sizes).unwrap_or(current);
    // The least each side must be now: the floor (never above the target's own value).
    let floor = oom_floor.filter(|_| resource == Resource::Memory);
    let least = |t: Option<u64>| floor.zip(t).map(|(f, t)| f.min(t));
    let (least_request, least_limit) = (least(target.request), least(target.limit));
    let below = |v: Option<u64>, least: Option<u64>| least.is_some_and(|l| v.unwrap_or(0) < l);
    let to_floor = below(base.request, least_request) || below(base.limit, least_limit);
    if let Some(c) = last {
        if !to_floor && now < c.at.saturating_add(rules.safeguards.cooldown_seconds) {
            return None;
        }
    }
    let moved = rules.guarded_step(resource, base, target, p95);
    let at_least = |v: Option<u64>, least: Option<u64>| match (v, least) {
        (Some(v), Some(l)) => Some(v.max(l)),
        (v, l) => v.or(l),
    };
    let request = at_least(moved.request.or(base.request), least_request);
    let mut limit = at_least(moved.limit.or(base.limit), least_limit);
    // A limit that stays must still cover a request that moved.
    if let (Some(l), Some(r)) = (limit, request) {
        limit = Some(l.max(r));
    }
    let next = Sizes { request, limit };
    if next == base && last.is_some() {
        return None;
    }
    if next.request.is_none() && next.limit.is_none() {
        return None;
    }
    let fmt = |v: Option<u64>| v.map(|x| resource.format(x)).unwrap_or_else(|| "-".into());
    let reason = match floor {
        Some(f) if to_floor => format!(
            "raised to the OOM floor {} at once, towards {}/{} (from {}/{})",
            resource.format(f),
            fmt(target.request),
            fmt(target.limit),
            fmt(base.request),
            fmt(base.limit),
        ),
        _ => format!(
            "step towards {}/{} (from {}/{}; at most {:.0}% per step, not below p95)",
            fmt(target.request),
            fmt(target.limit),
            fmt(base.request),
            fmt(base.limit),
            rules.safeguards.max_step_ratio * 100.0
        ),
    };
    Some(Committed {
        sizes: next,
        at: now,
        reason,
    })
}

/// The guards every proposal goes through, whichever recommender made it: the OOM floor
/// (memory), an HPA on the resource keeps its request, and limit ≥ request.
fn guard(
    resource: Resource,
    input: &ResourceInput,
    proposal: &mut Option<Sizes>,
    reasons: &mut Vec<String>,
) {
    let cur = input.current;
    if let (Resource::Memory, Some(floor)) = (resource, input.oom_floor) {
        let s = proposal.get_or_insert(cur);
        *s = crate::rules::oom_raise(*s, floor);
        push(reasons, REASON_OOM);
    }
    if input.hpa {
        // Changing this request would change what the HPA scales on: leave it alone.
        if let Some(s) = proposal.as_mut() {
            s.request = None;
        }
        push(reasons, REASON_HPA);
    }
    if let Some(s) = proposal.as_mut() {
        let floor = s.request.or(cur.request);
        if let (Some(l), Some(r)) = (s.limit, floor) {
            s.limit = Some(l.max(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::MI;

    fn obs(avg: u64, p95: u64, max: u64) -> Observed {
        Observed {
            avg: (avg * MI) as f64,
            p95: (p95 * MI) as f64,
            max: (max * MI) as f64,
            samples: 1000,
            history_seconds: 86400,
        }
    }

    #[test]
    fn fold_weights_avg_and_takes_max_p95() {
        let mut f = Fold::default();
        f.add(
            &PodFigures {
                avg: Some(10.0),
                p95: Some(20.0),
                max: Some(30.0),
            },
            100,
            Some(1000.0),
        );
        f.add(
            &PodFigures {
                avg: Some(40.0),
                p95: Some(15.0),
                max: Some(50.0),
            },
            300,
            Some(500.0),
        );
        let o = f.observed(2000, 100_000).unwrap();
        assert_eq!(o.avg, (10.0 * 100.0 + 40.0 * 300.0) / 400.0);
        assert_eq!(
            (o.p95, o.max, o.samples, o.history_seconds),
            (20.0, 50.0, 400, 1500)
        );
    }

    #[test]
    fn hysteresis_cooldown_and_oom() {
        let r = Rules::default();
        let input = ResourceInput {
            observed: Some(obs(100, 200, 300)), // seed: 240Mi / 368Mi
            current: Sizes {
                request: Some(250 * MI),
                limit: Some(512 * MI),
            },
            ..Default::default()
        };
        let d = decide(&r, Resource::Memory, &input, Previous::default(), 0);
        // 240 vs 250: within hysteresis; 368 vs 512: 144Mi > 64Mi, change.
        assert_eq!(
            d.rec.recommended,
            Some(Sizes {
                request: Some(250 * MI),
                limit: Some(368 * MI)
            })
        );
        assert!(d.revised);
        let prev = d.rec.clone();
        let bigger = ResourceInput {
            observed: Some(obs(100, 400, 500)),
            ..input.clone()
        };
        let d2 = decide(
            &r,
            Resource::Memory,
            &bigger,
            Previous {
                rec: Some(&prev),
                revised_at: 0,
            },
            600,
        );
        assert_eq!(d2.rec.recommended, prev.recommended);
        assert!(d2.rec.reasons.contains(&REASON_COOLDOWN.to_string()));
        let d3 = decide(
            &r,
            Resource::Memory,
            &bigger,
            Previous {
                rec: Some(&prev),
                revised_at: 0,
            },
            1800,
        );
        assert_eq!(d3.rec.recommended.unwrap().request, Some(480 * MI));
        let oom = ResourceInput {
            oom_floor: Some(r.oom_floor(256 * MI)),
            ..input
        };
        let d4 = decide(
            &r,
            Resource::Memory,
            &oom,
            Previous {
                rec: Some(&prev),
                revised_at: 0,
            },
            60,
        );
        assert_eq!(d4.rec.recommended.unwrap().limit, Some(368 * MI));
        assert_eq!(d4.rec.recommended.unwrap().request, Some(368 * MI));
    }

    #[test]
    fn enforcement_steps_at_most_30_percent() {
        let r = Rules::default();
        let cur = Sizes {
            request: Some(1000 * MI),
            limit: Some(2000 * MI),
        };
        let target = Sizes {
            request: Some(240 * MI),
            limit: Some(368 * MI),
        };
        let c = commit(
            &r,
            Resource::Memory,
            None,
            cur,
            target,
            Some(200.0 * MI as f64),
            None,
            0,
        )
        .unwrap();
        // -30% of 1000Mi/2000Mi is 700Mi/1400Mi, rounded up to 16Mi steps.
        assert_eq!(c.sizes.request, Some(704 * MI));
        assert_eq!(c.sizes.limit, Some(1408 * MI));
        assert!(commit(&r, Resource::Memory, Some(&c), cur, target, None, None, 60).is_none());
        let c2 = commit(
            &r,
            Resource::Memory,
            Some(&c),
            cur,
            target,
            None,
            None,
            1800,
        )
        .unwrap();
        // 704Mi - 30% = 492.8Mi -> 496Mi.
        assert_eq!(c2.sizes.request, Some(496 * MI));
    }

    /// After an OOM kill, the commit reaches the floor in one step: inside the cooldown of
    /// the last commit, and more than the step limit (30%) above it.
    #[test]
    fn oom_floor_is_committed_at_once_despite_cooldown_and_step() {
        use crate::analysis::container_state::ContainerState;
        use crate::analysis::decide::{decide, Effect, Observation, PolicyView};
        use crate::analysis::entry::Entry;
        use crate::policy::schema::Mode;
        use crate::recommendation::ContainerKey;
        let key = ContainerKey::parse("shop/Deployment/web/app").unwrap();
        let p = PolicyView {
            mode: Mode::Enforce,
            enforcement: true,
            strategy: "seed".into(),
            ..Default::default()
        };
        let small = Sizes {
            request: Some(64 * MI),
            limit: Some(128 * MI),
        };
        let observation = |ooms: Vec<(String, u64)>| Observation {
            memory: Some(obs(50, 70, 120)),
            current_memory: small,
            ooms,
            ..Default::default()
        };
        // Committed 64Mi/128Mi a minute ago: inside the 30-minute cooldown.
        let mut state = ContainerState::default();
        state.record(
            Resource::Memory,
            Committed {
                sizes: small,
                at: 1_000,
                reason: String::new(),
            },
        );
        let floor = p.rules.oom_floor(128 * MI); // max(153.6Mi, 228Mi) -> 240Mi
        assert_eq!(floor, 240 * MI);
        let killed = observation(vec![("web-1".into(), 128 * MI)]);
        let o = decide(&key, &killed, &p, &Entry::default(), &state, 1_060);
        let committed: Vec<&Committed> = o
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Commit { value, .. } => Some(value),
                _ => None,
            })
            .collect();
        assert_eq!(committed.len(), 1, "{:?}", o.effects);
        let want = Sizes {
            request: Some(floor),
            limit: Some(floor),
        };
        assert_eq!(committed[0].sizes, want);
        assert!(committed[0].reason.contains("OOM floor"));
        // From what runs now, with nothing committed yet: the floor at once, not +30%.
        let o = decide(
            &key,
            &killed,
            &p,
            &Entry::default(),
            &ContainerState::default(),
            1_060,
        );
        assert_eq!(o.state.memory.as_ref().map(|c| c.sizes), Some(want));
        // The hold stays: the next cycle (inside the cooldown) has nothing more to commit.
        let again = decide(&key, &observation(vec![]), &p, &o.entry, &o.state, 1_120);
        assert!(!again
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Commit { .. })));
    }

    /// `commit` alone: a floor within hysteresis of the last commit is still reached, a side
    /// the target leaves alone (an HPA's request) is not raised, and without a floor the
    /// cooldown holds.
    #[test]
    fn commit_reaches_the_floor_on_the_sides_the_target_sets() {
        let r = Rules::default();
        let last = Committed {
            sizes: Sizes {
                request: Some(200 * MI),
                limit: Some(230 * MI),
            },
            at: 1_000,
            reason: String::new(),
        };
        let target = Sizes {
            request: None,
            limit: Some(240 * MI),
        };
        let c = commit(
            &r,
            Resource::Memory,
            Some(&last),
            last.sizes,
            target,
            None,
            Some(240 * MI),
            1_060,
        )
        .expect("a commit inside the cooldown");
        assert_eq!(
            c.sizes,
            Sizes {
                request: Some(200 * MI),
                limit: Some(240 * MI)
            }
        );
        assert!(commit(
            &r,
            Resource::Memory,
            Some(&last),
            last.sizes,
            target,
            None,
            None,
            1_060
        )
        .is_none());
    }
}
