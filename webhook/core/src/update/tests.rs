//! The updater's decisions as tables: one behaviour per case.

use rstest::rstest;
use serde_json::json;

use super::observe::{PodView, ResizePhase, ResizeState, RunningContainer};
use super::policy::{UpdateMode, UpdatePolicy, Window};
use super::*;

const MI: u64 = 1 << 20;
const NOW: i64 = 1_767_225_600 + 12 * 3600; // 12:00 UTC
const COMMITTED: i64 = NOW - 3600;

fn container(mem_req: u64, mem_lim: u64, cpu_req: u64) -> RunningContainer {
    RunningContainer {
        name: "app".into(),
        memory: Sizes {
            request: Some(mem_req * MI),
            limit: Some(mem_lim * MI),
        },
        cpu: Sizes {
            request: Some(cpu_req),
            limit: None,
        },
        oom_restarted: false,
    }
}

/// A ready Pod of `app=web` created before the commit.
fn pod(name: &str, c: RunningContainer) -> PodView {
    PodView {
        name: name.into(),
        ready: true,
        containers: vec![c],
        created: COMMITTED - 600,
        labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
        ..Default::default()
    }
}

/// A budget over `app=web` as the disruption controller counted it.
fn budget(allowed: i32, current: i32, desired: i32) -> Budget {
    budget::budget_of(&json!({"metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}},
        "status": {"disruptionsAllowed": allowed, "currentHealthy": current, "desiredHealthy": desired}}))
    .unwrap()
}

/// Three ready Pods at 256Mi/512Mi, 250m.
fn old_pods() -> Vec<PodView> {
    ["web-a", "web-b", "web-c"]
        .iter()
        .map(|n| pod(n, container(256, 512, 250)))
        .collect()
}

/// Committed: 400Mi/800Mi, 250m.
fn target() -> Target {
    let mut t = Target {
        committed_at: COMMITTED,
        ..Default::default()
    };
    t.containers.insert(
        "app".into(),
        PerResource {
            memory: Sizes {
                request: Some(400 * MI),
                limit: Some(800 * MI),
            },
            cpu: Sizes {
                request: Some(250),
                limit: None,
            },
        },
    );
    t
}

const V1_20: ApiSupport = ApiSupport {
    version: (1, 20),
    resize_subresource: false,
};
const V1_33: ApiSupport = ApiSupport {
    version: (1, 33),
    resize_subresource: true,
};
const V1_34: ApiSupport = ApiSupport {
    version: (1, 34),
    resize_subresource: true,
};

struct Case {
    kind: WorkloadKind,
    policy: UpdatePolicy,
    pods: Vec<PodView>,
    target: Target,
    replicas: Option<u32>,
    pdbs: Vec<Budget>,
    api: ApiSupport,
    rate_ok: bool,
    refusals: Refusals,
    round_ended_at: Option<i64>,
}

fn case(mode: UpdateMode) -> Case {
    Case {
        kind: WorkloadKind::Deployment,
        policy: UpdatePolicy {
            mode,
            ..Default::default()
        },
        pods: old_pods(),
        target: target(),
        replicas: Some(3),
        pdbs: vec![budget(1, 3, 2)],
        api: V1_20,
        rate_ok: true,
        refusals: Refusals::default(),
        round_ended_at: None,
    }
}

fn run(c: &Case) -> Decision {
    let rules = Rules::default();
    decide(&Inputs {
        kind: c.kind,
        policy: &c.policy,
        rules: &rules,
        target: &c.target,
        pods: &c.pods,
        desired_replicas: c.replicas,
        budgets: &c.pdbs,
        api: c.api,
        now: NOW,
        rate_ok: c.rate_ok,
        refusals: c.refusals,
        round_ended_at: c.round_ended_at,
    })
}

fn evict(pod: &str) -> Decision {
    Decision::Evict {
        pod: pod.into(),
        why: Why::Drift {
            container: "app".into(),
            resource: Resource::Memory,
        },
    }
}

fn with(mut c: Case, f: impl FnOnce(&mut Case)) -> Case {
    f(&mut c);
    c
}

