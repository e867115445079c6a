//! Finds which prerequisites of the real-cluster tests this machine has, so that the tests
//! that cannot run here are reported by libtest as ignored, with the reason, instead of
//! returning early and counting as passed. This is the build script of the test package
//! (`rightsizer-tests`), not of the shipping crate: building `rightsizer` probes nothing.
//! Sets, for the test binaries:
//!
//! - `has_control_plane`: the v1.20.2 control plane of `tests/cluster/build.sh` and the tools
//!   `tests/cluster/up.sh` needs (tests/cluster/{kube_watch,cluster_e2e}.rs);
//! - `has_node`: besides, what `tests/cluster/node.sh` needs (root, containerd, runc, …);
//! - `has_shared_traces`: the shared traces beside the repository (tests/replay);
//! - `has_helm`: the helm of `tests/tools/helm.sh` (tests/deploy/helm.rs, and with
//!   `has_node` tests/cluster/helm_e2e.rs);
//! - `has_chromium`: Debian's `chromium` on PATH (tests/server/report_browser.rs);
//! - `has_previous_version`: the previous version's tree and binary that
//!   `tests/upgrade/build.sh` caches (tests/cluster/upgrade_e2e.rs, tests/deploy/crd_upgrade.rs).
//!
//! Under `CI=true` `has_control_plane`, `has_node`, `has_helm`, `has_chromium` and
//! `has_previous_version` are always set: a missing
//! prerequisite then fails the tests that need it (they say why) instead of skipping them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const SHARED_TRACE: &str = "../../shared/traces/bitbrains_rnd_2013-07_all500.csv.gz";

