//! The Pod watch that stands in for kube-state-metrics (`analyzer::ksm`): each Pod is
//! cut down to its owner, Knative labels, and per container the requests/limits and
//! an OOM kill's time, as it arrives; the object itself is dropped. Deleted pods are
//! kept (same fields) for the analyzer's long window, as kube-state-metrics series
//! stay in Prometheus after a pod is gone, so usage of a rollout's old pods still
//! counts for its workload.
//!
//! Started on first use: a cluster that runs kube-state-metrics never lists its pods.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::Stream;
use k8s_openapi::api::core::v1::{ContainerState, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use prometheus_client::metrics::gauge::Gauge;
use tokio::task::JoinHandle;

use crate::analyzer::cache::unix_now;
use crate::analyzer::ksm::{FactsSink, WorkloadFacts};
use crate::analyzer::mapping::NO_OWNER;
use crate::kube::facts::{controller_of, KubeFacts, NsName, Owner};
use crate::kube::mirror::{self, Change, Mirror};
use crate::quantity::{parse_bytes, parse_millicores, Resource};
use crate::recommendation::{WorkloadKey, WorkloadKind};
use crate::rules::Sizes;

/// Namespace (shared) and pod name.
pub type PodKey = (Arc<str>, Box<str>);

/// What the analyzer reads of one Pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodFacts {
    /// The controlling owner, when it is a kind a workload is resolved through.
    pub owner: Option<(WorkloadKind, Box<str>)>,
    /// `serving.knative.dev/service` and `serving.knative.dev/configuration`.
    pub knative: Option<Box<(Box<str>, Box<str>)>>,
    pub containers: Box<[ContainerFacts]>,
}

/// What the analyzer reads of one (regular) container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerFacts {
    pub name: Arc<str>,
    /// Bytes.
    pub memory: Sizes,
    /// Millicores.
    pub cpu: Sizes,
    /// The container's last (or current) termination was an OOM kill that finished at
    /// this unix time (0: the status gave no time).
    pub oom_killed_at: Option<i64>,
}

/// Shares the few distinct namespace and container names among all pods.
#[derive(Default)]
pub struct Names(Mutex<HashSet<Arc<str>>>);

impl Names {
    fn get(&self, s: &str) -> Arc<str> {
        let mut set = lock(&self.0);
        if let Some(a) = set.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        set.insert(a.clone());
        a
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sizes(
    requests: Option<&std::collections::BTreeMap<String, Quantity>>,
    limits: Option<&std::collections::BTreeMap<String, Quantity>>,
    name: &str,
    parse: fn(&str) -> Result<u64, crate::quantity::QuantityError>,
) -> Sizes {
    let get = |m: Option<&std::collections::BTreeMap<String, Quantity>>| {
        m.and_then(|m| m.get(name)).and_then(|q| parse(&q.0).ok())
    };
    Sizes {
        request: get(requests),
        limit: get(limits),
    }
}

fn oom_at(state: Option<&ContainerState>) -> Option<i64> {
    let t = state?.terminated.as_ref()?;
    (t.reason.as_deref() == Some("OOMKilled"))
        .then(|| t.finished_at.as_ref().map_or(0, |f| f.0.as_second()))
}

/// Cut a Pod down to what the analyzer reads.
pub fn derive(pod: &Pod, names: &Names) -> Option<(PodKey, PodFacts)> {
    let meta = &pod.metadata;
    let key = (
        names.get(meta.namespace.as_deref()?),
        Box::from(meta.name.as_deref()?),
    );
    let owner = controller_of(meta).and_then(|Owner { kind, name }| {
        match WorkloadKind::parse(&kind)? {
            k @ (WorkloadKind::ReplicaSet
            | WorkloadKind::Job
            | WorkloadKind::StatefulSet
            | WorkloadKind::DaemonSet) => Some((k, name.into_boxed_str())),
            // Any other controller: the pod counts as its own workload, as with
            // kube-state-metrics rows of unknown kinds.
            _ => None,
        }
    });
    let labels = meta.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let knative = match (
        label("serving.knative.dev/service"),
        label("serving.knative.dev/configuration"),
    ) {
        (None, None) => None,
        (s, c) => Some(Box::new((
            Box::from(s.unwrap_or_default()),
            Box::from(c.unwrap_or_default()),
        ))),
    };
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let res = c.resources.as_ref();
            let (req, lim) = (
                res.and_then(|r| r.requests.as_ref()),
                res.and_then(|r| r.limits.as_ref()),
            );
            let status = statuses.iter().find(|s| s.name == c.name);
            ContainerFacts {
                name: names.get(&c.name),
                memory: sizes(req, lim, "memory", parse_bytes),
                cpu: sizes(req, lim, "cpu", parse_millicores),
                oom_killed_at: status.and_then(|s| {
                    oom_at(s.last_state.as_ref()).or_else(|| oom_at(s.state.as_ref()))
                }),
            }
        })
        .collect();
    Some((
        key,
        PodFacts {
            owner,
            knative,
            containers,
        },
    ))
}