#[rstest]
#[case::off_by_default(case(UpdateMode::Off), Decision::Nothing(Hold::Off))]
#[case::drift_evicts_the_first_pod(case(UpdateMode::Evict), evict("web-a"))]
#[case::bare_pod_never(
    with(case(UpdateMode::Evict), |c| c.kind = WorkloadKind::Pod),
    Decision::Nothing(Hold::NotRecreated))]
#[case::job_never(
    with(case(UpdateMode::Evict), |c| c.kind = WorkloadKind::Job),
    Decision::Nothing(Hold::NotRecreated))]
#[case::up_to_date(
    with(case(UpdateMode::Evict), |c| c.pods = vec![pod("web-a", container(400, 800, 250))]),
    Decision::Nothing(Hold::UpToDate))]
#[case::within_hysteresis(
    with(case(UpdateMode::Evict), |c| c.pods = vec![pod("web-a", container(390, 790, 250))]),
    Decision::Nothing(Hold::UpToDate))]
#[case::one_at_a_time_terminating(
    with(case(UpdateMode::Evict), |c| c.pods[2].terminating = true),
    Decision::Nothing(Hold::Settling { pod: "web-c".into() }))]
#[case::one_at_a_time_not_ready(
    with(case(UpdateMode::Evict), |c| c.pods[1].ready = false),
    Decision::Nothing(Hold::Settling { pod: "web-b".into() }))]
#[case::single_replica_left_alone(
    with(case(UpdateMode::Evict), |c| { c.pods.truncate(1); c.replicas = Some(1); }),
    Decision::Nothing(Hold::LastReplica))]
#[case::last_ready_replica_even_if_more_desired(
    with(case(UpdateMode::Evict), |c| { c.pods.truncate(1); c.replicas = Some(3); }),
    Decision::Nothing(Hold::LastReplica))]
#[case::single_replica_when_allowed(
    with(case(UpdateMode::Evict), |c| { c.pods.truncate(1); c.replicas = Some(1); c.policy.allow_last_replica = true; }),
    evict("web-a"))]
#[case::pdb_at_zero_blocks(
    with(case(UpdateMode::Evict), |c| c.pdbs = vec![budget(0, 3, 3)]),
    Decision::Nothing(Hold::Budget { name: "web".into() }))]
#[case::no_pdb_known(with(case(UpdateMode::Evict), |c| c.pdbs = vec![]), evict("web-a"))]
#[case::a_pdb_over_other_pods(
    with(case(UpdateMode::Evict), |c| { c.pdbs = vec![budget(0, 3, 3)]; for p in &mut c.pods { p.labels.clear(); } }),
    evict("web-a"))]
#[case::rate_used_up(
    with(case(UpdateMode::Evict), |c| c.rate_ok = false),
    Decision::Nothing(Hold::RateLimited))]
#[case::outside_window(
    with(case(UpdateMode::Evict), |c| c.policy.window = Some(Window { start: "22:00".into(), end: "06:00".into() })),
    Decision::Nothing(Hold::OutsideWindow))]
#[case::inside_window(
    with(case(UpdateMode::Evict), |c| c.policy.window = Some(Window { start: "11:00".into(), end: "13:00".into() })),
    evict("web-a"))]
#[case::karpenter_mark_skips_that_pod(
    with(case(UpdateMode::Evict), |c| c.pods[0].do_not_disrupt = Some("karpenter.sh/do-not-disrupt")),
    evict("web-b"))]
#[case::all_marked(
    with(case(UpdateMode::Evict), |c| for p in &mut c.pods { p.do_not_disrupt = Some("cluster-autoscaler.kubernetes.io/safe-to-evict") }),
    Decision::Nothing(Hold::DoNotDisrupt { pod: "web-a".into(), annotation: "cluster-autoscaler.kubernetes.io/safe-to-evict" }))]
#[case::v1_20_takes_the_eviction_path(case(UpdateMode::InPlaceOrEvict), evict("web-a"))]
#[case::subresource_without_version_evicts(
    with(case(UpdateMode::InPlaceOrEvict), |c| c.api = ApiSupport { version: (1, 32), resize_subresource: true }),
    evict("web-a"))]
#[case::version_without_subresource_evicts(
    with(case(UpdateMode::InPlaceOrEvict), |c| c.api = ApiSupport { version: (1, 35), resize_subresource: false }),
    evict("web-a"))]
