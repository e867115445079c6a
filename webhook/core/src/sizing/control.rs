//! What the policy's `sizing:` section and the cluster's nodes do to one container's
//! resolved request and limit: the limit rule, `controlledValues: RequestsOnly`, the JVM
//! heap bound and the node cap. Pure functions on [`Resolved`]; `resize` calls them in
//! that order (after precedence and the OOM floor, before QoS and the LimitRange fit).

use crate::policy::sizing::{ControlledValues, LimitRuleOf};
use crate::quantity::{round_up, Resource};
use crate::rules::Sizes;
use crate::sizing::jvm::{self, Heap};
use crate::sizing::resources::{Resolved, Side, Source};

/// A value rightsizer chose from usage (a commit, a load model, a recommendation), as
/// opposed to one somebody wrote (template, override, policy default).
pub fn from_usage(s: Option<Side>) -> bool {
    s.is_some_and(|s| {
        matches!(
            s.source,
            Source::Enforced | Source::LoadModel | Source::Recommendation
        )
    })
}

/// The limit for `request` under `rule`; `None`: the rule leaves the limit as resolved
/// (`recommended`, or `keepRatio` without both sides declared).
fn derived_limit(rule: LimitRuleOf, request: u64, template: Sizes) -> Option<u64> {
    match rule {
        LimitRuleOf::Recommended => None,
        LimitRuleOf::KeepRatio => match (template.request, template.limit) {
            (Some(q), Some(l)) if q > 0 => {
                let v = (u128::from(request) * u128::from(l)).div_ceil(u128::from(q));
                Some(u64::try_from(v).unwrap_or(u64::MAX))
            }
            _ => None,
        },
        LimitRuleOf::Ratio(f) => {
            let v = (request as f64 * f).ceil();
            Some(if v >= u64::MAX as f64 {
                u64::MAX
            } else {
                v as u64
            })
        }
        LimitRuleOf::Headroom(h) => Some(request.saturating_add(h)),
    }
}

/// The limit follows the request by the policy's limit rule, when either side came from
/// usage and the limit is not an override. `round_to`: the resource's rounding step;
/// `max`: the policy's limit max, if it has one (never below the request, nor below a limit
/// from usage still being stepped down to it). Returns whether the rule set the limit.
pub fn apply_limit_rule(
    r: &mut Resolved,
    rule: LimitRuleOf,
    template: Sizes,
    round_to: u64,
    max: Option<u64>,
) -> bool {
    let Some(req) = r.request else { return false };
    if !(from_usage(r.request) || from_usage(r.limit))
        || r.limit.is_some_and(|l| l.source == Source::Override)
    {
        return false;
    }
    let Some(mut limit) = derived_limit(rule, req.value, template) else {
        return false;
    };
    // Keeping the ratio never gives less than the rules recommend (their limit covers the
    // observed max): the declared ratio is the least headroom kept. A derived value is
    // rounded like recommendations (a ratio of 1 keeps the request exactly).
    let usage = r.limit.filter(|l| from_usage(Some(*l))).map(|l| l.value);
    match usage {
        Some(u) if rule == LimitRuleOf::KeepRatio && u >= limit => limit = u,
        _ if limit != req.value => limit = round_up(limit, round_to),
        _ => {}
    }
    // Within the policy's limit max; a limit from usage that is still being walked down to
    // it (30% a step from a declared value above) is not cut short.
    if let Some(m) = max {
        let walking = r
            .limit
            .filter(|_| from_usage(r.limit))
            .map_or(0, |l| l.value);
        limit = limit.min(m.max(req.value).max(walking));
    }
    let source = if from_usage(r.request) {
        req.source
    } else {
        r.limit.map_or(req.source, |l| l.source)
    };
    r.limit = Some(Side {
        value: limit,
        source,
    });
    true
}