/// Most deleted pods kept; beyond it deletions are forgotten at once (logged).
pub const MAX_RETIRED: usize = 100_000;

/// Live pods, and pods deleted recently.
pub struct PodStore {
    pub live: Arc<Mirror<PodKey, PodFacts>>,
    /// Deleted pods with their deletion time (unix seconds).
    retired: Mutex<HashMap<PodKey, (u64, PodFacts)>>,
    names: Names,
    /// Owner rows of ReplicaSets and Jobs fed before, with when they were last seen:
    /// a deleted Job's pods still resolve to its CronJob during the window.
    owner_rows: Mutex<HashMap<(WorkloadKind, NsName), (Owner, u64)>>,
}

impl PodStore {
    pub fn new(size: Gauge) -> Arc<Self> {
        Arc::new(PodStore {
            live: Mirror::new(size),
            retired: Mutex::new(HashMap::new()),
            names: Names::default(),
            owner_rows: Mutex::new(HashMap::new()),
        })
    }

    /// Drive a Pod watch stream into the store (until the stream ends).
    pub async fn run<S>(self: Arc<Self>, stream: S)
    where
        S: Stream<Item = Result<watcher::Event<Pod>, watcher::Error>>,
    {
        let me = self.clone();
        mirror::run(
            "pods",
            stream,
            self.live.clone(),
            |p: &Pod| derive(p, &me.names),
            |c| me.changed(c),
        )
        .await
    }

    fn changed(&self, c: Change<'_, PodKey, PodFacts>) {
        let mut retired = lock(&self.retired);
        match c {
            // A pod name can come back (StatefulSets): the live pod wins.
            Change::Upsert(k, _) => {
                retired.remove(k);
            }
            Change::Remove(k, v) if retired.len() < MAX_RETIRED => {
                retired.insert(k.clone(), (unix_now(), v.clone()));
            }
            Change::Remove(k, _) => {
                tracing::warn!(namespace = %k.0, pod = %k.1, "more than {MAX_RETIRED} deleted pods in the window; forgetting this one");
            }
        }
    }

    /// Pods held: live and deleted.
    pub fn len(&self) -> (usize, usize) {
        (self.live.len(), lock(&self.retired).len())
    }

