//! A small cluster's history, written both as OpenMetrics (for Prometheus) and kept
//! in memory, so tests compute the expected figures with their own arithmetic.
#![allow(dead_code)]

use std::collections::BTreeMap;

use super::prometheus::OpenMetrics;

pub const MI: u64 = 1 << 20;
pub const STEP: u64 = 60;
/// kube-state-metrics series are written every 2 minutes (within the 5m lookback).
pub const KSM_STEP: u64 = 120;

/// Memory samples of one pod-container.
#[derive(Debug, Clone)]
pub struct PodSeries {
    pub pod: String,
    pub ws: Vec<(u64, f64)>,
    pub rss: Vec<(u64, f64)>,
}

/// Everything written, by `namespace/Kind/name/container`.
#[derive(Default)]
pub struct Cluster {
    pub om: OpenMetrics,
    pub containers: BTreeMap<String, Vec<PodSeries>>,
    pub t0: u64,
}

/// Sample times in [from, to) on the STEP grid, offset by 30s so that no sample ever
/// sits on a window boundary (queries run at multiples of 60s).
pub fn times(from: u64, to: u64) -> impl Iterator<Item = u64> {
    let first = from - from % STEP + 30;
    (0..)
        .map(move |k| first + k * STEP)
        .take_while(move |t| *t < to)
}

pub struct PodSpec<'a> {
    pub ns: &'a str,
    pub pod: &'a str,
    pub owner_kind: &'a str,
    pub owner_name: &'a str,
    pub from: u64,
    pub to: u64,
}

impl Cluster {
    pub fn new(t0: u64) -> Self {
        Cluster {
            t0,
            ..Default::default()
        }
    }