#[case::replacement_without_the_values_stops_it(
    with(case(UpdateMode::Evict), |c| c.pods[1].created = COMMITTED + COMMIT_SPREAD_SECONDS + 1),
    Decision::Nothing(Hold::NotConverging { pod: "web-b".into() }))]
#[case::created_as_the_commit_spread_goes_on(
    with(case(UpdateMode::Evict), |c| c.pods[0].created = COMMITTED + COMMIT_SPREAD_SECONDS),
    evict("web-a"))]
#[case::replacement_with_the_values_goes_on(
    with(case(UpdateMode::Evict), |c| c.pods[0] = PodView { created: COMMITTED + 60, ..pod("web-0", container(400, 800, 250)) }),
    evict("web-b"))]
fn decisions(#[case] c: Case, #[case] want: Decision) {
    assert_eq!(run(&c), want);
}

#[test]
fn an_oom_restarting_container_goes_first_even_when_not_ready() {
    let mut c = case(UpdateMode::Evict);
    c.pods[2].ready = false;
    c.pods[2].containers[0].oom_restarted = true;
    assert_eq!(
        run(&c),
        Decision::Evict {
            pod: "web-c".into(),
            why: Why::OomLoop {
                container: "app".into()
            }
        }
    );
}

#[test]
fn an_oom_restarting_single_replica_is_replaced_it_serves_nothing_anyway() {
    let mut c = case(UpdateMode::Evict);
    c.pods.truncate(1);
    c.replicas = Some(1);
    c.pods[0].ready = false;
    c.pods[0].containers[0].oom_restarted = true;
    assert!(matches!(
        run(&c),
        Decision::Evict {
            why: Why::OomLoop { .. },
            ..
        }
    ));
}

#[test]
fn below_the_oom_floor_goes_before_plain_drift() {
    let mut c = case(UpdateMode::Evict);
    c.target.oom_floor.insert("app".into(), 600 * MI);
    c.pods[1].containers[0] = container(300, 550, 250);
    c.pods[0].containers[0] = container(300, 700, 250);
    c.pods[2].containers[0] = container(300, 700, 250);
    assert_eq!(
        run(&c),
        Decision::Evict {
            pod: "web-b".into(),
            why: Why::BelowFloor {
                container: "app".into()
            }
        }
    );
}

#[test]
fn in_place_where_served_sends_the_changed_resources_to_the_resize_subresource() {
    let mut c = case(UpdateMode::InPlaceOrEvict);
    c.api = V1_33;
    assert_eq!(
        run(&c),
        Decision::Resize {
            pod: "web-a".into(),
            body: json!({"spec": {"containers": [{"name": "app", "resources": {
                "requests": {"memory": "400Mi", "cpu": "250m"},
                "limits": {"memory": "800Mi"}}}]}}),
            why: Why::Drift {
                container: "app".into(),
                resource: Resource::Memory
            },
        }
    );
}

#[test]
fn in_place_needs_no_budget_and_keeps_the_last_replica() {
    let mut c = case(UpdateMode::InPlaceOrEvict);
    c.api = V1_33;
    c.pods.truncate(1);
    c.replicas = Some(1);
    c.pdbs = vec![budget(0, 1, 1)];
    assert!(matches!(run(&c), Decision::Resize { .. }));
}

#[rstest]
#[case::lowering_memory_limit_before_1_34(V1_33, 200, false)]
#[case::lowering_memory_limit_from_1_34(V1_34, 200, true)]
#[case::raising_is_fine(V1_33, 800, true)]
fn memory_limit_decrease_is_version_gated(
    #[case] api: ApiSupport,
    #[case] limit_mi: u64,
    #[case] in_place: bool,
) {
    let mut c = case(UpdateMode::InPlaceOrEvict);
    c.api = api;
    c.target.containers.get_mut("app").unwrap().memory = Sizes {
        request: Some(150 * MI),
        limit: Some(limit_mi * MI),
    };
    let d = run(&c);
    assert_eq!(matches!(d, Decision::Resize { .. }), in_place, "{d:?}");
}

