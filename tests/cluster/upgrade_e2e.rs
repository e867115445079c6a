//! Upgrades keep everything (issue 24): on a real kube-apiserver v1.20.2, the previous
//! version (tests/upgrade/PREVIOUS: its manifests, its binary, the flags its Deployment
//! ships) runs two replicas behind a Service-like proxy and commits values to Rightsizings
//! (memory and CPU, their cooldowns, an OOM hold). Then the upgrade as `kubectl apply -k`
//! and a rolling update do it: this tree's CRD, RBAC and webhook configuration applied over,
//! then one replica replaced at a time (a new one ready before an old one leaves, so an old
//! and a new one serve side by side). Meanwhile Pods are created through the apiserver
//! without a pause. Afterwards every Rightsizing says what it said (committed values,
//! cooldowns, hold), none was rewritten (same resourceVersion), and every Pod was admitted
//! with the committed values, by one version or the other. Last, the new version's own
//! rolling restart, with Pods created in parallel while each replica stops.

use crate::cluster::{self, admin_get, admin_status, counter_sum, ControlPlane, TlsFiles, Webhook};
use crate::previous;
use crate::prometheus::TestProm;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::Value;

mod inputs;
mod proxy;
mod shipped;

use inputs::{fixtures, history, registration, review, sized, web_pod, Sized};
use proxy::Proxy;
use shipped::Shipped;

const NS: &str = "upg-shop";
const SYS: &str = "rightsizer-system";
const H: u64 = 3600;
/// Time between analyzer cycles for both versions (the shipped 5m would make the test wait).
const INTERVAL: &str = "5s";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A replica: which version, its process, and the reviews the test sent it directly
/// (not the apiserver's).
struct Replica {
    name: &'static str,
    version: &'static str,
    hook: Webhook,
    direct: std::cell::Cell<f64>,
}

