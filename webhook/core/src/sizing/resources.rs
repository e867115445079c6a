//! Requests and limits for one container and one resource, by precedence:
//! explicit override > enforced (committed) value > recommendation > template value
//! > policy default. Works on plain numbers; the caller reads and writes the object.

use serde::{Deserialize, Serialize};

use crate::quantity::Resource;
use crate::recommendation::ResourceRecommendation;
use crate::rules::{Rules, Sizes};

/// Where a value came from, highest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Override,
    Enforced,
    /// A load-model prediction from `rightsizer.io/expected-load` (recommendation level).
    LoadModel,
    Recommendation,
    Template,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Override => "override",
            Source::Enforced => "enforced",
            Source::LoadModel => "load-model",
            Source::Recommendation => "recommendation",
            Source::Template => "template",
            Source::Default => "default",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One side (request or limit) with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    pub value: u64,
    pub source: Source,
}

/// The resolved request and limit of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resolved {
    pub request: Option<Side>,
    pub limit: Option<Side>,
}

/// The candidate values for one resource of one container, each level optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Candidates {
    pub overrides: Sizes,
    pub enforced: Sizes,
    /// Set only on sides where the load-model prediction beats the recommendation.
    pub load_model: Sizes,
    pub recommendation: Sizes,
    pub template: Sizes,
    pub default: Sizes,
}

fn pick(levels: [(Option<u64>, Source); 6]) -> Option<Side> {
    levels
        .into_iter()
        .find_map(|(v, source)| v.map(|value| Side { value, source }))
}

/// Resolve by precedence, then make request ≤ limit by letting the lower-precedence
/// side yield. Returns notes on every adjustment.
pub fn resolve(c: &Candidates) -> (Resolved, Vec<String>) {
    let request = pick([
        (c.overrides.request, Source::Override),
        (c.enforced.request, Source::Enforced),
        (c.load_model.request, Source::LoadModel),
        (c.recommendation.request, Source::Recommendation),
        (c.template.request, Source::Template),
        (c.default.request, Source::Default),
    ]);
    let limit = pick([
        (c.overrides.limit, Source::Override),
        (c.enforced.limit, Source::Enforced),
        (c.load_model.limit, Source::LoadModel),
        (c.recommendation.limit, Source::Recommendation),
        (c.template.limit, Source::Template),
        (c.default.limit, Source::Default),
    ]);
    let mut notes = Vec::new();
    let mut r = Resolved { request, limit };
    settle(&mut r, &mut notes);
    (r, notes)
}

/// Make request ≤ limit by letting the lower-precedence side yield (the request, on a tie).
pub fn settle(r: &mut Resolved, notes: &mut Vec<String>) {
    if let (Some(req), Some(lim)) = (r.request, r.limit) {
        if req.value > lim.value {
            if lim.source > req.source {
                notes.push(format!(
                    "limit raised to the request (the {} limit was below the {} request)",
                    lim.source, req.source
                ));
                r.limit = Some(Side {
                    value: req.value,
                    source: lim.source,
                });
            } else {
                notes.push(format!(
                    "request lowered to the limit (the {} request was above the {} limit)",
                    req.source, lim.source
                ));
                r.request = Some(Side {
                    value: lim.value,
                    source: req.source,
                });
            }
        }
    }
}

/// The policy's bounds of one resource: (min, max) of the request and of the limit (`None`:
/// no rule for that side, like the CPU limit by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub request: Option<(u64, u64)>,
    pub limit: Option<(u64, u64)>,
}

impl Bounds {
    pub fn of(rules: &Rules, resource: Resource) -> Bounds {
        let (request, limit) = match resource {
            Resource::Memory => (
                (rules.memory.request.min.0, rules.memory.request.max.0),
                rules.memory.limit.map(|l| (l.min.0, l.max.0)),
            ),
            Resource::Cpu => (
                (rules.cpu.request.min.0, rules.cpu.request.max.0),
                rules.cpu.limit.map(|l| (l.min.0, l.max.0)),
            ),
        };
        let fix = |(min, max): (u64, u64)| (min, max.max(min));
        Bounds {
            request: Some(fix(request)),
            limit: limit.map(fix),
        }
    }
}

