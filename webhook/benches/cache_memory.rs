//! Memory of the analyzer's recommendation cache (`analyzer::cache::RecommendationCache`,
//! what admission reads in a cluster) filled with N containers, each as the analyzer
//! fills it (memory and CPU observed and recommended, current sizes).
//!
//! Run: `cargo bench -p rightsizer --bench cache_memory [-- N...]` (default 10000 100000).
//! Each N is measured in a fresh child process (VmRSS before and after filling, VmHWM),
//! so memory freed by an earlier N cannot hide the cost of the next.

use std::time::Instant;

use rightsizer::analyzer::cache::RecommendationCache;
use rightsizer_core::analysis::entry::Entry;
use rightsizer_core::recommendation::{
    ContainerKey, ContainerRecommendation, ResourceRecommendation,
};
use rightsizer_core::rules::{Observed, Sizes};
use rightsizer_core::workload::kind::WorkloadKind;
use rightsizer_core::workload::WorkloadKey;

const CHILD_ENV: &str = "RIGHTSIZER_CACHE_MEMORY_N";

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn vm() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Key `i`: 100 containers per namespace, 2 per workload, names of typical length.
fn key(i: usize) -> ContainerKey {
    ContainerKey::new(
        WorkloadKey {
            namespace: format!("team-{:05}", i / 100),
            kind: WorkloadKind::Deployment,
            name: format!("service-{:04}-api", (i % 100) / 2),
        },
        if i % 2 == 0 { "app" } else { "istio-proxy" },
    )
}

fn entry(i: usize) -> Entry {
    let mib = 1u64 << 20;
    let base = 64 + (i % 37) as u64 * 16;
    let observed = |scale: f64| Observed {
        avg: base as f64 * scale * 0.6,
        p95: base as f64 * scale * 0.8,
        max: base as f64 * scale,
        samples: 2016,
        history_seconds: 604_800,
    };
    let resource = |scale: f64, unit: u64| ResourceRecommendation {
        observed: Some(observed(scale)),
        recommended: Some(Sizes {
            request: Some(base * unit),
            limit: Some(base * unit * 3 / 2),
        }),
        ..Default::default()
    };
    Entry {
        rec: ContainerRecommendation {
            memory: Some(resource(mib as f64, mib)),
            cpu: Some(resource(1.0, 1)),
            updated_at: 1_700_000_000,
            ..Default::default()
        },
        memory_revised_at: 1_700_000_000,
        cpu_revised_at: 1_700_000_000,
        knative_revised_at: 0,
        current_memory: Sizes {
            request: Some(512 * mib),
            limit: Some(1024 * mib),
        },
        current_cpu: Sizes {
            request: Some(500),
            limit: None,
        },
        pods: 3,
        oom_kills: 0,
    }
}

fn child(n: usize) {
    let (before, _) = vm();
    let start = Instant::now();
    let cache = RecommendationCache::new(n.max(1), 6 * 3600);
    for i in 0..n {
        cache.put(key(i), entry(i));
    }
    let fill = start.elapsed();
    // A few lookups, as admission does, so the figure is of a cache in use.
    let hits = (0..1000)
        .filter(|i| {
            cache
                .get_at(&key(i * 97 % n.max(1)), 1_700_000_100)
                .is_some()
        })
        .count();
    let (after, hwm) = vm();
    let per_entry = if n == 0 {
        0.0
    } else {
        (after.saturating_sub(before) * 1024) as f64 / n as f64
    };
    println!(
        "{n:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.0} {:>9.0} {hits:>6}",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        hwm as f64 / 1024.0,
        per_entry,
        fill.as_secs_f64() * 1e3,
    );
    std::hint::black_box(&cache);
}

fn main() {
    if let Some(n) = std::env::var(CHILD_ENV).ok().and_then(|v| v.parse().ok()) {
        child(n);
        return;
    }
    let benching = std::env::args().any(|a| a == "--bench");
    let mut ns: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if ns.is_empty() {
        ns = if benching {
            vec![0, 10_000, 100_000]
        } else {
            vec![0, 1_000]
        };
    }
    println!(
        "# size_of Entry {} B, ContainerKey {} B, ContainerRecommendation {} B",
        size_of::<Entry>(),
        size_of::<ContainerKey>(),
        size_of::<ContainerRecommendation>()
    );
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>6}",
        "entries", "RSS0 MiB", "RSS MiB", "HWM MiB", "B/entry", "fill ms", "hits"
    );
    let exe = std::env::current_exe().expect("own executable");
    for n in ns {
        let status = std::process::Command::new(&exe)
            .env(CHILD_ENV, n.to_string())
            .status()
            .expect("child run");
        assert!(status.success(), "child for {n} entries failed");
    }
}
