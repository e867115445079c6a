//! Workload identity: the one table of kinds ([`kind`]), how controllers name what they
//! create ([`names`]), and the one resolver from a Pod to its top-level workload
//! ([`resolve`]), shared by admission, the analyzer and the watchers. Pure: no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod kind;
pub mod names;
pub mod resolve;

use kind::WorkloadKind;

/// The identity recommendations are keyed by (`namespace/kind/name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadKey {
    pub namespace: String,
    pub kind: WorkloadKind,
    pub name: String,
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{json, Value};

    use super::kind::{ScaledKinds, WorkloadKind};
    use super::resolve::{resolve_owner, resolve_pod, Owner, OwnerFacts, OwnerRef, PodRef};

    /// Owner facts as a map: (API kind, name) → controller (`None`: known, none), and
    /// the scaled controllers discovery found.
    #[derive(Default)]
    struct Facts(
        HashMap<(&'static str, &'static str), Option<(&'static str, &'static str)>>,
        ScaledKinds,
    );

    impl OwnerFacts for Facts {
        fn controller(&self, _ns: &str, kind: &str, name: &str) -> Option<Option<Owner>> {
            let row = self.0.iter().find(|((k, n), _)| *k == kind && *n == name)?;
            Some(row.1.map(|(kind, name)| Owner {
                kind: kind.into(),
                name: name.into(),
                uid: None,
            }))
        }

        fn scaled(&self, api_kind: &str) -> Option<WorkloadKind> {
            self.1.by_kind(api_kind)
        }
    }

    type Row = (
        (&'static str, &'static str),
        Option<(&'static str, &'static str)>,
    );

    fn facts(rows: &[Row]) -> Facts {
        Facts(rows.iter().copied().collect(), ScaledKinds::default())
    }

    fn owned(api_version: &str, kind: &str, name: &str) -> Value {
        json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": "u", "controller": true}])
    }

    const RS_WEB: Row = (("ReplicaSet", "web-7d9f8"), Some(("Deployment", "web")));
    const ROLLOUT_RS: Row = (("ReplicaSet", "roll-7d9f8"), Some(("Rollout", "roll")));
    const JOB_NIGHTLY: Row = (("Job", "nightly-29400000"), Some(("CronJob", "nightly")));

    /// Every owner chain: (case, Pod metadata at admission, the Pod's name once created,
    /// owner facts, workload). Admission reads the metadata (name often empty, labels,
    /// apiVersions); the analyzer reads only the created name, the controller's kind and
    /// name, and the Knative labels. Both must land on the same workload.
    #[allow(clippy::type_complexity)]
    fn chains() -> Vec<(&'static str, Value, &'static str, Vec<Row>, &'static str)> {
        let kn = json!({"serving.knative.dev/service": "hello", "serving.knative.dev/configuration": "hello", "pod-template-hash": "5f"});
        vec![
            (
                "Deployment/ReplicaSet, facts known",
                json!({"generateName": "web-7d9f8-", "labels": {"pod-template-hash": "7d9f8"}, "ownerReferences": owned("apps/v1", "ReplicaSet", "web-7d9f8")}),
                "web-7d9f8-x2k4p",
                vec![RS_WEB],
                "Deployment/web",
            ),
            (
                "Deployment/ReplicaSet, nothing known: the hash names the Deployment",
                json!({"generateName": "web-7d9f8-", "labels": {"pod-template-hash": "7d9f8"}, "ownerReferences": owned("apps/v1", "ReplicaSet", "web-7d9f8")}),
                "web-7d9f8-x2k4p",
                vec![],
                "Deployment/web",
            ),
            (
                "Deployment whose name ends like a hash: facts win over the name",
                json!({"generateName": "api-v2-6f8-", "labels": {"pod-template-hash": "6f8"}, "ownerReferences": owned("apps/v1", "ReplicaSet", "api-v2-6f8")}),
                "api-v2-6f8-x2k4p",
                vec![(("ReplicaSet", "api-v2-6f8"), Some(("Deployment", "api-v2")))],
                "Deployment/api-v2",
            ),
            (
                "bare ReplicaSet known without a Deployment",
                json!({"generateName": "rs-7d9f8-", "ownerReferences": owned("apps/v1", "ReplicaSet", "rs-7d9f8")}),
                "rs-7d9f8-x2k4p",
                vec![(("ReplicaSet", "rs-7d9f8"), None)],
                "ReplicaSet/rs-7d9f8",
            ),
            (
                "bare ReplicaSet, nothing known, a name no Deployment gives",
                json!({"generateName": "cache-", "ownerReferences": owned("apps/v1", "ReplicaSet", "cache")}),
                "cache-x2k4p",
                vec![],
                "ReplicaSet/cache",
            ),
            (
                "ReplicaSet of another controller that does not serve /scale",
                json!({"generateName": "roll-7d9f8-", "ownerReferences": owned("apps/v1", "ReplicaSet", "roll-7d9f8")}),
                "roll-7d9f8-x2k4p",
                vec![ROLLOUT_RS],
                "ReplicaSet/roll-7d9f8",
            ),
            (
                "CronJob/Job, facts known",
                json!({"generateName": "nightly-29400000-", "ownerReferences": owned("batch/v1", "Job", "nightly-29400000")}),
                "nightly-29400000-q8v5z",
                vec![JOB_NIGHTLY],
                "CronJob/nightly",
            ),
            (
                "CronJob/Job, nothing known: the schedule suffix names the CronJob",
                json!({"generateName": "nightly-29400000-", "ownerReferences": owned("batch/v1", "Job", "nightly-29400000")}),
                "nightly-29400000-q8v5z",
                vec![],
                "CronJob/nightly",
            ),
            (
                "bare Job",
                json!({"generateName": "migrate-2-", "ownerReferences": owned("batch/v1", "Job", "migrate-2")}),
                "migrate-2-q8v5z",
                vec![(("Job", "migrate-2"), None)],
                "Job/migrate-2",
            ),
            (
                "bare Job named like a CronJob's, known bare",
                json!({"generateName": "load-20260101-", "ownerReferences": owned("batch/v1", "Job", "load-20260101")}),
                "load-20260101-q8v5z",
                vec![(("Job", "load-20260101"), None)],
                "Job/load-20260101",
            ),
            (
                "StatefulSet",
                json!({"name": "db-0", "ownerReferences": owned("apps/v1", "StatefulSet", "db")}),
                "db-0",
                vec![],
                "StatefulSet/db",
            ),
            (
                "DaemonSet",
                json!({"generateName": "agent-", "ownerReferences": owned("apps/v1", "DaemonSet", "agent")}),
                "agent-q8v5z",
                vec![],
                "DaemonSet/agent",
            ),
            (
                "Knative Service by the Pod's labels",
                json!({"generateName": "hello-00001-deployment-5f-", "labels": kn, "ownerReferences": owned("apps/v1", "ReplicaSet", "hello-00001-deployment-5f")}),
                "hello-00001-deployment-5f-x2k4p",
                vec![],
                "KnativeService/hello",
            ),
            (
                "Knative Configuration by the Pod's labels",
                json!({"generateName": "cfg-00001-deployment-5f-", "labels": {"serving.knative.dev/configuration": "cfg"}, "ownerReferences": owned("apps/v1", "ReplicaSet", "cfg-00001-deployment-5f")}),
                "cfg-00001-deployment-5f-x2k4p",
                vec![],
                "KnativeConfiguration/cfg",
            ),
            (
                "bare Pod by name",
                json!({"name": "debug"}),
                "debug",
                vec![],
                "Pod/debug",
            ),
            (
                "bare Pod by generateName",
                json!({"generateName": "job-runner-"}),
                "job-runner-x7k2p",
                vec![],
                "Pod/job-runner",
            ),
            (
                "Pod of a controller rightsizer does not know",
                json!({"generateName": "x-", "ownerReferences": owned("example.com/v1", "Runner", "r")}),
                "x-x7k2p",
                vec![],
                "Pod/x",
            ),
            (
                "an owner that is not the controller is not followed",
                json!({"name": "adopted", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u"}]}),
                "adopted",
                vec![],
                "Pod/adopted",
            ),
        ]
    }

    /// Admission (the Pod's metadata) and the analyzer (the created name, the controller
    /// without apiVersion as kube-state-metrics gives it, Knative labels, no
    /// pod-template-hash) land on `want`.
    fn resolves_alike(case: &str, meta: &Value, created: &str, facts: &Facts, want: &str) {
        let admission = resolve_pod(&PodRef::from_meta("shop", meta), facts);
        assert_eq!(admission.key.to_string(), format!("shop/{want}"), "{case}");
        assert_eq!(admission.controlled, !want.starts_with("Pod/"), "{case}");
        let from = PodRef::from_meta("shop", meta);
        let analyzer = PodRef {
            name: created,
            generate_name: "",
            template_hash: None,
            controller: from.controller.map(|c| OwnerRef {
                api_version: None,
                ..c
            }),
            ..from
        };
        assert_eq!(resolve_pod(&analyzer, facts), admission, "{case}");
    }

    #[test]
    fn every_owner_chain_resolves_the_same_from_admission_and_from_metric_rows() {
        for (case, meta, created, rows, want) in chains() {
            resolves_alike(case, &meta, created, &facts(&rows), want);
        }
    }

    #[test]
    fn a_replicaset_of_a_controller_serving_scale_is_keyed_to_that_controller() {
        let rollout = WorkloadKind::scaled("argoproj.io", "v1alpha1", "Rollout", "rollouts");
        let other = WorkloadKind::scaled("example.com", "v1", "Rollout", "rollouts");
        let runner = WorkloadKind::scaled("example.com", "v1", "Runner", "runners");
        let meta = json!({"generateName": "roll-7d9f8-", "ownerReferences": owned("apps/v1", "ReplicaSet", "roll-7d9f8")});
        // (case, the scaled controllers discovery found, owner facts, workload)
        let table = [
            (
                "discovery: rollouts/scale",
                vec![rollout],
                vec![ROLLOUT_RS],
                "Rollout.argoproj.io/roll",
            ),
            (
                "discovery: only another kind scales",
                vec![runner],
                vec![ROLLOUT_RS],
                "ReplicaSet/roll-7d9f8",
            ),
            (
                "discovery: nothing scales",
                vec![],
                vec![ROLLOUT_RS],
                "ReplicaSet/roll-7d9f8",
            ),
            // Rows name the kind without its group: two groups' Rollouts are ambiguous.
            (
                "two groups serve a Rollout",
                vec![rollout, other],
                vec![ROLLOUT_RS],
                "ReplicaSet/roll-7d9f8",
            ),
        ];
        for (case, scaled, rows, want) in table {
            let facts = Facts(
                rows.into_iter().collect(),
                ScaledKinds(scaled.into_iter().flatten().collect()),
            );
            resolves_alike(case, &meta, "roll-7d9f8-x2k4p", &facts, want);
        }
        // A kind of the table is never a scaled controller: it has its own row.
        assert_eq!(
            WorkloadKind::scaled("apps", "v1", "Deployment", "deployments"),
            None
        );
        // One registration per group and kind; the label parses back to it.
        let again = WorkloadKind::scaled("argoproj.io", "v1alpha1", "Rollout", "rollouts");
        assert_eq!(again, rollout);
        assert_eq!(WorkloadKind::parse("Rollout.argoproj.io"), rollout);
        assert_ne!(rollout, other);
        let json = serde_json::to_string(&rollout).unwrap();
        assert_eq!(json, r#""Rollout.argoproj.io""#);
        assert_eq!(serde_json::from_str::<WorkloadKind>(&json).ok(), rollout);
    }

    #[test]
    fn knative_chains_climb_through_the_revision() {
        // Service → Configuration → Revision → Deployment `<rev>-deployment` → ReplicaSet,
        // as the analyzer learns it from Knative's revision series (no Pod labels).
        let rs = OwnerRef {
            kind: "ReplicaSet",
            name: "hello-00001-deployment-5f",
            api_version: None,
            controller: true,
        };
        let chain = [
            (
                ("ReplicaSet", "hello-00001-deployment-5f"),
                Some(("Deployment", "hello-00001-deployment")),
            ),
            (
                ("Deployment", "hello-00001-deployment"),
                Some(("Revision", "hello-00001")),
            ),
            (
                ("Revision", "hello-00001"),
                Some(("Configuration", "hello")),
            ),
            (("Configuration", "hello"), Some(("Service", "hello"))),
        ];
        // (facts known, workload): each missing link stops the climb at the last workload.
        let table = [
            (&chain[..], "KnativeService/hello"),
            (&chain[..3], "KnativeConfiguration/hello"),
            (&chain[..2], "Deployment/hello-00001-deployment"),
            (&chain[..0], "Deployment/hello-00001-deployment"),
        ];
        for (rows, want) in table {
            let got = resolve_owner("shop", rs, None, &facts(rows)).unwrap();
            assert_eq!(
                got.to_string(),
                format!("shop/{want}"),
                "{} facts",
                rows.len()
            );
        }
    }

    #[test]
    fn only_kinds_that_run_pods_start_a_chain() {
        let facts = Facts::default();
        for (api_version, kind) in [
            (Some("apps/v1"), "Deployment"),
            (None, "CronJob"),
            (Some("v1"), "Node"),
            (Some("example.com/v1"), "ReplicaSet"),
        ] {
            let o = OwnerRef {
                kind,
                name: "x",
                api_version,
                controller: true,
            };
            assert_eq!(resolve_owner("shop", o, None, &facts), None, "{kind}");
        }
    }
}
