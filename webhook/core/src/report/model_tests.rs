//! The report's arithmetic on a small, hand-checked cluster.

use crate::quantity::MI;
use crate::recommendation::{ContainerKey, ContainerRecommendation, ResourceRecommendation};
use crate::report::capacity::{NodeShape, Pricing};
use crate::report::model::{build, ContainerInput};
use crate::rules::{Observed, Sizes};

fn sizes(request: u64, limit: u64) -> Sizes {
    Sizes {
        request: Some(request),
        limit: Some(limit),
    }
}

fn res(rec: Sizes, p95: f64, max: f64) -> ResourceRecommendation {
    ResourceRecommendation {
        observed: Some(Observed {
            avg: p95 / 2.0,
            p95,
            max,
            samples: 360,
            history_seconds: 6 * 3600,
        }),
        recommended: Some(rec),
        ..Default::default()
    }
}

/// web: 3 pods asking 400Mi/500m, recommended 150Mi/100m (frees 750Mi, 1200m);
/// db: 1 pod asking 100Mi, recommended 320Mi after an OOM kill (adds 220Mi, at risk);
/// job: CPU only, no pods now (frees nothing).
fn inputs() -> Vec<ContainerInput> {
    let key = |k: &str| ContainerKey::parse(k).unwrap();
    let web = ContainerRecommendation {
        memory: Some(res(
            sizes(150 * MI, 300 * MI),
            100.0 * MI as f64,
            120.0 * MI as f64,
        )),
        cpu: Some(res(
            Sizes {
                request: Some(100),
                limit: None,
            },
            60.0,
            90.0,
        )),
        ..Default::default()
    };
    let mut db_mem = res(
        sizes(320 * MI, 512 * MI),
        95.0 * MI as f64,
        128.0 * MI as f64,
    );
    db_mem.oom_floor = Some(320 * MI);
    let db = ContainerRecommendation {
        memory: Some(db_mem),
        ..Default::default()
    };
    let job = ContainerRecommendation {
        cpu: Some(res(
            Sizes {
                request: Some(50),
                limit: None,
            },
            10.0,
            20.0,
        )),
        ..Default::default()
    };
    vec![
        ContainerInput {
            key: key("shop/Deployment/web/app"),
            rec: web,
            current_memory: sizes(400 * MI, 800 * MI),
            current_cpu: Sizes {
                request: Some(500),
                limit: None,
            },
            pods: 3,
            oom_kills: 0,
            usage: vec![],
        },
        ContainerInput {
            key: key("data/StatefulSet/db/pg"),
            rec: db,
            current_memory: sizes(100 * MI, 128 * MI),
            current_cpu: Sizes::default(),
            pods: 1,
            oom_kills: 1,
            usage: vec![],
        },
        ContainerInput {
            key: key("data/CronJob/nightly/job"),
            rec: job,
            current_memory: Sizes::default(),
            current_cpu: Sizes {
                request: Some(1000),
                limit: None,
            },
            pods: 0,
            oom_kills: 0,
            usage: vec![],
        },
    ]
}

#[test]
fn totals_add_every_pod_and_split_freed_from_added() {
    let r = build(&inputs(), "prod", 1000, &[], &Pricing::default());
    let m = &r.totals.memory;
    assert_eq!(m.requested, 3 * 400 * MI + 100 * MI);
    assert_eq!(m.recommended, 3 * 150 * MI + 320 * MI);
    assert_eq!((m.freed, m.added), (750 * MI, 220 * MI));
    assert_eq!(m.net, 530 * MI as i64);
    assert_eq!(m.used_p95, 3 * 100 * MI + 95 * MI);
    let c = &r.totals.cpu;
    assert_eq!(
        (c.requested, c.recommended, c.freed, c.net),
        (1500, 300, 1200, 1200)
    );
    assert_eq!(
        (
            r.totals.pods,
            r.totals.oom_kills,
            r.totals.held,
            r.totals.at_risk
        ),
        (4, 1, 1, 1)
    );
}

#[test]
fn oom_risk_comes_first_then_the_largest_savings() {
    let r = build(&inputs(), "prod", 1000, &[], &Pricing::default());
    let order: Vec<&str> = r.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(order, ["db", "web", "nightly"]);
    let db = &r.workloads[0].containers[0];
    assert!(db.oom_risk);
    assert_eq!(db.memory.freed, -(220 * MI as i64));
    let ns: Vec<(&str, usize)> = r
        .namespaces
        .iter()
        .map(|n| (n.namespace.as_str(), n.workloads))
        .collect();
    assert_eq!(ns, [("data", 2), ("shop", 1)]);
    assert_eq!(r.workloads[1].history_seconds, 6 * 3600);
}

#[test]
fn enforce_changes_are_listed_per_side() {
    let r = build(&inputs(), "prod", 1000, &[], &Pricing::default());
    let web = &r.workloads[1].containers[0];
    let got: Vec<String> = web
        .changes
        .iter()
        .map(|c| format!("{} {} {:?}->{}", c.resource.as_str(), c.side, c.from, c.to))
        .collect();
    assert_eq!(
        got,
        [
            format!("memory request Some({})->{}", 400 * MI, 150 * MI),
            format!("memory limit Some({})->{}", 800 * MI, 300 * MI),
            "cpu request Some(500)->100".to_string(),
        ]
    );
}

#[test]
fn nodes_and_money_follow_the_net_change() {
    // 1300Mi and 1500m requested; 770Mi and 300m after. On 1-core/1Gi nodes: 2 -> 1.
    let shape = NodeShape::parse("cpu=1,memory=1Gi,count=5").unwrap();
    let p = Pricing {
        gib_hour: Some(0.01),
        core_hour: Some(0.04),
        node_month: Some(50.0),
        currency: "EUR".into(),
    };
    let r = build(&inputs(), "prod", 1000, &[shape], &p);
    let n = &r.nodes[0];
    assert_eq!((n.before, n.after, n.freed), (2, 1, 1));
    assert_eq!(r.cost.nodes, Some(50.0));
    // 530Mi × 0.01 × 730 and 1.2 cores × 0.04 × 730
    assert_eq!(
        r.cost.memory,
        Some(((530.0 / 1024.0) * 0.01 * 730.0 * 100.0_f64).round() / 100.0)
    );
    assert_eq!(r.cost.cpu, Some(35.04));
}

#[test]
fn every_page_carries_the_figures_and_escapes_names() {
    let mut ins = inputs();
    ins[0].key = ContainerKey::parse("shop/Deployment/web/<img src=x onerror=alert(1)>").unwrap();
    let r = build(&ins, "<prod>", 1000, &[], &Pricing::default());
    let html = crate::report::html::render(&r);
    assert!(!html.contains("<img"), "unescaped name");
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("Savings and capacity: &lt;prod&gt;"));
    assert!(html.contains(&format!(
        r#"data-f="totals.memory.net" data-v="{}""#,
        530 * MI
    )));
    // Self-contained: nothing is loaded from elsewhere.
    assert!(!html.contains(" src=\"") && !html.contains(" href=\""));
    let csv = crate::report::csv::render(&r);
    assert_eq!(csv.lines().count(), 1 + 3 * 2);
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("data,StatefulSet,db,pg,memory,1,"));
}
