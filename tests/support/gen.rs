//! Seeded generator of AdmissionReviews together with the policy, cluster facts and
//! recommendations they meet. Every case is a pure function of its seed, so a failing
//! seed reproduces (`RIGHTSIZER_FUZZ_SEED=<seed> RIGHTSIZER_FUZZ_CASES=1`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::LimitRangeSpec;
use rightsizer_core::cluster::{ClassSource, NamespaceFacts, QuotaRoom, StaticFacts};
use rightsizer_core::policy::schema::PriorityClassInfo;
use serde_json::{json, Map, Value};

/// SplitMix64: tiny, fast, and good enough to cover the input space.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
}

/// One generated review and everything around it.
pub struct Case {
    pub seed: u64,
    /// Policy ConfigMaps (JSON is YAML) for `parse_manifests`.
    pub policies: String,
    pub facts: StaticFacts,
    /// A recommendations snapshot (`Snapshot` JSON).
    pub snapshot: Value,
    pub enforcement: bool,
    /// The AdmissionReview body.
    pub review: Value,
}

impl Case {
    pub fn object(&self) -> &Value {
        &self.review["request"]["object"]
    }
    pub fn namespace(&self) -> &str {
        self.review["request"]["namespace"].as_str().unwrap_or("")
    }
}

const KINDS: [(&str, &str, &str); 9] = [
    ("", "v1", "Pod"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("apps", "v1", "DaemonSet"),
    ("apps", "v1", "ReplicaSet"),
    ("batch", "v1", "Job"),
    ("batch", "v1", "CronJob"),
    ("serving.knative.dev", "v1", "Service"),
    ("serving.knative.dev", "v1", "Configuration"),
];

const CONTAINERS: [&str; 4] = ["app", "sidecar", "istio-proxy", "worker"];

/// A memory quantity, in ordinary and odd spellings (some invalid on purpose).
pub fn memory(r: &mut Rng) -> String {
    let n = 1 + r.below(4096);
    match r.below(16) {
        0..=5 => format!("{n}Mi"),
        6 => format!("{}Gi", 1 + r.below(8)),
        7 => "0.5Gi".into(),
        8 => format!("{n}e3"),
        9 => format!("{}", n << 20),
        10 => format!("{n}00m"),
        11 => format!("{n}k"),
        12 => format!("{n}M"),
        13 => r
            .pick(&["999999Pi", "9223372036854775807", "1e18", "8Ei"])
            .into(),
        14 => r.pick(&["0", "1.5G", "+1Gi", "1E3"]).into(),
        _ => r.pick(&["", "abc", "-1Mi", "1.2.3", "Mi", "1e400"]).into(),
    }
}

/// A CPU quantity, likewise.
pub fn cpu(r: &mut Rng) -> String {
    let n = 1 + r.below(4000);
    match r.below(12) {
        0..=5 => format!("{n}m"),
        6 => format!("{}", 1 + r.below(8)),
        7 => "0.5".into(),
        8 => "1e3".into(),
        9 => format!("{n}u"),
        10 => r.pick(&["999999", "9223372036854775807m", "2k"]).into(),
        _ => r.pick(&["", "fast", "-100m", "0"]).into(),
    }
}

fn sane_memory(r: &mut Rng) -> u64 {
    (16 + r.below(4096)) << 20
}

fn side(r: &mut Rng, gpu: bool) -> Option<Value> {
    let mut m = Map::new();
    if r.chance(70) {
        m.insert("memory".into(), json!(memory(r)));
    }
    if r.chance(50) {
        m.insert("cpu".into(), json!(cpu(r)));
    }
    if gpu {
        m.insert("nvidia.com/gpu".into(), json!(r.pick(&["1", "2", "0"])));
    }
    (!m.is_empty() || r.chance(10)).then_some(Value::Object(m))
}

fn container(r: &mut Rng, name: Option<&str>, gpu: bool) -> Value {
    let mut c = Map::new();
    if let Some(n) = name {
        c.insert("name".into(), json!(n));
    }
    c.insert("image".into(), json!("app:1"));
    if r.chance(85) {
        let mut res = Map::new();
        if let Some(s) = side(r, false) {
            res.insert("requests".into(), s);
        }
        if let Some(s) = side(r, gpu) {
            res.insert("limits".into(), s);
        }
        if !gpu && r.chance(15) {
            // Guaranteed (QoS): CPU and memory requests equal to their limits.
            let both = json!({"memory": memory(r), "cpu": cpu(r)});
            res.insert("requests".into(), both.clone());
            res.insert("limits".into(), both);
        }
        c.insert("resources".into(), Value::Object(res));
    }
    Value::Object(c)
}

fn annotations(r: &mut Rng) -> Map<String, Value> {
    let mut a = Map::new();
    if r.chance(15) {
        a.insert(
            "rightsizer.io/mode".into(),
            json!(r.pick(&["off", "observe", "enforce", "sometimes", ""])),
        );
    }
    if r.chance(15) {
        let text = match r.below(4) {
            0 => json!({"app": {"memory": {"request": memory(r), "limit": memory(r)}}}).to_string(),
            1 => json!({"app": {"cpu": {"request": cpu(r)}}, "*": {"memory": {"limit": "1Gi"}}})
                .to_string(),
            2 => "{not json".into(),
            _ => json!({"app": {"memory": {"request": 5}}}).to_string(),
        };
        a.insert("rightsizer.io/overrides".into(), json!(text));
    }
    if r.chance(5) {
        a.insert(
            "rightsizer.io/sized".into(),
            json!(r.pick(&["{}", "garbage", "{\"app\":{}}"])),
        );
    }
    a
}

fn pod_spec(r: &mut Rng, knative: bool) -> Value {
    let gpu = r.chance(15);
    let n = 1 + r.below(3) as usize;
    let mut containers = Vec::new();
    let offset = r.below(2) as usize;
    for i in 0..n {
        let name = if knative && n == 1 && r.chance(50) {
            None
        } else {
            // Distinct names: the apiserver refuses duplicates whatever the webhook does.
            Some(CONTAINERS[(i + offset) % CONTAINERS.len()])
        };
        containers.push(container(r, name, gpu && i == 0));
    }
    let mut spec = Map::new();
    spec.insert("containers".into(), Value::Array(containers));
    if knative {
        if r.chance(20) {
            spec.insert("containerConcurrency".into(), json!(r.below(1001)));
        }
        return Value::Object(spec);
    }
    if r.chance(10) {
        spec.insert(
            "priorityClassName".into(),
            json!(r.pick(&["user-class", "high-priority", ""])),
        );
    }
    if r.chance(15) {
        spec.insert("priority".into(), json!(r.pick(&[0, 100, 7])));
    }
    if r.chance(5) {
        spec.insert(
            "preemptionPolicy".into(),
            json!(r.pick(&["Never", "PreemptLowerPriority"])),
        );
    }
    if r.chance(15) {
        spec.insert(
            "affinity".into(),
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
            ]}}}),
        );
    }
    if r.chance(15) {
        spec.insert(
            "tolerations".into(),
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                   {"key": "dedicated", "value": "ml", "effect": "NoExecute", "tolerationSeconds": 30}]),
        );
    }
    Value::Object(spec)
}

