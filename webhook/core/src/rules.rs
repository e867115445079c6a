//! The recommendation arithmetic: from observed usage (avg/p95/max) to a request
//! and a limit, plus the two guards every change goes through (hysteresis and the
//! enforcement step limit). Pure functions; the analyzer, the admission merge and
//! the replay all call these, so a backtest measures exactly what the webhook does.

use serde::{Deserialize, Serialize};

use crate::quantity::{round_up, Bytes, Millicores, Resource, GI, MI};

pub mod knative;

/// Observed usage of one resource of one container, in the resource's unit
/// (bytes for memory, millicores for CPU).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    pub avg: f64,
    pub p95: f64,
    pub max: f64,
    /// Number of samples behind the figures.
    #[serde(default)]
    pub samples: u64,
    /// Seconds of history behind the figures.
    #[serde(default)]
    pub history_seconds: u64,
}

/// A request/limit pair in the resource's unit. `None` leaves that side alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sizes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// An amount in a resource's unit, written in policies as a quantity string.
pub trait Amount: Copy {
    fn get(self) -> u64;
}
impl Amount for Bytes {
    fn get(self) -> u64 {
        self.0
    }
}
impl Amount for Millicores {
    fn get(self) -> u64 {
        self.0
    }
}

/// request = max(p95 × p95Factor, avg × avgFactor, floor), rounded up, clamped to [min, max].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRule<Q> {
    pub p95_factor: f64,
    pub avg_factor: f64,
    pub floor: Q,
    pub round_to: Q,
    pub min: Q,
    pub max: Q,
}

/// limit = max(max × maxFactor, request × requestFactor), rounded up, clamped to [min, max].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitRule<Q> {
    pub max_factor: f64,
    pub request_factor: f64,
    pub round_to: Q,
    pub min: Q,
    pub max: Q,
}

/// A change is worth making only when it differs from the current value by more than
/// `ratio` of the current value or by more than `absolute`, whichever is smaller.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hysteresis<Q> {
    pub ratio: f64,
    pub absolute: Q,
}

/// The rules for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRules<Q> {
    pub request: RequestRule<Q>,
    /// `None`: recommend no limit (the CPU default: limits throttle).
    #[serde(default)]
    pub limit: Option<LimitRule<Q>>,
    pub hysteresis: Hysteresis<Q>,
}

/// Guards on enforced changes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Safeguards {
    /// At most this fraction of change per step (0.3 = 30%).
    pub max_step_ratio: f64,
    /// Never set a request below the observed p95.
    pub floor_at_p95: bool,
    /// Seconds before the same container may be revised again.
    pub cooldown_seconds: u64,
}

/// After an OOM kill: memory rises to at least max(limit × factor, limit + add) and is
/// not lowered again for `holdSeconds`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OomRule {
    pub factor: f64,
    pub add: Bytes,
    pub hold_seconds: u64,
}

/// Minimum evidence before anything is recommended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Evidence {
    pub min_samples: u64,
    pub min_history_seconds: u64,
}

/// Every number of the recommendation arithmetic; a policy may override any of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rules {
    pub memory: ResourceRules<Bytes>,
    pub cpu: ResourceRules<Millicores>,
    pub safeguards: Safeguards,
    pub oom: OomRule,
    pub evidence: Evidence,
    /// Knative concurrency tuning thresholds.
    #[serde(default)]
    pub knative: knative::KnativeRules,
}

impl Default for Rules {
    /// The seed rules.
    fn default() -> Self {
        Rules {
            memory: ResourceRules {
                request: RequestRule {
                    p95_factor: 1.2,
                    avg_factor: 1.5,
                    floor: Bytes(64 * MI),
                    round_to: Bytes(16 * MI),
                    min: Bytes(64 * MI),
                    max: Bytes(4 * GI),
                },
                limit: Some(LimitRule {
                    max_factor: 1.1,
                    request_factor: 1.5,
                    round_to: Bytes(16 * MI),
                    min: Bytes(128 * MI),
                    max: Bytes(8 * GI),
                }),
                hysteresis: Hysteresis {
                    ratio: 0.2,
                    absolute: Bytes(64 * MI),
                },
            },
            cpu: ResourceRules {
                request: RequestRule {
                    p95_factor: 1.2,
                    avg_factor: 1.0,
                    floor: Millicores(10),
                    round_to: Millicores(5),
                    min: Millicores(10),
                    max: Millicores(8000),
                },
                limit: None,
                hysteresis: Hysteresis {
                    ratio: 0.2,
                    absolute: Millicores(50),
                },
            },
            safeguards: Safeguards {
                max_step_ratio: 0.3,
                floor_at_p95: true,
                cooldown_seconds: 30 * 60,
            },
            oom: OomRule {
                factor: 1.2,
                add: Bytes(100 * MI),
                hold_seconds: 24 * 3600,
            },
            evidence: Evidence {
                min_samples: 100,
                min_history_seconds: 3 * 3600,
            },
            knative: Default::default(),
        }
    }
}

