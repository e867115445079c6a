//! The Pod watch that stands in for kube-state-metrics (`analyzer::ksm`): each Pod is
//! cut down to its owner, Knative labels, and per container the requests/limits and
//! an OOM kill's time, as it arrives; the object itself is dropped. Deleted pods are
//! kept (same fields) for the analyzer's long window, as kube-state-metrics series
//! stay in Prometheus after a pod is gone, so usage of a rollout's old pods still
//! counts for its workload.
//!
//! Started on first use: a cluster that runs kube-state-metrics never lists its pods.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
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

use rightsizer_core::quantity::{parse_bytes, parse_millicores, Resource};
use rightsizer_core::rules::Sizes;
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::resolve::{controller, Owner, OwnerRef};
use rightsizer_core::workload::WorkloadKey;

use crate::analyzer::ksm::{FactsSink, WorkloadFacts};
use crate::analyzer::mapping::NO_OWNER;
use crate::clock::unix_now;
use crate::kube::facts::{KubeFacts, NsName, OwnerMirrors};
use crate::kube::mirror::{self, Change, Mirror};
use crate::lock::LockExt;
use rightsizer_core::workload::kind::OwnerTable;

/// Namespace (shared) and pod name.
pub type PodName = (Arc<str>, Box<str>);

/// What the analyzer reads of one Pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodFacts {
    /// The controlling owner, when it is a kind a workload is resolved through.
    pub owner: Option<(WorkloadKind, Box<str>)>,
    /// `serving.knative.dev/service` and `serving.knative.dev/configuration`.
    pub knative: Option<Box<(Box<str>, Box<str>)>>,
    pub containers: Box<[ContainerFacts]>,
    /// The uid of a bare Pod (no controller, no Knative labels): it owns its
    /// workload's Rightsizing (`kube::bare_pods`).
    pub bare_uid: Option<Box<str>>,
}

/// What the analyzer reads of one (regular) container. Packed (no `Option`s): there
/// are two or three of these per pod, 100k pods and more in a large cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerFacts {
    pub name: Arc<str>,
    /// Memory request and limit (bytes), CPU request and limit (millicores); `UNSET`.
    sizes: [u64; 4],
    /// See [`ContainerFacts::oom_killed_at`]; `NO_OOM` for none.
    oom_at: i64,
}

const UNSET: u64 = u64::MAX;
const NO_OOM: i64 = i64::MIN;

impl ContainerFacts {
    pub fn new(name: Arc<str>, memory: Sizes, cpu: Sizes, oom_killed_at: Option<i64>) -> Self {
        let v = |o: Option<u64>| o.unwrap_or(UNSET);
        ContainerFacts {
            name,
            sizes: [
                v(memory.request),
                v(memory.limit),
                v(cpu.request),
                v(cpu.limit),
            ],
            oom_at: oom_killed_at.unwrap_or(NO_OOM),
        }
    }

    fn pair(&self, i: usize) -> Sizes {
        let o = |v: u64| (v != UNSET).then_some(v);
        Sizes {
            request: o(self.sizes[i]),
            limit: o(self.sizes[i + 1]),
        }
    }

    /// Bytes.
    pub fn memory(&self) -> Sizes {
        self.pair(0)
    }

    /// Millicores.
    pub fn cpu(&self) -> Sizes {
        self.pair(2)
    }

    /// The container's last (or current) termination was an OOM kill that finished at
    /// this unix time (0: the status gave no time).
    pub fn oom_killed_at(&self) -> Option<i64> {
        (self.oom_at != NO_OOM).then_some(self.oom_at)
    }
}

/// Shares the few distinct namespace and container names among all pods.
#[derive(Default)]
pub struct Names(Mutex<HashSet<Arc<str>>>);

impl Names {
    fn get(&self, s: &str) -> Arc<str> {
        let mut set = self.0.locked();
        if let Some(a) = set.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        set.insert(a.clone());
        a
    }
}