fn template(r: &mut Rng, knative: bool) -> Value {
    let mut meta = Map::new();
    meta.insert("labels".into(), json!({"app": "web"}));
    let mut ann = annotations(r);
    if knative && r.chance(40) {
        let choices = [
            (
                "autoscaling.knative.dev/class",
                "hpa.autoscaling.knative.dev",
            ),
            ("autoscaling.knative.dev/max-scale", "2"),
            ("autoscaling.knative.dev/maxScale", "1"),
            ("autoscaling.knative.dev/min-scale", "50"),
            ("autoscaling.knative.dev/max-scale", "bad"),
            ("autoscaling.knative.dev/target", "10"),
        ];
        let (k, v) = r.pick(&choices);
        ann.insert(k.into(), json!(v));
    }
    if !ann.is_empty() {
        meta.insert("annotations".into(), Value::Object(ann));
    }
    json!({"metadata": meta, "spec": pod_spec(r, knative)})
}

/// The object of a kind, named `web`.
pub fn object(r: &mut Rng, group: &str, version: &str, kind: &str, ns: &str) -> Value {
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut meta = json!({"name": "web", "labels": {"app": "web"}});
    if r.chance(70) {
        meta["namespace"] = json!(ns);
    }
    if r.chance(20) {
        meta["labels"]["tier"] = json!("critical");
    }
    let selector = json!({"matchLabels": {"app": "web"}});
    let spec = match kind {
        "Pod" => {
            let a = annotations(r);
            if !a.is_empty() {
                meta["annotations"] = Value::Object(a);
            }
            match r.below(4) {
                0 => {
                    meta["generateName"] = json!("web-6c9f7-");
                    meta["labels"]["pod-template-hash"] = json!("6c9f7");
                    meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "web-6c9f7", "uid": "u1", "controller": true}]);
                }
                1 => {
                    meta["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job",
                        "name": "web-27800000", "uid": "u2", "controller": true}]);
                }
                _ => {}
            }
            pod_spec(r, false)
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            let mut s = json!({"selector": selector, "template": template(r, false)});
            if kind != "DaemonSet" && r.chance(70) {
                s["replicas"] = json!(r.below(5));
            }
            if kind == "StatefulSet" {
                s["serviceName"] = json!("web");
            }
            s
        }
        "Job" => json!({"template": template(r, false)}),
        "CronJob" => json!({"schedule": "0 * * * *",
            "jobTemplate": {"spec": {"template": template(r, false)}}}),
        _ => json!({"template": template(r, true)}),
    };
    json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec})
}

