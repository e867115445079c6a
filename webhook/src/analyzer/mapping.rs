//! The analyzer's owner facts: kube-state-metrics owner series, or the same rows read
//! from the Kubernetes API by `analyzer::ksm`, indexed for [`rightsizer_core::workload::resolve::resolve_pod`]
//! so that a Deployment's pods count together across all its ReplicaSets, a CronJob's
//! across all its Jobs, a Knative Service's across all its revisions.

use std::collections::HashMap;

use rightsizer_core::analysis::queries::{QueryKind, KN_CFG, KN_NS, KN_REV, KN_SVC};
use rightsizer_core::workload::kind::{ScaledKinds, WorkloadKind, LINKS};
use rightsizer_core::workload::names::revision_deployment;
use rightsizer_core::workload::resolve::{resolve_pod, Owner, OwnerFacts, OwnerRef, PodRef};
use rightsizer_core::workload::WorkloadKey;

use super::prom::PromSample;

/// kube-state-metrics writes this when an object has no owner.
pub const NO_OWNER: &str = "<none>";

type NsName = (String, String);

/// The owner graph of one cycle.
#[derive(Debug, Default)]
pub struct OwnerIndex {
    /// A pod's controller (`<none>` when it has none).
    pod_owner: HashMap<NsName, (String, String)>,
    /// The controller of a ReplicaSet, Job, Knative revision Deployment, Revision or
    /// Configuration, by its API kind (`None`: known to have none).
    controllers: HashMap<(&'static str, NsName), Option<Owner>>,
    /// A pod's `serving.knative.dev/{service,configuration}` labels.
    knative_pod: HashMap<NsName, (String, String)>,
    /// The scaled controllers discovery found (`ksm::HomeFacts::scaled`).
    pub scaled: ScaledKinds,
}

/// A row's (kind, name) as a controller: `<none>` is none.
fn owner_of(kind: &str, name: &str) -> Option<Owner> {
    (kind != NO_OWNER && !kind.is_empty()).then(|| Owner {
        kind: kind.to_string(),
        name: name.to_string(),
        uid: None,
    })
}

impl OwnerIndex {
    /// A pod's controlling owner (`<none>` or no call when it has none). A real owner
    /// wins over `<none>` when a pod has several rows.
    pub fn pod_owner(&mut self, namespace: &str, pod: &str, kind: &str, name: &str) {
        let key = (namespace.to_string(), pod.to_string());
        match self.pod_owner.get(&key) {
            Some((k, _)) if k != NO_OWNER && kind == NO_OWNER => {}
            _ => {
                self.pod_owner
                    .insert(key, (kind.to_string(), name.to_string()));
            }
        }
    }

    /// The controller of an object of API kind `child` (a link of [`LINKS`]).
    fn link(&mut self, child: &str, namespace: &str, name: &str, owner: Option<Owner>) {
        let Some(l) = LINKS.iter().find(|l| l.child == child) else {
            return;
        };
        let key = (l.child, (namespace.to_string(), name.to_string()));
        match self.controllers.get(&key) {
            Some(Some(_)) if owner.is_none() => {}
            _ => {
                self.controllers.insert(key, owner);
            }
        }
    }

    /// A ReplicaSet's controlling owner.
    pub fn replicaset_owner(&mut self, namespace: &str, rs: &str, kind: &str, name: &str) {
        self.link("ReplicaSet", namespace, rs, owner_of(kind, name));
    }

    /// A Job's controlling owner.
    pub fn job_owner(&mut self, namespace: &str, job: &str, kind: &str, name: &str) {
        self.link("Job", namespace, job, owner_of(kind, name));
    }

    /// A pod carrying Knative's `serving.knative.dev/{service,configuration}` labels.
    pub fn knative_pod(&mut self, namespace: &str, pod: &str, service: &str, configuration: &str) {
        if !service.is_empty() || !configuration.is_empty() {
            self.knative_pod.insert(
                (namespace.to_string(), pod.to_string()),
                (service.to_string(), configuration.to_string()),
            );
        }
    }

