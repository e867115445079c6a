//! The previous version the upgrade tests start from: the commit pinned in
//! tests/upgrade/PREVIOUS, whose tree and `rightsizer` binary `tests/upgrade/build.sh`
//! caches outside the repository (same paths as tests/build.rs, which sets
//! `has_previous_version` when they are there).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

fn pin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("upgrade/PREVIOUS")
}

/// The pinned commit (full id).
pub fn commit() -> String {
    std::fs::read_to_string(pin())
        .expect("tests/upgrade/PREVIOUS")
        .trim()
        .to_string()
}

/// `<cache>/<commit>`: `src/` (the commit's tree), `rightsizer`, `.built`.
pub fn dir() -> PathBuf {
    let root = match std::env::var_os("RIGHTSIZER_UPGRADE_CACHE") {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            PathBuf::from(home).join(".cache/rightsizer-upgrade")
        }
    };
    root.join(commit())
}

/// The previous version's tree, or why it is not there.
pub fn tree() -> Result<PathBuf, String> {
    ready().map(|d| d.join("src"))
}

/// The previous version's binary, or why it is not there.
pub fn binary() -> Result<PathBuf, String> {
    ready().map(|d| d.join("rightsizer"))
}

fn ready() -> Result<PathBuf, String> {
    let d = dir();
    if d.join(".built").is_file() {
        Ok(d)
    } else {
        Err(format!(
            "no previous version ({}) in {}: run tests/upgrade/build.sh (a clone without that commit cannot: fetch it)",
            commit(),
            d.display()
        ))
    }
}