/// While an OOM floor holds (enforce mode, memory): every side below the floor is raised to
/// it, whatever it came from (a template, a default, a commit, a recommendation held back by
/// the step limit or hysteresis), except explicit overrides, which stay as written (noted).
/// The policy's max wins over a floor above it (noted). A raised side counts as the
/// recommendation's (the floor is part of it). `request`: false leaves the request alone (an
/// HPA scales on it).
pub fn raise_to_oom_floor(
    r: &mut Resolved,
    floor: u64,
    bounds: Bounds,
    request: bool,
    notes: &mut Vec<String>,
) {
    let fmt = |v: u64| Resource::Memory.format(v);
    let sides = [
        (&mut r.request, "request", request, bounds.request),
        (&mut r.limit, "limit", true, bounds.limit),
    ];
    for (side, name, raise, rule) in sides {
        if !raise {
            continue;
        }
        let floor = match rule {
            Some((_, max)) if floor > max => {
                notes.push(format!(
                    "the OOM floor {} is above the policy's {name} max {}: capped at the max",
                    fmt(floor),
                    fmt(max)
                ));
                max
            }
            _ => floor,
        };
        match *side {
            Some(s) if s.value >= floor => {}
            Some(s) if s.source == Source::Override => notes.push(format!(
                "the {name} override {} is below the OOM floor {}; kept (explicit)",
                fmt(s.value),
                fmt(floor)
            )),
            _ => {
                *side = Some(Side {
                    value: floor,
                    source: Source::Recommendation,
                })
            }
        }
    }
    settle(r, notes);
}

/// `s` within the policy's bounds (`rules.<resource>.request`/`limit` min and max), with a
/// note per side moved (`request` or `limit`, and the note naming `what` it came from). Admission bounds what came from the
/// analyzer (a committed value, a recommendation) this way whoever produced it: a value
/// cached before ops changed the policy, or read from a snapshot, is bounded by the policy
/// in force now. Values within the bounds are not rounded again: the analyzer rounds what
/// it computes, and a value its hysteresis kept is the running one.
pub fn bound(
    s: Sizes,
    rules: &Rules,
    resource: Resource,
    what: &str,
    notes: &mut Vec<(&'static str, String)>,
) -> Sizes {
    let b = Bounds::of(rules, resource);
    let fmt = |v: u64| resource.format(v);
    let mut side = |v: Option<u64>, rule: Option<(u64, u64)>, name: &'static str| {
        let v = v?;
        let Some((min, max)) = rule else {
            return Some(v);
        };
        let c = v.clamp(min, max);
        if c < v {
            let n = format!(
                "{what} {name} {} lowered to the policy's max {}",
                fmt(v),
                fmt(max)
            );
            notes.push((name, n));
        } else if c > v {
            let n = format!(
                "{what} {name} {} raised to the policy's min {}",
                fmt(v),
                fmt(min)
            );
            notes.push((name, n));
        }
        Some(c)
    };
    let request = side(s.request, b.request, "request");
    let limit = side(s.limit, b.limit, "limit");
    // A limit lowered to its max still covers the request (the request yields).
    Sizes {
        request: match (request, limit) {
            (Some(r), Some(l)) => Some(r.min(l)),
            (r, _) => r,
        },
        limit,
    }
}

/// [`bound`] without notes (for the recorded recommendation).
pub fn bounded(s: Sizes, rules: &Rules, resource: Resource) -> Sizes {
    bound(s, rules, resource, "", &mut Vec::new())
}

