//! PodDisruptionBudgets read before evicting: a Pod whose eviction the Eviction API would
//! surely refuse is skipped (no request, no Event), as the apiserver decides it. The API
//! still enforces every budget: this only saves refusals that are certain.

use std::collections::BTreeMap;

use serde_json::Value;

/// What one budget says now (its status, as the disruption controller last counted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Budget {
    pub name: String,
    /// `spec.selector`; `None` when missing or empty: which Pods it covers then depends on
    /// the API version, so it is taken to cover none (the API still enforces it).
    selector: Option<Value>,
    pub disruptions_allowed: i32,
    pub current_healthy: i32,
    pub desired_healthy: i32,
    /// `spec.unhealthyPodEvictionPolicy: AlwaysAllow` (1.26+): a not-ready Pod may go.
    pub always_allow_unhealthy: bool,
}

/// A budget from its object (policy/v1 or policy/v1beta1: the fields read are the same).
pub fn budget_of(pdb: &Value) -> Option<Budget> {
    let int = |p: &str| {
        pdb.pointer(p)
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
    };
    let selector = pdb
        .pointer("/spec/selector")
        .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()))
        .cloned();
    Some(Budget {
        name: pdb.pointer("/metadata/name")?.as_str()?.to_string(),
        selector,
        // Not counted yet: nothing is sure.
        disruptions_allowed: int("/status/disruptionsAllowed")?,
        current_healthy: int("/status/currentHealthy").unwrap_or(0),
        desired_healthy: int("/status/desiredHealthy").unwrap_or(0),
        always_allow_unhealthy: pdb.pointer("/spec/unhealthyPodEvictionPolicy")
            == Some(&Value::from("AlwaysAllow")),
    })
}

impl Budget {
    /// Whether the budget covers a Pod with these labels (`matchLabels` and
    /// `matchExpressions`; an operator it does not know covers nothing).
    pub fn covers(&self, labels: &BTreeMap<String, String>) -> bool {
        let Some(sel) = &self.selector else {
            return false;
        };
        let by_labels = sel
            .get("matchLabels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
        let by_exprs = sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|e| {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
                let have = labels.get(key).map(String::as_str);
                let values: Vec<&str> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                match e.get("operator").and_then(Value::as_str) {
                    Some("In") => have.is_some_and(|v| values.contains(&v)),
                    Some("NotIn") => have.is_none_or(|v| !values.contains(&v)),
                    Some("Exists") => have.is_some(),
                    Some("DoesNotExist") => have.is_none(),
                    _ => false,
                }
            });
        by_labels && by_exprs
    }

    /// Whether the Eviction API refuses evicting a covered Pod now: a ready Pod needs a
    /// disruption allowed; a not-ready one also goes while the budget is met (healthy at
    /// least desired), or always under `AlwaysAllow`.
    pub fn refuses(&self, ready: bool) -> bool {
        if self.disruptions_allowed > 0 {
            return false;
        }
        if ready {
            return true;
        }
        let met = self.desired_healthy > 0 && self.current_healthy >= self.desired_healthy;
        !(self.always_allow_unhealthy || met)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn pdb(spec: Value, allowed: i64, current: i64, desired: i64) -> Budget {
        budget_of(&json!({"metadata": {"name": "b"}, "spec": spec,
            "status": {"disruptionsAllowed": allowed, "currentHealthy": current, "desiredHealthy": desired}}))
        .unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[rstest]
    #[case::match_labels(json!({"matchLabels": {"app": "web"}}), true)]
    #[case::other_labels(json!({"matchLabels": {"app": "db"}}), false)]
    #[case::in_(json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "x"]}]}), true)]
    #[case::not_in(json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}), false)]
    #[case::exists(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}), true)]
    #[case::does_not_exist(json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}), false)]
    #[case::both_must_hold(json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "zone", "operator": "Exists"}]}), false)]
    #[case::empty_selector_is_not_sure(json!({}), false)]
    fn which_pods_a_budget_covers(#[case] selector: Value, #[case] covers: bool) {
        let b = pdb(json!({ "selector": selector }), 0, 0, 0);
        assert_eq!(
            b.covers(&labels(&[("app", "web"), ("tier", "gold")])),
            covers
        );
    }

    #[rstest]
    #[case::ready_with_a_disruption_allowed(1, 3, 2, true, false)]
    #[case::ready_at_zero(0, 2, 2, true, true)]
    #[case::not_ready_while_the_budget_is_met(0, 1, 1, false, false)]
    #[case::not_ready_every_replica_down(0, 0, 1, false, true)]
    #[case::not_ready_with_min_available_zero(0, 0, 0, false, true)]
    fn what_the_eviction_api_refuses(
        #[case] allowed: i64,
        #[case] current: i64,
        #[case] desired: i64,
        #[case] ready: bool,
        #[case] refused: bool,
    ) {
        let b = pdb(
            json!({"selector": {"matchLabels": {"app": "web"}}}),
            allowed,
            current,
            desired,
        );
        assert_eq!(b.refuses(ready), refused);
    }

    #[test]
    fn always_allow_lets_a_not_ready_pod_go_never_a_ready_one() {
        let b = pdb(
            json!({"selector": {"matchLabels": {"app": "web"}}, "unhealthyPodEvictionPolicy": "AlwaysAllow"}),
            0,
            0,
            1,
        );
        assert!(!b.refuses(false));
        assert!(b.refuses(true));
    }

    #[test]
    fn a_budget_not_counted_yet_is_not_read() {
        assert_eq!(
            budget_of(&json!({"metadata": {"name": "b"}, "spec": {}})),
            None
        );
    }
}
