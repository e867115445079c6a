//! Admission (the Pod as the apiserver sends it, with the watchers' owner mirrors), the
//! analyzer's Pod watch (`derive` + `feed_owners` from the same mirrors) and
//! kube-state-metrics rows resolve every owner chain to the same workload: one resolver
//! (`rightsizer_core::workload`), three sources of facts.

use std::collections::HashMap;

use serde_json::{json, Value};

use rightsizer_core::quantity::Resource;
use rightsizer_core::rules::Sizes;
use rightsizer_core::workload::kind::{ScaledKinds, WorkloadKind};
use rightsizer_core::workload::resolve::{Owner, OwnerFacts};
use rightsizer_core::workload::WorkloadKey;

use super::{derive, feed_owners, Names};
use crate::kube::facts::{NsName, OwnerMirrors};

fn pod(name: &str, meta: Value) -> k8s_openapi::api::core::v1::Pod {
    let mut meta = meta;
    meta["name"] = json!(name);
    meta["namespace"] = json!("shop");
    serde_json::from_value(json!({"metadata": meta, "spec": {"containers": []}})).unwrap()
}

/// Test sink: the owner rows into the analyzer's index.
impl crate::analyzer::ksm::FactsSink for crate::analyzer::mapping::OwnerIndex {
    fn pod_owner(&mut self, ns: &str, pod: &str, kind: &str, name: &str) {
        crate::analyzer::mapping::OwnerIndex::pod_owner(self, ns, pod, kind, name)
    }
    fn replicaset_owner(&mut self, ns: &str, rs: &str, kind: &str, name: &str) {
        crate::analyzer::mapping::OwnerIndex::replicaset_owner(self, ns, rs, kind, name)
    }
    fn job_owner(&mut self, ns: &str, job: &str, kind: &str, name: &str) {
        crate::analyzer::mapping::OwnerIndex::job_owner(self, ns, job, kind, name)
    }
    fn knative_pod(&mut self, ns: &str, pod: &str, svc: &str, cfg: &str) {
        crate::analyzer::mapping::OwnerIndex::knative_pod(self, ns, pod, svc, cfg)
    }
    fn resources(&mut self, _: &str, _: &str, _: &str, _: Resource, _: Sizes) {}
    fn oom_kill(&mut self, _: &str, _: &str, _: &str, _: u64) {}
    fn hpa(&mut self, _: WorkloadKey, _: Resource) {}
}