struct Env {
    plane: ControlPlane,
    tls: TlsFiles,
    prom: TestProm,
    work: PathBuf,
    kubeconfig: PathBuf,
    /// Proxy and Pod creator: they run while the test thread blocks on kubectl.
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn start(
        &self,
        exe: &Path,
        shipped: &Shipped,
        version: &'static str,
        name: &'static str,
    ) -> Replica {
        let addr: SocketAddr = format!("127.0.0.1:{}", cluster::free_port())
            .parse()
            .unwrap();
        let mut args = vec![
            "--tls-cert".to_string(),
            self.tls.cert.display().to_string(),
            "--tls-key".to_string(),
            self.tls.key.display().to_string(),
        ];
        args.extend(shipped.args.iter().cloned());
        let mut env = shipped.env(&self.prom.url());
        env.extend([
            ("POD_NAMESPACE".to_string(), SYS.to_string()),
            ("POD_NAME".to_string(), name.to_string()),
            ("RIGHTSIZER_ENFORCEMENT".to_string(), "true".to_string()),
            (
                "RIGHTSIZER_ANALYZER_INTERVAL".to_string(),
                INTERVAL.to_string(),
            ),
        ]);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let log = self.work.join(format!("{name}.log"));
        let hook = Webhook::start_exe(exe, addr, &self.kubeconfig, &args, &env, log)
            .unwrap_or_else(|e| panic!("{name} ({version}) starts: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .rt
            .block_on(admin_status(hook.admin, "/readyz"))
            .map(|r| r.0)
            != Ok(200)
        {
            assert!(
                Instant::now() < deadline,
                "{name} ({version}) never ready:\n{}",
                hook.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Replica {
            name,
            version,
            hook,
            direct: Default::default(),
        }
    }

    fn metric(&self, r: &Replica, family: &str) -> f64 {
        let text = self
            .rt
            .block_on(admin_get(r.hook.admin, "/metrics"))
            .unwrap_or_default();
        counter_sum(&text, family, &[])
    }

    /// Reviews the apiserver sent `r`.
    fn reviews(&self, r: &Replica) -> f64 {
        self.metric(r, "rightsizer_admission_reviews_total") - r.direct.get()
    }

    /// What `r` sizes in a Pod review sent to it directly.
    fn ask(&self, r: &Replica, pod: &Value) -> Sized {
        r.direct.set(r.direct.get() + 1.0);
        self.rt.block_on(review(r.hook.addr, &self.tls.ca_pem, pod))
    }

    fn cycles(&self, r: &Replica) -> f64 {
        self.metric(r, "rightsizer_analyzer_cycle_duration_seconds_count")
    }

    fn leader(&self) -> String {
        let out = self.plane.kubectl(
            &[
                "-n",
                SYS,
                "get",
                "lease",
                "rightsizer-leader",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every Rightsizing of the namespace: name -> (resourceVersion, status).
    fn rightsizings(&self) -> BTreeMap<String, (String, Value)> {
        let text = self
            .plane
            .kubectl_ok(&["-n", NS, "get", "rightsizings", "-o", "json"], None);
        let list: Value = serde_json::from_str(&text).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap().to_string(),
                    (
                        o["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                        o["status"].clone(),
                    ),
                )
            })
            .collect()
    }

    /// What the apiserver logged about calling the webhook (a failed call names its error).
    fn webhook_calls(&self) -> String {
        let log = std::fs::read_to_string(self.plane.dir.join("apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("webhook")).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Wait until `r` has finished `n` more analyzer cycles.
    fn wait_cycles(&self, r: &Replica, n: f64) {
        let base = self.cycles(r);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.cycles(r) < base + n {
            assert!(
                Instant::now() < deadline,
                "{} ran no {n} cycles in 60 s:\n{}",
                r.name,
                r.hook.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_leader(&self, among: &[&Replica]) -> String {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let holder = self.leader();
            if among.iter().any(|r| r.name == holder) {
                return holder;
            }
            assert!(
                Instant::now() < deadline,
                "no leader among {:?} (holder {holder:?})",
                among.iter().map(|r| r.name).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One Pod created during the upgrade: when (since the creator started) and what the
/// apiserver stored, or why it refused.
struct Created {
    at: Duration,
    outcome: Result<Sized, String>,
}

/// Lanes of Pod creation while a replica leaves: enough that reviews are in flight when it
/// stops (an abrupt stop then loses some; a graceful one none).
const BURST_LANES: usize = 3;

/// The Pod creator's switches: `stop` ends it; while `burst` is on, every lane creates
/// without a pause, otherwise one lane every 150 ms.
#[derive(Clone, Default)]
struct Switches {
    stop: Arc<AtomicBool>,
    burst: Arc<AtomicBool>,
}

/// Create Pods of web until `stop`, recording each outcome.
fn creator(env: &Env, rs: Value, s: Switches) -> Arc<Mutex<Vec<Created>>> {
    let out: Arc<Mutex<Vec<Created>>> = Arc::default();
    let client = env.rt.block_on(env.plane.client());
    let start = Instant::now();
    for lane in 0..BURST_LANES {
        let (record, s, api) = (
            out.clone(),
            s.clone(),
            Api::<Pod>::namespaced(client.clone(), NS),
        );
        let pod: Pod = serde_json::from_value(web_pod(&rs)).unwrap();
        env.rt.spawn(async move {
            while !s.stop.load(Ordering::Relaxed) {
                let burst = s.burst.load(Ordering::Relaxed);
                if lane > 0 && !burst {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let at = start.elapsed();
                let outcome = match api.create(&PostParams::default(), &pod).await {
                    Ok(p) => Ok(sized(&serde_json::to_value(&p).unwrap())),
                    Err(e) => Err(e.to_string()),
                };
                record.lock().unwrap().push(Created { at, outcome });
                if !burst {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
        });
    }
    out
}

/// One step of a rolling update: `new` (ready) joins the Service, then `old` leaves it
/// and stops (SIGTERM, drained), with Pods created in parallel meanwhile when `burst`.
/// Returns the reviews the apiserver sent `old`.
fn roll(
    env: &Env,
    proxy: &Proxy,
    switches: &Switches,
    mut old: Replica,
    new: &Replica,
    burst: bool,
) -> (&'static str, &'static str, f64) {
    proxy.add(new.hook.addr);
    std::thread::sleep(Duration::from_secs(2));
    switches.burst.store(burst, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    proxy.remove(old.hook.addr);
    let served = (old.name, old.version, env.reviews(&old));
    old.hook.stop();
    std::thread::sleep(Duration::from_millis(500));
    switches.burst.store(false, Ordering::Relaxed);
    served
}

#[test]
#[cfg_attr(
    not(all(has_control_plane, has_previous_version)),
    ignore = "needs the control plane (tests/cluster/build.sh) and the previous version (tests/upgrade/build.sh)"
)]
fn an_upgrade_keeps_every_rightsizing_and_admission_never_stops() {
    if let Some(why) = cluster::missing_prerequisite() {
        panic!("the control plane cannot run here: {why}");
    }
    let (prev_exe, prev_tree) = match (previous::binary(), previous::tree()) {
        (Ok(b), Ok(t)) => (b, t),
        (Err(e), _) | (_, Err(e)) => panic!("{e}"),
    };
    let started = Instant::now();
    let plane = ControlPlane::start().expect("control plane");
    let work = plane.dir.join("upgrade");
    std::fs::create_dir_all(&work).unwrap();
    let tls = cluster::generate_tls(&work);
    let t0 = now() - now() % 60;
    let prom = TestProm::start_with(&history(t0).om);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kubeconfig = plane.kubeconfig_as(cluster::WEBHOOK_USER);
    let env = Env {
        plane,
        tls,
        prom,
        work,
        kubeconfig,
        rt,
    };
    let proxy = Proxy::start(&env.rt);
    let url = format!("https://{}/mutate", proxy.addr);

    // The previous version, installed as it shipped.
    env.plane.install_base(&prev_tree.join("deploy/base"));
    env.plane
        .kubectl_ok(&["apply", "-f", "-"], Some(&fixtures()));
    let prev_flags = Shipped::read(&env.plane, &prev_tree);
    let old_a = env.start(&prev_exe, &prev_flags, "previous", "old-a");
    let old_b = env.start(&prev_exe, &prev_flags, "previous", "old-b");
    proxy.add(old_a.hook.addr);
    proxy.add(old_b.hook.addr);
    env.plane.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&registration(&prev_tree, &url, &env.tls.ca_pem)),
    );

    // Its leader commits: web a memory and a CPU step (each with its cooldown), cache an
    // OOM hold.
    let holder = env.wait_leader(&[&old_a, &old_b]);
    let leader_is_a = holder == old_a.name;
    let old_leader = if leader_is_a { &old_a } else { &old_b };
    let deadline = Instant::now() + Duration::from_secs(60);
    let web = loop {
        let all = env.rightsizings();
        let web = all
            .get("deployment-web")
            .map(|(_, s)| s["containers"][0].clone());
        let hold = all
            .get("deployment-cache")
            .map(|(_, s)| s["containers"][0]["oomHold"].clone());
        if let (Some(web), Some(hold)) = (web, hold) {
            let both = ["memory", "cpu"]
                .iter()
                .all(|r| web[r]["committed"]["request"].is_string());
            if both && hold["until"].is_u64() {
                for r in ["memory", "cpu"] {
                    assert!(
                        web[r]["cooldownUntil"].is_string(),
                        "no {r} cooldown: {web}"
                    );
                }
                break web;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the previous version committed nothing in 60 s: {all:?}\n{}",
            old_leader.hook.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // What admission makes of a Pod of web before the upgrade: the committed requests (the
    // memory limit follows the Pod's own ratio), the answer every Pod must get throughout.
    let rs_list = env.plane.kubectl_ok(
        &["-n", NS, "get", "rs", "-l", "app=web", "-o", "json"],
        None,
    );
    let rs = serde_json::from_str::<Value>(&rs_list).unwrap()["items"][0].clone();
    let want = env.ask(old_leader, &web_pod(&rs));
    let committed = |r: &str| web[r]["committed"]["request"].as_str().unwrap().to_string();
    let requests = (
        rightsizer_core::quantity::parse_bytes(&committed("memory")).ok(),
        rightsizer_core::quantity::parse_millicores(&committed("cpu")).ok(),
    );
    assert_eq!(
        (want.0, want.2),
        requests,
        "admission enforces the committed requests: {web}"
    );
    assert_ne!(want.0, Some(128 << 20), "a step away from what runs: {web}");
    // The previous version itself leaves a status that says the same alone: without that,
    // a rewrite by the new one would prove nothing.
    let before = env.rightsizings();
    env.wait_cycles(old_leader, 2.0);
    assert_eq!(
        env.rightsizings(),
        before,
        "the previous version rewrites its own statuses"
    );

    // Pods without a pause from here to the end.
    let rs_list = env.plane.kubectl_ok(
        &["-n", NS, "get", "rs", "-l", "app=web", "-o", "json"],
        None,
    );
    let rs = serde_json::from_str::<Value>(&rs_list).unwrap()["items"][0].clone();
    let switches = Switches::default();
    let created = creator(&env, rs.clone(), switches.clone());
    std::thread::sleep(Duration::from_secs(2));

    // The upgrade: this tree's manifests over the old ones, then a rolling update, one
    // replica at a time, each new one ready before an old one goes (maxSurge 1,
    // maxUnavailable 0): the follower first, the leader last.
    let upgrade_started = Instant::now();
    env.plane.install_shipped();
    let root = cluster::repo_root();
    env.plane.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&registration(&root, &url, &env.tls.ca_pem)),
    );
    let new_flags = Shipped::read(&env.plane, &root);
    let new_exe = crate::exe::rightsizer().to_path_buf();
    let (first, second) = if leader_is_a {
        (old_b, old_a)
    } else {
        (old_a, old_b)
    };
    let mut served = Vec::new();
    let mut side_by_side = Vec::new();
    let mut new_ones = Vec::new();
    for (old, name) in [(first, "new-a"), (second, "new-b")] {
        let new = env.start(&new_exe, &new_flags, "new", name);
        // Old and new serve side by side: the same Pod review gets the same sizes.
        let pod = web_pod(&rs);
        side_by_side.push((
            old.name,
            new.name,
            (env.ask(&old, &pod), env.ask(&new, &pod)),
        ));
        // Pods at the usual pace: the previous version may not linger on HTTP/1.1 at
        // shutdown (that came with the upgrade; see the restart below).
        served.push(roll(&env, &proxy, &switches, old, &new, false));
        new_ones.push(new);
    }
    let holder = env.wait_leader(&[&new_ones[0], &new_ones[1]]);
    let new_leader = new_ones.iter().find(|r| r.name == holder).unwrap();
    // Two cycles after it leads: the second one started as leader.
    env.wait_cycles(new_leader, 2.0);
    let upgrade_time = upgrade_started.elapsed();
    // The new version's own rolling restart, with Pods created in parallel lanes while each
    // replica stops, so that reviews are in flight on its connections then.
    let mut restarted = Vec::new();
    for (old, name) in new_ones.into_iter().zip(["new-c", "new-d"]) {
        let new = env.start(&new_exe, &new_flags, "new", name);
        served.push(roll(&env, &proxy, &switches, old, &new, true));
        restarted.push(new);
    }
    let holder = env.wait_leader(&[&restarted[0], &restarted[1]]);
    let new_leader = restarted.iter().find(|r| r.name == holder).unwrap();
    env.wait_cycles(new_leader, 2.0);
    switches.stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    for r in &restarted {
        served.push((r.name, r.version, env.reviews(r)));
    }

    // Every Rightsizing as it was: same values, cooldown and hold, not rewritten.
    let after = env.rightsizings();
    for (name, (rv, status)) in &before {
        let (rv2, status2) = after
            .get(name)
            .unwrap_or_else(|| panic!("{name} lost in the upgrade"));
        assert_eq!(status2, status, "{name}'s status changed in the upgrade");
        assert_eq!(rv2, rv, "{name} was rewritten with the same status");
    }
    assert_eq!(after.len(), before.len(), "{after:?}");

    // Admission never stopped: every Pod admitted, with the committed memory.
    let created = std::mem::take(&mut *created.lock().unwrap());
    let wrong: Vec<String> = created
        .iter()
        .filter(|c| c.outcome != Ok(want))
        .map(|c| format!("{:.1}s: {:?}", c.at.as_secs_f64(), c.outcome))
        .collect();
    eprintln!(
        "upgrade: {} Pods created over {:.0} s (upgrade {:.0} s), test {:.0} s; reviews served {served:?}; side by side {side_by_side:?}",
        created.len(),
        created.last().map(|c| c.at.as_secs_f64()).unwrap_or_default(),
        upgrade_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        wrong.is_empty(),
        "{} of {} Pods not admitted with {want:?}: {wrong:?}\nthe apiserver on its webhook calls:\n{}",
        wrong.len(),
        created.len(),
        env.webhook_calls()
    );
    assert!(created.len() >= 50, "only {} Pods created", created.len());
    for (old, new, (a, b)) in &side_by_side {
        assert_eq!(
            (a, b),
            (&want, &want),
            "{old} and {new} answer the same review differently"
        );
    }
    // The apiserver called both versions, through the proxy only.
    for version in ["previous", "new"] {
        let n: f64 = served.iter().filter(|s| s.1 == version).map(|s| s.2).sum();
        assert!(
            n > 0.0,
            "the {version} version served no review: {served:?}"
        );
    }
    assert_eq!(proxy.refused.load(Ordering::Relaxed), 0);
    env.rt.shutdown_background();
}
