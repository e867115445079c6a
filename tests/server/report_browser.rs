//! The savings report in a real browser: `rightsizer serve` with a real Prometheus
//! serves `/report` on its admin port; headless Chromium loads it. The figures in the
//! DOM equal `/report?format=json`, whose recommendations equal `/recommendations`
//! and `rightsizer recommend`; `rightsizer report -o json` prints the same report; the
//! charts render (a screenshot that is not blank); the namespace filter works; and at
//! 1280 pixels nothing overflows sideways.

use crate::exe;
use crate::png;
use crate::prometheus::TestProm;
use crate::scenario::{Cluster, PodSpec, MI};
use crate::support_https::{plain_get, Server};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const H: u64 = 3600;
/// Flags both `serve` and `report` get: the window the fixture fills, a node shape, prices.
const REPORT_FLAGS: &[&str] = &[
    "--long-window",
    "6h",
    "--node-shape",
    "name=small,cpu=1,memory=256Mi,count=4",
    "--price-gib-hour",
    "0.01",
    "--price-core-hour",
    "0.04",
    "--price-node-month",
    "60",
    "--currency",
    "EUR",
];

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// shop/Deployment/web: 2 pods asking 400Mi/800Mi and 500m, using ~100Mi and 50m.
/// data/StatefulSet/db: 1 pod asking 128Mi/128Mi, growing to 120Mi, OOM-killed an hour ago.
fn fixture(t0: u64) -> Cluster {
    let start = t0 - 6 * H;
    let mut c = Cluster::new(t0);
    c.owner(
        "kube_replicaset_owner",
        "shop",
        "replicaset",
        "web-7f9c",
        "Deployment",
        "web",
        start,
        t0 + H,
    );
    for pod in ["web-7f9c-a", "web-7f9c-b"] {
        let spec = PodSpec {
            ns: "shop",
            pod,
            owner_kind: "ReplicaSet",
            owner_name: "web-7f9c",
            from: start,
            to: t0,
        };
        c.pod(&spec, "shop/Deployment/web").container(
            "app",
            |t| 96.0 + (t % 1800) as f64 / 300.0,
            |_| 90.0,
            (Some(400), Some(800)),
            Some(0.05),
        );
        c.constant(
            "kube_pod_container_resource_requests",
            &format!(r#"namespace="shop",pod="{pod}",container="app",node="n1",resource="cpu",unit="core""#),
            0.5,
            start,
            t0,
        );
    }
    let spec = PodSpec {
        ns: "data",
        pod: "db-0",
        owner_kind: "StatefulSet",
        owner_name: "db",
        from: start,
        to: t0,
    };
    c.pod(&spec, "data/StatefulSet/db").container(
        "pg",
        move |t| 100.0 + (t - start) as f64 / (6 * H) as f64 * 20.0,
        |_| 80.0,
        (Some(128), Some(128)),
        Some(0.2),
    );
    c.constant(
        "kube_pod_container_status_last_terminated_reason",
        r#"namespace="data",pod="db-0",container="pg",reason="OOMKilled""#,
        1.0,
        t0 - H,
        t0,
    );
    c
}

/// Run headless Chromium at 1280 pixels wide with `extra` flags on `url`; its stdout.
fn chromium(profile: &Path, extra: &[&str], url: &str) -> String {
    let out = Command::new("timeout")
        .arg("120")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1280,2400")
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs (tests/run installs Debian's chromium)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of attribute `name` in the tag text `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    tag.split(&format!(" {name}=\"")).nth(1)?.split('"').next()
}

/// Each container row of the dumped DOM: its key, whether hidden, and its figures
/// (`data-f` -> `data-v`, plus `<f>.limit` and `<f>.max` where the cell has them).
fn dom_rows(dom: &str) -> BTreeMap<String, (bool, BTreeMap<String, String>)> {
    let mut out = BTreeMap::new();
    for row in dom.split("<tr ").skip(1) {
        let row = row.split("</tr>").next().unwrap();
        let open = row.split('>').next().unwrap();
        if !open.contains("class=\"container") {
            continue;
        }
        let key = attr(&format!(" {open}"), "data-key").unwrap().to_string();
        let mut figs = BTreeMap::new();
        for td in row.split("<td ").skip(1) {
            let tag = format!(" {}", td.split('>').next().unwrap());
            if let (Some(f), Some(v)) = (attr(&tag, "data-f"), attr(&tag, "data-v")) {
                figs.insert(f.to_string(), v.to_string());
                for extra in ["limit", "max"] {
                    if let Some(x) = attr(&tag, &format!("data-{extra}")) {
                        figs.insert(format!("{f}.{extra}"), x.to_string());
                    }
                }
            }
        }
        out.insert(key, (open.contains(" hidden"), figs));
    }
    out
}

/// The `data-v` of the cell `data-f="field"` (the first one).
fn dom_figure<'a>(dom: &'a str, field: &str) -> &'a str {
    let at = dom
        .find(&format!("data-f=\"{field}\""))
        .unwrap_or_else(|| panic!("no {field} in the page"));
    attr(&dom[at - 1..], "data-v").unwrap()
}