fn main() {
    for cfg in ["has_control_plane", "has_node", "has_shared_traces"] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    for var in ["CI", "PATH", "HOME", "RIGHTSIZER_K8S_CACHE"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=build.rs");
    // For support/exe.rs: the target triple, to build the binary for the same one.
    println!(
        "cargo::rustc-env=RIGHTSIZER_TESTS_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );

    let mut watch = Watch::default();
    let ci = matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"));

    let plane = control_plane(&mut watch);
    let node = plane.clone().or_else(|| node(&mut watch));
    for (cfg, missing) in [("has_control_plane", plane), ("has_node", node)] {
        match missing {
            None => println!("cargo::rustc-cfg={cfg}"),
            Some(_) if ci => println!("cargo::rustc-cfg={cfg}"),
            Some(why) => println!(
                "cargo::warning=tests needing {} are ignored here: {why}",
                cfg.trim_start_matches("has_").replace('_', " ")
            ),
        }
    }
    if watch.file(Path::new(SHARED_TRACE)) {
        println!("cargo::rustc-cfg=has_shared_traces");
    }
    helm(&mut watch, ci);
    chromium(&mut watch, ci);
    previous_version(&mut watch, ci);
    watch.emit();
}

/// Sets `has_chromium` when Debian's `chromium` is on PATH (tests/run installs it).
fn chromium(watch: &mut Watch, ci: bool) {
    println!("cargo::rustc-check-cfg=cfg(has_chromium)");
    if watch.tool("chromium") || ci {
        println!("cargo::rustc-cfg=has_chromium");
    } else {
        println!("cargo::warning=tests needing chromium are ignored here: it is not installed (tests/run installs Debian's chromium)");
    }
}

/// Sets `has_previous_version` when `tests/upgrade/build.sh` has built the commit in
/// tests/upgrade/PREVIOUS (the same path tests/support/previous.rs reads).
fn previous_version(watch: &mut Watch, ci: bool) {
    println!("cargo::rustc-check-cfg=cfg(has_previous_version)");
    println!("cargo::rerun-if-env-changed=RIGHTSIZER_UPGRADE_CACHE");
    let pin = Path::new("upgrade/PREVIOUS");
    watch.file(pin);
    let commit = std::fs::read_to_string(pin).unwrap_or_default();
    let root = match std::env::var_os("RIGHTSIZER_UPGRADE_CACHE") {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            PathBuf::from(home).join(".cache/rightsizer-upgrade")
        }
    };
    let stamp = root.join(commit.trim()).join(".built");
    if watch.file(&stamp) || ci {
        println!("cargo::rustc-cfg=has_previous_version");
    } else {
        println!(
            "cargo::warning=the upgrade tests are ignored here: no {} (run tests/upgrade/build.sh)",
            stamp.display()
        );
    }
}

/// Sets `has_helm` when the helm `tests/tools/helm.sh` installs is there (the same path
/// tests/deploy/helm.rs runs: `RIGHTSIZER_HELM`, else the script's cache).
fn helm(watch: &mut Watch, ci: bool) {
    println!("cargo::rustc-check-cfg=cfg(has_helm)");
    for var in ["RIGHTSIZER_HELM", "RIGHTSIZER_HELM_CACHE"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let path = match std::env::var_os("RIGHTSIZER_HELM") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("RIGHTSIZER_HELM_CACHE") {
            Some(d) => PathBuf::from(d).join("helm"),
            None => {
                let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
                PathBuf::from(home).join(".cache/rightsizer-helm/v3.17.2/helm")
            }
        },
    };
    if watch.file(&path) || ci {
        println!("cargo::rustc-cfg=has_helm");
    } else {
        println!(
            "cargo::warning=tests needing helm are ignored here: no {} (run tests/tools/helm.sh)",
            path.display()
        );
    }
}

/// Why the control plane cannot run here, if it cannot (as tests/support/cluster.rs says).
fn control_plane(watch: &mut Watch) -> Option<String> {
    let cache = k8s_cache();
    if !watch.file(&cache.join(".built")) {
        return Some(format!(
            "no kube-apiserver build in {} (run tests/cluster/build.sh)",
            cache.display()
        ));
    }
    for tool in ["etcd", "kubectl", "openssl"] {
        if !watch.tool(tool) {
            return Some(format!(
                "{tool} is not installed (run tests/cluster/build.sh)"
            ));
        }
    }
    None
}

/// Why a node cannot run here besides the control plane (as tests/support/node.rs says).
fn node(watch: &mut Watch) -> Option<String> {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root {
        return Some("a node needs root (cgroups, mounts, network)".into());
    }
    for bin in ["kubelet", "kube-proxy", "kube-scheduler"] {
        if !watch.file(&k8s_cache().join("bin").join(bin)) {
            return Some(format!("no {bin} build (run tests/cluster/build.sh)"));
        }
    }
    for tool in [
        "containerd",
        "ctr",
        "runc",
        "iptables",
        "busybox",
        "prometheus",
        "setsid",
        "flock",
    ] {
        if !watch.tool(tool) {
            return Some(format!("{tool} is not installed (tests/run installs it)"));
        }
    }
    if !watch.file(Path::new("/usr/lib/cni/bridge")) {
        return Some("containernetworking-plugins is not installed (tests/run installs it)".into());
    }
    None
}

/// Where `tests/cluster/build.sh` puts the binaries (same default as the script).
fn k8s_cache() -> PathBuf {
    if let Ok(d) = std::env::var("RIGHTSIZER_K8S_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/rightsizer-k8s/v1.20.2")
}

/// The paths whose change must rerun this script: a file that exists is watched itself; for
/// a missing one, its folder if that exists (cargo scans a watched folder whole, so never a
/// broad one such as `/` or `/usr/lib`; and a missing path would rerun this script, and so
/// rebuild the crate, on every build). tests/run touches this file after it installs
/// packages or builds the control plane, for what no watched path shows.
#[derive(Default)]
struct Watch(BTreeSet<PathBuf>);

impl Watch {
    fn file(&mut self, p: &Path) -> bool {
        if p.exists() {
            self.0.insert(p.to_path_buf());
            return true;
        }
        if let Some(dir) = p
            .parent()
            .filter(|d| d.is_dir() && d.components().count() > 3)
        {
            self.0.insert(dir.to_path_buf());
        }
        false
    }

    /// Whether `tool` is on PATH (any directory of PATH, as `command -v` finds it).
    fn tool(&mut self, tool: &str) -> bool {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        if let Some(found) = dirs.iter().map(|d| d.join(tool)).find(|p| p.is_file()) {
            self.0.insert(found);
            return true;
        }
        // Installing it adds an entry to one of these (flat) directories.
        self.0.extend(
            dirs.into_iter()
                .filter(|d| d.is_absolute() && d.components().count() > 1 && d.is_dir()),
        );
        false
    }

    fn emit(self) {
        for p in self.0 {
            println!("cargo::rerun-if-changed={}", p.display());
        }
    }
}