fn sizes(
    requests: Option<&std::collections::BTreeMap<String, Quantity>>,
    limits: Option<&std::collections::BTreeMap<String, Quantity>>,
    name: &str,
    parse: fn(&str) -> Result<u64, rightsizer_core::quantity::QuantityError>,
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
pub fn derive(pod: &Pod, names: &Names) -> Option<(PodName, PodFacts)> {
    let meta = &pod.metadata;
    let key = (
        names.get(meta.namespace.as_deref()?),
        Box::from(meta.name.as_deref()?),
    );
    // Only kinds that run pods: any other controller makes the pod its own workload, as
    // with kube-state-metrics rows of unknown kinds.
    let refs = meta.owner_references.iter().flatten().map(|o| OwnerRef {
        kind: &o.kind,
        name: &o.name,
        api_version: Some(&o.api_version),
        controller: o.controller == Some(true),
    });
    let ctl = controller(refs);
    let owner = ctl.and_then(|o| {
        WorkloadKind::from_kind(o.api_version, o.kind)
            .filter(|k| k.info().controls_pods)
            .map(|k| (k, Box::from(o.name)))
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
    let bare_uid = (ctl.is_none() && knative.is_none())
        .then(|| meta.uid.as_deref().map(Box::from))
        .flatten();
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
            ContainerFacts::new(
                names.get(&c.name),
                sizes(req, lim, "memory", parse_bytes),
                sizes(req, lim, "cpu", parse_millicores),
                status.and_then(|s| {
                    oom_at(s.last_state.as_ref()).or_else(|| oom_at(s.state.as_ref()))
                }),
            )
        })
        .collect();
    Some((
        key,
        PodFacts {
            owner,
            knative,
            containers,
            bare_uid,
        },
    ))
}

/// Most deleted pods kept; beyond it deletions are forgotten at once (logged).
pub const MAX_RETIRED: usize = 100_000;

/// Live pods, and pods deleted recently.
pub struct PodStore {
    pub live: Arc<Mirror<PodName, PodFacts>>,
    /// Deleted pods with their deletion time (unix seconds).
    retired: Mutex<HashMap<PodName, (u64, PodFacts)>>,
    names: Names,
    /// Owner rows of ReplicaSets and Jobs fed before (`None`: known to have no
    /// controller), with when they were last seen: a deleted Job's pods still resolve
    /// to its CronJob during the window.
    owner_rows: Mutex<HashMap<(WorkloadKind, NsName), OwnerRow>>,
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

    fn changed(&self, c: Change<'_, PodName, PodFacts>) {
        let mut retired = self.retired.locked();
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
        (self.live.len(), self.retired.locked().len())
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
        let mut retired = self.retired.locked();
        retired.retain(|_, (at, _)| *at >= since);
        let mut rows = self.owner_rows.locked();
        let rs = facts.replica_sets.read();
        let jobs = facts.jobs.read();
        let mirrors = OwnerMirrors {
            replica_sets: &rs,
            jobs: &jobs,
        };
        let pods = live
            .iter()
            .map(|(k, p)| (k, p, true))
            .chain(retired.iter().map(|(k, (_, p))| (k, p, false)));
        for ((ns, pod), p, alive) in pods {
            if namespace.is_some_and(|n| n != &**ns) {
                continue;
            }
            feed_owners(&mut rows, (ns, pod), p, now, sink, &mirrors);
            for c in p.containers.iter() {
                if alive {
                    sink.resources(ns, pod, &c.name, Resource::Memory, c.memory());
                    sink.resources(ns, pod, &c.name, Resource::Cpu, c.cpu());
                }
                let recent = c
                    .oom_killed_at()
                    .is_some_and(|at| at == 0 || at >= since as i64);
                if let (true, Some(limit)) = (recent, c.memory().limit) {
                    sink.oom_kill(ns, pod, &c.name, limit);
                }
            }
        }
        rows.retain(|_, (_, seen)| *seen >= since);
        let bare = live.iter().filter_map(|((ns, pod), p)| {
            let uid = p.bare_uid.as_deref()?;
            namespace
                .is_none_or(|n| n == &**ns)
                .then_some((&**ns, &**pod, uid))
        });
        facts.bare_pods.refresh(namespace, bare);
        for ((ns, _), t) in facts.hpas.read().iter() {
            if namespace.is_some_and(|n| n != ns) {
                continue;
            }
            let Some(kind) = WorkloadKind::from_kind(None, &t.kind) else {
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

type OwnerRow = (Option<Owner>, u64);

/// A pod's owner rows: its controller (`<none>` for none), its ReplicaSet's or Job's
/// controller, its Knative labels.
fn feed_owners(
    rows: &mut HashMap<(WorkloadKind, NsName), OwnerRow>,
    (ns, pod): (&str, &str),
    p: &PodFacts,
    now: u64,
    sink: &mut dyn FactsSink,
    mirrors: &OwnerMirrors<'_>,
) {
    match &p.owner {
        None => sink.pod_owner(ns, pod, NO_OWNER, NO_OWNER),
        Some((kind, name)) => {
            sink.pod_owner(ns, pod, kind.info().api_kind, name);
            feed_owner_row(rows, *kind, ns, name, now, sink, mirrors);
        }
    }
    if let Some(kn) = &p.knative {
        sink.knative_pod(ns, pod, &kn.0, &kn.1);
    }
}

/// The owner row of a pod's ReplicaSet or Job: from the watched mirror, else as
/// seen in an earlier cycle of the window. A ReplicaSet or Job known to have no
/// controller gets a `<none>` row, so that its name is not read as a Deployment's
/// or a CronJob's.
fn feed_owner_row(
    rows: &mut HashMap<(WorkloadKind, NsName), OwnerRow>,
    kind: WorkloadKind,
    ns: &str,
    name: &str,
    now: u64,
    sink: &mut dyn FactsSink,
    mirrors: &OwnerMirrors<'_>,
) {
    let Some(table) = kind.owner_table() else {
        return;
    };
    let key = (kind, (ns.to_string(), name.to_string()));
    if let Some(o) = mirrors.table(table).get(&key.1) {
        rows.insert(key.clone(), (o.clone(), now));
    }
    if let Some((o, _)) = rows.get(&key) {
        let (okind, oname) = o
            .as_ref()
            .map_or((NO_OWNER, NO_OWNER), |o| (o.kind.as_str(), o.name.as_str()));
        match table {
            OwnerTable::ReplicaSets => sink.replicaset_owner(ns, name, okind, oname),
            OwnerTable::Jobs => sink.job_owner(ns, name, okind, oname),
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
        let mut task = self.task.locked();
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
        self.task.locked().is_some()
    }

    /// End the watch.
    pub fn stop(&self) {
        if let Some(t) = self.task.locked().take() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const MI: u64 = 1 << 20;

    fn pod(name: &str, extra_meta: Value, containers: Value, statuses: Value) -> Pod {
        let mut meta = json!({"name": name, "namespace": "shop"});
        meta.as_object_mut()
            .unwrap()
            .extend(extra_meta.as_object().unwrap().clone());
        serde_json::from_value(json!({"metadata": meta, "spec": {"containers": containers},
            "status": {"containerStatuses": statuses}}))
        .unwrap()
    }

    fn owned_by(kind: &str, name: &str) -> Value {
        let api_version = match kind {
            "Job" => "batch/v1",
            "Node" => "v1",
            _ => "apps/v1",
        };
        json!({"ownerReferences": [{"apiVersion": api_version, "kind": kind, "name": name,
            "uid": "u", "controller": true}]})
    }

    fn terminated(reason: &str, finished: Option<&str>) -> Value {
        let mut t = json!({"exitCode": 137, "reason": reason});
        if let Some(f) = finished {
            t["finishedAt"] = json!(f);
        }
        json!({"terminated": t})
    }

    #[test]
    fn a_pod_is_cut_down_to_owner_labels_sizes_and_oom_kills() {
        let names = Names::default();
        let app = json!([{"name": "app", "image": "i", "resources": {
            "requests": {"memory": "128Mi", "cpu": "250m"}, "limits": {"memory": "256Mi"}}}]);
        let status = |last: Value, state: Value| {
            json!([{"name": "app", "image": "i",
            "imageID": "", "ready": false, "restartCount": 1, "lastState": last, "state": state}])
        };
        type Case<'a> = (&'a str, Pod, Option<(WorkloadKind, &'a str)>, Option<i64>);
        let cases: Vec<Case> = vec![
            (
                "ReplicaSet owner, OOM in lastState",
                pod(
                    "web-1",
                    owned_by("ReplicaSet", "web-5f"),
                    app.clone(),
                    status(
                        terminated("OOMKilled", Some("2026-11-20T11:00:00Z")),
                        json!({}),
                    ),
                ),
                Some((WorkloadKind::ReplicaSet, "web-5f")),
                Some(1_795_172_400),
            ),
            (
                "Job owner, OOM in the current state (restartPolicy Never)",
                pod(
                    "job-1",
                    owned_by("Job", "nightly-1"),
                    app.clone(),
                    status(json!({}), terminated("OOMKilled", None)),
                ),
                Some((WorkloadKind::Job, "nightly-1")),
                Some(0),
            ),
            (
                "another reason is no OOM",
                pod(
                    "db-0",
                    owned_by("StatefulSet", "db"),
                    app.clone(),
                    status(terminated("Error", Some("2026-11-20T11:00:00Z")), json!({})),
                ),
                Some((WorkloadKind::StatefulSet, "db")),
                None,
            ),
            (
                "an unknown controller: the pod is its own workload",
                pod("node-x", owned_by("Node", "n1"), app.clone(), json!([])),
                None,
                None,
            ),
        ];
        for (what, p, owner, oom) in cases {
            let (key, f) = derive(&p, &names).unwrap();
            assert_eq!(
                (&*key.0, key.1.as_ref()),
                ("shop", p.metadata.name.as_deref().unwrap()),
                "{what}"
            );
            assert_eq!(
                f.owner.as_ref().map(|(k, n)| (*k, n.as_ref())),
                owner,
                "{what}"
            );
            let c = &f.containers[0];
            assert_eq!(c.oom_killed_at(), oom, "{what}");
            assert_eq!(&*c.name, "app");
            assert_eq!(
                (c.memory(), c.cpu()),
                (
                    Sizes {
                        request: Some(128 * MI),
                        limit: Some(256 * MI)
                    },
                    Sizes {
                        request: Some(250),
                        limit: None
                    }
                ),
                "{what}"
            );
        }
        let kn = pod(
            "echo-00001-deployment-x",
            json!({"labels": {"serving.knative.dev/service": "echo",
                "serving.knative.dev/configuration": "echo"}}),
            json!([{"name": "user-container", "image": "i"}]),
            json!([]),
        );
        let (_, f) = derive(&kn, &names).unwrap();
        assert_eq!(
            f.knative.as_deref().map(|(s, c)| (&**s, &**c)),
            Some(("echo", "echo"))
        );
        assert_eq!(f.containers[0].memory(), Sizes::default());
        // Namespace and container names are shared, not copied per pod.
        let (a, _) = derive(&kn, &names).unwrap();
        let (b, _) = derive(&kn, &names).unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
    }

    #[tokio::test]
    async fn deleted_pods_are_kept_until_their_name_comes_back() {
        use kube::runtime::watcher::Event as E;
        let p = |name: &str| pod(name, json!({}), json!([]), json!([]));
        let store = PodStore::new(Gauge::default());
        let events = vec![
            Ok(E::Init),
            Ok(E::InitApply(p("db-0"))),
            Ok(E::InitApply(p("web-1"))),
            Ok(E::InitDone),
            Ok(E::Delete(p("db-0"))),
        ];
        store.clone().run(futures::stream::iter(events)).await;
        assert_eq!(store.len(), (1, 1));
        // A relist that misses web-1 (deleted while the watch was down) keeps it too.
        let relist = vec![Ok(E::Init), Ok(E::InitDone)];
        store.clone().run(futures::stream::iter(relist)).await;
        assert_eq!(store.len(), (0, 2));
        // The StatefulSet's pod comes back under its name: live again, not deleted.
        store
            .clone()
            .run(futures::stream::iter(vec![Ok(E::Apply(p("db-0")))]))
            .await;
        assert_eq!(store.len(), (1, 1));
    }
}

/// Admission, the Pod watch and kube-state-metrics on every owner chain.
#[cfg(test)]
#[path = "pods_identity_tests.rs"]
mod identity_tests;