    /// A pod: its owner row, and for each container its memory series (MiB functions of
    /// the sample index), requests/limits (MiB, None to leave out), optional CPU rate.
    pub fn pod(&mut self, p: &PodSpec<'_>, workload_key: &str) -> PodBuilder<'_> {
        let lbl = format!(
            "namespace=\"{}\",pod=\"{}\",owner_kind=\"{}\",owner_name=\"{}\",owner_is_controller=\"true\"",
            p.ns, p.pod, p.owner_kind, p.owner_name
        );
        self.om.series(
            "kube_pod_owner",
            &lbl,
            ksm_times(p.from, p.to).map(|t| (t, 1.0)),
        );
        PodBuilder {
            c: self,
            ns: p.ns.to_string(),
            pod: p.pod.to_string(),
            from: p.from,
            to: p.to,
            workload_key: workload_key.to_string(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn owner(
        &mut self,
        metric: &str,
        ns: &str,
        label: &str,
        name: &str,
        kind: &str,
        owner: &str,
        from: u64,
        to: u64,
    ) {
        let lbl = format!(
            "namespace=\"{ns}\",{label}=\"{name}\",owner_kind=\"{kind}\",owner_name=\"{owner}\",owner_is_controller=\"true\""
        );
        self.om
            .series(metric, &lbl, ksm_times(from, to).map(|t| (t, 1.0)));
    }

    pub fn constant(&mut self, metric: &str, labels: &str, v: f64, from: u64, to: u64) {
        self.om
            .series(metric, labels, ksm_times(from, to).map(|t| (t, v)));
    }
}

pub fn ksm_times(from: u64, to: u64) -> impl Iterator<Item = u64> {
    let first = from - from % KSM_STEP + 30;
    (0..)
        .map(move |k| first + k * KSM_STEP)
        .take_while(move |t| *t < to)
}

pub struct PodBuilder<'a> {
    c: &'a mut Cluster,
    ns: String,
    pod: String,
    from: u64,
    to: u64,
    workload_key: String,
}

impl PodBuilder<'_> {
    /// One container. `ws`/`rss`: MiB as a function of the sample time.
    pub fn container(
        &mut self,
        name: &str,
        ws: impl Fn(u64) -> f64,
        rss: impl Fn(u64) -> f64,
        req_lim_mi: (Option<u64>, Option<u64>),
        cpu_cores: Option<f64>,
    ) -> &mut Self {
        let lbl = format!(
            "namespace=\"{}\",pod=\"{}\",container=\"{}\",id=\"/x/{}\"",
            self.ns, self.pod, name, self.pod
        );
        let ts: Vec<u64> = times(self.from, self.to).collect();
        let wsv: Vec<(u64, f64)> = ts
            .iter()
            .map(|t| (*t, (ws(*t) * MI as f64).round()))
            .collect();
        let rssv: Vec<(u64, f64)> = ts
            .iter()
            .map(|t| (*t, (rss(*t) * MI as f64).round()))
            .collect();
        self.c
            .om
            .series("container_memory_working_set_bytes", &lbl, wsv.clone());
        self.c.om.series("container_memory_rss", &lbl, rssv.clone());
        if let Some(r) = cpu_cores {
            // A counter growing linearly from a large base: rate() is exactly `r`.
            self.c.om.series(
                "container_cpu_usage_seconds_total",
                &lbl,
                ts.iter().map(|t| (*t, 1.0e6 + r * (*t - ts[0]) as f64)),
            );
        }
        let klbl = format!(
            "namespace=\"{}\",pod=\"{}\",container=\"{}\",node=\"n1\"",
            self.ns, self.pod, name
        );
        if let Some(v) = req_lim_mi.0 {
            self.c.constant(
                "kube_pod_container_resource_requests",
                &format!("{klbl},resource=\"memory\",unit=\"byte\""),
                (v * MI) as f64,
                self.from,
                self.to,
            );
        }
        if let Some(v) = req_lim_mi.1 {
            self.c.constant(
                "kube_pod_container_resource_limits",
                &format!("{klbl},resource=\"memory\",unit=\"byte\""),
                (v * MI) as f64,
                self.from,
                self.to,
            );
        }
        self.c
            .containers
            .entry(format!("{}/{}", self.workload_key, name))
            .or_default()
            .push(PodSeries {
                pod: self.pod.clone(),
                ws: wsv,
                rss: rssv,
            });
        self
    }
}

// ---- Expected values, computed independently of the code under test ----

/// Prometheus' quantile: linear interpolation between closest ranks.
pub fn quantile(q: f64, vals: &[f64]) -> f64 {
    let mut v = vals.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = q * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let w = rank - lo as f64;
    v[lo] * (1.0 - w) + v[hi] * w
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub avg: f64,
    pub p95: f64,
    pub max: f64,
    pub n: usize,
}

fn window(s: &[(u64, f64)], now: u64, w: u64) -> Vec<f64> {
    s.iter()
        .filter(|(t, _)| *t > now - w && *t <= now)
        .map(|(_, v)| *v)
        .collect()
}

/// Per pod: the larger of working set and RSS for each figure; across pods: avg
/// weighted by sample count, largest p95, largest max.
pub fn stats(pods: &[PodSeries], now: u64, w: u64) -> Option<Stats> {
    let mut sum = 0.0;
    let mut n = 0usize;
    let mut p95 = f64::MIN;
    let mut max = f64::MIN;
    for p in pods {
        let ws = window(&p.ws, now, w);
        let rss = window(&p.rss, now, w);
        if ws.is_empty() {
            continue;
        }
        let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let a = avg(&ws).max(avg(&rss));
        sum += a * ws.len() as f64;
        n += ws.len();
        p95 = p95.max(quantile(0.95, &ws).max(quantile(0.95, &rss)));
        max = max.max(
            ws.iter()
                .chain(rss.iter())
                .cloned()
                .fold(f64::MIN, f64::max),
        );
    }
    (n > 0).then(|| Stats {
        avg: sum / n as f64,
        p95,
        max,
        n,
    })
}

/// The seed memory rules, written out: request = max(p95×1.2, avg×1.5, 64Mi) ↑16Mi in
/// [64Mi, 4Gi]; limit = max(max×1.1, request×1.5) ↑16Mi in [128Mi, 8Gi].
pub fn seed_memory(avg: f64, p95: f64, max: f64) -> (u64, u64) {
    let up16 = |v: u64| v.div_ceil(16 * MI) * 16 * MI;
    let req = up16(
        ((p95 * 1.2).ceil() as u64)
            .max((avg * 1.5).ceil() as u64)
            .max(64 * MI),
    )
    .clamp(64 * MI, 4096 * MI);
    let lim = up16(((max * 1.1).ceil() as u64).max((req as f64 * 1.5).ceil() as u64))
        .clamp(128 * MI, 8192 * MI)
        .max(req);
    (req, lim)
}

/// Short window raises the long window's p95 and max.
pub fn expected_memory(pods: &[PodSeries], now: u64, short: u64, long: u64) -> (u64, u64) {
    let l = stats(pods, now, long).expect("long window data");
    let (mut p95, mut max) = (l.p95, l.max);
    if let Some(s) = stats(pods, now, short) {
        p95 = p95.max(s.p95);
        max = max.max(s.max);
    }
    seed_memory(l.avg, p95, max)
}

/// Hysteresis of the seed rules: change only if |Δ| > min(20% of current, 64Mi).
pub fn worth(cur: u64, new: u64) -> bool {
    cur.abs_diff(new) > ((cur as f64 * 0.2).ceil() as u64).min(64 * MI)
}