fn pair_bytes(r: &mut Rng) -> Value {
    let q = sane_memory(r);
    let l = if r.chance(85) {
        q + r.below(q + 1)
    } else {
        q / 2
    };
    json!({"request": q, "limit": l})
}

fn pair_millis(r: &mut Rng) -> Value {
    let q = 10 + r.below(4000);
    json!({"request": q, "limit": q * (1 + r.below(3))})
}

fn resource_rec(r: &mut Rng, memory: bool) -> Value {
    let pair = |r: &mut Rng| {
        if memory {
            pair_bytes(r)
        } else {
            pair_millis(r)
        }
    };
    let mut m = Map::new();
    if r.chance(60) {
        m.insert("recommended".into(), pair(r));
    }
    if r.chance(30) {
        let mut c = pair(r);
        c["at"] = json!(1);
        m.insert("committed".into(), c);
    }
    if r.chance(40) {
        let p95 = if memory {
            sane_memory(r) as f64
        } else {
            r.below(4000) as f64
        };
        m.insert(
            "observed".into(),
            json!({"avg": p95 / 2.0, "p95": p95, "max": p95 * 1.5, "samples": r.below(10_000)}),
        );
    }
    if memory && r.chance(10) {
        m.insert("oomFloor".into(), json!(sane_memory(r)));
    }
    Value::Object(m)
}

fn snapshot(r: &mut Rng, ns: &str) -> Value {
    let mut recs = Map::new();
    let kinds = [
        "Pod",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "CronJob",
        "KnativeService",
        "KnativeConfiguration",
    ];
    for kind in kinds {
        for c in ["app", "sidecar", "user-container"] {
            if !r.chance(50) {
                continue;
            }
            let mut e = json!({"memory": resource_rec(r, true), "cpu": resource_rec(r, false)});
            if r.chance(10) {
                e["hpaResources"] = json!([r.pick(&["cpu", "memory"])]);
            }
            if r.chance(20) {
                // Out-of-range proposals too: admission must clamp them.
                e["knative"] = json!({"target": r.pick(&[0.0001, 5.0, 70.0]),
                    "containerConcurrency": r.pick(&[0, 10, 5000])});
            }
            recs.insert(format!("{ns}/{kind}/web/{c}"), e);
        }
    }
    json!({"generatedAt": 1, "recommendations": recs})
}

