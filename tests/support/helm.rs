//! Where the helm of tests/tools/helm.sh is: `RIGHTSIZER_HELM` when set (any helm 3), else the
//! script's cache (`RIGHTSIZER_HELM_CACHE`, default ~/.cache/rightsizer-helm/v3.17.2) — the
//! same lookup as tests/build.rs's `has_helm`.

use std::path::PathBuf;

pub fn helm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("RIGHTSIZER_HELM") {
        return PathBuf::from(p);
    }
    let cache = match std::env::var_os("RIGHTSIZER_HELM_CACHE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/rightsizer-helm/v3.17.2"),
    };
    cache.join("helm")
}
