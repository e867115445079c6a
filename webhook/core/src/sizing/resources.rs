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

/// While an OOM floor holds (enforce mode, memory): every side below the floor is raised to
/// it, whatever it came from (a template, a default, a commit, a recommendation held back by
/// the step limit or hysteresis), except explicit overrides, which stay as written (noted).
/// A raised side counts as the recommendation's (the floor is part of it). `request`: false
/// leaves the request alone (an HPA scales on it).
pub fn raise_to_oom_floor(r: &mut Resolved, floor: u64, request: bool, notes: &mut Vec<String>) {
    let fmt = |v: u64| Resource::Memory.format(v);
    let sides = [
        (&mut r.request, "request", request),
        (&mut r.limit, "limit", true),
    ];
    for (side, name, raise) in sides {
        if !raise {
            continue;
        }
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

/// `s`, a recommended pair, within the policy's bounds (as [`bound`] makes it).
pub fn bounded(s: Sizes, rules: &Rules, resource: Resource) -> Sizes {
    let side = |v: Option<u64>| {
        v.map(|value| Side {
            value,
            source: Source::Recommendation,
        })
    };
    let mut r = Resolved {
        request: side(s.request),
        limit: side(s.limit),
    };
    bound(&mut r, rules, resource, None, &mut Vec::new());
    Sizes {
        request: r.request.map(|x| x.value),
        limit: r.limit.map(|x| x.value),
    }
}

/// The policy's bounds (the rules' min and max of each side) on every side that came from a
/// commit, a load model or a recommendation (the OOM floor included), whoever produced it:
/// a value cached before the policy changed, or read from a snapshot, is bounded by the
/// policy in force now. Overrides, template values and defaults are not touched. Values
/// within the bounds are not rounded again: the analyzer rounds what it computes, and a
/// value its hysteresis kept is the running one, which a re-rounding would change.
/// `floor`: the OOM floor in force, to say when the max caps it.
pub fn bound(
    r: &mut Resolved,
    rules: &Rules,
    resource: Resource,
    floor: Option<u64>,
    notes: &mut Vec<String>,
) {
    let (request_rule, limit_rule) = match resource {
        Resource::Memory => (
            Some((rules.memory.request.min.0, rules.memory.request.max.0)),
            rules.memory.limit.map(|l| (l.min.0, l.max.0)),
        ),
        Resource::Cpu => (
            Some((rules.cpu.request.min.0, rules.cpu.request.max.0)),
            rules.cpu.limit.map(|l| (l.min.0, l.max.0)),
        ),
    };
    let fmt = |v: u64| resource.format(v);
    let mut changed = false;
    for (side, name, rule) in [
        (&mut r.request, "request", request_rule),
        (&mut r.limit, "limit", limit_rule),
    ] {
        let (Some(s), Some((min, max))) = (*side, rule) else {
            continue;
        };
        if !matches!(
            s.source,
            Source::Enforced | Source::LoadModel | Source::Recommendation
        ) {
            continue;
        }
        let max = max.max(min);
        let v = s.value.clamp(min, max);
        if v == s.value {
            continue;
        }
        if s.value > max {
            let capped = if floor.is_some_and(|f| f > max) {
                " (the OOM floor is capped by it)"
            } else {
                ""
            };
            notes.push(format!(
                "{name} {} ({}) lowered to the policy's max {}{capped}",
                fmt(s.value),
                s.source,
                fmt(max)
            ));
        } else if s.value < min {
            notes.push(format!(
                "{name} {} ({}) raised to the policy's min {}",
                fmt(s.value),
                s.source,
                fmt(min)
            ));
        }
        *side = Some(Side { value: v, ..s });
        changed = true;
    }
    if changed {
        settle(r, notes);
    }
}

/// What the analyzer proposes for this resource, before guards: its own recommendation,
/// or one computed from observed usage with the policy's rules (when evidence suffices).
pub fn proposal(rules: &Rules, resource: Resource, rec: &ResourceRecommendation) -> Option<Sizes> {
    if let Some(s) = rec.recommended {
        return Some(s);
    }
    let obs = rec.observed.as_ref()?;
    if !rules.enough_evidence(obs) {
        return None;
    }
    let mut s = rules.recommend(resource, obs);
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
            Resource::Memory,
            &rec_observed(100.0, 200.0, 300.0, 1000),
        )
        .unwrap();
        assert_eq!(p, s(Some(240 * MI), Some(368 * MI)));
        assert_eq!(
            proposal(
                &rules,
                Resource::Memory,
                &rec_observed(100.0, 200.0, 300.0, 10)
            ),
            None,
            "too few samples"
        );
    }

    #[test]
    fn proposal_respects_oom_floor() {
        let rules = Rules::default();
        let mut r = rec_observed(100.0, 200.0, 300.0, 1000);
        r.oom_floor = Some(512 * MI);
        let p = proposal(&rules, Resource::Memory, &r).unwrap();
        // The analyzer's rule (`rules::oom_raise`): request and limit both reach the floor.
        assert_eq!(p, s(Some(512 * MI), Some(512 * MI)));
    }

    #[rstest]
    #[case::floor_above_both(512)]
    #[case::floor_between(300)]
    #[case::floor_below_both(64)]
    fn oom_floor_same_at_admission_and_in_the_analyzer(#[case] floor_mi: u64) {
        use crate::analyzer::compute::{decide, Previous, ResourceInput};
        let rules = Rules::default();
        let mut r = rec_observed(100.0, 200.0, 300.0, 1000);
        r.oom_floor = Some(floor_mi * MI);
        let admission = proposal(&rules, Resource::Memory, &r);
        let input = ResourceInput {
            observed: r.observed,
            oom_floor: r.oom_floor,
            ..Default::default()
        };
        let analyzer = decide(&rules, Resource::Memory, &input, Previous::default(), 0);
        assert_eq!(admission, analyzer.rec.recommended);
    }

    /// The policy's bounds hold on values from commits, load models and recommendations;
    /// overrides, template values and defaults are left as they are, and a side without a
    /// rule (the CPU limit by default) has no bounds.
    #[rstest]
    #[case::recommendation_above_max(Source::Recommendation, 12_000, Some(8_000))]
    #[case::committed_below_min(Source::Enforced, 5, Some(10))]
    #[case::load_model_above_max(Source::LoadModel, 9_000, Some(8_000))]
    #[case::override_kept(Source::Override, 12_000, None)]
    #[case::template_kept(Source::Template, 12_000, None)]
    #[case::default_kept(Source::Default, 5, None)]
    fn bounds_by_source(#[case] source: Source, #[case] value: u64, #[case] want: Option<u64>) {
        let rules = Rules::default();
        let side = Some(Side { value, source });
        let mut r = Resolved {
            request: side,
            limit: Some(Side {
                value: 20_000,
                source,
            }),
        };
        let mut notes = Vec::new();
        bound(&mut r, &rules, Resource::Cpu, None, &mut notes);
        assert_eq!(r.request.map(|s| s.value), Some(want.unwrap_or(value)));
        assert_eq!(r.request.map(|s| s.source), Some(source));
        assert_eq!(r.limit.map(|s| s.value), Some(20_000), "no CPU limit rule");
        assert_eq!(notes.len(), usize::from(want.is_some()));
    }
}
