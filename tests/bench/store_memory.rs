//! Memory of the watch stores, measured with a counting allocator (installed here, in a
//! benchmark of its own, so no test binary pays for it):
//!
//! - `pods`: the Pod watch's store (`kube::pods::PodStore`) at 10k and 100k pods (typical
//!   Deployment pods: two containers, the usual labels, annotations, env and status; 1 in 50
//!   OOM-killed), live and after deletion (deleted pods are kept for the window). Needs no
//!   cluster. `BENCH_PODS=10000,100000` sets the sizes.
//! - `watch`: the derived mirror (metadata watch, owner only) against kube's reflector of
//!   whole objects, for `BENCH_OBJECTS` (default 1000) ReplicaSets with bulky metadata, on a
//!   real control plane (tests/cluster/build.sh); says so and skips without one.
//!
//! Run: `cargo bench -p rightsizer --bench store_memory [-- pods|watch]` (default: both).

#[path = "../support/cluster.rs"]
mod cluster;
#[path = "../support/exe.rs"]
mod exe;

use std::time::{Duration, Instant};

use cluster::ControlPlane;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::{json, Value};

/// Live heap bytes of this process (the System allocator plus a counter).
struct Counting;
static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
// A global allocator is unsafe by nature (the workspace denies unsafe code elsewhere).
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(
            new as isize - l.size() as isize,
            std::sync::atomic::Ordering::Relaxed,
        );
        std::alloc::System.realloc(p, l, new)
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    // `cargo bench` passes `--bench`; anything else names the measurements to run. Under
    // `cargo test --all-targets` (no `--bench`) only a small Pod store runs, as a smoke check.
    let benching = std::env::args().any(|a| a == "--bench");
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| picked.is_empty() || picked.iter().any(|p| p == name);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if wants("pods") {
        rt.block_on(pod_store(benching));
    }
    if wants("watch") && benching {
        rt.block_on(watch_store());
    } else if wants("watch") {
        println!("watch store memory: skipped (runs under `cargo bench` only: it starts a control plane)");
    }
}

async fn pod_store(benching: bool) {
    use kube::runtime::watcher::Event as E;
    use rightsizer::kube::pods::PodStore;

    fn live() -> isize {
        LIVE.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn pod(i: usize) -> Pod {
        let ns = format!("team-{:04}", i / 100);
        let app = format!("service-{:04}-api", (i % 100) / 4);
        let rs = format!("{app}-5f4c44fcb9");
        let oom = if i % 50 == 0 {
            json!({"terminated": {"exitCode": 137, "reason": "OOMKilled",
                "startedAt": "2026-11-20T10:00:00Z", "finishedAt": "2026-11-20T11:00:00Z"}})
        } else {
            json!({})
        };
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{rs}-{:05x}", i), "namespace": ns,
                "uid": format!("6f1c2d9e-0000-4000-8000-{i:012}"), "resourceVersion": "123456",
                "creationTimestamp": "2026-11-20T09:00:00Z",
                "labels": {"app": app, "pod-template-hash": "5f4c44fcb9", "version": "v1"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-20T09:00:00Z",
                    "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                    "uid": "0e3b7a52-1111-4000-8000-000000000000", "controller": true,
                    "blockOwnerDeletion": true}]},
            "spec": {"nodeName": "node-17", "serviceAccountName": "default",
                "containers": [
                    {"name": "app", "image": "registry.example/app:1.2.3",
                        "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}],
                        "ports": [{"containerPort": 8080}],
                        "resources": {"requests": {"memory": "512Mi", "cpu": "250m"},
                            "limits": {"memory": "1Gi"}}},
                    {"name": "istio-proxy", "image": "registry.example/proxyv2:1.20",
                        "resources": {"requests": {"memory": "128Mi", "cpu": "100m"},
                            "limits": {"memory": "256Mi", "cpu": "2"}}}]},
            "status": {"phase": "Running", "podIP": "10.1.2.3", "hostIP": "10.0.0.17",
                "startTime": "2026-11-20T09:00:00Z",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "app", "image": "registry.example/app:1.2.3", "imageID": "sha256:abc",
                        "containerID": "containerd://0123456789abcdef", "ready": true,
                        "restartCount": if i % 50 == 0 { 1 } else { 0 },
                        "state": {"running": {"startedAt": "2026-11-20T11:00:01Z"}}, "lastState": oom},
                    {"name": "istio-proxy", "image": "registry.example/proxyv2:1.20",
                        "imageID": "sha256:def", "containerID": "containerd://fedcba9876543210",
                        "ready": true, "restartCount": 0,
                        "state": {"running": {"startedAt": "2026-11-20T09:00:05Z"}}, "lastState": {}}]}}))
        .unwrap()
    }

    let sizes: Vec<usize> = std::env::var("BENCH_PODS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| {
            if benching {
                vec![10_000, 100_000]
            } else {
                vec![1_000]
            }
        });
    println!("pod watch store (kube::pods::PodStore), live heap held:");
    for n in sizes {
        let json_per_pod = serde_json::to_vec(&pod(n / 2)).unwrap().len();
        let live0 = live();
        let store = PodStore::new(Default::default());
        let events = std::iter::once(Ok(E::Init))
            .chain((0..n).map(|i| Ok(E::InitApply(pod(i)))))
            .chain(std::iter::once(Ok(E::InitDone)));
        store.clone().run(futures::stream::iter(events)).await;
        let live1 = live();
        assert_eq!(store.len(), (n, 0));
        let deletes = (0..n).map(|i| Ok(E::Delete(pod(i))));
        store.clone().run(futures::stream::iter(deletes)).await;
        assert_eq!(store.len(), (0, n));
        let live2 = live();
        println!(
            "  {n:>7} pods: live {:>6.1} MiB ({:>4.0} B/pod); after all are deleted (kept for the window) {:>6.1} MiB ({:>4.0} B/pod); one Pod as JSON {json_per_pod} B",
            (live1 - live0) as f64 / (1 << 20) as f64,
            (live1 - live0) as f64 / n as f64,
            (live2 - live0) as f64 / (1 << 20) as f64,
            (live2 - live0) as f64 / n as f64,
        );
        drop(store);
    }
}