fn scaled(v: f64, factor: f64) -> u64 {
    let x = (v * factor).ceil();
    if x.is_finite() && x > 0.0 {
        x.min(u64::MAX as f64) as u64
    } else {
        0
    }
}

impl<Q: Amount> ResourceRules<Q> {
    /// The recommended request and limit for observed usage.
    pub fn recommend(&self, obs: &Observed) -> Sizes {
        let r = &self.request;
        let raw = scaled(obs.p95, r.p95_factor)
            .max(scaled(obs.avg, r.avg_factor))
            .max(r.floor.get());
        let request =
            round_up(raw, r.round_to.get()).clamp(r.min.get(), r.max.get().max(r.min.get()));
        let limit = self.limit.as_ref().map(|l| {
            let raw = scaled(obs.max, l.max_factor).max(scaled(request as f64, l.request_factor));
            round_up(raw, l.round_to.get())
                .clamp(l.min.get(), l.max.get().max(l.min.get()))
                .max(request)
        });
        Sizes {
            request: Some(request),
            limit,
        }
    }

    /// Whether moving from `current` to `proposed` is a big enough change to make.
    /// No current value always counts as a change.
    pub fn worth_changing(&self, current: Option<u64>, proposed: u64) -> bool {
        let Some(cur) = current else { return true };
        let diff = cur.abs_diff(proposed);
        let rel = (cur as f64 * self.hysteresis.ratio).ceil() as u64;
        diff > rel.min(self.hysteresis.absolute.get())
    }
}

impl Rules {
    /// Recommend for one resource.
    pub fn recommend(&self, resource: Resource, obs: &Observed) -> Sizes {
        match resource {
            Resource::Memory => self.memory.recommend(obs),
            Resource::Cpu => self.cpu.recommend(obs),
        }
    }

    /// The rounding step of a resource's recommended values.
    pub fn round_to(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Memory => self.memory.request.round_to.0,
            Resource::Cpu => self.cpu.request.round_to.0,
        }
    }

    pub fn worth_changing(&self, resource: Resource, current: Option<u64>, proposed: u64) -> bool {
        match resource {
            Resource::Memory => self.memory.worth_changing(current, proposed),
            Resource::Cpu => self.cpu.worth_changing(current, proposed),
        }
    }

    /// Whether the observation carries enough evidence to recommend from.
    /// The seed rules' recommendation from observed usage, `None` without enough
    /// evidence: the one computation the analyzer (recommender `seed`) and admission
    /// (a snapshot with observed usage only) share.
    pub fn propose(&self, resource: Resource, obs: &Observed) -> Option<Sizes> {
        self.enough_evidence(obs)
            .then(|| self.recommend(resource, obs))
    }

    pub fn enough_evidence(&self, obs: &Observed) -> bool {
        obs.samples >= self.evidence.min_samples
            && obs.history_seconds >= self.evidence.min_history_seconds
    }

    /// One enforcement step from `current` towards `target`: at most `maxStepRatio`
    /// of the current value, and (for requests) never below the observed p95; rounded up
    /// like recommendations, so committed values stay canonical quantities.
    pub fn step(
        &self,
        resource: Resource,
        current: Option<u64>,
        target: u64,
        p95: Option<f64>,
    ) -> u64 {
        let mut v = match current {
            Some(cur) if cur > 0 => {
                let step = (cur as f64 * self.safeguards.max_step_ratio).ceil() as u64;
                target.clamp(cur.saturating_sub(step), cur.saturating_add(step))
            }
            _ => target,
        };
        if self.safeguards.floor_at_p95 {
            if let Some(p) = p95 {
                v = v.max(p.ceil().max(0.0) as u64);
            }
        }
        round_up(v, self.round_to(resource))
    }

    /// One guarded enforcement step of a request/limit pair from `from` towards `to`:
    /// each side with a target that differs enough from its current value (hysteresis)
    /// moves one [`Rules::step`] (the request never below `p95`); a moved limit still
    /// covers the request. Returns the sides that move (`None`: stays as it is). Used by
    /// admission's enforce mode, the analyzer's commits and the seed strategy.
    pub fn guarded_step(
        &self,
        resource: Resource,
        from: Sizes,
        to: Sizes,
        p95: Option<f64>,
    ) -> Sizes {
        let side = |target: Option<u64>, cur: Option<u64>, floor: Option<f64>| {
            let t = target?;
            self.worth_changing(resource, cur, t)
                .then(|| self.step(resource, cur, t, floor))
        };
        let request = side(to.request, from.request, p95);
        let mut limit = side(to.limit, from.limit, None);
        if let (Some(r), Some(l)) = (request.or(from.request), limit) {
            if l < r {
                limit = Some(r);
            }
        }
        Sizes { request, limit }
    }

    /// The memory floor after an OOM kill at `limit_at_kill`.
    pub fn oom_floor(&self, limit_at_kill: u64) -> u64 {
        let bumped = scaled(limit_at_kill as f64, self.oom.factor);
        round_up(
            bumped.max(limit_at_kill.saturating_add(self.oom.add.0)),
            self.memory.request.round_to.0,
        )
    }
}

