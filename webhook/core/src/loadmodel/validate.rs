//! Checks on the `loadModels` section. Errors carry the field path below
//! `loadModels[i]`; the policy validator adds the source and the prefix.

use std::collections::BTreeSet;

use crate::loadmodel::fit::MAX_UNITS;
use crate::loadmodel::schema::{valid_unit_name, LoadModelSpec};

/// (field path, message)
pub type FieldError = (String, String);

fn err(path: String, message: impl Into<String>) -> FieldError {
    (path, message.into())
}

/// Check every load model; `at` is the path prefix (`loadModels`).
pub fn check(at: &str, models: &[LoadModelSpec]) -> Result<(), FieldError> {
    let mut names = BTreeSet::new();
    for (i, m) in models.iter().enumerate() {
        let p = format!("{at}[{i}]");
        if m.name.is_empty() {
            return Err(err(format!("{p}.name"), "must not be empty"));
        }
        if !names.insert(m.name.as_str()) {
            return Err(err(
                format!("{p}.name"),
                format!("{:?} is used twice", m.name),
            ));
        }
        if !(m.headroom >= 1.0 && m.headroom.is_finite()) {
            return Err(err(
                format!("{p}.headroom"),
                "must be a number of at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&m.fit.min_r2) {
            return Err(err(format!("{p}.fit.minR2"), "must be between 0 and 1"));
        }
        if m.containers.is_empty() {
            return Err(err(
                format!("{p}.containers"),
                "must model at least one container",
            ));
        }
        for (name, c) in &m.containers {
            let cp = format!("{p}.containers.{name}");
            if name.is_empty() {
                return Err(err(
                    format!("{p}.containers"),
                    "container names must not be empty",
                ));
            }
            if c.constant.is_some() {
                if c.base.is_some() || !c.units.is_empty() || c.fitted || c.memory_query.is_some() {
                    return Err(err(
                        format!("{cp}.constant"),
                        "a constant container takes no base, units, fitted or memoryQuery",
                    ));
                }
                continue;
            }
            if c.units.len() > MAX_UNITS {
                return Err(err(
                    format!("{cp}.units"),
                    format!("at most {MAX_UNITS} units"),
                ));
            }
            for (u, spec) in &c.units {
                if !valid_unit_name(u) {
                    return Err(err(
                        format!("{cp}.units.{u}"),
                        "unit names are lowercase letters, digits and _ (not starting with a digit)",
                    ));
                }
                if c.fitted && spec.query.as_deref().is_none_or(|q| q.trim().is_empty()) {
                    return Err(err(
                        format!("{cp}.units.{u}.query"),
                        "a fitted model needs the PromQL that measures this load per pod",
                    ));
                }
                if !c.fitted && spec.coefficient.is_none() {
                    return Err(err(
                        format!("{cp}.units.{u}.coefficient"),
                        "required unless the model is fitted",
                    ));
                }
            }
            if c.fitted && c.units.is_empty() {
                return Err(err(
                    format!("{cp}.units"),
                    "a fitted model needs at least one unit",
                ));
            }
            if !c.fitted && c.base.is_none() && c.units.is_empty() {
                return Err(err(
                    cp,
                    "give constant, or base and/or units with coefficients, or fitted: true",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn parse(y: &str) -> Vec<LoadModelSpec> {
        serde_norway::from_str(y).unwrap()
    }

    #[rstest]
    #[case("- {name: a, containers: {c: {constant: 16Mi}}}", None)]
    #[case(
        "- {name: a, containers: {c: {base: 1Mi, units: {u: {coefficient: 1Mi}}}}}",
        None
    )]
    #[case(
        "- {name: a, containers: {c: {fitted: true, units: {u: {query: 'x'}}}}}",
        None
    )]
    #[case(
        "- {name: '', containers: {c: {constant: 1Mi}}}",
        Some("loadModels[0].name")
    )]
    #[case("- {name: a, containers: {c: {constant: 1Mi}}}\n- {name: a, containers: {c: {constant: 1Mi}}}", Some("loadModels[1].name"))]
    #[case(
        "- {name: a, headroom: 0.9, containers: {c: {constant: 1Mi}}}",
        Some("loadModels[0].headroom")
    )]
    #[case(
        "- {name: a, fit: {minR2: 2}, containers: {c: {constant: 1Mi}}}",
        Some("loadModels[0].fit.minR2")
    )]
    #[case("- {name: a, containers: {}}", Some("loadModels[0].containers"))]
    #[case(
        "- {name: a, containers: {c: {constant: 1Mi, base: 1Mi}}}",
        Some("loadModels[0].containers.c.constant")
    )]
    #[case(
        "- {name: a, containers: {c: {units: {Bad: {coefficient: 1Mi}}}}}",
        Some("loadModels[0].containers.c.units.Bad")
    )]
    #[case(
        "- {name: a, containers: {c: {fitted: true, units: {u: {coefficient: 1Mi}}}}}",
        Some("loadModels[0].containers.c.units.u.query")
    )]
    #[case(
        "- {name: a, containers: {c: {units: {u: {query: q}}}}}",
        Some("loadModels[0].containers.c.units.u.coefficient")
    )]
    #[case(
        "- {name: a, containers: {c: {fitted: true}}}",
        Some("loadModels[0].containers.c.units")
    )]
    #[case("- {name: a, containers: {c: {}}}", Some("loadModels[0].containers.c"))]
    fn table(#[case] y: &str, #[case] path: Option<&str>) {
        let got = check("loadModels", &parse(y)).err().map(|(p, _)| p);
        assert_eq!(got.as_deref(), path);
    }
}