#[test]
fn a_change_of_qos_class_evicts_instead() {
    // Guaranteed (requests = limits) -> Burstable (limit above request).
    let mut c = case(UpdateMode::InPlaceOrEvict);
    c.api = V1_34;
    for p in &mut c.pods {
        p.containers[0].memory = Sizes {
            request: Some(512 * MI),
            limit: Some(512 * MI),
        };
        p.containers[0].cpu = Sizes {
            request: Some(250),
            limit: Some(250),
        };
    }
    assert_eq!(run(&c), evict("web-a"));
}

#[rstest]
#[case::infeasible_evicts(ResizePhase::Infeasible, NOW, Some(Why::ResizeInfeasible))]
#[case::deferred_too_long_evicts(ResizePhase::Deferred, NOW - 301, Some(Why::ResizeDeferred))]
#[case::deferred_briefly_waits(ResizePhase::Deferred, NOW - 10, None)]
#[case::in_progress_waits(ResizePhase::InProgress, NOW - 10_000, None)]
fn resize_fallbacks(#[case] phase: ResizePhase, #[case] since: i64, #[case] evicts: Option<Why>) {
    let mut c = case(UpdateMode::InPlaceOrEvict);
    c.api = V1_33;
    // The resize was accepted: the spec already holds the committed values.
    c.pods[1].containers[0] = container(400, 800, 250);
    c.pods[1].resize = Some(ResizeState { phase, since });
    let want = match evicts {
        Some(why) => Decision::Evict {
            pod: "web-b".into(),
            why,
        },
        None => Decision::Nothing(Hold::ResizeInProgress {
            pod: "web-b".into(),
        }),
    };
    assert_eq!(run(&c), want);
}

#[test]
fn a_failed_resize_still_respects_the_budget() {
    let mut c = case(UpdateMode::InPlaceOrEvict);
    c.api = V1_33;
    c.pdbs = vec![budget(0, 3, 3)];
    c.pods[0].resize = Some(ResizeState {
        phase: ResizePhase::Infeasible,
        since: 0,
    });
    assert_eq!(
        run(&c),
        Decision::Nothing(Hold::Budget { name: "web".into() })
    );
}

#[rstest]
#[case::v1_20(&["policy/v1beta1"], Some("policy/v1beta1"))]
#[case::both(&["policy/v1", "policy/v1beta1"], Some("policy/v1"))]
#[case::none(&[], None)]
fn eviction_api_by_discovery(#[case] served: &[&str], #[case] want: Option<&str>) {
    assert_eq!(eviction_version(served), want);
}

/// A target without limits (the updater manages requests): a resize moves each running
/// limit with its request, so the ratio and the QoS class stay.
#[test]
fn a_request_only_target_keeps_the_running_limit_ratio() {
    let mut guaranteed = container(512, 512, 500);
    guaranteed.cpu.limit = Some(500);
    let target = Target {
        containers: BTreeMap::from([(
            "app".to_string(),
            PerResource {
                memory: Sizes {
                    request: Some(768 * MI),
                    limit: None,
                },
                cpu: Sizes {
                    request: Some(1000),
                    limit: None,
                },
            },
        )]),
        ..Default::default()
    };
    for (running, want_mem_limit, want_cpu_limit) in [
        // 256Mi/512Mi (ratio 2), no CPU limit: 768Mi/1536Mi, CPU limit still none.
        (container(256, 512, 250), Some(1536 * MI), None),
        // Guaranteed stays Guaranteed.
        (guaranteed, Some(768 * MI), Some(1000)),
    ] {
        let before = vec![running.clone()];
        let after = updated(&target, &pod("web-a", running));
        assert_eq!(after[0].memory.request, Some(768 * MI));
        assert_eq!(after[0].memory.limit, want_mem_limit);
        assert_eq!(after[0].cpu.limit, want_cpu_limit);
        assert_eq!(qos_class(&before), qos_class(&after));
    }
}

/// A container looping on OOM kills under 32Mi, with the floor at 132Mi committed
/// (admission gives replacements at least the floor).
fn looping(name: &str, ready: bool) -> PodView {
    let mut c = container(32, 32, 250);
    c.oom_restarted = true;
    PodView {
        ready,
        ..pod(name, c)
    }
}

/// The floor's commit: request and floor at 132Mi.
fn floor_case(pods: Vec<PodView>) -> Case {
    with(case(UpdateMode::Evict), |c| {
        c.replicas = Some(pods.len() as u32);
        c.pods = pods;
        c.target.oom_floor.insert("app".into(), 132 * MI);
        let m = &mut c.target.containers.get_mut("app").unwrap().memory;
        *m = Sizes {
            request: Some(132 * MI),
            limit: None,
        };
    })
}