    pub fn add_pod_owners(&mut self, samples: &[PromSample]) {
        for s in samples {
            let (kind, name) = owner_labels(s);
            self.pod_owner(s.label("namespace"), s.label("pod"), kind, name);
        }
    }

    pub fn add_replicaset_owners(&mut self, samples: &[PromSample]) {
        for s in samples {
            let (kind, name) = owner_labels(s);
            self.replicaset_owner(s.label("namespace"), s.label("replicaset"), kind, name);
        }
    }

    pub fn add_job_owners(&mut self, samples: &[PromSample]) {
        for s in samples {
            let (kind, name) = owner_labels(s);
            self.job_owner(s.label("namespace"), s.label("job_name"), kind, name);
        }
    }

    /// `kube_pod_labels` with `label_serving_knative_dev_*` (needs the labels allow-listed
    /// in kube-state-metrics).
    pub fn add_knative_pod_labels(&mut self, samples: &[PromSample]) {
        for s in samples {
            self.knative_pod(
                s.label("namespace"),
                s.label("pod"),
                s.label("label_serving_knative_dev_service"),
                s.label("label_serving_knative_dev_configuration"),
            );
        }
    }

    /// Any Knative revision series (normalised `kn_*` labels): revision `r` runs as
    /// Deployment `r-deployment`, controlled by the revision, whose Configuration a
    /// Service of the same name controls. This is how pods are found without pod labels.
    pub fn add_knative_revisions(&mut self, samples: &[PromSample]) {
        let own = |kind: &str, name: &str| owner_of(kind, name);
        for s in samples {
            let (ns, rev) = (s.label(KN_NS), s.label(KN_REV));
            let (svc, cfg) = (s.label(KN_SVC), s.label(KN_CFG));
            // A Service's Configuration carries the Service's name.
            let cfg = if cfg.is_empty() { svc } else { cfg };
            if ns.is_empty() || rev.is_empty() || cfg.is_empty() {
                continue;
            }
            self.link(
                "Deployment",
                ns,
                &revision_deployment(rev),
                own("Revision", rev),
            );
            self.link("Revision", ns, rev, own("Configuration", cfg));
            if !svc.is_empty() {
                self.link("Configuration", ns, cfg, own("Service", svc));
            }
        }
    }

    /// Take an owner query's answer (other kinds are ignored).
    pub fn absorb(&mut self, kind: QueryKind, samples: &[PromSample]) {
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
        let (svc, cfg) = self
            .knative_pod
            .get(&key)
            .map_or(("", ""), |(s, c)| (s.as_str(), c.as_str()));
        let controller =
            self.pod_owner
                .get(&key)
                .filter(|(k, _)| k != NO_OWNER)
                .map(|(kind, name)| OwnerRef {
                    kind,
                    name,
                    api_version: None,
                    controller: true,
                });
        let p = PodRef {
            namespace,
            name: pod,
            controller,
            knative_service: svc,
            knative_configuration: cfg,
            ..PodRef::default()
        };
        resolve_pod(&p, self).key
    }
}

impl OwnerFacts for OwnerIndex {
    fn controller(&self, namespace: &str, kind: &str, name: &str) -> Option<Option<Owner>> {
        let child = LINKS.iter().find(|l| l.child == kind)?.child;
        self.controllers
            .get(&(child, (namespace.to_string(), name.to_string())))
            .cloned()
    }

    fn scaled(&self, api_kind: &str) -> Option<WorkloadKind> {
        self.scaled.by_kind(api_kind)
    }
}

fn owner_labels(s: &PromSample) -> (&str, &str) {
    (s.label("owner_kind"), s.label("owner_name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pairs: &[(&str, &str)]) -> PromSample {
        PromSample {
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
