//! The admission side of load models: from the `rightsizer.io/expected-load`
//! annotation to a predicted memory request/limit per container, and how that
//! prediction joins the recommendation level of the precedence chain.

use std::collections::BTreeMap;

use crate::loadmodel::annotation::parse_load;
use crate::loadmodel::model::{choose, sizes, Origin};
use crate::loadmodel::schema::LoadModelSpec;
use crate::object::{View, EXPECTED_LOAD_ANNOTATION};
use crate::policy::schema::Policy;
use crate::policy::select::Subject;
use crate::recommendation::ContainerRecommendation;
use crate::rules::Sizes;

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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

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
