//! The two annotations rightsizer writes: `rightsizer.io/sized` (what was applied,
//! from where) and `rightsizer.io/recommendation` (what the analyzer proposes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::quantity::Resource;
use crate::sizing::resources::Source;

/// One applied value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub value: String,
    pub source: Source,
}

/// Applied values of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppliedPair {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Applied>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Applied>,
}

/// container -> resource -> applied values.
pub type SizedRecord = BTreeMap<String, BTreeMap<Resource, AppliedPair>>;

/// A recommended pair, as quantities.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecommendedPair {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// container -> resource -> recommended values.
pub type RecommendationRecord = BTreeMap<String, BTreeMap<Resource, RecommendedPair>>;

/// Whether every value recorded in a `sized` annotation is what the object still has:
/// then the object was sized already (by us, or through its template) and is left alone.
pub fn still_applied(
    record: &SizedRecord,
    current: impl Fn(&str, Resource) -> Option<(Option<u64>, Option<u64>)>,
) -> bool {
    !record.is_empty()
        && record.iter().all(|(container, resources)| {
            resources.iter().all(|(r, pair)| {
                let Some((req, lim)) = current(container, *r) else {
                    return false;
                };
                let same = |want: &Option<Applied>, have: Option<u64>| match want {
                    Some(a) => r.parse(&a.value).ok() == have,
                    None => true,
                };
                same(&pair.request, req) && same(&pair.limit, lim)
            })
        })
}