async fn watch_store() {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use kube::api::PartialObjectMeta;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    use rightsizer::kube::facts::controller_of;
    use rightsizer::kube::mirror::{self, Mirror};

    fn live() -> isize {
        LIVE.load(std::sync::atomic::Ordering::Relaxed)
    }

    if let Some(reason) = cluster::missing_prerequisite() {
        println!("watch store memory: skipped, no control plane here: {reason}");
        return;
    }
    let plane = ControlPlane::start().expect("control plane starts");
    let ns = "kw-bench";
    plane.kubectl_ok(&["create", "namespace", ns], None);
    let n: usize = std::env::var("BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let bulky = "x".repeat(1500);
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("bench-{i}"),
                    "labels": {"app": format!("bench-{i}"), "pod-template-hash": "5f4c44fcb9"},
                    "annotations": {"deployment.kubernetes.io/revision": "3", "note": bulky}},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": format!("bench-{i}")}},
                    "template": {"metadata": {"labels": {"app": format!("bench-{i}")}},
                        "spec": {"containers": [{"name": "app", "image": "busybox",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "resources": {"requests": {"memory": "64Mi", "cpu": "50m"}}}]}}}})
        })
        .collect();
    let existing = plane.kubectl_ok(&["-n", ns, "get", "rs", "-o", "name"], None);
    if existing.lines().count() < n {
        let t = Instant::now();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        plane.kubectl_ok(&["-n", ns, "create", "-f", "-"], Some(&list.to_string()));
        eprintln!("created {n} ReplicaSets in {:?}", t.elapsed());
    }
    let client = plane.client().await;

    let live0 = live();
    let t = Instant::now();
    let m = Mirror::new(Default::default());
    let stream = watcher(
        Api::<PartialObjectMeta<ReplicaSet>>::namespaced(client.clone(), ns),
        Default::default(),
    )
    .default_backoff();
    let task = tokio::spawn(mirror::run(
        "bench",
        stream,
        m.clone(),
        |o: &PartialObjectMeta<ReplicaSet>| {
            Some((
                (o.metadata.namespace.clone()?, o.metadata.name.clone()?),
                controller_of(&o.metadata),
            ))
        },
        |_| {},
    ));
    m.synced().await;
    let mirror_sync = t.elapsed();
    // Let the list's buffers go before reading the heap.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live1 = live();

    let t = Instant::now();
    let (store, writer) = reflector::store::<ReplicaSet>();
    let refl = reflector(
        writer,
        watcher(
            Api::<ReplicaSet>::namespaced(client, ns),
            Default::default(),
        ),
    )
    .applied_objects();
    let drive = tokio::spawn(async move {
        let mut refl = std::pin::pin!(refl);
        while refl.next().await.is_some() {}
    });
    store.wait_until_ready().await.unwrap();
    let full_sync = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live2 = live();
    let full_json: usize = store
        .state()
        .iter()
        .map(|o| serde_json::to_vec(&**o).unwrap().len())
        .sum();

    println!("watch store memory, {n} ReplicaSets (live heap held after the first list):");
    println!(
        "  rightsizer mirror (metadata watch, owner only): {:>7} KiB total, {:>6.0} B/object, first list {:?}",
        (live1 - live0) / 1024,
        (live1 - live0) as f64 / m.len() as f64,
        mirror_sync
    );
    println!(
        "  kube reflector (whole objects):                 {:>7} KiB total, {:>6.0} B/object, first list {:?}",
        (live2 - live1) / 1024,
        (live2 - live1) as f64 / store.state().len() as f64,
        full_sync
    );
    println!("  whole objects as JSON: {} B/object", full_json / n.max(1));
    task.abort();
    drive.abort();
    plane.kubectl_ok(&["delete", "namespace", ns, "--wait=false"], None);
}