fn policy_pair(r: &mut Rng, memory: bool) -> Value {
    if memory {
        let q = 16 + r.below(1024);
        json!({"request": format!("{q}Mi"), "limit": format!("{}Mi", q + r.below(1024))})
    } else {
        let q = 10 + r.below(2000);
        json!({"request": format!("{q}m")})
    }
}

fn policy(r: &mut Rng) -> Value {
    let mut p = json!({
        "mode": r.pick(&["off", "observe", "enforce", "enforce"]),
        "target": r.pick(&["pods", "templates"]),
        "enforcement": {"applyRecommendations": r.chance(80)},
    });
    if r.chance(20) {
        p["selector"] = json!({"namespaces": [r.pick(&["shop", "shop-*", "other"])]});
    }
    if r.chance(60) {
        p["defaults"] = json!({"memory": policy_pair(r, true), "cpu": policy_pair(r, false)});
    }
    if r.chance(20) {
        p["overrides"] = json!([{"workload": {"name": "web"},
            "containers": {r.pick(&["app", "*"]): {"memory": policy_pair(r, true)}}}]);
    }
    if r.chance(25) {
        p["gpu"] = json!({
            "resources": ["nvidia.com/gpu"],
            "requiredNodeAffinity": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}],
            "preferredNodeAffinity": [{"weight": 1 + r.below(100), "preference": {"matchExpressions": [
                // Mostly valid pairs; the last one the loader refuses.
                r.pick(&[
                    json!({"key": "gpu-type", "operator": "In", "values": ["a100"]}),
                    json!({"key": "gpu-type", "operator": "Exists"}),
                    json!({"key": "gpu-count", "operator": "Gt", "values": ["3"]}),
                    json!({"key": "gpu-type", "operator": "Gt", "values": ["a100"]}),
                ])]}}],
            "tolerations": [r.pick(&[
                json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
                json!({"key": "gpu", "value": "yes", "effect": "NoExecute", "tolerationSeconds": 60}),
                json!({"operator": "Exists"}),
            ])],
            "priorityClassName": r.pick(&["gpu-workload", "missing-gpu-class"]),
        });
    }
    if r.chance(40) {
        p["priority"] = json!({
            "classes": {"high-priority": {"value": 900}, "normal-priority": {"value": 100},
                        "cpu-workload": {"value": 500, "preemptionPolicy": "Never"}},
            "rules": [{"className": "high-priority", "selector": {"labels": {"tier": "critical"}}},
                      {"className": "cpu-workload", "minCpu": "2"}],
            "defaultClassName": r.pick(&["normal-priority", "ghost-class"]),
        });
    }
    if r.chance(30) {
        let mut k = json!({"applyRecommendations": r.chance(50)});
        if r.chance(60) {
            k["target"] = json!(r.pick(&[0.01, 50.0, 100.5]));
        }
        if r.chance(40) {
            k["targetUtilizationPercentage"] = json!(r.pick(&[1.0, 70.0, 100.0]));
        }
        if r.chance(40) {
            k["containerConcurrency"] = json!(r.below(1001));
        }
        if r.chance(40) {
            k["minScale"] = json!(r.below(6));
        }
        if r.chance(40) {
            k["maxScale"] = json!(r.pick(&[0, 5, 10, 20, 50, 3_000_000_000u64]));
        }
        if r.chance(40) {
            k["metric"] = json!(r.pick(&["concurrency", "rps", "cpu", "memory"]));
        }
        p["knative"] = k;
    }
    p
}

fn policy_configmap(name: &str, body: &Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "rightsizer-system",
                     "labels": {"rightsizer.io/policy": "true"}},
        "data": {"policy.yaml": body.to_string()}})
    .to_string()
}