/// A JSON number and a DOM attribute hold the same figure (null: an empty attribute).
/// Within one unit in the last place: serde_json's default float parser (the tests'
/// JSON reader) may round the last bit differently from `str::parse`.
fn same(json: &Value, dom: &str, what: &str) {
    match json {
        Value::Null => assert_eq!(dom, "", "{what}"),
        v => {
            let (a, b) = (
                v.as_f64().unwrap(),
                dom.parse::<f64>()
                    .unwrap_or_else(|_| panic!("{what}: {dom:?}")),
            );
            assert!(
                a == b || (a - b).abs() <= a.abs() * f64::EPSILON,
                "{what}: JSON {a} vs DOM {b}"
            );
        }
    }
}

async fn get_json(admin: SocketAddr, path: &str) -> Value {
    let r = plain_get(admin, path).await.unwrap();
    assert_eq!(r.status, 200, "{path}");
    r.json()
}

fn run_cli(args: &[&str]) -> Value {
    let out = Command::new(exe::rightsizer()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_chromium),
    ignore = "no chromium here: tests/run installs Debian's chromium"
)]
async fn the_report_page_shows_the_served_figures_in_a_real_browser() {
    let t0 = now() - now() % 60;
    let prom = TestProm::start_with(&fixture(t0).om);
    let url = prom.url();
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    let mut args = vec!["--self-signed", "--ca-out", ca.to_str().unwrap()];
    args.extend([
        "--admin-listen",
        "127.0.0.1:0",
        "--kube",
        "never",
        "--prometheus",
        &url,
    ]);
    args.extend(REPORT_FLAGS);
    let server = Server::start(&args, tmp.path().join("serve.log"));
    let admin = server.admin.unwrap();

    // The first analyzer cycle in: both containers recommended.
    let deadline = Instant::now() + Duration::from_secs(60);
    let recs = loop {
        let v = get_json(admin, "/recommendations").await;
        if v["recommendations"]
            .as_object()
            .is_some_and(|m| m.len() == 2)
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no recommendations: {}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let report = get_json(admin, "/report?format=json").await;
    let recs = &recs["recommendations"];

    // What the fixture runs: requests per pod and pods, from the analyzer's cache.
    let rows: BTreeMap<String, &Value> = report["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["containers"].as_array().unwrap())
        .map(|c| (c["key"].as_str().unwrap().to_string(), c))
        .collect();
    let keys: Vec<&String> = rows.keys().collect();
    assert_eq!(keys, ["data/StatefulSet/db/pg", "shop/Deployment/web/app"]);
    let (db, web) = (
        rows["data/StatefulSet/db/pg"],
        rows["shop/Deployment/web/app"],
    );
    assert_eq!(web["pods"], 2);
    assert_eq!(web["memory"]["requested"], 400 * MI);
    assert_eq!(web["memory"]["limit"], 800 * MI);
    assert_eq!(web["cpu"]["requested"], 500);
    assert_eq!(
        (db["pods"].as_u64(), db["oomKills"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        db["oomRisk"], true,
        "OOM-killed, and its peak is within 10% of its limit"
    );
    // OOM risk first.
    assert_eq!(report["workloads"][0]["name"], "db");

    // Every recommendation figure is the served one.
    for (key, row) in &rows {
        let served = &recs[key.as_str()];
        for res in ["memory", "cpu"] {
            let s = &served[res];
            let r = &row[res];
            assert_eq!(
                r["recommendedRequest"], s["recommended"]["request"],
                "{key} {res}"
            );
            assert_eq!(
                r["recommendedLimit"], s["recommended"]["limit"],
                "{key} {res}"
            );
            assert_eq!(r["usedP95"], s["observed"]["p95"], "{key} {res}");
            assert_eq!(r["usedMax"], s["observed"]["max"], "{key} {res}");
            assert_eq!(r["samples"], s["observed"]["samples"], "{key} {res}");
            assert_eq!(
                r["historySeconds"], s["observed"]["historySeconds"],
                "{key} {res}"
            );
        }
        assert_eq!(row["oomFloor"], served["memory"]["oomFloor"], "{key}");
    }

    // Totals, nodes and money by the test's own arithmetic.
    let sum = |res: &str, f: &dyn Fn(&Value) -> u64| -> u64 {
        rows.values()
            .map(|r| f(&r[res]) * r["pods"].as_u64().unwrap())
            .sum()
    };
    let after = |r: &Value| {
        r["recommendedRequest"]
            .as_u64()
            .or(r["requested"].as_u64())
            .unwrap_or(0)
    };
    let t = &report["totals"];
    assert_eq!(t["memory"]["requested"], 2 * 400 * MI + 128 * MI);
    assert_eq!(t["cpu"]["requested"], 1000);
    let (mem_after, cpu_after) = (sum("memory", &after), sum("cpu", &after));
    assert_eq!(t["memory"]["recommended"], mem_after);
    assert_eq!(t["cpu"]["recommended"], cpu_after);
    let mem_net = (928 * MI) as i64 - mem_after as i64;
    let cpu_net = 1000 - cpu_after as i64;
    assert_eq!(t["memory"]["net"], mem_net);
    let nodes = |m: u64, c: u64| m.div_ceil(256 * MI).max(c.div_ceil(1000));
    let n = &report["nodes"][0];
    assert_eq!(n["before"], nodes(928 * MI, 1000));
    assert_eq!(n["after"], nodes(mem_after, cpu_after));
    let cents = |v: f64| (v * 100.0).round() / 100.0;
    let c = &report["cost"];
    assert_eq!(
        c["memory"],
        cents(mem_net as f64 / (1u64 << 30) as f64 * 0.01 * 730.0)
    );
    assert_eq!(c["cpu"], cents(cpu_net as f64 / 1000.0 * 0.04 * 730.0));
    assert_eq!(c["nodes"], cents(60.0 * n["freed"].as_f64().unwrap()));
    println!(
        "report totals: memory requested {} -> {} (net {}), cpu {}m -> {}m (net {}m), nodes {} -> {}, cost/month: memory {} cpu {} nodes {} EUR, oom kills {}, at risk {}",
        t["memory"]["requested"], mem_after, mem_net, 1000, cpu_after, cpu_net,
        n["before"], n["after"], c["memory"], c["cpu"], c["nodes"], t["oomKills"], t["atRisk"]
    );

    // `recommend` and `report` at the analyzer's cycle time print the same figures.
    let at = recs["shop/Deployment/web/app"]["updatedAt"]
        .as_u64()
        .unwrap()
        .to_string();
    let mut cli = vec![
        "recommend",
        "-o",
        "json",
        "--prometheus",
        &url,
        "--long-window",
        "6h",
        "--at",
        &at,
    ];
    let recommend = run_cli(&cli);
    assert_eq!(&recommend["recommendations"], recs);
    cli[0] = "report";
    cli.extend(["--kube", "never"]);
    cli.extend(&REPORT_FLAGS[2..]);
    let mut printed = run_cli(&cli);
    let mut served = report.clone();
    for r in [&mut printed, &mut served] {
        r["generatedAt"] = Value::Null;
        for w in r["workloads"].as_array_mut().unwrap() {
            for c in w["containers"].as_array_mut().unwrap() {
                c["usage"] = Value::Null; // history up to each one's own time
            }
        }
    }
    assert_eq!(
        printed, served,
        "rightsizer report -o json vs /report?format=json"
    );

    // The page in Chromium: the DOM's figures are the JSON's.
    let page = format!("http://{admin}/report");
    let profile = tmp.path().join("chromium");
    let dom = chromium(
        &profile,
        &["--dump-dom", "--virtual-time-budget=3000"],
        &page,
    );
    let shown = dom_rows(&dom);
    assert_eq!(shown.len(), 2, "{dom}");
    for (key, row) in &rows {
        let (hidden, figs) = &shown[key.as_str()];
        assert!(!hidden, "{key} hidden without a filter");
        same(&row["pods"], &figs["pods"], key);
        same(&row["oomKills"], &figs["oomKills"], key);
        same(
            &row["memory"]["historySeconds"],
            &figs["historySeconds"],
            key,
        );
        for res in ["memory", "cpu"] {
            let r = &row[res];
            for (json, dom) in [
                ("requested", "requested"),
                ("limit", "requested.limit"),
                ("recommendedRequest", "recommendedRequest"),
                ("recommendedLimit", "recommendedRequest.limit"),
                ("usedP95", "usedP95"),
                ("usedMax", "usedP95.max"),
                ("freed", "freed"),
            ] {
                same(
                    &r[json],
                    &figs[&format!("{res}.{dom}")],
                    &format!("{key} {res}.{json}"),
                );
            }
        }
    }
    for res in ["memory", "cpu"] {
        for f in [
            "requested",
            "recommended",
            "usedP95",
            "freed",
            "added",
            "net",
        ] {
            same(
                &t[res][f],
                dom_figure(&dom, &format!("totals.{res}.{f}")),
                &format!("totals.{res}.{f}"),
            );
        }
    }
    for f in ["before", "after", "freed"] {
        same(&n[f], dom_figure(&dom, &format!("nodes.{f}")), f);
    }
    for f in ["memory", "cpu", "nodes"] {
        same(&c[f], dom_figure(&dom, &format!("cost.{f}")), f);
    }
    // One usage chart per container, its peak line through every interval.
    assert_eq!(dom.matches("<svg class=\"usage\"").count(), 2);
    let points = dom.split("class=\"peak\"").nth(1).unwrap();
    let points = attr(points, "points").unwrap().split(' ').count();
    assert!(
        points >= 60,
        "{points} points over 6 hours of 5-minute intervals"
    );

    // Usable at 1280 pixels: nothing wider than the window.
    let body = dom
        .split("<body")
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    let width: u32 = attr(body, "data-scroll-width").unwrap().parse().unwrap();
    let client: u32 = attr(body, "data-client-width").unwrap().parse().unwrap();
    assert!(
        width <= 1280 && width == client,
        "scrollWidth {width}, clientWidth {client}"
    );

    // The namespace filter: #ns=data hides shop's rows, charts and namespace line.
    let filtered = chromium(
        &profile,
        &["--dump-dom", "--virtual-time-budget=3000"],
        &format!("{page}#ns=data"),
    );
    let body = filtered
        .split("<body")
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    assert_eq!(attr(body, "data-filter"), Some("data"));
    let f = dom_rows(&filtered);
    assert!(
        !f["data/StatefulSet/db/pg"].0 && f["shop/Deployment/web/app"].0,
        "{filtered}"
    );
    for tag in filtered
        .split('<')
        .filter(|t| t.contains("data-ns=\"shop\""))
    {
        assert!(tag.contains(" hidden"), "shown under #ns=data: <{tag}");
    }

    // The charts render: a screenshot with drawing on it, not a blank page.
    let shot = tmp.path().join("report.png");
    chromium(
        &profile,
        &[&format!("--screenshot={}", shot.display())],
        &page,
    );
    let bytes = std::fs::read(&shot).unwrap();
    let img = png::decode(&bytes).unwrap();
    assert_eq!((img.width, img.height), (1280, 2400));
    let inked = img
        .rgb
        .iter()
        .filter(|p| p.iter().any(|c| *c < 200))
        .count();
    let colours: std::collections::BTreeSet<[u8; 3]> = img.rgb.iter().copied().collect();
    // The usage lines are drawn: orange (peak) and blue (mean) are the charts' own
    // colours. Told by hue, as antialiasing blends thin lines with the background.
    let hue = |p: &[u8; 3]| {
        let [r, g, b] = p.map(i32::from);
        if r - b >= 60 && g - b >= 25 && r - g >= 25 {
            Some("peak")
        } else if b - r >= 40 && b - g >= 15 {
            Some("mean")
        } else {
            None
        }
    };
    let count = |name: &str| img.rgb.iter().filter(|p| hue(p) == Some(name)).count();
    println!(
        "screenshot: {} bytes, {}x{}, {} inked pixels, {} colours, {} peak-line and {} mean-line pixels",
        bytes.len(),
        img.width,
        img.height,
        inked,
        colours.len(),
        count("peak"),
        count("mean"),
    );
    assert!(inked > img.rgb.len() / 100, "{inked} inked pixels: blank");
    assert!(colours.len() > 16, "{} colours", colours.len());
    // The mean line mostly runs under the peak line here (usage is steady), so only the
    // peak is counted.
    assert!(count("peak") > 300, "no peak line drawn");
}
