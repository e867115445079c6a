//! PodTolerationRestriction, as far as a namespace's annotations tell it. The plugin
//! merges the namespace's default tolerations into a new Pod (and a memory-pressure
//! toleration into non-BestEffort ones) before the webhooks run, and after them refuses a
//! Pod with a toleration its namespace's whitelist does not cover. So a toleration the
//! webhook would add is added only when the whitelist covers it.
//!
//! Not visible here: the plugin's cluster-wide default and whitelist (its admission
//! configuration file), which apply to namespaces without the annotations. In a cluster
//! that configures a cluster-wide whitelist, placement rules must only add tolerations it
//! covers (documented in the README).

use std::collections::BTreeMap;

use serde_json::Value;

pub const DEFAULTS_ANNOTATION: &str = "scheduler.alpha.kubernetes.io/defaultTolerations";
pub const WHITELIST_ANNOTATION: &str = "scheduler.alpha.kubernetes.io/tolerationsWhitelist";

/// A namespace's toleration restriction, from its annotations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TolerationRestriction {
    /// The whitelist annotation's tolerations; `None` without one (no restriction known).
    pub whitelist: Option<Vec<Value>>,
    /// An annotation is present but not a JSON list of tolerations: the plugin refuses
    /// every Pod of the namespace, and nothing is added here.
    pub unreadable: bool,
}

impl TolerationRestriction {
    /// From a namespace's annotations (only the two above are read).
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        let parse = |key: &str| -> Result<Option<Vec<Value>>, ()> {
            match annotations.get(key) {
                None => Ok(None),
                Some(text) => match serde_json::from_str::<Value>(text) {
                    Ok(Value::Array(list)) if list.iter().all(Value::is_object) => Ok(Some(list)),
                    _ => Err(()),
                },
            }
        };
        let defaults = parse(DEFAULTS_ANNOTATION);
        let whitelist = parse(WHITELIST_ANNOTATION);
        TolerationRestriction {
            unreadable: defaults.is_err() || whitelist.is_err(),
            whitelist: whitelist.unwrap_or_default(),
        }
    }

    /// Whether the plugin would let a Pod carry `t` in this namespace.
    pub fn admits(&self, t: &Value) -> bool {
        if self.unreadable {
            return false;
        }
        match &self.whitelist {
            // An empty whitelist restricts nothing (the plugin checks only a non-empty one).
            None => true,
            Some(w) if w.is_empty() => true,
            Some(w) => w.iter().any(|w| covers(w, t)),
        }
    }
}

fn field<'a>(t: &'a Value, k: &str) -> &'a str {
    t.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Whether whitelist entry `w` tolerates at least what `t` does (the plugin's rule: the
/// same key, or `w` an empty key with Exists; the same effect or `w` any effect; a
/// NoExecute `w` with tolerationSeconds allows no longer `t`; Equal needs the same value).
fn covers(w: &Value, t: &Value) -> bool {
    if w == t {
        return true;
    }
    let (wop, top) = (field(w, "operator"), field(t, "operator"));
    if field(t, "key") != field(w, "key") && !(field(w, "key").is_empty() && wop == "Exists") {
        return false;
    }
    if field(t, "effect") != field(w, "effect") && !field(w, "effect").is_empty() {
        return false;
    }
    if field(w, "effect") == "NoExecute" {
        if let Some(ws) = w.get("tolerationSeconds").and_then(Value::as_i64) {
            match t.get("tolerationSeconds").and_then(Value::as_i64) {
                Some(ts) if ts <= ws => {}
                _ => return false,
            }
        }
    }
    match wop {
        // `t` with an empty operator is not taken to be Equal: it is only covered when
        // equal to the entry, or by Exists.
        "" | "Equal" => top == "Equal" && field(t, "value") == field(w, "value"),
        "Exists" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn ns(whitelist: Option<&str>) -> TolerationRestriction {
        let mut a = BTreeMap::new();
        if let Some(w) = whitelist {
            a.insert(WHITELIST_ANNOTATION.to_string(), w.to_string());
        }
        TolerationRestriction::from_annotations(&a)
    }

    #[rstest]
    #[case::no_whitelist(None, r#"{"key":"a","operator":"Exists","effect":"NoSchedule"}"#, true)]
    #[case::empty_whitelist(Some("[]"), r#"{"key":"a","operator":"Exists"}"#, true)]
    #[case::same(
        Some(r#"[{"key":"a","operator":"Equal","value":"x","effect":"NoSchedule"}]"#),
        r#"{"key":"a","operator":"Equal","value":"x","effect":"NoSchedule"}"#,
        true
    )]
    #[case::other_key(
        Some(r#"[{"key":"a","operator":"Exists"}]"#),
        r#"{"key":"b","operator":"Exists","effect":"NoSchedule"}"#,
        false
    )]
    #[case::exists_covers_values(
        Some(r#"[{"key":"a","operator":"Exists"}]"#),
        r#"{"key":"a","operator":"Equal","value":"x","effect":"NoSchedule"}"#,
        true
    )]
    #[case::equal_other_value(
        Some(r#"[{"key":"a","operator":"Equal","value":"y"}]"#),
        r#"{"key":"a","operator":"Equal","value":"x"}"#,
        false
    )]
    #[case::other_effect(
        Some(r#"[{"key":"a","operator":"Exists","effect":"NoExecute"}]"#),
        r#"{"key":"a","operator":"Exists","effect":"NoSchedule"}"#,
        false
    )]
    #[case::empty_key_exists_covers_all(
        Some(r#"[{"operator":"Exists"}]"#),
        r#"{"key":"gpu","operator":"Exists","effect":"NoSchedule"}"#,
        true
    )]
    #[case::exists_not_covered_by_equal(
        Some(r#"[{"key":"a","operator":"Equal","value":""}]"#),
        r#"{"key":"a","operator":"Exists"}"#,
        false
    )]
    #[case::longer_no_execute(
        Some(r#"[{"key":"a","operator":"Exists","effect":"NoExecute","tolerationSeconds":60}]"#),
        r#"{"key":"a","operator":"Exists","effect":"NoExecute","tolerationSeconds":120}"#,
        false
    )]
    #[case::unbounded_no_execute(
        Some(r#"[{"key":"a","operator":"Exists","effect":"NoExecute","tolerationSeconds":60}]"#),
        r#"{"key":"a","operator":"Exists","effect":"NoExecute"}"#,
        false
    )]
    #[case::shorter_no_execute(
        Some(r#"[{"key":"a","operator":"Exists","effect":"NoExecute","tolerationSeconds":60}]"#),
        r#"{"key":"a","operator":"Exists","effect":"NoExecute","tolerationSeconds":30}"#,
        true
    )]
    #[case::unreadable(Some("not json"), r#"{"key":"a","operator":"Exists"}"#, false)]
    fn whitelist_admits(#[case] w: Option<&str>, #[case] t: &str, #[case] want: bool) {
        let t: Value = serde_json::from_str(t).unwrap();
        assert_eq!(ns(w).admits(&t), want);
    }
}
