//! Tests of the kind table (`kind.rs`): every kind through every per-kind fact.

use super::*;
use serde_json::json;

#[test]
fn the_table_is_in_enum_order_and_its_names_are_the_serialized_ones() {
    for (i, info) in KINDS.iter().enumerate() {
        assert_eq!(info.kind.rank().0, i, "{info:?}");
        assert_eq!(info.label, info.kind.as_str());
        let json = serde_json::to_string(&info.kind).unwrap();
        assert_eq!(json, format!("\"{}\"", info.label));
        assert_eq!(WorkloadKind::parse(info.label), Some(info.kind));
        assert_eq!(
            WorkloadKind::from_api(info.group, info.api_kind),
            Some(info.kind)
        );
    }
}

#[test]
fn kinds_from_api_names() {
    // (apiVersion given, kind) → kind
    let table = [
        (Some("apps/v1"), "ReplicaSet", Some(K::ReplicaSet)),
        (Some("batch/v1beta1"), "CronJob", Some(K::CronJob)),
        (
            Some("serving.knative.dev/v1"),
            "Service",
            Some(K::KnativeService),
        ),
        (Some("v1"), "Service", None),
        (Some("argoproj.io/v1alpha1"), "ReplicaSet", None),
        (None, "StatefulSet", Some(K::StatefulSet)),
        (None, "Job", Some(K::Job)),
        (None, "Service", None),
        (None, "KnativeService", None),
        (None, "Rollout", None),
    ];
    for (api_version, kind, want) in table {
        assert_eq!(
            WorkloadKind::from_kind(api_version, kind),
            want,
            "{api_version:?} {kind}"
        );
    }
}

/// A JSON object with `v` at `ptr`, creating the objects on the way.
fn set(obj: &mut Value, ptr: &str, v: Value) {
    let mut cur = obj;
    for k in ptr.split('/').skip(1) {
        cur = &mut cur[k];
    }
    *cur = v;
}

/// Every kind through every per-kind fact, as Kubernetes (and Knative) have them: a
/// new kind fails here until its row is written.
#[test]
fn every_kind_through_every_fact() {
    use OwnerTable::{Jobs, ReplicaSets};
    use PodCount::{One, Replicas, Unknown};
    const REPLICAS: PodCount = Replicas("/spec/replicas");
    // kind, mutated on UPDATE, pod count, owner table, owner of the Pods its
    // controller makes, apiVersion when watched
    let want = [
        (K::Pod, false, One, None, None, None),
        (
            K::Deployment,
            true,
            REPLICAS,
            None,
            Some(K::ReplicaSet),
            Some("apps/v1"),
        ),
        (
            K::StatefulSet,
            true,
            REPLICAS,
            None,
            Some(K::StatefulSet),
            Some("apps/v1"),
        ),
        (
            K::DaemonSet,
            true,
            Unknown,
            None,
            Some(K::DaemonSet),
            Some("apps/v1"),
        ),
        (
            K::ReplicaSet,
            true,
            REPLICAS,
            Some(ReplicaSets),
            Some(K::ReplicaSet),
            None,
        ),
        (
            K::Job,
            true,
            Replicas("/spec/parallelism"),
            Some(Jobs),
            Some(K::Job),
            None,
        ),
        (
            K::CronJob,
            true,
            Replicas("/spec/jobTemplate/spec/parallelism"),
            None,
            Some(K::Job),
            Some("batch/v1"),
        ),
        (
            K::KnativeService,
            true,
            Unknown,
            None,
            Some(K::ReplicaSet),
            Some("serving.knative.dev/v1"),
        ),
        (
            K::KnativeConfiguration,
            true,
            Unknown,
            None,
            Some(K::ReplicaSet),
            Some("serving.knative.dev/v1"),
        ),
    ];
    assert_eq!(want.len(), KINDS.len());
    for ((kind, update, count, table, pods_owner, watched_as), info) in want.into_iter().zip(&KINDS)
    {
        assert_eq!(kind, info.kind);
        let ops: &[&str] = if update {
            &["CREATE", "UPDATE"]
        } else {
            &["CREATE"]
        };
        assert_eq!(kind.operations(), ops, "{kind}");
        assert_eq!(kind.pod_count(), count, "{kind}");
        if let Replicas(ptr) = count {
            // The count sits beside the template it multiplies.
            let spec = ptr.rsplit_once('/').unwrap().0;
            assert!(
                info.pod_spec.starts_with(&format!("{spec}/template/")),
                "{kind}"
            );
        }
        assert_eq!(kind.owner_table(), table, "{kind}");
        if let Some(t) = table {
            assert_eq!(OwnerTable::of_api_kind(info.api_kind), Some(t));
            assert!(info.controls_pods && LINKS.iter().any(|l| l.child == info.api_kind));
        }
        let made = kind.made_pod();
        assert_eq!(made.map(|m| m.owner.0), pods_owner, "{kind}");
        if let Some(m) = made {
            assert!(m.owner.0.info().controls_pods, "{kind}");
            let name = match m.name {
                PodName::Name(n) | PodName::Generate(n) => n,
            };
            let templates = [m.owner.1, name].into_iter();
            for t in templates.chain(m.labels.iter().map(|l| l.1)) {
                let rest = t
                    .replace("{name}", "")
                    .replace("{hash}", "")
                    .replace("{minutes}", "");
                assert!(t.contains("{name}") || t == "{hash}", "{kind}: {t}");
                assert!(!rest.contains(['{', '}']), "{kind}: {t}");
            }
        }
        assert_eq!(
            kind.watched_as().map(|_| info.api_version()).as_deref(),
            watched_as,
            "{kind}"
        );
        assert_eq!(info.discovered(), info.versions.len() > 1);
        // Decodes as its type with a pod spec where the table says; not without one.
        let mut obj = json!({"apiVersion": info.api_version(), "kind": info.api_kind,
            "metadata": {"name": "x"}, "spec": {"selector": {}, "schedule": "@daily"}});
        set(
            &mut obj,
            info.pod_spec,
            json!({"containers": [{"name": "a"}]}),
        );
        assert_eq!(kind.decode()(&obj), Ok(()), "{kind}");
        set(&mut obj, info.pod_spec, json!({"containers": "none"}));
        assert!(kind.decode()(&obj).is_err(), "{kind}");
    }
}