#[test]
fn admission_the_pod_watch_and_kube_state_metrics_resolve_every_owner_chain_alike() {
    use crate::analyzer::mapping::OwnerIndex;
    use rightsizer_core::object::View;
    let owned = |api_version: &str, kind: &str, name: &str| json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": "u", "controller": true}]);
    let rs = |name: &str| owned("apps/v1", "ReplicaSet", name);
    let job = |name: &str| owned("batch/v1", "Job", name);
    let to = |kind: &str, name: &str| {
        Some(Owner {
            kind: kind.into(),
            name: name.into(),
            uid: None,
        })
    };
    // (case, Pod metadata at admission, its name once created, what the ReplicaSet and
    // Job mirrors (and kube-state-metrics) know: (kind, name, controller), workload)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Value, &str, Vec<(&str, &str, Option<Owner>)>, &str)> = vec![
        (
            "Deployment, ReplicaSet known",
            json!({"generateName": "web-7d9f8-", "labels": {"pod-template-hash": "7d9f8"}, "ownerReferences": rs("web-7d9f8")}),
            "web-7d9f8-x2k4p",
            vec![("ReplicaSet", "web-7d9f8", to("Deployment", "web"))],
            "Deployment/web",
        ),
        (
            "Deployment, ReplicaSet not seen yet",
            json!({"generateName": "web-7d9f8-", "labels": {"pod-template-hash": "7d9f8"}, "ownerReferences": rs("web-7d9f8")}),
            "web-7d9f8-x2k4p",
            vec![],
            "Deployment/web",
        ),
        (
            "bare ReplicaSet known, named like a Deployment's",
            json!({"generateName": "rs-7d9f8-", "labels": {"pod-template-hash": "7d9f8"}, "ownerReferences": rs("rs-7d9f8")}),
            "rs-7d9f8-x2k4p",
            vec![("ReplicaSet", "rs-7d9f8", None)],
            "ReplicaSet/rs-7d9f8",
        ),
        (
            "ReplicaSet of a Rollout, where discovery finds no rollouts/scale",
            json!({"generateName": "roll-7d9f8-", "labels": {"pod-template-hash": "7d9f8"}, "ownerReferences": rs("roll-7d9f8")}),
            "roll-7d9f8-x2k4p",
            vec![("ReplicaSet", "roll-7d9f8", to("Rollout", "roll"))],
            "ReplicaSet/roll-7d9f8",
        ),
        (
            "ReplicaSet of an Argo Rollout (discovery: rollouts/scale)",
            json!({"generateName": "roll-7d9f8-", "labels": {"pod-template-hash": "7d9f8"}, "ownerReferences": rs("roll-7d9f8")}),
            "roll-7d9f8-x2k4p",
            vec![("ReplicaSet", "roll-7d9f8", to("Rollout", "roll"))],
            "Rollout.argoproj.io/roll",
        ),
        (
            "CronJob, Job known",
            json!({"generateName": "nightly-29400000-", "labels": {"job-name": "nightly-29400000"}, "ownerReferences": job("nightly-29400000")}),
            "nightly-29400000-q8v5z",
            vec![("Job", "nightly-29400000", to("CronJob", "nightly"))],
            "CronJob/nightly",
        ),
        (
            "CronJob, Job not seen",
            json!({"generateName": "nightly-29400000-", "ownerReferences": job("nightly-29400000")}),
            "nightly-29400000-q8v5z",
            vec![],
            "CronJob/nightly",
        ),
        (
            "bare Job",
            json!({"generateName": "migrate-", "ownerReferences": job("migrate")}),
            "migrate-q8v5z",
            vec![("Job", "migrate", None)],
            "Job/migrate",
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
            "Knative Service",
            json!({"generateName": "hello-00001-deployment-5f-", "labels": {"serving.knative.dev/service": "hello", "serving.knative.dev/configuration": "hello", "pod-template-hash": "5f"}, "ownerReferences": rs("hello-00001-deployment-5f")}),
            "hello-00001-deployment-5f-x2k4p",
            vec![(
                "ReplicaSet",
                "hello-00001-deployment-5f",
                to("Deployment", "hello-00001-deployment"),
            )],
            "KnativeService/hello",
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
            json!({"generateName": "runner-"}),
            "runner-x7k2p",
            vec![],
            "Pod/runner",
        ),
        (
            "unknown controller",
            json!({"generateName": "x-", "ownerReferences": owned("example.com/v1", "Runner", "r")}),
            "x-x7k2p",
            vec![],
            "Pod/x",
        ),
    ];
    let rollout = WorkloadKind::scaled("argoproj.io", "v1alpha1", "Rollout", "rollouts");
    for (case, meta, created, rows, want) in cases {
        // What discovery found: Rollouts serving /scale in the one case that says so.
        let scaled = ScaledKinds(
            rollout
                .filter(|_| case.contains("rollouts/scale)"))
                .into_iter()
                .collect(),
        );
        let want = format!("shop/{want}");
        let mirror = |kind: &str| -> HashMap<NsName, Option<Owner>> {
            rows.iter()
                .filter(|r| r.0 == kind)
                .map(|(_, n, o)| (("shop".to_string(), n.to_string()), o.clone()))
                .collect()
        };
        let (rs_rows, job_rows) = (mirror("ReplicaSet"), mirror("Job"));
        let mirrors = OwnerMirrors {
            replica_sets: &rs_rows,
            jobs: &job_rows,
        };
        // Admission: the Pod as the apiserver sends it (no name yet when generated).
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let facts = Watched(&mirrors, &scaled);
        let admission = View::with_owners(WorkloadKind::Pod, "shop", &obj, &facts).unwrap();
        assert_eq!(admission.identity.to_string(), want, "admission: {case}");
        // The Pod watch: the created Pod cut down, owner rows fed from the same mirrors.
        let pod = pod(created, meta.clone());
        let (_, facts) = derive(&pod, &Names::default()).unwrap();
        let mut api = OwnerIndex::default();
        api.scaled = scaled.clone();
        feed_owners(
            &mut HashMap::new(),
            ("shop", created),
            &facts,
            0,
            &mut api,
            &mirrors,
        );
        assert_eq!(
            api.workload("shop", created).to_string(),
            want,
            "Pod watch: {case}"
        );
        // kube-state-metrics: the controller row, a row for every ReplicaSet and Job it
        // lists, the Knative pod labels.
        let mut ksm = OwnerIndex::default();
        ksm.scaled = scaled.clone();
        let c = meta["ownerReferences"].get(0);
        let s = |k: &str| {
            c.and_then(|c| c[k].as_str())
                .unwrap_or(crate::analyzer::mapping::NO_OWNER)
        };
        ksm.pod_owner("shop", created, s("kind"), s("name"));
        for (kind, name, o) in &rows {
            let (ok, on) = o
                .as_ref()
                .map_or(("<none>", "<none>"), |o| (o.kind.as_str(), o.name.as_str()));
            match *kind {
                "ReplicaSet" => ksm.replicaset_owner("shop", name, ok, on),
                _ => ksm.job_owner("shop", name, ok, on),
            }
        }
        let label = |k: &str| meta["labels"][k].as_str().unwrap_or_default();
        ksm.knative_pod(
            "shop",
            created,
            label("serving.knative.dev/service"),
            label("serving.knative.dev/configuration"),
        );
        assert_eq!(
            ksm.workload("shop", created).to_string(),
            want,
            "kube-state-metrics: {case}"
        );
    }
}

/// Admission's facts: the watchers' mirrors and what discovery found (`KubeFacts`).
struct Watched<'a>(&'a OwnerMirrors<'a>, &'a ScaledKinds);

impl OwnerFacts for Watched<'_> {
    fn controller(&self, ns: &str, kind: &str, name: &str) -> Option<Option<Owner>> {
        self.0.controller(ns, kind, name)
    }
    fn scaled(&self, api_kind: &str) -> Option<WorkloadKind> {
        self.1.by_kind(api_kind)
    }
}
