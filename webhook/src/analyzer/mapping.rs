//! Pod → top-level workload, from owner rows (kube-state-metrics owner series, or the
//! same rows read from the Kubernetes API by `analyzer::ksm`): a Deployment's pods
//! across all its ReplicaSets, a CronJob's across all its Jobs, a Knative Service's
//! across all its revisions.

use std::collections::HashMap;

use super::prom::Sample;
use super::queries::{QueryKind, KN_CFG, KN_NS, KN_REV, KN_SVC};
use crate::recommendation::{WorkloadKey, WorkloadKind};

/// kube-state-metrics writes this when an object has no owner.
pub const NO_OWNER: &str = "<none>";

type NsName = (String, String);

/// The owner graph of one cycle.
#[derive(Debug, Default)]
pub struct OwnerIndex {
    pod_owner: HashMap<NsName, (String, String)>,
    rs_owner: HashMap<NsName, (String, String)>,
    job_owner: HashMap<NsName, (String, String)>,
    knative_pod: HashMap<NsName, WorkloadKey>,
    /// Knative revision deployment (`<revision>-deployment`) → its Service/Configuration.
    knative_deploy: HashMap<NsName, WorkloadKey>,
}

fn owner_labels(s: &Sample) -> (&str, &str) {
    (s.label("owner_kind"), s.label("owner_name"))
}

/// Knative Service when the revision names one, else its Configuration.
pub(crate) fn knative_key(ns: &str, svc: &str, cfg: &str) -> Option<WorkloadKey> {
    let (kind, name) = if !svc.is_empty() {
        (WorkloadKind::KnativeService, svc)
    } else if !cfg.is_empty() {
        (WorkloadKind::KnativeConfiguration, cfg)
    } else {
        return None;
    };
    Some(WorkloadKey {
        namespace: ns.to_string(),
        kind,
        name: name.to_string(),
    })
}

/// Prefer a real owner over `<none>` when a pod has several owner rows.
fn insert_owner(map: &mut HashMap<NsName, (String, String)>, key: NsName, owner: (String, String)) {
    match map.get(&key) {
        Some((k, _)) if k != NO_OWNER && owner.0 == NO_OWNER => {}
        _ => {
            map.insert(key, owner);
        }
    }
}

impl OwnerIndex {
    /// A pod's controlling owner (`<none>` or no call when it has none).
    pub fn pod_owner(&mut self, namespace: &str, pod: &str, kind: &str, name: &str) {
        let key = (namespace.to_string(), pod.to_string());
        insert_owner(
            &mut self.pod_owner,
            key,
            (kind.to_string(), name.to_string()),
        );
    }

    /// A ReplicaSet's controlling owner.
    pub fn replicaset_owner(&mut self, namespace: &str, rs: &str, kind: &str, name: &str) {
        let key = (namespace.to_string(), rs.to_string());
        insert_owner(
            &mut self.rs_owner,
            key,
            (kind.to_string(), name.to_string()),
        );
    }

    /// A Job's controlling owner.
    pub fn job_owner(&mut self, namespace: &str, job: &str, kind: &str, name: &str) {
        let key = (namespace.to_string(), job.to_string());
        insert_owner(
            &mut self.job_owner,
            key,
            (kind.to_string(), name.to_string()),
        );
    }

    /// A pod carrying Knative's `serving.knative.dev/{service,configuration}` labels.
    pub fn knative_pod(&mut self, namespace: &str, pod: &str, service: &str, configuration: &str) {
        if let Some(k) = knative_key(namespace, service, configuration) {
            self.knative_pod
                .insert((namespace.to_string(), pod.to_string()), k);
        }
    }

    pub fn add_pod_owners(&mut self, samples: &[Sample]) {
        for s in samples {
            let (kind, name) = owner_labels(s);
            self.pod_owner(s.label("namespace"), s.label("pod"), kind, name);
        }
    }

    pub fn add_replicaset_owners(&mut self, samples: &[Sample]) {
        for s in samples {
            let (kind, name) = owner_labels(s);
            self.replicaset_owner(s.label("namespace"), s.label("replicaset"), kind, name);
        }
    }

    pub fn add_job_owners(&mut self, samples: &[Sample]) {
        for s in samples {
            let (kind, name) = owner_labels(s);
            self.job_owner(s.label("namespace"), s.label("job_name"), kind, name);
        }
    }

    /// `kube_pod_labels` with `label_serving_knative_dev_*` (needs the labels allow-listed
    /// in kube-state-metrics).
    pub fn add_knative_pod_labels(&mut self, samples: &[Sample]) {
        for s in samples {
            self.knative_pod(
                s.label("namespace"),
                s.label("pod"),
                s.label("label_serving_knative_dev_service"),
                s.label("label_serving_knative_dev_configuration"),
            );
        }
    }

    /// Any Knative revision series (normalised `kn_*` labels): a revision `r` runs as
    /// Deployment `r-deployment`, which is how pods are found without pod labels.
    pub fn add_knative_revisions(&mut self, samples: &[Sample]) {
        for s in samples {
            let ns = s.label(KN_NS);
            let rev = s.label(KN_REV);
            if ns.is_empty() || rev.is_empty() {
                continue;
            }
            if let Some(k) = knative_key(ns, s.label(KN_SVC), s.label(KN_CFG)) {
                self.knative_deploy
                    .insert((ns.to_string(), format!("{rev}-deployment")), k);
            }
        }
    }

    /// Take an owner query's answer (other kinds are ignored).
    pub fn absorb(&mut self, kind: QueryKind, samples: &[Sample]) {
        match kind {
            QueryKind::PodOwner => self.add_pod_owners(samples),
            QueryKind::ReplicaSetOwner => self.add_replicaset_owners(samples),
            QueryKind::JobOwner => self.add_job_owners(samples),
            QueryKind::KnativePodLabels => self.add_knative_pod_labels(samples),
            _ => {}
        }
    }