fn oom_evict(pod: &str) -> Decision {
    Decision::Evict {
        pod: pod.into(),
        why: Why::OomLoop {
            container: "app".into(),
        },
    }
}

/// A replacement admitted after the floor, carrying it, still starting.
fn replacement_starting() -> PodView {
    PodView {
        ready: false,
        created: COMMITTED + 60,
        ..pod("web-z", container(132, 132, 250))
    }
}

#[rstest]
#[case::every_replica_looping_is_no_settling(
    floor_case(vec![looping("web-a", false), looping("web-b", false)]),
    oom_evict("web-a"))]
#[case::a_not_ready_looper_before_a_ready_one(
    floor_case(vec![looping("web-a", true), looping("web-b", false)]),
    oom_evict("web-b"))]
#[case::both_running_between_kills_by_name(
    floor_case(vec![looping("web-b", true), looping("web-a", true)]),
    oom_evict("web-a"))]
#[case::a_starting_replacement_still_holds_the_next(
    floor_case(vec![replacement_starting(), looping("web-b", false)]),
    Decision::Nothing(Hold::Settling { pod: "web-z".into() }))]
#[case::once_the_replacement_is_ready_the_next_goes(
    floor_case(vec![PodView { ready: true, ..replacement_starting() }, looping("web-b", false)]),
    oom_evict("web-b"))]
#[case::a_looper_goes_before_drift_on_ready_pods(
    floor_case(vec![pod("web-a", container(256, 512, 250)), looping("web-b", false), pod("web-c", container(256, 512, 250))]),
    oom_evict("web-b"))]
#[case::below_the_floor_with_no_drift_left(
    with(floor_case(vec![looping("web-a", false), looping("web-b", false)]), |c| {
        // The committed request is what runs: only the floor says it must change.
        c.target.containers.get_mut("app").unwrap().memory.request = Some(32 * MI);
    }),
    oom_evict("web-a"))]
#[case::looping_at_the_floor_waits_for_a_higher_one(
    floor_case(vec![
        PodView { ready: false, containers: vec![RunningContainer { oom_restarted: true, ..container(132, 132, 250) }], ..pod("web-a", container(0, 0, 0)) },
        pod("web-b", container(132, 132, 250))]),
    Decision::Nothing(Hold::UpToDate))]
#[case::a_looping_single_replica(
    floor_case(vec![looping("web-a", false)]),
    oom_evict("web-a"))]
#[case::a_looper_marked_do_not_disrupt_stays(
    floor_case(vec![PodView { do_not_disrupt: Some("karpenter.sh/do-not-disrupt"), ..looping("web-a", false) }]),
    Decision::Nothing(Hold::DoNotDisrupt { pod: "web-a".into(), annotation: "karpenter.sh/do-not-disrupt" }))]
fn oom_loops(#[case] c: Case, #[case] want: Decision) {
    assert_eq!(run(&c), want);
}

/// In place where served: the looping container's memory goes to the floor's commit
/// without waiting for a replacement (the limit keeps its ratio to the request).
#[test]
fn an_oom_loop_is_resized_in_place_where_served() {
    let mut c = floor_case(vec![looping("web-a", false), looping("web-b", false)]);
    c.policy.mode = UpdateMode::InPlaceOrEvict;
    c.api = V1_33;
    assert_eq!(
        run(&c),
        Decision::Resize {
            pod: "web-a".into(),
            body: json!({"spec": {"containers": [{"name": "app", "resources": {
                "requests": {"memory": "132Mi", "cpu": "250m"},
                "limits": {"memory": "132Mi"}}}]}}),
            why: Why::OomLoop {
                container: "app".into()
            },
        }
    );
}

