//! The declared load: `participant_video=40,experimenter=2` (the
//! `rightsizer.io/expected-load` annotation, and `plan --load`/`--per-pod`).

use std::collections::BTreeMap;

use crate::loadmodel::schema::valid_unit_name;

/// Load per unit name. Units a model does not know count as zero for it.
pub type Load = BTreeMap<String, f64>;

/// Why a load declaration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadParseError {
    #[error("empty load declaration (expected e.g. participant_video=40,experimenter=2)")]
    Empty,
    #[error("item {item:?} is not unit=number")]
    NotPair { item: String },
    #[error(
        "unit name {unit:?} must be lowercase letters, digits and _ (not starting with a digit)"
    )]
    BadUnit { unit: String },
    #[error("{unit}: {value:?} is not a non-negative number")]
    BadValue { unit: String, value: String },
    #[error("{unit} is given twice")]
    Duplicate { unit: String },
}

/// Parse `unit=number[,unit=number...]`; spaces around items are allowed.
pub fn parse_load(text: &str) -> Result<Load, LoadParseError> {
    let mut out = Load::new();
    if text.trim().is_empty() {
        return Err(LoadParseError::Empty);
    }
    for item in text.split(',') {
        let item = item.trim();
        let Some((unit, value)) = item.split_once('=') else {
            return Err(LoadParseError::NotPair { item: item.into() });
        };
        let (unit, value) = (unit.trim(), value.trim());
        if !valid_unit_name(unit) {
            return Err(LoadParseError::BadUnit { unit: unit.into() });
        }
        let v: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| LoadParseError::BadValue {
                unit: unit.into(),
                value: value.into(),
            })?;
        if out.insert(unit.to_string(), v).is_some() {
            return Err(LoadParseError::Duplicate { unit: unit.into() });
        }
    }
    Ok(out)
}

/// The canonical text of a load (sorted by unit), as `plan` prints it.
pub fn format_load(load: &Load) -> String {
    load.iter()
        .map(|(u, v)| format!("{u}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn parses_the_contract_example() {
        let l = parse_load("participant_video=40,experimenter=2").unwrap();
        assert_eq!(l["participant_video"], 40.0);
        assert_eq!(l["experimenter"], 2.0);
        assert_eq!(format_load(&l), "experimenter=2,participant_video=40");
        assert_eq!(parse_load(" a = 1.5 , b=0 ").unwrap()["a"], 1.5);
    }

    #[rstest]
    #[case("", LoadParseError::Empty)]
    #[case("participant_video", LoadParseError::NotPair { item: "participant_video".into() })]
    #[case("a=1,", LoadParseError::NotPair { item: "".into() })]
    #[case("Video=1", LoadParseError::BadUnit { unit: "Video".into() })]
    #[case("=3", LoadParseError::BadUnit { unit: "".into() })]
    #[case("a=-1", LoadParseError::BadValue { unit: "a".into(), value: "-1".into() })]
    #[case("a=forty", LoadParseError::BadValue { unit: "a".into(), value: "forty".into() })]
    #[case("a=NaN", LoadParseError::BadValue { unit: "a".into(), value: "NaN".into() })]
    #[case("a=1,a=2", LoadParseError::Duplicate { unit: "a".into() })]
    fn refuses_malformed(#[case] text: &str, #[case] want: LoadParseError) {
        assert_eq!(parse_load(text), Err(want));
    }
}