    /// Whether any pod owner row came in (from kube-state-metrics, before the API's).
    pub fn has_pod_owners(&self) -> bool {
        !self.pod_owner.is_empty()
    }

    /// Whether a pod has an owner row (`<none>` included).
    pub fn knows_pod(&self, namespace: &str, pod: &str) -> bool {
        self.pod_owner
            .contains_key(&(namespace.to_string(), pod.to_string()))
    }

    /// The workload a pod belongs to. Pods without owner data count as bare Pods.
    pub fn workload(&self, namespace: &str, pod: &str) -> WorkloadKey {
        let key = (namespace.to_string(), pod.to_string());
        if let Some(k) = self.knative_pod.get(&key) {
            return k.clone();
        }
        let mk = |kind, name: &str| WorkloadKey {
            namespace: namespace.to_string(),
            kind,
            name: name.to_string(),
        };
        let Some((okind, oname)) = self.pod_owner.get(&key) else {
            return mk(WorkloadKind::Pod, pod);
        };
        match okind.as_str() {
            "ReplicaSet" => {
                let rs = (namespace.to_string(), oname.clone());
                match self.rs_owner.get(&rs) {
                    Some((k, d)) if k == "Deployment" => {
                        let dep = (namespace.to_string(), d.clone());
                        self.knative_deploy
                            .get(&dep)
                            .cloned()
                            .unwrap_or_else(|| mk(WorkloadKind::Deployment, d))
                    }
                    _ => mk(WorkloadKind::ReplicaSet, oname),
                }
            }
            "Job" => {
                let job = (namespace.to_string(), oname.clone());
                match self.job_owner.get(&job) {
                    Some((k, c)) if k == "CronJob" => mk(WorkloadKind::CronJob, c),
                    _ => mk(WorkloadKind::Job, oname),
                }
            }
            other => match WorkloadKind::parse(other) {
                Some(k @ (WorkloadKind::StatefulSet | WorkloadKind::DaemonSet)) => mk(k, oname),
                _ => mk(WorkloadKind::Pod, pod),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pairs: &[(&str, &str)]) -> Sample {
        Sample {
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value: 1.0,
        }
    }

    #[test]
    fn resolves_through_replicasets_jobs_and_knative() {
        let mut ix = OwnerIndex::default();
        ix.add_pod_owners(&[
            s(&[
                ("namespace", "a"),
                ("pod", "web-1-x"),
                ("owner_kind", "ReplicaSet"),
                ("owner_name", "web-1"),
            ]),
            s(&[
                ("namespace", "a"),
                ("pod", "web-2-y"),
                ("owner_kind", "ReplicaSet"),
                ("owner_name", "web-2"),
            ]),
            s(&[
                ("namespace", "a"),
                ("pod", "orphan-rs-z"),
                ("owner_kind", "ReplicaSet"),
                ("owner_name", "orphan-rs"),
            ]),
            s(&[
                ("namespace", "a"),
                ("pod", "job-1-q"),
                ("owner_kind", "Job"),
                ("owner_name", "nightly-1"),
            ]),
            s(&[
                ("namespace", "a"),
                ("pod", "db-0"),
                ("owner_kind", "StatefulSet"),
                ("owner_name", "db"),
            ]),
            s(&[
                ("namespace", "a"),
                ("pod", "bare"),
                ("owner_kind", "<none>"),
                ("owner_name", "<none>"),
            ]),
            s(&[
                ("namespace", "a"),
                ("pod", "hello-00001-deployment-abc-d"),
                ("owner_kind", "ReplicaSet"),
                ("owner_name", "hello-00001-deployment-abc"),
            ]),
        ]);
        ix.add_replicaset_owners(&[
            s(&[
                ("namespace", "a"),
                ("replicaset", "web-1"),
                ("owner_kind", "Deployment"),
                ("owner_name", "web"),
            ]),
            s(&[
                ("namespace", "a"),
                ("replicaset", "web-2"),
                ("owner_kind", "Deployment"),
                ("owner_name", "web"),
            ]),
            s(&[
                ("namespace", "a"),
                ("replicaset", "orphan-rs"),
                ("owner_kind", "<none>"),
                ("owner_name", "<none>"),
            ]),
            s(&[
                ("namespace", "a"),
                ("replicaset", "hello-00001-deployment-abc"),
                ("owner_kind", "Deployment"),
                ("owner_name", "hello-00001-deployment"),
            ]),
        ]);
        ix.add_job_owners(&[s(&[
            ("namespace", "a"),
            ("job_name", "nightly-1"),
            ("owner_kind", "CronJob"),
            ("owner_name", "nightly"),
        ])]);
        ix.add_knative_revisions(&[s(&[
            (KN_NS, "a"),
            (KN_REV, "hello-00001"),
            (KN_SVC, "hello"),
            (KN_CFG, "hello"),
        ])]);
        let w = |p: &str| ix.workload("a", p).to_string();
        assert_eq!(w("web-1-x"), "a/Deployment/web");
        assert_eq!(w("web-2-y"), "a/Deployment/web");
        assert_eq!(w("orphan-rs-z"), "a/ReplicaSet/orphan-rs");
        assert_eq!(w("job-1-q"), "a/CronJob/nightly");
        assert_eq!(w("db-0"), "a/StatefulSet/db");
        assert_eq!(w("bare"), "a/Pod/bare");
        assert_eq!(w("unknown"), "a/Pod/unknown");
        assert_eq!(w("hello-00001-deployment-abc-d"), "a/KnativeService/hello");
    }
}
