//! Policy loading: the shipped examples are valid, broken policies are refused with the
//! field path, and a refused update keeps the last good policy in force.

use std::path::Path;

use rightsizer::policies::load::parse_manifests;
use rightsizer::policies::store::PolicyStore;
use rightsizer_core::policy::schema::{Mode, WriteTarget};
use rstest::rstest;

fn wrap(policy: &str) -> String {
    let indented: String = policy.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\n  namespace: rightsizer-system\n  labels:\n    rightsizer.io/policy: \"true\"\ndata:\n  policy.yaml: |\n{indented}"
    )
}

#[test]
fn shipped_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let store = PolicyStore::new();
    let report = store.sync_dir(&dir).expect("policies/ readable");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let set = store.current();
    assert_eq!(set.len(), 5);
    let names: Vec<&str> = set.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"rightsizer-default"), "{names:?}");
    let enforce = set
        .iter()
        .find(|p| p.name == "rightsizer-enforce-shop")
        .unwrap();
    assert_eq!(enforce.mode, Mode::Enforce);
    assert_eq!(enforce.target, WriteTarget::Pods);
    // A partial rules block keeps every other seed number.
    assert_eq!(enforce.rules.memory.request.p95_factor, 1.25);
    assert_eq!(enforce.rules.memory.request.avg_factor, 1.5);
    assert_eq!(enforce.rules.memory.hysteresis.ratio, 0.15);
    // The seed's placement and priorities are in the catch-all policy.
    let default = set.iter().find(|p| p.name == "rightsizer-default").unwrap();
    assert_eq!(default.placement.len(), 1);
    assert_eq!(default.placement[0].min_cpu.map(|m| m.0), Some(2000));
    assert_eq!(default.placement[0].preferred_node_affinity[0].weight, 100);
    let gpu = default.gpu.as_ref().expect("GPU placement");
    assert_eq!(gpu.preferred_node_affinity[0].weight, 100);
    let priority = default.priority.as_ref().unwrap();
    assert_eq!(
        priority.default_class_name.as_deref(),
        Some("normal-priority")
    );
    // The privileged classes on namespace labels (tenants set Pod labels, not these).
    let classes: Vec<(&str, String)> = priority
        .rules
        .iter()
        .map(|r| {
            let on = r.selector.namespace_labels.get("rightsizer.io/priority");
            (r.class_name.as_str(), on.cloned().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        classes,
        [
            ("cpu-workload", "compute".to_string()),
            ("low-priority", String::new()),
            ("high-priority", "high".to_string()),
        ]
    );
    assert!(priority.rules.iter().all(|r| r.selector.labels.is_empty()));
    // Knative tuning thresholds written out are the defaults.
    let knative = set.iter().find(|p| p.name == "rightsizer-knative").unwrap();
    assert_eq!(
        knative.rules.knative,
        rightsizer_core::rules::knative::KnativeRules::default()
    );
}

/// The shipped examples grant a class above their default class only on namespace labels
/// (set by operators), never on a Pod's labels or CPU alone (written by the tenant).
#[test]
fn shipped_examples_grant_privileged_classes_on_namespace_labels_only() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let store = PolicyStore::new();
    store.sync_dir(&dir).expect("policies/ readable");
    let mut checked = 0;
    for p in store.current().iter() {
        let Some(prio) = &p.priority else { continue };
        let value = |c: &str| prio.classes.get(c).map(|i| i.value);
        let floor = prio
            .default_class_name
            .as_deref()
            .and_then(value)
            .unwrap_or(0);
        for r in &prio.rules {
            let v = value(&r.class_name).unwrap_or(i32::MAX);
            if v <= floor {
                continue;
            }
            checked += 1;
            assert!(
                !r.selector.namespace_labels.is_empty() && r.selector.labels.is_empty(),
                "{}: class {} ({v}) is granted on tenant-controlled inputs: {r:?}",
                p.name,
                r.class_name
            );
        }
    }
    assert!(
        checked >= 2,
        "the examples grant no class above their default"
    );
}

