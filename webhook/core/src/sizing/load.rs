//! The admission side of load models: from the `rightsizer.io/expected-load`
//! annotation to a predicted memory request/limit per container, and how that
//! prediction joins the recommendation level of the precedence chain.
//!
//! A prediction is applied whole, not in 30% steps like usage-based values: its purpose
//! is to size Pods before the declared load arrives, so a jump past the step is expected.
//! It is capped by the policy's clamps (`rules.memory.request`/`limit` min and max), and
//! the warnings say when either happened; `rightsizer.io/sized` records the declared load.

use std::collections::BTreeMap;

use crate::loadmodel::annotation::{format_load, parse_load};
use crate::loadmodel::model::{choose, sizes, Origin};
use crate::loadmodel::schema::LoadModelSpec;
use crate::object::{View, EXPECTED_LOAD_ANNOTATION};
use crate::policy::schema::Policy;
use crate::policy::select::Subject;
use crate::quantity::Resource;
use crate::recommendation::ContainerRecommendation;
use crate::rules::{Rules, Sizes};
use crate::sizing::resources::{Resolved, Source};

/// A container's predicted memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The load model's name.
    pub model: String,
    pub origin: Origin,
    /// base + Σ coefficient × load, bytes (before headroom).
    pub predicted: f64,
    /// Request (prediction × headroom, rounded and clamped) and limit (the policy's rule).
    pub sizes: Sizes,
    /// Prediction × headroom, bytes, before rounding and clamps.
    pub wanted: f64,
    /// The declared load, in canonical form (`unit=value,...`, by unit).
    pub load: String,
}

/// The first of the policy's load models that selects this workload.
pub fn model_for<'a>(policy: &'a Policy, subject: &Subject) -> Option<&'a LoadModelSpec> {
    policy
        .load_models
        .iter()
        .find(|m| m.selector.matches(subject))
}

