//! Which namespaces rightsizer acts on, for admission and the analyzer alike: the
//! shipped MutatingWebhookConfiguration's namespaceSelector (the label below, the
//! system namespaces and the webhook's own excluded; `tests/deploy` checks the two
//! agree), so the analyzer writes Rightsizings and Events only where the webhook is
//! called.

use std::collections::BTreeMap;

/// The namespace label that opts a namespace in (value `true`).
pub const ENABLED_LABEL: &str = "rightsizer.io/enabled";

/// Namespaces never acted on, whatever their labels.
pub const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// Whether rightsizer acts on `namespace`. `labels`: the namespace's labels when known;
/// `None` where the apiserver already applied the selector (admission: it only calls the
/// webhook for selected namespaces) or no cluster is watched (offline runs).
pub fn acts_on(
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    own_namespace: Option<&str>,
) -> bool {
    if SYSTEM_NAMESPACES.contains(&namespace) || own_namespace == Some(namespace) {
        return false;
    }
    labels.is_none_or(|l| l.get(ENABLED_LABEL).map(String::as_str) == Some("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opted_in_namespaces_only() {
        let on = BTreeMap::from([(ENABLED_LABEL.to_string(), "true".to_string())]);
        let off = BTreeMap::from([(ENABLED_LABEL.to_string(), "false".to_string())]);
        let none = BTreeMap::new();
        let own = Some("rightsizer-system");
        for (ns, labels, want) in [
            ("shop", Some(&on), true),
            ("shop", Some(&off), false),
            ("shop", Some(&none), false),
            ("shop", None, true),
            ("kube-system", Some(&on), false),
            ("kube-node-lease", None, false),
            ("rightsizer-system", Some(&on), false),
        ] {
            assert_eq!(acts_on(ns, labels, own), want, "{ns} {labels:?}");
        }
    }
}