#[rstest]
#[case::unknown_top_field("mood: enforce\n", "mood")]
#[case::bad_mode("mode: enforcing\n", "mode")]
#[case::bad_kind("selector:\n  kinds: [Deploymnet]\n", "selector.kinds[0]")]
#[case::bad_quantity("defaults:\n  memory: {request: lots}\n", "defaults.memory.request")]
#[case::request_over_limit("defaults:\n  memory: {request: 2Gi, limit: 1Gi}\n", "defaults.memory")]
#[case::rules_unknown(
    "rules:\n  memory:\n    request: {p59Factor: 1}\n",
    "rules.memory.request.p59Factor"
)]
#[case::rules_min_max(
    "rules:\n  memory:\n    request: {min: 8Gi}\n",
    "rules.memory.request.min"
)]
#[case::rules_negative(
    "rules:\n  cpu:\n    request: {p95Factor: -1}\n",
    "rules.cpu.request.p95Factor"
)]
#[case::limit_factor(
    "rules:\n  memory:\n    limit: {requestFactor: 0.5}\n",
    "rules.memory.limit.requestFactor"
)]
#[case::knative_target("knative: {target: 0}\n", "knative.target")]
#[case::knative_util(
    "knative: {targetUtilizationPercentage: 101}\n",
    "knative.targetUtilizationPercentage"
)]
#[case::knative_cc(
    "knative: {containerConcurrency: 1001}\n",
    "knative.containerConcurrency"
)]
#[case::knative_scale("knative: {maxScale: 3000000000}\n", "knative.maxScale")]
#[case::toleration_seconds(
    "gpu:\n  tolerations: [{key: a, effect: NoSchedule, tolerationSeconds: 5}]\n",
    "gpu.tolerations[0].tolerationSeconds"
)]
#[case::gpu_operator(
    "gpu:\n  requiredNodeAffinity: [{key: a, operator: Near, values: [b]}]\n",
    "gpu.requiredNodeAffinity[0].operator"
)]
#[case::gpu_values(
    "gpu:\n  requiredNodeAffinity: [{key: a, operator: Exists, values: [b]}]\n",
    "gpu.requiredNodeAffinity[0].values"
)]
#[case::toleration(
    "gpu:\n  tolerations: [{key: a, operator: Sometimes}]\n",
    "gpu.tolerations[0].operator"
)]
#[case::preemption(
    "priority:\n  classes:\n    x: {value: 1, preemptionPolicy: Always}\n",
    "priority.classes.x.preemptionPolicy"
)]
#[case::override_name(
    "overrides:\n  - workload: {name: \"\"}\n    containers: {}\n",
    "overrides[0].workload.name"
)]
#[case::override_knative_cc(
    "overrides:\n  - workload: {name: a}\n    knative: {containerConcurrency: 1001}\n",
    "overrides[0].knative.containerConcurrency"
)]
#[case::override_knative_scale(
    "overrides:\n  - workload: {name: a}\n  - workload: {name: b}\n    knative: {minScale: 5, maxScale: 3}\n",
    "overrides[1].knative.minScale"
)]
#[case::override_knative_metric(
    "overrides:\n  - workload: {name: a}\n    knative: {metric: latency}\n",
    "overrides[0].knative.metric"
)]
#[case::override_knative_unknown(
    "overrides:\n  - workload: {name: a}\n    knative: {concurrency: 5}\n",
    "overrides[0].knative.concurrency"
)]
#[case::recommender("recommender: magic\n", "recommender")]
#[case::placement_empty("placement:\n  - minCpu: \"2\"\n", "placement[0]")]
#[case::placement_weight(
    "placement:\n  - preferredNodeAffinity: [{weight: 101, preference: {matchExpressions: [{key: a, operator: In, values: [b]}]}}]\n",
    "placement[0].preferredNodeAffinity[0].weight"
)]
#[case::placement_operator(
    "placement:\n  - tolerations: [{key: a}]\n  - requiredNodeAffinity: [{key: a, operator: Near}]\n",
    "placement[1].requiredNodeAffinity[0].operator"
)]
#[case::placement_min_cpu(
    "placement:\n  - minCpu: lots\n    tolerations: [{key: a}]\n",
    "placement[0].minCpu"
)]
#[case::placement_selector(
    "placement:\n  - selector: {names: [\"\"]}\n    tolerations: [{key: a}]\n",
    "placement[0].selector.names[0]"
)]
#[case::placement_unknown("placement:\n  - prefered: []\n", "placement[0].prefered")]
#[case::knative_near_limit("rules:\n  knative: {nearLimit: 1.5}\n", "rules.knative.nearLimit")]
#[case::knative_headroom_above_near(
    "rules:\n  knative: {ampleHeadroom: 0.95}\n",
    "rules.knative.ampleHeadroom"
)]
#[case::knative_lower_by("rules:\n  knative: {lowerBy: 1}\n", "rules.knative.lowerBy")]
#[case::knative_unknown("rules:\n  knative: {nearlimit: 0.8}\n", "rules.knative.nearlimit")]
fn broken_policies_name_the_field(#[case] policy: &str, #[case] path: &str) {
    let err = parse_manifests("test.yaml", &wrap(policy)).expect_err("refused");
    let msg = err.to_string();
    assert_eq!(err.path(), Some(path), "{msg}");
    assert!(msg.contains("test.yaml"), "names the source: {msg}");
}

