//! The policy's `sizing:` section: which resources and sides rightsizer may change, how a
//! limit follows a changed request, and the JVM heap bound. One section, so a policy
//! that sets it sets all of it (absent fields take the defaults below).

use serde::{Deserialize, Serialize};

use crate::quantity::{Bytes, Millicores, Resource, MI};

/// Which sides rightsizer may change (VPA's `controlledValues`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ControlledValues {
    /// Requests and limits.
    #[default]
    RequestsAndLimits,
    /// Requests only: limits stay as declared, and a request never goes above the
    /// declared limit.
    RequestsOnly,
}

/// How the limit follows a request rightsizer changed (from a commit, a recommendation or
/// a load model). A limit the user or an override wrote by itself is not derived.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    from = "LimitRuleText<Q>",
    bound(deserialize = "Q: Deserialize<'de> + Copy")
)]
pub enum LimitRule<Q> {
    /// limit = request × the declared limit/request ratio, or the rules' recommended
    /// limit when that is higher (needs both sides declared; else `recommended`).
    KeepRatio,
    /// The limit the rules recommend (`rules.<resource>.limit`).
    Recommended,
    /// limit = request × this (at least 1).
    Ratio(f64),
    /// limit = request + this.
    Headroom(Q),
}

/// How a limit rule is written: `keepRatio`, `recommended`, `{ratio: 1.5}` or
/// `{headroom: 256Mi}` (plain maps, not YAML tags).
#[derive(Deserialize)]
#[serde(untagged)]
enum LimitRuleText<Q> {
    Named(Named),
    Ratio(RatioText),
    Headroom(HeadroomText<Q>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum Named {
    KeepRatio,
    Recommended,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RatioText {
    ratio: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadroomText<Q> {
    headroom: Q,
}

impl<Q> From<LimitRuleText<Q>> for LimitRule<Q> {
    fn from(t: LimitRuleText<Q>) -> Self {
        match t {
            LimitRuleText::Named(Named::KeepRatio) => LimitRule::KeepRatio,
            LimitRuleText::Named(Named::Recommended) => LimitRule::Recommended,
            LimitRuleText::Ratio(r) => LimitRule::Ratio(r.ratio),
            LimitRuleText::Headroom(h) => LimitRule::Headroom(h.headroom),
        }
    }
}

/// The limit rule per resource; unset: `keepRatio` (which is `recommended` unless the
/// container declares both sides).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<LimitRule<Bytes>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<LimitRule<Millicores>>,
}

/// The limit rule of one resource, in the resource's unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitRuleOf {
    KeepRatio,
    Recommended,
    Ratio(f64),
    Headroom(u64),
}

impl LimitRules {
    pub fn of(&self, r: Resource) -> LimitRuleOf {
        fn plain<Q>(rule: Option<LimitRule<Q>>, get: fn(Q) -> u64) -> LimitRuleOf {
            match rule {
                None | Some(LimitRule::KeepRatio) => LimitRuleOf::KeepRatio,
                Some(LimitRule::Recommended) => LimitRuleOf::Recommended,
                Some(LimitRule::Ratio(f)) => LimitRuleOf::Ratio(f),
                Some(LimitRule::Headroom(q)) => LimitRuleOf::Headroom(get(q)),
            }
        }
        match r {
            Resource::Memory => plain(self.memory, |b| b.0),
            Resource::Cpu => plain(self.cpu, |m| m.0),
        }
    }
}

/// JVM-aware memory: heap settings found in a container's command, args and the JVM's
/// environment variables bound its memory limit from below.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JvmPolicy {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Memory beside the heap (metaspace, code cache, thread stacks, direct buffers).
    #[serde(default = "default_non_heap")]
    pub non_heap: Bytes,
}

fn yes() -> bool {
    true
}

fn default_non_heap() -> Bytes {
    Bytes(256 * MI)
}

impl Default for JvmPolicy {
    fn default() -> Self {
        JvmPolicy {
            enabled: true,
            non_heap: default_non_heap(),
        }
    }
}

/// The `sizing:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SizingPolicy {
    /// Resources rightsizer sizes (VPA's `controlledResources`); default both.
    #[serde(default = "both")]
    pub controlled_resources: Vec<Resource>,
    #[serde(default)]
    pub controlled_values: ControlledValues,
    #[serde(default)]
    pub limit_rule: LimitRules,
    #[serde(default)]
    pub jvm: JvmPolicy,
}

fn both() -> Vec<Resource> {
    Resource::ALL.to_vec()
}

impl Default for SizingPolicy {
    fn default() -> Self {
        SizingPolicy {
            controlled_resources: both(),
            controlled_values: ControlledValues::default(),
            limit_rule: LimitRules::default(),
            jvm: JvmPolicy::default(),
        }
    }
}

impl SizingPolicy {
    /// The checks serde cannot make: (field path under `sizing`, message).
    pub fn check(&self) -> Result<(), (String, String)> {
        if let Some(LimitRule::Ratio(f)) = self.limit_rule.memory {
            ratio_ok(f).map_err(|m| ("limitRule.memory.ratio".to_string(), m))?;
        }
        if let Some(LimitRule::Ratio(f)) = self.limit_rule.cpu {
            ratio_ok(f).map_err(|m| ("limitRule.cpu.ratio".to_string(), m))?;
        }
        Ok(())
    }
}

fn ratio_ok(f: f64) -> Result<(), String> {
    if f >= 1.0 && f.is_finite() {
        Ok(())
    } else {
        Err(format!(
            "must be at least 1 (a limit below its request is refused), got {f}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::empty("{}", SizingPolicy::default())]
    #[case::all(
        "controlledResources: [memory]\ncontrolledValues: RequestsOnly\nlimitRule: {memory: {headroom: 256Mi}, cpu: {ratio: 2}}\njvm: {nonHeap: 512Mi}",
        SizingPolicy {
            controlled_resources: vec![Resource::Memory],
            controlled_values: ControlledValues::RequestsOnly,
            limit_rule: LimitRules {
                memory: Some(LimitRule::Headroom(Bytes(256 * MI))),
                cpu: Some(LimitRule::Ratio(2.0)),
            },
            jvm: JvmPolicy { enabled: true, non_heap: Bytes(512 * MI) },
        }
    )]
    #[case::named_rules(
        "limitRule: {memory: keepRatio, cpu: recommended}",
        SizingPolicy {
            limit_rule: LimitRules {
                memory: Some(LimitRule::KeepRatio),
                cpu: Some(LimitRule::Recommended),
            },
            ..SizingPolicy::default()
        }
    )]
    fn reads_from_yaml(#[case] yaml: &str, #[case] want: SizingPolicy) {
        let got: SizingPolicy = serde_norway::from_str(yaml).unwrap();
        assert_eq!(got, want);
    }

    #[rstest]
    #[case::unknown_field("limitRules: {}")]
    #[case::unknown_rule("limitRule: {memory: double}")]
    #[case::unknown_value("controlledValues: LimitsOnly")]
    #[case::unknown_resource("controlledResources: [gpu]")]
    fn typos_are_refused(#[case] yaml: &str) {
        assert!(
            serde_norway::from_str::<SizingPolicy>(yaml).is_err(),
            "{yaml}"
        );
    }

    #[test]
    fn ratio_below_one_is_refused() {
        let p: SizingPolicy = serde_norway::from_str("limitRule: {cpu: {ratio: 0.5}}").unwrap();
        assert_eq!(p.check().unwrap_err().0, "limitRule.cpu.ratio");
    }
}
