//! Stage 6 of the real-node story (issue 22, item 5): a container looping on OOM kills is
//! replaced with the floor within a bounded time. A Deployment of 2 replicas (a budget
//! allowing 1 unavailable) whose container outgrows its 32Mi limit 10 s after each start:
//! the kernel kills it, the kubelet restarts it in the same Pod under the same limit. With
//! `update: evict` the updater evicts the looping Pods one at a time once the analyzer
//! holds the OOM floor, and the new Pods run with at least the floor, in the apiserver
//! and in the cgroup the kernel enforces, and are not killed again.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::updater::{events, ready, uids, DumpOnPanic};
use super::*;

/// Only the OOM floor commits here (no usage evidence is ever enough), so every eviction
/// is the loop's.
const POLICY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: rightsizer-node-e2e-oomloop
  namespace: rightsizer-system
  labels:
    rightsizer.io/policy: "true"
data:
  policy.yaml: |
    precedence: 40
    selector:
      namespaces: ["loop"]
      names: ["looper"]
    mode: enforce
    target: pods
    recommender: seed
    rules:
      evidence: {minSamples: 100000, minHistorySeconds: 0}
      safeguards: {maxStepRatio: 4, cooldownSeconds: 0}
    update:
      mode: evict
"#;

const NAME: &str = "looper";

/// 20 MiB, then 10 s later 40 MiB more, held: past a 32Mi limit, far below the floor.
fn looper() -> String {
    let prog = format!(
        "BEGIN {{ base = sprintf(\\\"%{}s\\\", \\\"\\\"); system(\\\"sleep 10\\\"); more = sprintf(\\\"%{}s\\\", \\\"\\\"); for (;;) system(\\\"sleep 3600\\\") }}",
        20 * MIB,
        40 * MIB
    );
    let d = deployment(NAME, "32Mi", &prog).replace("replicas: 1", "replicas: 2");
    let pdb = format!(
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {{name: {NAME}, namespace: {NS}}}\nspec:\n  maxUnavailable: 1\n  selector: {{matchLabels: {{app: {NAME}}}}}\n"
    );
    format!("{d}---\n{pdb}")
}

fn oom_killed(p: &Value) -> bool {
    let st = &p["status"]["containerStatuses"][0];
    st["lastState"]["terminated"]["reason"] == "OOMKilled"
}

/// The memory cgroup (v1, the kubelet's cgroupfs driver) of a Pod, or of its container.
fn cgroup(p: &Value, container: bool) -> Option<PathBuf> {
    let uid = p["metadata"]["uid"].as_str()?;
    let id = p["status"]["containerStatuses"][0]["containerID"].as_str()?;
    let id = id.rsplit("://").next()?;
    ["burstable", "guaranteed", "besteffort"]
        .iter()
        .map(|class| {
            let base = Path::new("/sys/fs/cgroup/memory/kubepods");
            let pod = if *class == "guaranteed" {
                base.join(format!("pod{uid}"))
            } else {
                base.join(class).join(format!("pod{uid}"))
            };
            if container {
                pod.join(id)
            } else {
                pod
            }
        })
        .find(|d| d.exists())
}

