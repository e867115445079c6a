//! Which policy applies to a workload.

use std::collections::BTreeMap;
use std::sync::Arc;

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
}

impl PolicySet {
    pub fn new(mut policies: Vec<Arc<Policy>>) -> Self {
        policies.sort_by(|a, b| {
            b.precedence
                .cmp(&a.precedence)
                .then_with(|| a.name.cmp(&b.name))
        });
        PolicySet { policies }
    }

    /// The policy that applies: the highest-precedence one whose selector matches.
    pub fn select(&self, s: &Subject) -> Option<&Arc<Policy>> {
        self.policies.iter().find(|p| p.selector.matches(s))
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