    /// See [`WorkloadFacts::feed`]; owner chains and HPAs come from `facts`.
    pub fn feed(
        &self,
        facts: &KubeFacts,
        since: u64,
        namespace: Option<&str>,
        sink: &mut dyn FactsSink,
    ) {
        let now = unix_now();
        let live = self.live.read();
        let mut retired = lock(&self.retired);
        retired.retain(|_, (at, _)| *at >= since);
        let mut rows = lock(&self.owner_rows);
        let rs = facts.replica_sets.read();
        let jobs = facts.jobs.read();
        let pods = live
            .iter()
            .map(|(k, p)| (k, p, true))
            .chain(retired.iter().map(|(k, (_, p))| (k, p, false)));
        for ((ns, pod), p, alive) in pods {
            if namespace.is_some_and(|n| n != &**ns) {
                continue;
            }
            match &p.owner {
                None => sink.pod_owner(ns, pod, NO_OWNER, NO_OWNER),
                Some((kind, name)) => {
                    sink.pod_owner(ns, pod, kind.as_str(), name);
                    feed_owner_row(&mut rows, *kind, ns, name, now, sink, &rs, &jobs);
                }
            }
            if let Some(kn) = &p.knative {
                sink.knative_pod(ns, pod, &kn.0, &kn.1);
            }
            for c in p.containers.iter() {
                if alive {
                    sink.resources(ns, pod, &c.name, Resource::Memory, c.memory);
                    sink.resources(ns, pod, &c.name, Resource::Cpu, c.cpu);
                }
                let recent = c
                    .oom_killed_at
                    .is_some_and(|at| at == 0 || at >= since as i64);
                if let (true, Some(limit)) = (recent, c.memory.limit) {
                    sink.oom_kill(ns, pod, &c.name, limit);
                }
            }
        }
        rows.retain(|_, (_, seen)| *seen >= since);
        for ((ns, _), t) in facts.hpas.read().iter() {
            if namespace.is_some_and(|n| n != ns) {
                continue;
            }
            let Some(kind) = WorkloadKind::parse(&t.kind) else {
                continue;
            };
            for r in &t.resources {
                let w = WorkloadKey {
                    namespace: ns.clone(),
                    kind,
                    name: t.name.clone(),
                };
                sink.hpa(w, *r);
            }
        }
    }
}

/// The owner row of a pod's ReplicaSet or Job: from the watched mirror, else as
/// seen in an earlier cycle of the window.
#[allow(clippy::too_many_arguments)]
fn feed_owner_row(
    rows: &mut HashMap<(WorkloadKind, NsName), (Owner, u64)>,
    kind: WorkloadKind,
    ns: &str,
    name: &str,
    now: u64,
    sink: &mut dyn FactsSink,
    rs: &HashMap<NsName, Option<Owner>>,
    jobs: &HashMap<NsName, Option<Owner>>,
) {
    let mirror = match kind {
        WorkloadKind::ReplicaSet => rs,
        WorkloadKind::Job => jobs,
        _ => return,
    };
    let key = (kind, (ns.to_string(), name.to_string()));
    if let Some(Some(o)) = mirror.get(&key.1) {
        rows.insert(key.clone(), (o.clone(), now));
    }
    if let Some((o, _)) = rows.get(&key) {
        match kind {
            WorkloadKind::ReplicaSet => sink.replicaset_owner(ns, name, &o.kind, &o.name),
            _ => sink.job_owner(ns, name, &o.kind, &o.name),
        }
    }
}

/// The Pod watch as the analyzer's [`WorkloadFacts`], started on first use.
pub struct PodWatch {
    client: Client,
    pub store: Arc<PodStore>,
    facts: Arc<KubeFacts>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl PodWatch {
    pub fn new(client: Client, facts: Arc<KubeFacts>, size: Gauge) -> Arc<Self> {
        Arc::new(PodWatch {
            client,
            store: PodStore::new(size),
            facts,
            task: Mutex::new(None),
        })
    }

    /// Start the watch (once).
    pub fn start(&self) {
        let mut task = lock(&self.task);
        if task.is_none() {
            tracing::info!("watching pods (owners, requests/limits, OOM kills) for the analyzer");
            let stream = watcher(
                Api::<Pod>::all(self.client.clone()),
                watcher::Config::default(),
            )
            .default_backoff();
            *task = Some(tokio::spawn(self.store.clone().run(stream)));
        }
    }

    pub fn is_started(&self) -> bool {
        lock(&self.task).is_some()
    }

    /// End the watch.
    pub fn stop(&self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

impl WorkloadFacts for PodWatch {
    fn ready(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        self.start();
        Box::pin(async move {
            tokio::time::timeout(timeout, self.store.live.synced())
                .await
                .is_ok()
        })
    }

    fn feed(&self, since: u64, namespace: Option<&str>, sink: &mut dyn FactsSink) {
        self.store.feed(&self.facts, since, namespace, sink);
    }
}