fn cgroup_value(dir: &Path, file: &str) -> u64 {
    let path = dir.join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

pub(super) fn install(env: &Env) {
    env.plane.kubectl_ok(&["apply", "-f", "-"], Some(POLICY));
    env.plane.kubectl_ok(&["apply", "-f", "-"], Some(&looper()));
    env.plane.kubectl_ok(
        &[
            "-n",
            NS,
            "rollout",
            "status",
            &format!("deployment/{NAME}"),
            "--timeout=120s",
        ],
        None,
    );
}

/// Returns the time from the first OOM kill to both Pods replaced and ready.
pub(super) fn an_oom_loop_is_replaced_with_the_floor(env: &Env) -> Duration {
    let _dump = DumpOnPanic(env, "deployment-looper");
    let looping = uids(env, NAME);
    assert_eq!(looping.len(), 2, "{looping:?}");
    // The kernel kills it (exit 137, the Pod's cgroup hit its limit) and the kubelet
    // restarts it in the same Pod.
    let killed = wait_for(60, "a looper container OOM-killed", || {
        pods_of(env, NAME).into_iter().find(oom_killed)
    });
    let st = &killed["status"]["containerStatuses"][0];
    assert_eq!(st["lastState"]["terminated"]["exitCode"], 137, "{st}");
    assert!(st["restartCount"].as_u64() >= Some(1), "{st}");
    assert!(looping.contains_key(killed["metadata"]["name"].as_str().unwrap()));
    assert_eq!(memory_of(&killed, "limits"), Some(32 * MIB));
    let pod_cgroup = cgroup(&killed, false).expect("the looping Pod's memory cgroup");
    assert_eq!(cgroup_value(&pod_cgroup, "memory.limit_in_bytes"), 32 * MIB);
    assert!(cgroup_value(&pod_cgroup, "memory.failcnt") > 0);
    let first_kill: Time =
        serde_json::from_value(st["lastState"]["terminated"]["finishedAt"].clone()).unwrap();
    let since_kill = || {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        Duration::from_secs(now.saturating_sub(first_kill.0.as_second()).max(0) as u64)
    };
    // The floor the analyzer holds for the 32Mi kill: max(limit x 1.2, limit + 100Mi).
    let oom = Rules::default().oom;
    let floor = ((32 * MIB) as f64 * oom.factor).max((32 * MIB + oom.add.0) as f64) as u64;
    let mut saw_loop_restarts = 0;
    let replaced = wait_for(
        240,
        "both looper Pods replaced by ready Pods at the floor",
        || {
            let pods = pods_of(env, NAME);
            for p in &pods {
                let restarts = p["status"]["containerStatuses"][0]["restartCount"]
                    .as_u64()
                    .unwrap_or(0);
                saw_loop_restarts = saw_loop_restarts.max(restarts);
            }
            let done = pods.len() == 2
                && pods.iter().all(|p| {
                    ready(p)
                        && !looping.contains_key(p["metadata"]["name"].as_str().unwrap_or(""))
                        && memory_of(p, "limits").is_some_and(|l| l >= floor)
                        && memory_of(p, "requests").is_some_and(|r| r >= floor)
                });
            done.then_some(pods)
        },
    );
    let took = since_kill();
    eprintln!(
        "first OOM kill -> both looping Pods replaced at the floor: {} s (most restarts of a looping Pod: {saw_loop_restarts}; evictions refused by the budget: {})",
        took.as_secs(),
        events(env, NAME, "EvictionDeferred").len()
    );
    // One eviction per looping Pod, each for the loop, and a line in the Rightsizing.
    let evicted = events(env, NAME, "Evicted");
    assert_eq!(evicted.len(), 2, "{evicted:?}");
    assert!(
        evicted
            .iter()
            .all(|e| e.contains("restarts after OOM kills")),
        "{evicted:?}"
    );
    let rsz = kubectl_json(env, &["-n", NS, "get", "rightsizing", "deployment-looper"]);
    let lines = rsz["status"]["updates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let for_loop = lines
        .iter()
        .filter(|l| {
            l.as_str()
                .is_some_and(|l| l.contains("evicted Pod") && l.contains("OOM kills"))
        })
        .count();
    assert_eq!(for_loop, 2, "{lines:?}");
    // The new Pods grow past the old limit (at 10 s) and run on: the kernel enforces the
    // limit the apiserver stored, and nothing kills them.
    std::thread::sleep(Duration::from_secs(25));
    for p in &replaced {
        let name = p["metadata"]["name"].as_str().unwrap();
        let now = kubectl_json(env, &["-n", NS, "get", "pod", name]);
        let st = &now["status"]["containerStatuses"][0];
        assert_eq!(st["restartCount"], 0, "{st}");
        assert!(st["state"]["running"].is_object(), "{st}");
        let limit = memory_of(&now, "limits").unwrap();
        let dir = cgroup(&now, true).expect("the new container's memory cgroup");
        assert_eq!(
            cgroup_value(&dir, "memory.limit_in_bytes"),
            limit,
            "{}",
            dir.display()
        );
    }
    took
}
