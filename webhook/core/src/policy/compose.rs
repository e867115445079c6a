//! Policies compose. Every policy whose selector matches a workload contributes: for
//! each section (every top-level field of the document but `name`, `precedence`,
//! `selector` and `inherit`), the highest-precedence policy that writes it decides it.
//! A policy's `inherit` stops that below it (`false`), or lets only the sections it lists
//! through. Composition works on the written document, key by key, so a section added
//! to [`PolicySpec`] (an `Option` skipped when `None`) composes with no code here.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::policy::schema::{Inherit, Policy, PolicySpec, NOT_SECTIONS, SECTIONS};

/// The policy in force from the policies that select a workload, highest precedence
/// first (as [`crate::policy::select::PolicySet`] orders them). Its name, source,
/// precedence and selector (hence the containers it sizes) are the first's; each section
/// comes from the first policy that writes it and that every policy above lets inherit.
/// `decided_by` names the policy of each section. None when `matching` is empty.
pub fn compose(matching: &[&Arc<Policy>]) -> Option<Arc<Policy>> {
    let (top, lower) = matching.split_first()?;
    let mut doc = top.spec.document();
    let mut decided_by = top.decided_by.clone();
    let mut above: Vec<Inherit> = vec![top.spec.inherit.clone().unwrap_or_default()];
    let mut inherited = false;
    for p in lower {
        for (key, value) in p.spec.document() {
            if NOT_SECTIONS.contains(&key.as_str())
                || doc.contains_key(&key)
                || !above.iter().all(|i| i.allows(&key))
            {
                continue;
            }
            decided_by.insert(key.clone(), p.name.clone());
            doc.insert(key, value);
            inherited = true;
        }
        above.push(p.spec.inherit.clone().unwrap_or_default());
    }
    if !inherited {
        return Some(Arc::clone(top));
    }
    let composed = serde_json::from_value::<PolicySpec>(serde_json::Value::Object(doc))
        .ok()
        .and_then(|spec| crate::policy::validate::validate(&top.source, &top.name, spec).ok());
    // Each part was valid on its own; should the whole not be, the top policy alone is.
    let Some(mut policy) = composed else {
        return Some(Arc::clone(top));
    };
    policy.decided_by = decided_by;
    Some(Arc::new(policy))
}

/// For `explain`: each section with the policy that decided it, `None` where no matching
/// policy writes it (its default applies).
pub fn sections_of(policy: &Policy) -> BTreeMap<String, Option<String>> {
    let mut out: BTreeMap<String, Option<String>> =
        SECTIONS.iter().map(|s| (s.to_string(), None)).collect();
    for (k, v) in &policy.decided_by {
        out.insert(k.clone(), Some(v.clone()));
    }
    out
}

#[cfg(test)]
#[path = "compose_tests.rs"]
mod tests;