/// A LimitRange the apiserver would accept: min <= defaultRequest <= default <= max,
/// and default/defaultRequest within the ratio.
fn limit_range(r: &mut Rng) -> LimitRangeSpec {
    let mut items = Vec::new();
    for type_ in ["Container", "Pod"] {
        if !r.chance(if type_ == "Container" { 80 } else { 30 }) {
            continue;
        }
        let mut item = json!({"type": type_});
        for (res, unit, scale) in [("memory", "Mi", 1u64), ("cpu", "m", 1)] {
            if !r.chance(70) {
                continue;
            }
            let min = 16 * scale + r.below(256);
            let max = min + r.below(4096);
            let default = min + r.below(max - min + 1);
            let default_request = min + r.below(default - min + 1);
            let q = |v: u64| format!("{v}{unit}");
            if r.chance(60) {
                item["min"][res] = json!(q(min));
            }
            if r.chance(60) {
                item["max"][res] = json!(q(max));
            }
            if type_ == "Container" && r.chance(40) {
                item["default"][res] = json!(q(default));
                if r.chance(50) {
                    item["defaultRequest"][res] = json!(q(default_request));
                }
            }
            if r.chance(40) {
                let floor = default.div_ceil(default_request.max(1)).max(1);
                item["maxLimitRequestRatio"][res] = json!((floor + r.below(4)).to_string());
            }
        }
        items.push(item);
    }
    serde_json::from_value(json!({"limits": items})).expect("generated LimitRange")
}

fn quota(r: &mut Rng) -> QuotaRoom {
    let mut room = BTreeMap::new();
    for key in [
        "requests.memory",
        "limits.memory",
        "requests.cpu",
        "limits.cpu",
    ] {
        if r.chance(40) {
            let v = if key.ends_with("memory") {
                r.below(8192) << 20
            } else {
                r.below(8000)
            };
            room.insert(key.to_string(), v);
        }
    }
    QuotaRoom {
        name: "q".into(),
        room,
        ..Default::default()
    }
}

fn facts(r: &mut Rng, ns: &str) -> StaticFacts {
    let mut labels = BTreeMap::from([("rightsizer.io/enabled".to_string(), "true".to_string())]);
    if r.chance(20) {
        labels.insert("team".into(), "payments".into());
    }
    let n_ranges = r.pick(&[0, 0, 1, 1, 2]);
    let limit_ranges = (0..n_ranges).map(|_| limit_range(r)).collect();
    let quotas = if r.chance(30) { vec![quota(r)] } else { vec![] };
    let mut classes = BTreeMap::new();
    for (name, value, pp) in [
        ("high-priority", 900, None),
        ("normal-priority", 100, None),
        ("cpu-workload", 500, Some("Never")),
        ("gpu-workload", 1000, None),
        ("user-class", 7, None),
    ] {
        if r.chance(50) {
            classes.insert(
                name.to_string(),
                PriorityClassInfo {
                    value,
                    preemption_policy: pp.map(str::to_string),
                    global_default: false,
                },
            );
        }
    }
    StaticFacts {
        namespaces: BTreeMap::from([(
            ns.to_string(),
            Arc::new(NamespaceFacts {
                labels,
                limit_ranges,
                quotas,
                ..Default::default()
            }),
        )]),
        priority_classes: Arc::new(classes),
        class_source: r.pick(&[
            ClassSource::Cluster,
            ClassSource::Cluster,
            ClassSource::Unknown,
            ClassSource::Offline,
        ]),
        ..StaticFacts::default()
    }
}

/// The case of one seed.
pub fn case(seed: u64) -> Case {
    let r = &mut Rng::new(seed);
    let ns = r.pick(&["shop", "shop", "shop", "other", "kube-system"]);
    let (group, version, kind) = r.pick(&KINDS);
    let obj = object(r, group, version, kind, ns);
    let resource = format!("{}s", kind.to_lowercase());
    let n_policies = 1 + r.below(2);
    let policies = (0..n_policies)
        .map(|i| policy_configmap(&format!("p{i}"), &policy(r)))
        .collect::<Vec<_>>()
        .join("\n---\n");
    let op = if kind == "Pod" || r.chance(70) {
        "CREATE"
    } else {
        "UPDATE"
    };
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{seed:x}"),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "namespace": ns,
            "operation": op,
            "object": obj,
            "oldObject": if op == "UPDATE" { obj.clone() } else { Value::Null },
            "dryRun": r.chance(10),
        }
    });
    Case {
        seed,
        policies,
        facts: facts(r, ns),
        snapshot: snapshot(r, ns),
        enforcement: r.chance(70),
        review,
    }
}