#[test]
fn not_yaml_is_a_syntax_error() {
    let err = parse_manifests("x.yaml", &wrap("mode: [observe\n")).expect_err("refused");
    assert!(err.to_string().contains("x.yaml"));
}

#[test]
fn refused_update_keeps_last_good_policy() {
    let store = PolicyStore::new();
    assert!(store.apply("cm/a", &wrap("mode: enforce\n")).unwrap());
    assert_eq!(store.current().iter().next().unwrap().mode, Mode::Enforce);
    let err = store
        .apply("cm/a", &wrap("mode: sometimes\n"))
        .expect_err("refused");
    assert_eq!(err.path(), Some("mode"));
    let set = store.current();
    assert_eq!(set.len(), 1, "last good policy still in force");
    assert_eq!(set.iter().next().unwrap().mode, Mode::Enforce);
    assert_eq!(store.errors().len(), 1);
    // Same broken text again: seen already, nothing changes.
    assert!(matches!(
        store.apply("cm/a", &wrap("mode: sometimes\n")),
        Ok(false)
    ));
    assert_eq!(store.errors().len(), 1);
    // A fix clears the error.
    assert!(store.apply("cm/a", &wrap("mode: off\n")).unwrap());
    assert!(store.errors().is_empty());
    assert_eq!(store.current().iter().next().unwrap().mode, Mode::Off);
    assert!(store.remove("cm/a"));
    assert!(store.current().is_empty());
}

#[test]
fn folder_sync_tracks_added_changed_and_deleted_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    std::fs::write(&a, wrap("mode: observe\n")).unwrap();
    let store = PolicyStore::new();
    let r = store.sync_dir(dir.path()).unwrap();
    assert_eq!(r.applied.len(), 1);
    assert_eq!(
        store.sync_dir(dir.path()).unwrap().applied.len(),
        0,
        "unchanged file not re-applied"
    );
    std::fs::write(&a, wrap("mode: [broken\n")).unwrap();
    let r = store.sync_dir(dir.path()).unwrap();
    assert_eq!(r.refused.len(), 1);
    assert_eq!(store.current().len(), 1, "last good kept");
    std::fs::remove_file(&a).unwrap();
    let r = store.sync_dir(dir.path()).unwrap();
    assert_eq!(r.removed.len(), 1);
    assert!(store.current().is_empty());
}

/// The README's "every field" policy is a policy the webhook accepts.
#[test]
fn readme_policy_reference_is_valid() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let start = readme
        .find("Every field, with its default:")
        .expect("policy reference section");
    let block = &readme[start..];
    let body_start = block.find("```yaml\n").expect("yaml block") + "```yaml\n".len();
    let body = &block[body_start..];
    let body = &body[..body.find("```").expect("block end")];
    let policies = parse_manifests("README.md", body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].placement.len(), 1);
}
