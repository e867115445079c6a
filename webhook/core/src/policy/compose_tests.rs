//! Composition as a specification: which policy decides each section.

use std::collections::BTreeMap;
use std::sync::Arc;

use rstest::rstest;

use super::*;
use crate::policy::schema::Mode;
use crate::policy::select::{PolicySet, Subject};
use crate::workload::kind::WorkloadKind;
use crate::workload::WorkloadKey;

fn policy(name: &str, yaml: &str) -> Arc<Policy> {
    let spec: PolicySpec = serde_norway::from_str(yaml).unwrap();
    Arc::new(crate::policy::validate::validate(name, name, spec).unwrap())
}

/// The cluster-wide policy of the examples: placement, priority, GPU, observe.
const CLUSTER: &str = "precedence: 0
mode: observe
gpu: {requiredNodeAffinity: [{key: nvidia.com/gpu.present, operator: In, values: ['true']}]}
placement: [{name: big, minCpu: '2', tolerations: [{key: big, operator: Exists}]}]
priority: {defaultClassName: normal-priority}
knative: {target: 100}
defaults: {cpu: {request: 50m}}
";

/// A namespace policy above it that writes only some sections.
const SHOP: &str = "precedence: 10
selector: {namespaces: [shop]}
mode: enforce
defaults: {memory: {request: 128Mi}}
rules: {memory: {request: {max: 1Gi}}}
";

fn set(policies: &[(&str, &str)]) -> PolicySet {
    PolicySet::new(policies.iter().map(|(n, y)| policy(n, y)).collect())
}

fn select(set: &PolicySet, namespace: &str) -> Option<Arc<Policy>> {
    let key = WorkloadKey {
        namespace: namespace.into(),
        kind: WorkloadKind::Deployment,
        name: "web".into(),
    };
    let none = BTreeMap::new();
    set.select(&Subject {
        key: &key,
        labels: &none,
        namespace_labels: &none,
    })
}

#[rstest]
#[case::written_section_is_the_writers("mode", Some("shop"))]
#[case::defaults_whole_section_from_the_writer("defaults", Some("shop"))]
#[case::gpu_left_out_is_inherited("gpu", Some("cluster"))]
#[case::placement_left_out_is_inherited("placement", Some("cluster"))]
#[case::priority_left_out_is_inherited("priority", Some("cluster"))]
#[case::knative_left_out_is_inherited("knative", Some("cluster"))]
#[case::rules_only_written_above("rules", Some("shop"))]
#[case::no_policy_writes_it("overrides", None)]
fn each_section_from_the_highest_policy_that_writes_it(
    #[case] section: &str,
    #[case] decided_by: Option<&str>,
) {
    let set = set(&[("cluster", CLUSTER), ("shop", SHOP)]);
    let p = select(&set, "shop").unwrap();
    assert_eq!(
        sections_of(&p).get(section).cloned().flatten().as_deref(),
        decided_by,
        "{section}"
    );
}

#[test]
fn composed_values_are_the_deciding_policies_values() {
    let set = set(&[("cluster", CLUSTER), ("shop", SHOP)]);
    let p = select(&set, "shop").unwrap();
    assert_eq!(p.name, "shop", "the top policy names the result");
    assert_eq!(p.mode, Mode::Enforce);
    assert!(p.gpu.is_some(), "GPU placement from the cluster policy");
    assert_eq!(p.placement.len(), 1);
    assert_eq!(
        p.priority.as_ref().unwrap().default_class_name.as_deref(),
        Some("normal-priority")
    );
    // A section is taken whole: shop's defaults have no CPU, and the cluster's CPU
    // default does not leak into them.
    let d = p.defaults.unwrap();
    assert!(d.memory.is_some() && d.cpu.is_none());
    // Rules written above keep the seed numbers they leave out (not the cluster's).
    assert_eq!(p.rules.memory.request.max.0, 1 << 30);
}

#[test]
fn outside_the_upper_selector_only_the_lower_policy_applies() {
    let set = set(&[("cluster", CLUSTER), ("shop", SHOP)]);
    let p = select(&set, "web").unwrap();
    assert_eq!(p.name, "cluster");
    assert_eq!(p.mode, Mode::Observe);
}

#[rstest]
#[case::inherit_false_takes_nothing("inherit: false", &[])]
#[case::inherit_list_takes_only_those("inherit: [gpu, priority]", &["gpu", "priority"])]
#[case::inherit_true_takes_every_left_out_section(
    "inherit: true",
    &["gpu", "knative", "placement", "priority"]
)]
fn inherit_limits_what_comes_from_below(#[case] inherit: &str, #[case] inherited: &[&str]) {
    let shop = format!("{SHOP}{inherit}\n");
    let set = set(&[("cluster", CLUSTER), ("shop", &shop)]);
    let p = select(&set, "shop").unwrap();
    let from_cluster: Vec<&str> = p
        .decided_by
        .iter()
        .filter(|(_, by)| *by == "cluster")
        .map(|(s, _)| s.as_str())
        .collect();
    assert_eq!(from_cluster, inherited);
}

#[test]
fn a_middle_policy_that_stops_inheritance_stops_it_for_all_above() {
    let middle = "precedence: 5\ninherit: false\nknative: {target: 30}\n";
    let set = set(&[("cluster", CLUSTER), ("middle", middle), ("shop", SHOP)]);
    let p = select(&set, "shop").unwrap();
    assert_eq!(
        p.decided_by.get("knative").map(String::as_str),
        Some("middle")
    );
    assert_eq!(p.decided_by.get("gpu"), None, "below `middle`: cut off");
    assert_eq!(p.knative.as_ref().unwrap().target, Some(30.0));
}

#[test]
fn equal_precedence_orders_by_name() {
    let a = "mode: enforce\n";
    let b = "mode: off\nknative: {target: 7}\n";
    let set = set(&[("b", b), ("a", a)]);
    let p = select(&set, "x").unwrap();
    assert_eq!((p.name.as_str(), p.mode), ("a", Mode::Enforce));
    assert_eq!(p.decided_by.get("knative").map(String::as_str), Some("b"));
}

#[test]
fn one_match_is_the_policy_itself_and_a_composition_is_kept() {
    let set = set(&[("cluster", CLUSTER), ("shop", SHOP)]);
    let alone = select(&set, "web").unwrap();
    assert!(Arc::ptr_eq(&alone, &select(&set, "web").unwrap()));
    let composed = select(&set, "shop").unwrap();
    assert!(Arc::ptr_eq(&composed, &select(&set, "shop").unwrap()));
}

#[test]
fn an_inherit_list_naming_no_section_is_refused() {
    let spec: PolicySpec = serde_norway::from_str("inherit: [gpus]").unwrap();
    let e = crate::policy::validate::validate("p", "p", spec).unwrap_err();
    assert_eq!(e.path(), Some("inherit[0]"));
}