/// What the analyzer proposes for this resource, before guards: its own recommendation,
/// or the one the seed rules compute from observed usage (when evidence suffices), as the
/// analyzer would: for CPU, and for memory under the `seed` recommender. Another memory
/// recommender needs the usage history, which observed figures alone do not carry: no
/// value (the analyzer's own answer is the number).
pub fn proposal(
    rules: &Rules,
    recommender: &str,
    resource: Resource,
    rec: &ResourceRecommendation,
) -> Option<Sizes> {
    if let Some(s) = rec.recommended {
        return Some(s);
    }
    // The analyzer runs a strategy for memory only; CPU always follows the seed rules.
    if resource == Resource::Memory && recommender != crate::strategy::SEED {
        return None;
    }
    let mut s = rules.propose(resource, rec.observed.as_ref()?)?;
    if let (Resource::Memory, Some(floor)) = (resource, rec.oom_floor) {
        s = crate::rules::oom_raise(s, floor);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::MI;
    use crate::rules::Observed;
    use rstest::rstest;

    const fn s(request: Option<u64>, limit: Option<u64>) -> Sizes {
        Sizes { request, limit }
    }
    const NONE: Sizes = s(None, None);

    #[rstest]
    #[case::override_wins(
        Candidates { overrides: s(Some(1), None), enforced: s(Some(2), Some(20)), recommendation: s(Some(3), Some(30)), template: s(Some(4), Some(40)), default: s(Some(5), Some(50)), ..Default::default() },
        Some((1, Source::Override)), Some((20, Source::Enforced)))]
    #[case::load_model_over_recommendation_and_template(
        Candidates { load_model: s(Some(7), None), recommendation: s(None, Some(30)), template: s(Some(4), Some(40)), ..Default::default() },
        Some((7, Source::LoadModel)), Some((30, Source::Recommendation)))]
    #[case::enforced_over_load_model(
        Candidates { enforced: s(Some(2), None), load_model: s(Some(7), Some(70)), ..Default::default() },
        Some((2, Source::Enforced)), Some((70, Source::LoadModel)))]
    #[case::enforced_over_recommendation(
        Candidates { enforced: s(Some(2), None), recommendation: s(Some(3), Some(30)), template: s(Some(4), Some(40)), ..Default::default() },
        Some((2, Source::Enforced)), Some((30, Source::Recommendation)))]
    #[case::recommendation_over_template(
        Candidates { recommendation: s(Some(3), None), template: s(Some(4), Some(40)), ..Default::default() },
        Some((3, Source::Recommendation)), Some((40, Source::Template)))]
    #[case::template_over_default(
        Candidates { template: s(Some(4), None), default: s(Some(5), Some(50)), ..Default::default() },
        Some((4, Source::Template)), Some((50, Source::Default)))]
    #[case::default_only(
        Candidates { default: s(Some(5), Some(50)), ..Default::default() },
        Some((5, Source::Default)), Some((50, Source::Default)))]
    #[case::nothing(Candidates::default(), None, None)]
    #[case::template_limit_yields(
        Candidates { recommendation: s(Some(60), None), template: s(Some(10), Some(40)), ..Default::default() },
        Some((60, Source::Recommendation)), Some((60, Source::Template)))]
    #[case::recommended_request_yields_to_override_limit(
        Candidates { overrides: s(None, Some(50)), recommendation: s(Some(60), Some(90)), ..Default::default() },
        Some((50, Source::Recommendation)), Some((50, Source::Override)))]
    fn precedence_table(
        #[case] c: Candidates,
        #[case] req: Option<(u64, Source)>,
        #[case] lim: Option<(u64, Source)>,
    ) {
        let (r, _) = resolve(&c);
        assert_eq!(r.request.map(|x| (x.value, x.source)), req);
        assert_eq!(r.limit.map(|x| (x.value, x.source)), lim);
        if let (Some(a), Some(b)) = (r.request, r.limit) {
            assert!(a.value <= b.value);
        }
    }

    #[test]
    fn adjustment_is_noted() {
        let c = Candidates {
            recommendation: s(Some(60), None),
            template: s(Some(10), Some(40)),
            ..Default::default()
        };
        let (_, notes) = resolve(&c);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("limit raised"));
        let _ = NONE;
    }

    fn rec_observed(avg: f64, p95: f64, max: f64, samples: u64) -> ResourceRecommendation {
        ResourceRecommendation {
            observed: Some(Observed {
                avg: avg * MI as f64,
                p95: p95 * MI as f64,
                max: max * MI as f64,
                samples,
                history_seconds: 86400,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn proposal_from_observed_uses_rules_and_evidence() {
        let rules = Rules::default();
        let p = proposal(
            &rules,
            crate::strategy::SEED,
            Resource::Memory,
            &rec_observed(100.0, 200.0, 300.0, 1000),
        )
        .unwrap();
        assert_eq!(p, s(Some(240 * MI), Some(368 * MI)));
        assert_eq!(
            proposal(
                &rules,
                crate::strategy::SEED,
                Resource::Memory,
                &rec_observed(100.0, 200.0, 300.0, 10)
            ),
            None,
            "too few samples"
        );
    }

    #[rstest]
    #[case::seed_memory(crate::strategy::SEED, Resource::Memory, true)]
    #[case::adaptive_memory("adaptive", Resource::Memory, false)]
    #[case::adaptive_cpu_follows_the_seed_rules("adaptive", Resource::Cpu, true)]
    fn observed_only_is_computed_where_the_analyzer_uses_the_seed_rules(
        #[case] recommender: &str,
        #[case] resource: Resource,
        #[case] computed: bool,
    ) {
        let r = rec_observed(100.0, 200.0, 300.0, 1000);
        let p = proposal(&Rules::default(), recommender, resource, &r);
        assert_eq!(p.is_some(), computed);
    }

    #[test]
    fn proposal_respects_oom_floor() {
        let rules = Rules::default();
        let mut r = rec_observed(100.0, 200.0, 300.0, 1000);
        r.oom_floor = Some(512 * MI);
        let p = proposal(&rules, crate::strategy::SEED, Resource::Memory, &r).unwrap();
        // The analyzer's rule (`rules::oom_raise`): request and limit both reach the floor.
        assert_eq!(p, s(Some(512 * MI), Some(512 * MI)));
    }

    #[rstest]
    #[case::floor_above_both(512)]
    #[case::floor_between(300)]
    #[case::floor_below_both(64)]
    fn oom_floor_same_at_admission_and_in_the_analyzer(#[case] floor_mi: u64) {
        use crate::analysis::compute::{decide, Previous, ResourceInput};
        let rules = Rules::default();
        let mut r = rec_observed(100.0, 200.0, 300.0, 1000);
        r.oom_floor = Some(floor_mi * MI);
        let admission = proposal(&rules, crate::strategy::SEED, Resource::Memory, &r);
        let input = ResourceInput {
            observed: r.observed,
            oom_floor: r.oom_floor,
            ..Default::default()
        };
        let analyzer = decide(&rules, Resource::Memory, &input, Previous::default(), 0);
        assert_eq!(admission, analyzer.rec.recommended);
    }

    /// The policy's bounds on a pair from the analyzer; a side without a rule (the CPU
    /// limit by default) has no bounds.
    #[rstest]
    #[case::above_max(12_000, Some(8_000))]
    #[case::below_min(5, Some(10))]
    #[case::within(500, None)]
    fn bounds_on_analyzer_values(#[case] value: u64, #[case] want: Option<u64>) {
        let rules = Rules::default();
        let mut notes = Vec::new();
        let got = bound(
            s(Some(value), Some(20_000)),
            &rules,
            Resource::Cpu,
            "committed",
            &mut notes,
        );
        assert_eq!(got, s(Some(want.unwrap_or(value)), Some(20_000)));
        assert_eq!(notes.len(), usize::from(want.is_some()));
    }
}