/// Across workloads: the pass carries out OOM loops first, then Pods below a floor, then
/// drift, so the cluster-wide rate never makes a loop wait behind a plain update.
#[rstest]
#[case::oom_loop(oom_evict("p"), 0)]
#[case::below_floor(Decision::Evict { pod: "p".into(), why: Why::BelowFloor { container: "app".into() } }, 1)]
#[case::drift(evict("p"), 2)]
#[case::failed_resize(Decision::Evict { pod: "p".into(), why: Why::ResizeInfeasible }, 2)]
#[case::nothing(Decision::Nothing(Hold::UpToDate), u8::MAX)]
fn urgency_across_workloads(#[case] d: Decision, #[case] want: u8) {
    assert_eq!(d.urgency(), want);
}

fn refused(count: u32, ago: i64) -> Refusals {
    Refusals {
        count,
        last: NOW - ago,
    }
}

/// Refused evictions back off a workload's next try (30 s, doubling); an OOM loop is tried
/// every pass; a round starts no sooner than `roundIntervalSeconds` after the last ended.
#[rstest]
#[case::refused_just_now_waits(
    with(case(UpdateMode::Evict), |c| c.refusals = refused(1, 10)),
    Decision::Nothing(Hold::BackingOff { refusals: 1, seconds: 30 }))]
#[case::tried_again_after_the_wait(
    with(case(UpdateMode::Evict), |c| c.refusals = refused(1, 30)),
    evict("web-a"))]
#[case::three_in_a_row_wait_longer(
    with(case(UpdateMode::Evict), |c| c.refusals = refused(3, 100)),
    Decision::Nothing(Hold::BackingOff { refusals: 3, seconds: 120 }))]
#[case::an_oom_loop_does_not_back_off(
    with(floor_case(vec![looping("web-a", false), looping("web-b", false)]), |c| c.refusals = refused(5, 1)),
    oom_evict("web-a"))]
#[case::a_resize_does_not_back_off(
    with(case(UpdateMode::InPlaceOrEvict), |c| { c.api = V1_33; c.refusals = refused(1, 1); }),
    Decision::Resize {
        pod: "web-a".into(),
        body: json!({"spec": {"containers": [{"name": "app", "resources": {
            "requests": {"memory": "400Mi", "cpu": "250m"}, "limits": {"memory": "800Mi"}}}]}}),
        why: Why::Drift { container: "app".into(), resource: Resource::Memory },
    })]
#[case::no_pause_by_default(
    with(case(UpdateMode::Evict), |c| c.round_ended_at = Some(NOW - 1)),
    evict("web-a"))]
#[case::a_new_round_waits_for_the_interval(
    with(case(UpdateMode::Evict), |c| { c.policy.round_interval_seconds = 3600; c.round_ended_at = Some(NOW - 600); }),
    Decision::Nothing(Hold::BetweenRounds))]
#[case::a_new_round_after_the_interval(
    with(case(UpdateMode::Evict), |c| { c.policy.round_interval_seconds = 3600; c.round_ended_at = Some(NOW - 3600); }),
    evict("web-a"))]
#[case::an_oom_loop_does_not_wait_for_a_round(
    with(floor_case(vec![looping("web-a", false), looping("web-b", false)]), |c| { c.policy.round_interval_seconds = 3600; c.round_ended_at = Some(NOW - 1); }),
    oom_evict("web-a"))]
fn pacing(#[case] c: Case, #[case] want: Decision) {
    assert_eq!(run(&c), want);
}

/// The budget read beforehand, for OOM loops: every replica looping leaves the budget
/// unmet, so no Pod can go until one runs between its kills; then a not-ready looper goes
/// (the budget is met without it).
#[rstest]
#[case::every_replica_down_waits(
    with(floor_case(vec![looping("web-a", false), looping("web-b", false)]), |c| c.pdbs = vec![budget(0, 0, 1)]),
    Decision::Nothing(Hold::Budget { name: "web".into() }))]
#[case::one_running_between_kills_lets_the_other_go(
    with(floor_case(vec![looping("web-a", true), looping("web-b", false)]), |c| c.pdbs = vec![budget(0, 1, 1)]),
    oom_evict("web-b"))]
#[case::always_allow_lets_it_go_at_once(
    with(floor_case(vec![looping("web-a", false), looping("web-b", false)]), |c| {
        let mut b = budget(0, 0, 1);
        b.always_allow_unhealthy = true;
        c.pdbs = vec![b];
    }),
    oom_evict("web-a"))]
fn oom_loops_and_their_budget(#[case] c: Case, #[case] want: Decision) {
    assert_eq!(run(&c), want);
}
