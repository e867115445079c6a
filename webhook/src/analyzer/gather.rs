//! One cycle's answers, folded per pod-container as they arrive, so only the answers in
//! flight are held in memory.

use std::collections::HashMap;

use rightsizer_core::analysis::queries::{self, QueryKind, Window};
use rightsizer_core::quantity::Resource;
use rightsizer_core::rules::Sizes;
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::WorkloadKey;

use super::mapping::OwnerIndex;
use super::prom::PromSample;

use rightsizer_core::analysis::compute::PodFigures;

/// Per pod-container figures of one cycle.
#[derive(Debug, Default, Clone)]
pub(super) struct PodData {
    pub(super) mem: [PodFigures; 2],
    pub(super) cpu: [PodFigures; 2],
    pub(super) samples: [u64; 2],
    pub(super) first: Option<f64>,
}

fn win_ix(w: Window) -> usize {
    match w {
        Window::Short => 0,
        Window::Long => 1,
    }
}

pub(super) type PodKey = (String, String, String);

fn pod_key(s: &PromSample) -> PodKey {
    (
        s.label("namespace").to_string(),
        s.label("pod").to_string(),
        s.label("container").to_string(),
    )
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct KnFigures {
    pub(super) conc_p95: Option<f64>,
    pub(super) target: Option<f64>,
    pub(super) queue_p95: Option<f64>,
}

pub(super) fn max_into(slot: &mut Option<f64>, v: f64) {
    *slot = Some(slot.map_or(v, |x| x.max(v)));
}

pub(super) fn max_u64_into(slot: &mut Option<u64>, v: u64) {
    *slot = Some(slot.map_or(v, |x| x.max(v)));
}

/// One cycle's answers, folded as they arrive.
#[derive(Default)]
pub(super) struct Acc {
    pub(super) owners: OwnerIndex,
    pub(super) pods: HashMap<PodKey, PodData>,
    pub(super) current: HashMap<PodKey, (Sizes, Sizes)>,
    pub(super) oom: Vec<(PodKey, u64)>,
    pub(super) hpa: HashMap<WorkloadKey, Vec<Resource>>,
    pub(super) kn_raw: Vec<(WorkloadKey, QueryKind, f64)>,
    /// kube-state-metrics' live bare Pods: (namespace, pod, uid).
    pub(super) bare_pods: Vec<(String, String, String)>,
}

/// The Knative workload a normalised revision series belongs to.
fn knative_key(s: &PromSample) -> Option<WorkloadKey> {
    rightsizer_core::workload::resolve::knative_workload(
        s.label(queries::KN_NS),
        s.label(queries::KN_SVC),
        s.label(queries::KN_CFG),
    )
}

impl Acc {
    /// Leave out what was read of the namespaces `gone` says (a scope that failed in
    /// part): nothing of them is decided this cycle.
    pub(super) fn forget(&mut self, gone: impl Fn(&str) -> bool) {
        self.pods.retain(|k, _| !gone(&k.0));
        self.current.retain(|k, _| !gone(&k.0));
        self.oom.retain(|(k, _)| !gone(&k.0));
    }

    pub(super) fn absorb(&mut self, kind: QueryKind, samples: &[PromSample]) {
        match kind {
            QueryKind::PodOwner => self.owners.add_pod_owners(samples),
            QueryKind::ReplicaSetOwner => self.owners.add_replicaset_owners(samples),
            QueryKind::JobOwner => self.owners.add_job_owners(samples),
            QueryKind::KnativePodLabels => self.owners.add_knative_pod_labels(samples),
            QueryKind::BarePods => self.bare_pods.extend(samples.iter().map(|s| {
                let l = |k| s.label(k).to_string();
                (l("namespace"), l("pod"), l("uid"))
            })),
            QueryKind::KnativeConcurrencyP95
            | QueryKind::KnativeTarget
            | QueryKind::KnativeQueueDepthP95 => {
                self.owners.add_knative_revisions(samples);
                self.kn_raw.extend(
                    samples
                        .iter()
                        .filter_map(|s| knative_key(s).map(|w| (w, kind, s.value))),
                );
            }
            QueryKind::Requests | QueryKind::Limits => {
                for s in samples {
                    let (r, v) = match s.label("resource") {
                        "memory" => (Resource::Memory, s.value.ceil()),
                        "cpu" => (Resource::Cpu, (s.value * 1000.0).round()),
                        _ => continue,
                    };
                    let v = Some(v.max(0.0) as u64);
                    let sizes = if kind == QueryKind::Requests {
                        Sizes {
                            request: v,
                            limit: None,
                        }
                    } else {
                        Sizes {
                            request: None,
                            limit: v,
                        }
                    };
                    let (ns, pod) = (s.label("namespace"), s.label("pod"));
                    self.resources(ns, pod, s.label("container"), r, sizes);
                }
            }
            QueryKind::OomLimit => {
                for s in samples {
                    let limit = s.value.max(0.0) as u64;
                    self.oom_kill(
                        s.label("namespace"),
                        s.label("pod"),
                        s.label("container"),
                        limit,
                    );
                }
            }
            QueryKind::Hpa => {
                for s in samples {
                    let Some(k) = WorkloadKind::from_kind(None, s.label("scaletargetref_kind"))
                    else {
                        continue;
                    };
                    let w = WorkloadKey {
                        namespace: s.label("namespace").to_string(),
                        kind: k,
                        name: s.label("scaletargetref_name").to_string(),
                    };
                    let r = match s.label("metric_name") {
                        "memory" => Resource::Memory,
                        "cpu" => Resource::Cpu,
                        _ => continue,
                    };
                    self.hpa(w, r);
                }
            }
            QueryKind::NamespaceSizes => {}
            QueryKind::MemAvg(w)
            | QueryKind::MemP95(w)
            | QueryKind::MemMax(w)
            | QueryKind::CpuAvg(w)
            | QueryKind::CpuP95(w)
            | QueryKind::CpuMax(w)
            | QueryKind::Samples(w) => {
                let i = win_ix(w);
                for s in samples {
                    let d = self.pods.entry(pod_key(s)).or_default();
                    let v = s.value;
                    match kind {
                        QueryKind::MemAvg(_) => d.mem[i].avg = Some(v),
                        QueryKind::MemP95(_) => d.mem[i].p95 = Some(v),
                        QueryKind::MemMax(_) => d.mem[i].max = Some(v),
                        // CPU in millicores.
                        QueryKind::CpuAvg(_) => d.cpu[i].avg = Some(v * 1000.0),
                        QueryKind::CpuP95(_) => d.cpu[i].p95 = Some(v * 1000.0),
                        QueryKind::CpuMax(_) => d.cpu[i].max = Some(v * 1000.0),
                        _ => d.samples[i] = v.max(0.0) as u64,
                    }
                }
            }
            QueryKind::FirstSample => {
                for s in samples {
                    self.pods.entry(pod_key(s)).or_default().first = Some(s.value);
                }
            }
        }
    }
}

/// The rows kube-state-metrics answers with, one at a time.
pub trait FactsSink {
    /// A pod's controlling owner.
    fn pod_owner(&mut self, namespace: &str, pod: &str, kind: &str, name: &str);
    fn replicaset_owner(&mut self, namespace: &str, rs: &str, kind: &str, name: &str);
    fn job_owner(&mut self, namespace: &str, job: &str, kind: &str, name: &str);
    /// A pod labelled `serving.knative.dev/service` / `configuration`.
    fn knative_pod(&mut self, namespace: &str, pod: &str, service: &str, configuration: &str);
    /// What a live pod's container runs with (bytes, millicores).
    fn resources(&mut self, namespace: &str, pod: &str, container: &str, r: Resource, s: Sizes);
    /// A container whose last termination was an OOM kill, with its memory limit.
    fn oom_kill(&mut self, namespace: &str, pod: &str, container: &str, memory_limit: u64);
    /// An HPA scales `workload` on `r`.
    fn hpa(&mut self, workload: WorkloadKey, r: Resource);
}

/// The rows kube-state-metrics answers with, whichever source gives them.
impl FactsSink for Acc {
    fn pod_owner(&mut self, namespace: &str, pod: &str, kind: &str, name: &str) {
        self.owners.pod_owner(namespace, pod, kind, name);
    }

    fn replicaset_owner(&mut self, namespace: &str, rs: &str, kind: &str, name: &str) {
        self.owners.replicaset_owner(namespace, rs, kind, name);
    }

    fn job_owner(&mut self, namespace: &str, job: &str, kind: &str, name: &str) {
        self.owners.job_owner(namespace, job, kind, name);
    }

    fn knative_pod(&mut self, namespace: &str, pod: &str, service: &str, configuration: &str) {
        self.owners
            .knative_pod(namespace, pod, service, configuration);
    }

    fn resources(&mut self, namespace: &str, pod: &str, container: &str, r: Resource, s: Sizes) {
        let key = (
            namespace.to_string(),
            pod.to_string(),
            container.to_string(),
        );
        let (mem, cpu) = self.current.entry(key).or_default();
        let slot = match r {
            Resource::Memory => mem,
            Resource::Cpu => cpu,
        };
        if let Some(v) = s.request {
            max_u64_into(&mut slot.request, v);
        }
        if let Some(v) = s.limit {
            max_u64_into(&mut slot.limit, v);
        }
    }

    fn oom_kill(&mut self, namespace: &str, pod: &str, container: &str, memory_limit: u64) {
        let key = (
            namespace.to_string(),
            pod.to_string(),
            container.to_string(),
        );
        self.oom.push((key, memory_limit));
    }

    fn hpa(&mut self, workload: WorkloadKey, r: Resource) {
        let v = self.hpa.entry(workload).or_default();
        if !v.contains(&r) {
            v.push(r);
        }
    }
}