/// Predictions for the containers of this object, keyed by container name. Empty when
/// no load model selects it or it declares no load; a malformed annotation is ignored
/// with a warning that says what is wrong.
pub fn predictions(
    policy: &Policy,
    view: &View,
    namespace_labels: &BTreeMap<String, String>,
    recs: &BTreeMap<String, ContainerRecommendation>,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, Prediction> {
    let mut out = BTreeMap::new();
    let Some(text) = view.annotation(EXPECTED_LOAD_ANNOTATION) else {
        return out;
    };
    let subject = Subject {
        key: &view.identity,
        labels: &view.labels,
        namespace_labels,
    };
    let Some(spec) = model_for(policy, &subject) else {
        return out;
    };
    let load = match parse_load(text) {
        Ok(l) => l,
        Err(e) => {
            warnings.push(format!(
                "{EXPECTED_LOAD_ANNOTATION}: {e}; annotation ignored"
            ));
            return out;
        }
    };
    for unit in load.keys() {
        let known = spec.containers.values().any(|c| c.units.contains_key(unit));
        if !known {
            warnings.push(format!(
                "{EXPECTED_LOAD_ANNOTATION}: unit {unit} is not in load model {}; ignored",
                spec.name
            ));
        }
    }
    for (name, c) in &spec.containers {
        let fit = recs
            .get(name)
            .and_then(|r| r.load_model.as_ref())
            .map(|r| &r.fit);
        let Some(chosen) = choose(c, &spec.fit, fit) else {
            continue;
        };
        let predicted = chosen.model.predict(&load);
        out.insert(
            name.clone(),
            Prediction {
                model: spec.name.clone(),
                origin: chosen.origin,
                predicted,
                sizes: sizes(&policy.rules, spec.headroom, predicted),
                wanted: predicted * spec.headroom,
                load: format_load(&load),
            },
        );
    }
    out
}

/// The larger of two optional values per side (what `rightsizer.io/recommendation`
/// records when both a usage-based proposal and a prediction exist).
pub fn larger(a: Option<Sizes>, b: Option<Sizes>) -> Option<Sizes> {
    let max = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    match (a, b) {
        (Some(a), Some(b)) => Some(Sizes {
            request: max(a.request, b.request),
            limit: max(a.limit, b.limit),
        }),
        (a, b) => a.or(b),
    }
}

/// Join a prediction to the recommendation level, side by side: the prediction wins a
/// side when it is larger than the usage-based value there (or, with none, than the
/// template's value, so a declared load never lowers what the user wrote). The winning
/// sides are returned and cleared from `recommendation`.
pub fn join(prediction: Sizes, recommendation: &mut Sizes, template: Sizes) -> Sizes {
    let side = |pred: Option<u64>, rec: &mut Option<u64>, tpl: Option<u64>| {
        let p = pred?;
        let beats = match rec.or(tpl) {
            Some(v) => p > v,
            None => true,
        };
        beats.then(|| {
            *rec = None;
            p
        })
    };
    Sizes {
        request: side(
            prediction.request,
            &mut recommendation.request,
            template.request,
        ),
        limit: side(prediction.limit, &mut recommendation.limit, template.limit),
    }
}

/// What the user should know about a prediction that set a value: that it was capped by
/// the policy's clamps, and that it moved past the step usage-based changes are held to.
pub fn notes(p: &Prediction, rules: &Rules, resolved: &Resolved, template: Sizes) -> Vec<String> {
    let mut notes = Vec::new();
    let from_model = |s: Option<crate::sizing::resources::Side>| {
        s.filter(|s| s.source == Source::LoadModel).map(|s| s.value)
    };
    let (Some(request), limit) = (from_model(resolved.request), from_model(resolved.limit)) else {
        return notes;
    };
    let m = Resource::Memory;
    let max = rules.memory.request.max.0;
    if p.wanted > max as f64 {
        notes.push(format!(
            "load model {} predicts {} for {}; capped at the policy's rules.memory.request.max {}",
            p.model,
            m.format(p.wanted.ceil() as u64),
            p.load,
            m.format(max)
        ));
    }
    let ratio = rules.safeguards.max_step_ratio;
    let jumped = |now: u64, was: Option<u64>| {
        was.is_some_and(|w| w > 0 && now as f64 > w as f64 * (1.0 + ratio))
    };
    if jumped(request, template.request) || limit.is_some_and(|l| jumped(l, template.limit)) {
        notes.push(format!(
            "sized by load model {} for {} past the {:.0}% step (a prediction sizes Pods before the load arrives)",
            p.model,
            p.load,
            ratio * 100.0
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::MI;
    use crate::sizing::resources::Side;
    use rstest::rstest;

    fn prediction(wanted_mi: u64, request_mi: u64) -> Prediction {
        Prediction {
            model: "backend".into(),
            origin: Origin::Declared,
            predicted: 0.0,
            sizes: s(Some(request_mi * MI), None),
            wanted: (wanted_mi * MI) as f64,
            load: "users=40".into(),
        }
    }

    fn by_model(request_mi: u64) -> Resolved {
        Resolved {
            request: Some(Side {
                value: request_mi * MI,
                source: Source::LoadModel,
            }),
            limit: None,
        }
    }

    #[rstest]
    // 256Mi -> 912Mi: past the 30% step, said so
    #[case::jump(900, 912, Some(256), &["past the 30% step"][..])]
    // within the step: nothing to say
    #[case::small(300, 304, Some(256), &[][..])]
    // nothing declared: no step to speak of
    #[case::fresh(900, 912, None, &[][..])]
    // 10Gi wanted, capped at the seed's 4Gi request max
    #[case::capped(10240, 4096, Some(4096), &["capped at the policy's rules.memory.request.max 4Gi"][..])]
    fn notes_table(
        #[case] wanted: u64,
        #[case] request: u64,
        #[case] template: Option<u64>,
        #[case] want: &[&str],
    ) {
        let got = notes(
            &prediction(wanted, request),
            &Rules::default(),
            &by_model(request),
            s(template.map(|t| t * MI), None),
        );
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.contains(w), "{g}");
        }
    }

    const fn s(request: Option<u64>, limit: Option<u64>) -> Sizes {
        Sizes { request, limit }
    }

    #[rstest]
    // prediction above usage: both sides from the prediction
    #[case::prediction_wins(
        s(Some(500), Some(750)),
        s(Some(300), Some(450)),
        s(None, None),
        s(Some(500), Some(750)),
        s(None, None)
    )]
    // usage above prediction: usage stays
    #[case::usage_wins(
        s(Some(500), Some(750)),
        s(Some(600), Some(900)),
        s(None, None),
        s(None, None),
        s(Some(600), Some(900))
    )]
    // mixed: request from prediction, limit from usage
    #[case::mixed(
        s(Some(500), Some(750)),
        s(Some(300), Some(900)),
        s(None, None),
        s(Some(500), None),
        s(None, Some(900))
    )]
    // no usage value: compared with the template
    #[case::template_larger(
        s(Some(500), Some(750)),
        s(None, None),
        s(Some(1000), Some(600)),
        s(None, Some(750)),
        s(None, None)
    )]
    #[case::nothing_declared(
        s(Some(500), Some(750)),
        s(None, None),
        s(None, None),
        s(Some(500), Some(750)),
        s(None, None)
    )]
    fn join_table(
        #[case] pred: Sizes,
        #[case] rec: Sizes,
        #[case] tpl: Sizes,
        #[case] want_lm: Sizes,
        #[case] want_rec: Sizes,
    ) {
        let mut r = rec;
        assert_eq!(join(pred, &mut r, tpl), want_lm);
        assert_eq!(r, want_rec);
    }

    #[test]
    fn larger_per_side() {
        assert_eq!(
            larger(Some(s(Some(1), None)), Some(s(Some(2), Some(3)))),
            Some(s(Some(2), Some(3)))
        );
        assert_eq!(larger(None, Some(s(Some(2), None))), Some(s(Some(2), None)));
        assert_eq!(larger(None, None), None);
    }
}
