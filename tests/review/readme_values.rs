//! Every statement of the README's "How a value is chosen", with the tests that hold it
//! (issue 21, item 11). [`STATEMENTS`] is the map: a quote from the section, then the
//! tests, each `golden NN-name` (a case under `tests/golden/`) or `FILE fn_or_case` (a test
//! function, or an rstest case, in FILE). The test below fails when a quote is no longer
//! in the section or a named test no longer exists, so the map stays true as both move.

use std::path::Path;

/// (quote from the README section, tests that hold it)
const STATEMENTS: &[(&str, &[&str])] = &[
    (
        "**Never unschedulable.** The webhook watches the Nodes",
        &[
            "golden 68-node-cap",
            "webhook/core/src/sizing/nodes.rs room_table",
            "webhook/core/src/sizing/nodes.rs no_nodes_caps_nothing",
            "tests/cluster/cluster_e2e/values_e2e.rs a_raise_is_capped_at_the_largest_node_allocatable",
        ],
    ),
    (
        "Scoped quotas: quota admission runs after the webhooks",
        &[
            "golden 29-scoped-quota-and-toleration-whitelist",
            "webhook/core/src/cluster/quota_scope.rs setting_a_class",
            "webhook/core/src/cluster/quota_scope.rs ending_best_effort",
            "tests/cluster/quota_e2e.rs a_class_a_scoped_quota_would_refuse_is_not_set",
        ],
    ),
    (
        "PodTolerationRestriction: a toleration a placement rule or the GPU section would add",
        &[
            "golden 29-scoped-quota-and-toleration-whitelist",
            "webhook/core/src/cluster/tolerations.rs whitelist_admits",
            "tests/cluster/quota_e2e.rs a_toleration_outside_the_namespace_whitelist_is_not_added",
        ],
    ),
    (
        "The policy's `sizing:` section shapes what usage-based values may do",
        &[
            "golden 67-sizing-limit-rule-and-controlled-values",
            "golden 66-jvm-heap-bounds-the-limit",
        ],
    ),
    (
        "request is stepped to 464Mi gets a limit of 928Mi",
        &[
            "golden 67-sizing-limit-rule-and-controlled-values",
            "webhook/core/src/sizing/control.rs limit_rule_stays_under_the_policy_max",
        ],
    ),
    (
        "so `-Xmx3g` never gets a limit below 3328Mi",
        &[
            "golden 66-jvm-heap-bounds-the-limit",
            "webhook/core/src/sizing/jvm.rs floors",
        ],
    ),
    (
        "is the one in force for the workload, composed from every policy that selects it",
        &[
            "webhook/core/src/policy/compose_tests.rs each_section_from_the_highest_policy_that_writes_it",
            "webhook/core/src/policy/compose_tests.rs inherit_limits_what_comes_from_below",
            "golden 69-policies-compose-shop",
            "webhook/src/analyzer/policies.rs admission_and_the_analyzer_pick_the_same_policy_on_template_labels",
        ],
    ),
    (
        "the first of these that has a value wins, and `rightsizer.io/sized` records it with its source",
        &[
            "webhook/core/src/sizing/resources.rs precedence_table",
            "webhook/src/offline/preview.rs rows_name_the_source_of_each_value",
        ],
    ),
    (
        "the policy's per-workload `overrides`, then the `rightsizer.io/overrides` annotation",
        &[
            "golden 06-policy-override-beats-everything",
            "golden 07-annotation-override",
            "webhook/core/src/sizing/resources.rs override_wins",
        ],
    ),
    (
        "a committed value exists, the policy mode is `enforce` and `RIGHTSIZER_ENFORCEMENT=true`",
        &[
            "golden 05-committed-beats-recommendation",
            "golden 04-enforce-needs-global-switch",
            "webhook/core/src/sizing/resources.rs enforced_over_recommendation",
        ],
    ),
    (
        "the change must clear hysteresis (20% or 64Mi) and moves at most 30% per step, never below observed p95",
        &[
            "golden 03-pod-enforce-steps-towards-recommendation",
            "golden 22-hysteresis-keeps-small-changes-out",
            "webhook/core/src/rules.rs hysteresis_table",
            "webhook/core/src/rules.rs step_table",
            "webhook/core/src/rules.rs p95_floor",
        ],
    ),
    (
        "| 4 | `template` | what the manifest says |",
        &[
            "golden 01-pod-defaults-observe",
            "webhook/core/src/sizing/resources.rs template_over_default",
        ],
    ),
    (
        "the policy's `defaults`, for containers that declare nothing for that resource",
        &[
            "golden 01-pod-defaults-observe",
            "webhook/core/src/sizing/resources.rs default_only",
        ],
    ),
    (
        "The policy in force at admission bounds every value that came from the analyzer",
        &[
            "golden 62-policy-bounds-hold-at-admission",
            "webhook/core/src/sizing/resources.rs bounds_on_analyzer_values",
        ],
    ),
    (
        "The max also wins over an OOM floor above it (a warning says the floor is capped)",
        &["golden 62-policy-bounds-hold-at-admission"],
    ),
    (
        "Overrides are explicit and never clamped",
        &["golden 62-policy-bounds-hold-at-admission"],
    ),
    (
        "A value within the bounds is not rounded again",
        &["webhook/core/src/sizing/resources.rs within"],
    ),
    (
        "The QoS class is kept.",
        &["golden 64-qos-guaranteed-stays-guaranteed"],
    ),
    (
        "so a Burstable container never becomes BestEffort. Explicit overrides are written as they are and may change the class.",
        &["golden 64-qos-guaranteed-stays-guaranteed"],
    ),
    (
        "request ≤ limit (the lower-precedence side yields)",
        &[
            "webhook/core/src/sizing/resources.rs template_limit_yields",
            "webhook/core/src/sizing/resources.rs recommended_request_yields_to_override_limit",
            "golden 23-override-limit-below-recommended-request",
        ],
    ),
    (
        "the namespace's LimitRange min, max and maxLimitRequestRatio (container and Pod level) hold",
        &[
            "golden 18-limitrange-container-bounds",
            "golden 19-limitrange-pod-max",
            "webhook/core/src/sizing/limits.rs tightest_of_several",
        ],
    ),
    (
        "Init containers and native sidecars (`initContainers` with `restartPolicy: Always`) are sized",
        &[
            "golden 52-init-containers-and-sidecars",
            "webhook/core/src/sizing/containers.rs sidecar_before_init",
        ],
    ),
    (
        "ResourceQuota: a raise that would not fit what a quota has left is undone, with a warning.",
        &[
            "golden 28-resourcequota-never-rejects",
            "golden 53-resourcequota-templates",
            "webhook/core/src/sizing/pod.rs update_raise_over",
            "webhook/core/src/sizing/pod.rs unknown_per_pod",
        ],
    ),
    (
        "After an OOM kill, in enforce mode, memory request and limit are both at least the OOM floor",
        &[
            "golden 24-oom-floor-raises-request-and-limit",
            "golden 60-oom-floor-over-declared-memory",
            "webhook/core/src/sizing/resources.rs oom_floor_same_at_admission_and_in_the_analyzer",
            "webhook/core/src/analysis/compute.rs oom_floor_is_committed_at_once_despite_cooldown_and_step",
        ],
    ),
    (
        "In `observe` mode the floor is not applied: it shows in `rightsizer.io/recommendation` only.",
        &["golden 61-oom-floor-observe-records-only"],
    ),
    (
        "In `observe` mode (the default) only overrides and defaults are applied",
        &["golden 02-pod-observe-records-recommendation"],
    ),
    (
        "`off` changes nothing.",
        &["golden 09-mode-annotation-off"],
    ),
    (
        "Where values go: by default on **Pods** at creation",
        &[
            "golden 11-workloads-target-pods-untouched",
            "golden 12-workloads-target-templates",
            "golden 13-pod-of-sized-template-untouched",
        ],
    ),
    (
        "Running the webhook on its own output changes nothing",
        &["tests/review/review.rs pod_review_gets_a_patch_keyed_to_its_deployment"],
    ),
    (
        "Recommendations are keyed by the top-level workload",
        &[
            "webhook/core/src/workload/mod.rs every_owner_chain_resolves_the_same_from_admission_and_from_metric_rows",
            "webhook/core/src/workload/mod.rs knative_chains_climb_through_the_revision",
            "golden 14-cronjob-pod-keyed-to-cronjob",
        ],
    ),
    (
        "is keyed to that controller, as `<Kind>.<group>`",
        &[
            "webhook/core/src/workload/mod.rs a_replicaset_of_a_controller_serving_scale_is_keyed_to_that_controller",
            "webhook/src/kube/pods_identity_tests.rs admission_the_pod_watch_and_kube_state_metrics_resolve_every_owner_chain_alike",
            "tests/cluster/rightsizing_homes.rs pods_of_a_controller_serving_scale_are_keyed_to_it_and_it_owns_their_rightsizing",
        ],
    ),
    (
        "Never touched: `kube-system`, `kube-public`, `kube-node-lease` and the webhook's own namespace;",
        &[
            "tests/review/review.rs admitted_unchanged",
            "tests/review/review.rs subresource_is_admitted_unchanged",
            "golden 10-system-namespaces-untouched",
            "golden 69-policies-compose-shop",
        ],
    ),
    (
        "Offline, `mutate` says why it left an object of a handled kind unchanged",
        &["tests/review/cli_explain.rs skipped_objects_say_why"],
    ),
];

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The README section, with runs of whitespace made one space (quotes span lines).
fn section() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let body = readme
        .split("## How a value is chosen")
        .nth(1)
        .expect("the section")
        .split("\n## ")
        .next()
        .unwrap();
    body.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_statement_of_how_a_value_is_chosen_names_tests_that_exist() {
    let text = section();
    for (quote, tests) in STATEMENTS {
        assert!(text.contains(quote), "no longer in the README: {quote:?}");
        assert!(!tests.is_empty(), "{quote:?} names no test");
        for t in *tests {
            let (place, name) = t.split_once(' ').unwrap();
            if place == "golden" {
                let dir = root().join("tests/golden").join(name);
                assert!(
                    dir.join("input.yaml").is_file(),
                    "{quote:?}: no golden {name}"
                );
                continue;
            }
            let src = std::fs::read_to_string(root().join(place))
                .unwrap_or_else(|e| panic!("{quote:?}: {place}: {e}"));
            assert!(
                src.contains(&format!("fn {name}(")) || src.contains(&format!("case::{name}(")),
                "{quote:?}: no test {name} in {place}"
            );
        }
    }
}

/// Each paragraph of the section has at least one statement in the map.
#[test]
fn every_paragraph_of_the_section_is_mapped() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let body = readme
        .split("## How a value is chosen")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    for para in body.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        let flat = para.split_whitespace().collect::<Vec<_>>().join(" ");
        let is_table_head = flat.starts_with("| precedence");
        if is_table_head {
            continue;
        }
        assert!(
            STATEMENTS.iter().any(|(q, _)| flat.contains(q)),
            "paragraph without a mapped statement: {flat:.120}"
        );
    }
}