#[test]
fn links_name_parents_by_the_controllers_naming() {
    let named = |child: &str, name, hash| {
        let l = LINKS.iter().find(|l| l.child == child).unwrap();
        l.parent_named.and_then(|f| f(name, hash))
    };
    assert_eq!(named("ReplicaSet", "web-7d9f8", None), Some("web"));
    assert_eq!(named("ReplicaSet", "web-abc", Some("abc")), Some("web"));
    assert_eq!(named("Job", "nightly-29400000", None), Some("nightly"));
    assert_eq!(named("Job", "once", None), None);
    assert_eq!(named("Revision", "hello-00001", None), None);
}

#[test]
fn pod_templates_and_watched_kinds() {
    assert_eq!(K::Pod.pod_paths(), ("/spec", "/metadata"));
    assert_eq!(
        K::CronJob.pod_paths().0,
        "/spec/jobTemplate/spec/template/spec"
    );
    assert_eq!(K::KnativeService.pod_paths().0, "/spec/template/spec");
    let watched: Vec<_> = WorkloadKind::watched().collect();
    assert_eq!(
        watched,
        [
            K::Deployment,
            K::StatefulSet,
            K::DaemonSet,
            K::CronJob,
            K::KnativeService,
            K::KnativeConfiguration
        ]
    );
    assert!(K::KnativeConfiguration.is_knative() && !K::Deployment.is_knative());
}

/// Which kinds keep their committed state in a `Rightsizing`, and where the uid of its
/// owner (the object the workload key names) comes from; the others keep it in the
/// leader's memory.
#[test]
fn every_top_level_workload_has_a_home_owned_by_itself() {
    use Home::{PodFacts, Watched, WatchedWhenServed};
    let want = [
        (K::Pod, Some(PodFacts)),
        (K::Deployment, Some(Watched)),
        (K::StatefulSet, Some(Watched)),
        (K::DaemonSet, Some(Watched)),
        // Workloads only when nothing controls them; their mirrors keep no uid.
        (K::ReplicaSet, None),
        (K::Job, None),
        (K::CronJob, Some(Watched)),
        (K::KnativeService, Some(WatchedWhenServed)),
        (K::KnativeConfiguration, Some(WatchedWhenServed)),
    ];
    assert_eq!(want.len(), KINDS.len());
    for ((kind, home), info) in want.into_iter().zip(&KINDS) {
        assert_eq!(kind, info.kind);
        assert_eq!(kind.home(), home, "{kind}");
        // Watched exactly when the uid comes from a watch; optional exactly for CRDs.
        let watched = matches!(home, Some(Watched | WatchedWhenServed));
        assert_eq!(kind.watched_as().is_some(), watched, "{kind}");
        assert_eq!(kind.watched_as() == Some(true), kind.is_knative(), "{kind}");
    }
}