/// The one OOM rule, for the analyzer and admission alike: while an OOM floor holds, memory
/// request and limit are both at least the floor. The request rises too because the kill
/// showed the container uses that much: a request below it would let the scheduler pack the
/// node with memory the container is known to need.
pub fn oom_raise(s: Sizes, floor: u64) -> Sizes {
    Sizes {
        request: Some(s.request.unwrap_or(0).max(floor)),
        limit: Some(s.limit.unwrap_or(0).max(floor)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn obs(avg_mi: f64, p95_mi: f64, max_mi: f64) -> Observed {
        let m = MI as f64;
        Observed {
            avg: avg_mi * m,
            p95: p95_mi * m,
            max: max_mi * m,
            samples: 1000,
            history_seconds: 86400,
        }
    }

    // request = max(p95*1.2, avg*1.5, 64Mi) ↑16Mi, clamp [64Mi,4Gi];
    // limit = max(max*1.1, request*1.5) ↑16Mi, clamp [128Mi,8Gi]
    #[rstest]
    #[case::typical(100.0, 200.0, 300.0, 240, 368)] // 240 | max(330, 360)=360 -> 368
    #[case::avg_dominates(200.0, 210.0, 220.0, 304, 464)] // 300 -> 304 | max(242, 456) -> 464
    #[case::tiny(1.0, 2.0, 3.0, 64, 128)] // floor 64 | 96 -> 96, min 128
    #[case::spike(100.0, 200.0, 1000.0, 240, 1104)] // limit 1100 -> 1104
    #[case::huge(5000.0, 6000.0, 9000.0, 4096, 8192)] // clamped both ends
    fn seed_memory(
        #[case] avg: f64,
        #[case] p95: f64,
        #[case] max: f64,
        #[case] req_mi: u64,
        #[case] lim_mi: u64,
    ) {
        let s = Rules::default().recommend(Resource::Memory, &obs(avg, p95, max));
        assert_eq!(s.request, Some(req_mi * MI));
        assert_eq!(s.limit, Some(lim_mi * MI));
    }

    #[test]
    fn seed_cpu_has_no_limit() {
        let o = Observed {
            avg: 120.0,
            p95: 333.0,
            max: 900.0,
            samples: 500,
            history_seconds: 20000,
        };
        let s = Rules::default().recommend(Resource::Cpu, &o);
        assert_eq!(s.request, Some(400)); // 399.6 -> 400 (↑5m)
        assert_eq!(s.limit, None);
    }

    #[rstest]
    #[case::small_step(512, 520, false)] // 8Mi
    #[case::twenty_pct_small(100, 119, false)] // 19Mi < min(20,64)
    #[case::over_twenty_pct(100, 121, true)] // 21Mi > 20Mi
    #[case::over_64mi(1024, 1100, true)] // 76Mi > 64Mi though only 7%
    #[case::down(1024, 900, true)]
    fn hysteresis_table(#[case] cur_mi: u64, #[case] prop_mi: u64, #[case] change: bool) {
        let r = Rules::default();
        assert_eq!(
            r.worth_changing(Resource::Memory, Some(cur_mi * MI), prop_mi * MI),
            change
        );
    }

    #[rstest]
    #[case::capped_up(Some(1000), 2000, None, 1300)]
    #[case::capped_down(Some(1000), 100, None, 700)]
    #[case::within(Some(1000), 1100, None, 1100)]
    #[case::p95_floor(Some(1000), 700, Some(850.0), 850)]
    #[case::no_current(None, 555, Some(100.0), 555)]
    fn step_table(
        #[case] cur: Option<u64>,
        #[case] target: u64,
        #[case] p95: Option<f64>,
        #[case] want: u64,
    ) {
        assert_eq!(Rules::default().step(Resource::Cpu, cur, target, p95), want);
    }

    #[test]
    fn oom_floor() {
        let r = Rules::default();
        // 256Mi*1.2 = 307.2Mi < 356Mi -> 356Mi -> rounded to 368Mi
        assert_eq!(r.oom_floor(256 * MI), 368 * MI);
        // 2Gi*1.2 = 2457.6Mi > 2148Mi -> 2464Mi
        assert_eq!(r.oom_floor(2 * GI), 2464 * MI);
    }

    #[rstest]
    #[case::raises_both(Some(100), Some(200), 368, 368, 368)]
    #[case::keeps_higher_limit(Some(100), Some(500), 368, 368, 500)]
    #[case::keeps_higher_request(Some(400), Some(500), 368, 400, 500)]
    #[case::fills_missing(None, None, 368, 368, 368)]
    fn oom_raise_table(
        #[case] request: Option<u64>,
        #[case] limit: Option<u64>,
        #[case] floor: u64,
        #[case] want_request: u64,
        #[case] want_limit: u64,
    ) {
        let mi = |v: Option<u64>| v.map(|x| x * MI);
        let got = oom_raise(
            Sizes {
                request: mi(request),
                limit: mi(limit),
            },
            floor * MI,
        );
        assert_eq!(
            got,
            Sizes {
                request: Some(want_request * MI),
                limit: Some(want_limit * MI)
            }
        );
    }

    #[test]
    fn evidence_gate() {
        let r = Rules::default();
        let mut o = obs(1.0, 1.0, 1.0);
        assert!(r.enough_evidence(&o));
        o.samples = 99;
        assert!(!r.enough_evidence(&o));
        o.samples = 100;
        o.history_seconds = 3 * 3600 - 1;
        assert!(!r.enough_evidence(&o));
    }

    #[test]
    fn rules_deserialize_from_policy_yaml() {
        let y = serde_json::to_value(Rules::default()).unwrap();
        let back: Rules = serde_json::from_value(y).unwrap();
        assert_eq!(back, Rules::default());
    }

    const fn s(request: Option<u64>, limit: Option<u64>) -> Sizes {
        Sizes { request, limit }
    }

    #[rstest]
    // current 1000Mi; proposal 240Mi: at most -30% -> 700Mi, rounded up to 16Mi steps -> 704Mi
    #[case::step_down(
        s(Some(240), Some(368)),
        s(Some(1000), Some(2000)),
        Some(200.0),
        s(Some(704), Some(1408))
    )]
    // within hysteresis: nothing changes
    #[case::hysteresis(
        s(Some(1010), Some(2030)),
        s(Some(1000), Some(2000)),
        None,
        s(None, None)
    )]
    // nothing declared: proposal applies whole
    #[case::fresh(s(Some(240), Some(368)), s(None, None), None, s(Some(240), Some(368)))]
    // p95 floor lifts a step-down
    #[case::p95_floor(
        s(Some(240), None),
        s(Some(1000), None),
        Some(900.0),
        s(Some(912), None)
    )]
    fn guarded_step_table(
        #[case] prop: Sizes,
        #[case] cur: Sizes,
        #[case] p95_mi: Option<f64>,
        #[case] want: Sizes,
    ) {
        let mi = |x: Sizes| s(x.request.map(|v| v * MI), x.limit.map(|v| v * MI));
        let got = Rules::default().guarded_step(
            Resource::Memory,
            mi(cur),
            mi(prop),
            p95_mi.map(|p| p * MI as f64),
        );
        assert_eq!(got, mi(want));
    }
}