/// `RequestsOnly`: a limit from usage goes back to the declared one (or none), and a
/// request from usage never goes above it.
pub fn requests_only(
    r: &mut Resolved,
    values: ControlledValues,
    template: Sizes,
    res: Resource,
    notes: &mut Vec<String>,
) {
    if values != ControlledValues::RequestsOnly {
        return;
    }
    if from_usage(r.limit) {
        r.limit = template.limit.map(|value| Side {
            value,
            source: Source::Template,
        });
    }
    if let (Some(q), Some(l)) = (r.request, r.limit) {
        if q.value > l.value && from_usage(r.request) {
            notes.push(format!(
                "request {} capped at the declared limit {} (controlledValues: RequestsOnly)",
                res.format(q.value),
                res.format(l.value)
            ));
            r.request = Some(Side {
                value: l.value,
                ..q
            });
        }
    }
}

/// The JVM bound: a memory limit from usage (or a policy default) below what the heap
/// needs is raised to it. A limit somebody wrote (template, override) stays, with a note.
pub fn jvm_bound(
    r: &mut Resolved,
    heap: Heap,
    non_heap: u64,
    template: Sizes,
    notes: &mut Vec<String>,
) {
    let Some(lim) = r.limit else { return };
    let Some(floor) = jvm::limit_floor(heap, non_heap, template.limit) else {
        return;
    };
    if lim.value >= floor {
        return;
    }
    let fmt = |v: u64| Resource::Memory.format(v);
    if matches!(lim.source, Source::Template | Source::Override) {
        notes.push(format!(
            "the {} limit {} is below what {} needs ({}); kept (explicit)",
            lim.source,
            fmt(lim.value),
            jvm::describe(heap),
            fmt(floor)
        ));
        return;
    }
    notes.push(format!(
        "limit raised from {} to {} for {}",
        fmt(lim.value),
        fmt(floor),
        jvm::describe(heap)
    ));
    r.limit = Some(Side {
        value: floor,
        ..lim
    });
}

