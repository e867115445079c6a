//! Which policy applies to a workload.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::policy::schema::Policy;
use crate::selector::Selector;
use crate::workload::WorkloadKey;

/// What a selector is matched against.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub key: &'a WorkloadKey,
    pub labels: &'a BTreeMap<String, String>,
    pub namespace_labels: &'a BTreeMap<String, String>,
}

/// The labels a workload's policy is selected on: its own, overlaid by its pod
/// template's. Admission and the analyzer both build them here, from the same inputs.
pub fn selection_labels(
    own: Option<&BTreeMap<String, String>>,
    template: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut labels = own.cloned().unwrap_or_default();
    labels.extend(
        template
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    labels
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, s: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == s;
    };
    let Some(mut tail) = s.strip_prefix(head) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    let (last, middle) = parts.split_last().map_or(("", &[][..]), |(l, m)| (*l, m));
    for p in middle {
        match tail.find(p) {
            Some(i) => tail = &tail[i + p.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

fn any_glob(patterns: &[String], s: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| glob(p, s))
}

fn labels_match(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

impl Selector {
    /// Whether the workload is selected (containers are checked separately).
    pub fn matches(&self, s: &Subject) -> bool {
        any_glob(&self.namespaces, &s.key.namespace)
            && any_glob(&self.names, &s.key.name)
            && (self.kinds.is_empty() || self.kinds.contains(&s.key.kind))
            && labels_match(&self.labels, s.labels)
            && labels_match(&self.namespace_labels, s.namespace_labels)
    }

    /// Whether a container of a selected workload is sized.
    pub fn sizes_container(&self, name: &str) -> bool {
        name != "queue-proxy"
            && any_glob(&self.containers, name)
            && !self.exclude_containers.iter().any(|p| glob(p, name))
    }
}

/// All policies in force, highest precedence first.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<Arc<Policy>>,
    /// Composed policies by the indices of the policies that matched: few distinct sets
    /// occur, and admission should not re-validate per review.
    composed: Arc<Mutex<HashMap<Vec<usize>, Arc<Policy>>>>,
}

/// Distinct matching sets kept composed; beyond this they are composed per call (tenant
/// labels could otherwise grow the map).
const COMPOSED_KEPT: usize = 1024;

impl PolicySet {
    pub fn new(mut policies: Vec<Arc<Policy>>) -> Self {
        policies.sort_by(|a, b| {
            b.precedence
                .cmp(&a.precedence)
                .then_with(|| a.name.cmp(&b.name))
        });
        PolicySet {
            policies,
            composed: Arc::default(),
        }
    }

    /// The policy in force: every policy whose selector matches, composed
    /// (`crate::policy::compose`); None when none matches.
    pub fn select(&self, s: &Subject) -> Option<Arc<Policy>> {
        let hits: Vec<usize> = (0..self.policies.len())
            .filter(|&i| self.policies[i].selector.matches(s))
            .collect();
        match hits.as_slice() {
            [] => return None,
            [one] => return Some(Arc::clone(&self.policies[*one])),
            _ => {}
        }
        let mut kept = self
            .composed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = kept.get(&hits) {
            return Some(Arc::clone(p));
        }
        let matching: Vec<&Arc<Policy>> = hits.iter().map(|&i| &self.policies[i]).collect();
        let policy = crate::policy::compose::compose(&matching)?;
        if kept.len() < COMPOSED_KEPT {
            kept.insert(hits, Arc::clone(&policy));
        }
        Some(policy)
    }

    /// The one selection admission and the analyzer make: the workload's own labels
    /// overlaid by its template's, and its namespace's labels.
    pub fn select_workload(
        &self,
        key: &WorkloadKey,
        own: Option<&BTreeMap<String, String>>,
        template: Option<&BTreeMap<String, String>>,
        namespace_labels: &BTreeMap<String, String>,
    ) -> Option<Arc<Policy>> {
        let labels = selection_labels(own, template);
        self.select(&Subject {
            key,
            labels: &labels,
            namespace_labels,
        })
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("team-*", "team-a", true)]
    #[case("team-*", "teams", false)]
    #[case("*", "", true)]
    #[case("a*b*c", "aXbYc", true)]
    #[case("a*b*c", "aXcYb", false)]
    #[case("exact", "exact", true)]
    #[case("*-db", "orders-db", true)]
    #[case("a*a", "a", false)]
    fn glob_table(#[case] p: &str, #[case] s: &str, #[case] m: bool) {
        assert_eq!(glob(p, s), m);
    }
}