/// No raise above what the largest node the Pod can run on allocates: a side that rose
/// above both its declared value and `cap` comes down to the larger of the two. Returns
/// whether a side was capped.
pub fn cap_at_node(
    r: &mut Resolved,
    cap: u64,
    template: Sizes,
    res: Resource,
    notes: &mut Vec<String>,
) -> bool {
    let mut capped = false;
    let sides = [
        (&mut r.request, template.request, "request"),
        (&mut r.limit, template.limit, "limit"),
    ];
    for (side, declared, name) in sides {
        let Some(s) = *side else { continue };
        if s.source == Source::Override || s.value <= cap {
            continue;
        }
        let to = cap.max(declared.unwrap_or(0));
        if to < s.value {
            notes.push(format!(
                "{name} {} capped at {}: no node the Pod can run on allocates more",
                res.format(s.value),
                res.format(to)
            ));
            *side = Some(Side { value: to, ..s });
            capped = true;
        }
    }
    capped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::MI;
    use rstest::rstest;

    fn side(mi: u64, source: Source) -> Option<Side> {
        Some(Side {
            value: mi * MI,
            source,
        })
    }
    fn sizes(q: Option<u64>, l: Option<u64>) -> Sizes {
        Sizes {
            request: q.map(|v| v * MI),
            limit: l.map(|v| v * MI),
        }
    }
    const REC: Source = Source::Recommendation;
    const TPL: Source = Source::Template;

    /// (rule, template request/limit, resolved request/limit) -> limit (rounded up to 16Mi).
    #[rstest]
    // Declared 100/200: the ratio 2 follows the request of 300.
    #[case::keep_ratio(LimitRuleOf::KeepRatio, sizes(Some(100), Some(200)), (300, REC), Some((368, REC)), 608)]
    // Declared request only: keepRatio is `recommended`.
    #[case::keep_ratio_needs_both(LimitRuleOf::KeepRatio, sizes(Some(100), None), (300, REC), Some((368, REC)), 368)]
    // Guaranteed 1Gi/1Gi: limit = request, or the larger recommended limit.
    #[case::keep_ratio_one(LimitRuleOf::KeepRatio, sizes(Some(1024), Some(1024)), (700, REC), None, 700)]
    #[case::keep_ratio_not_below_recommended(LimitRuleOf::KeepRatio, sizes(Some(1024), Some(1024)), (700, REC), Some((900, REC)), 900)]
    #[case::recommended(LimitRuleOf::Recommended, sizes(Some(100), Some(200)), (300, REC), Some((368, REC)), 368)]
    #[case::ratio(LimitRuleOf::Ratio(1.5), sizes(None, None), (300, REC), None, 464)]
    #[case::headroom(LimitRuleOf::Headroom(256 * MI), sizes(Some(100), Some(200)), (300, REC), Some((368, REC)), 560)]
    // The request held back (hysteresis): the recommended limit, above the declared ratio.
    #[case::request_held(LimitRuleOf::KeepRatio, sizes(Some(100), Some(200)), (100, TPL), Some((368, REC)), 368)]
    #[case::request_held_ratio_kept(LimitRuleOf::KeepRatio, sizes(Some(100), Some(400)), (100, TPL), Some((368, REC)), 400)]
    // Nothing from usage: nothing derived.
    #[case::template_only(LimitRuleOf::Ratio(3.0), sizes(Some(100), Some(200)), (100, TPL), Some((200, TPL)), 200)]
    // An override limit stays.
    #[case::override_limit(LimitRuleOf::Ratio(3.0), sizes(Some(100), Some(200)), (300, REC), Some((320, Source::Override)), 320)]
    fn limit_rule_table(
        #[case] rule: LimitRuleOf,
        #[case] template: Sizes,
        #[case] request: (u64, Source),
        #[case] limit: Option<(u64, Source)>,
        #[case] want_limit_mi: u64,
    ) {
        let mut r = Resolved {
            request: side(request.0, request.1),
            limit: limit.and_then(|(v, s)| side(v, s)),
        };
        apply_limit_rule(&mut r, rule, template, 16 * MI, Some(8192 * MI));
        assert_eq!(r.limit.map(|s| s.value), Some(want_limit_mi * MI));
        assert_eq!(
            r.request,
            side(request.0, request.1),
            "the request is not moved"
        );
    }

    #[test]
    fn a_committed_limit_at_the_ratio_is_not_rounded() {
        // Committed 300Mi/600Mi over a declared 128Mi/256Mi: the limit stays 600Mi.
        let mut r = Resolved {
            request: side(300, Source::Enforced),
            limit: side(600, Source::Enforced),
        };
        apply_limit_rule(
            &mut r,
            LimitRuleOf::KeepRatio,
            sizes(Some(128), Some(256)),
            16 * MI,
            Some(8192 * MI),
        );
        assert_eq!(r.limit, side(600, Source::Enforced));
    }

    #[test]
    fn limit_rule_does_not_cut_a_walk_short() {
        // Declared 2Gi/4Gi stepping down to a 2Gi limit max: 1440Mi/2880Mi this step.
        let mut r = Resolved {
            request: side(1440, REC),
            limit: side(2880, REC),
        };
        apply_limit_rule(
            &mut r,
            LimitRuleOf::KeepRatio,
            sizes(Some(2048), Some(4096)),
            16 * MI,
            Some(2048 * MI),
        );
        assert_eq!(r.limit, side(2880, REC));
    }

    #[test]
    fn limit_rule_stays_under_the_policy_max() {
        let mut r = Resolved {
            request: side(3000, REC),
            limit: side(3000, REC),
        };
        apply_limit_rule(
            &mut r,
            LimitRuleOf::Ratio(4.0),
            sizes(None, None),
            16 * MI,
            Some(8192 * MI),
        );
        assert_eq!(r.limit, side(8192, REC));
    }

    #[rstest]
    // The limit from usage goes back to the declared one; the request stays under it.
    #[case::declared_limit(sizes(Some(100), Some(200)), (300, REC), Some((450, REC)), Some(200), Some(200), true)]
    #[case::within(sizes(Some(100), Some(200)), (150, REC), Some((300, REC)), Some(150), Some(200), false)]
    // No declared limit: none is written.
    #[case::no_declared_limit(sizes(Some(100), None), (300, REC), Some((450, REC)), Some(300), None, false)]
    // An override request is explicit: kept (request > limit is settled later).
    #[case::override_request(sizes(Some(100), Some(200)), (300, Source::Override), Some((200, TPL)), Some(300), Some(200), false)]
    fn requests_only_table(
        #[case] template: Sizes,
        #[case] request: (u64, Source),
        #[case] limit: Option<(u64, Source)>,
        #[case] want_request: Option<u64>,
        #[case] want_limit: Option<u64>,
        #[case] noted: bool,
    ) {
        let mut r = Resolved {
            request: side(request.0, request.1),
            limit: limit.and_then(|(v, s)| side(v, s)),
        };
        let mut notes = vec![];
        requests_only(
            &mut r,
            ControlledValues::RequestsOnly,
            template,
            Resource::Memory,
            &mut notes,
        );
        assert_eq!(r.request.map(|s| s.value / MI), want_request);
        assert_eq!(r.limit.map(|s| s.value / MI), want_limit);
        assert_eq!(!notes.is_empty(), noted, "{notes:?}");
    }

    #[test]
    fn requests_and_limits_changes_nothing() {
        let mut r = Resolved {
            request: side(300, REC),
            limit: side(450, REC),
        };
        let before = r;
        requests_only(
            &mut r,
            ControlledValues::RequestsAndLimits,
            sizes(Some(1), Some(2)),
            Resource::Memory,
            &mut vec![],
        );
        assert_eq!(r, before);
    }

    #[rstest]
    // -Xmx3g never gets a 2Gi limit: 3Gi + 256Mi.
    #[case::raised(Heap::Fixed(3072 * MI), sizes(None, None), (2048, REC), 3328, true)]
    #[case::enough(Heap::Fixed(1024 * MI), sizes(None, None), (2048, REC), 2048, false)]
    // The declared limit is the user's: kept, with a note.
    #[case::declared_kept(Heap::Fixed(3072 * MI), sizes(Some(1024), Some(2048)), (2048, TPL), 2048, true)]
    // A percentage heap: never below the declared limit.
    #[case::percentage(Heap::OfLimit(75.0), sizes(Some(1024), Some(2048)), (1536, REC), 2048, true)]
    #[case::percentage_raise_ok(Heap::OfLimit(75.0), sizes(Some(1024), Some(2048)), (2560, REC), 2560, false)]
    fn jvm_table(
        #[case] heap: Heap,
        #[case] template: Sizes,
        #[case] limit: (u64, Source),
        #[case] want_mi: u64,
        #[case] noted: bool,
    ) {
        let mut r = Resolved {
            request: side(512, REC),
            limit: side(limit.0, limit.1),
        };
        let mut notes = vec![];
        jvm_bound(&mut r, heap, 256 * MI, template, &mut notes);
        assert_eq!(r.limit.map(|s| s.value / MI), Some(want_mi));
        assert_eq!(!notes.is_empty(), noted, "{notes:?}");
    }

    #[rstest]
    // A raise above the node's 4Gi comes down to it.
    #[case::capped(sizes(Some(1024), Some(2048)), (6144, 8192), (4096, 4096), true)]
    // Declared above the node (the user's): never lowered below the declared value.
    #[case::declared_above(sizes(Some(5120), Some(6144)), (6144, 8192), (5120, 6144), true)]
    #[case::fits(sizes(Some(1024), Some(2048)), (2048, 3072), (2048, 3072), false)]
    fn node_cap_table(
        #[case] template: Sizes,
        #[case] resolved: (u64, u64),
        #[case] want: (u64, u64),
        #[case] capped: bool,
    ) {
        let mut r = Resolved {
            request: side(resolved.0, REC),
            limit: side(resolved.1, REC),
        };
        let mut notes = vec![];
        let got = cap_at_node(&mut r, 4096 * MI, template, Resource::Memory, &mut notes);
        assert_eq!(
            (r.request.unwrap().value / MI, r.limit.unwrap().value / MI),
            want
        );
        assert_eq!(got, capped);
        assert_eq!(notes.is_empty(), !capped);
    }

    #[test]
    fn node_cap_leaves_overrides() {
        let mut r = Resolved {
            request: side(6144, Source::Override),
            limit: None,
        };
        assert!(!cap_at_node(
            &mut r,
            4096 * MI,
            sizes(None, None),
            Resource::Memory,
            &mut vec![]
        ));
        assert_eq!(r.request, side(6144, Source::Override));
    }
}
