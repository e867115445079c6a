//! Keeps a [`SwappableCert`] in step with its PEM files without a restart.
//!
//! Two triggers, because neither is enough alone: a `notify` watch on the files' parent
//! directories (Kubernetes updates Secret volumes by swapping the `..data` symlink, which
//! shows up as events on the directory, not on `tls.crt`), and a periodic re-read that
//! compares contents (for file systems and swaps that produce no event). A pair that does
//! not parse, whose key does not match, or whose certificate is expired or not yet valid
//! is refused; the last good pair stays in use. A pair refused only for its validity is
//! looked at again on each re-read (a not-yet-valid certificate becomes good by itself).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::metrics::ServerMetrics;
use super::tls::{
    certified_key_from_pem, check_validity, load_pair, validity, SwappableCert, TlsError,
};
use crate::clock::unix_now;
use crate::lock::LockExt;
use rustls::sign::CertifiedKey;

/// Default period of the content re-read.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(5);
/// Wait after a file event so both files of a pair are written before reading.
const SETTLE: Duration = Duration::from_millis(200);

/// The running reload; dropping it stops watching.
pub struct CertWatch {
    task: JoinHandle<()>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Drop for CertWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Reloader {
    cert: PathBuf,
    key: PathBuf,
    target: Arc<SwappableCert>,
    metrics: ServerMetrics,
    state: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// Contents last looked at (good or bad), so an unchanged pair is not re-parsed.
    contents: Option<(Vec<u8>, Vec<u8>)>,
    /// Last failure reported, so a persistent failure is logged and counted once.
    failure: Option<String>,
}

impl Reloader {
    /// Re-read the files; swap in the pair when it changed and is valid.
    fn check(&self) {
        let mut seen = self.state.locked();
        let read = std::fs::read(&self.cert).and_then(|c| Ok((c, std::fs::read(&self.key)?)));
        let (c, k) = match read {
            Ok(ck) => ck,
            Err(e) => {
                self.fail(
                    &mut seen,
                    "error",
                    format!("reading certificate files: {e}"),
                );
                return;
            }
        };
        if seen.contents.as_ref() == Some(&(c.clone(), k.clone())) {
            return;
        }
        let what = format!("{} + {}", self.cert.display(), self.key.display());
        let parsed = certified_key_from_pem(&c, &k, &what)
            .and_then(|ck| check_validity(&ck, unix_now()).map(|(_, after)| (ck, after)));
        match parsed {
            Ok((ck, not_after)) => {
                seen.contents = Some((c, k));
                self.target.store(ck);
                self.metrics.tls_cert_not_after.set(not_after);
                seen.failure = None;
                self.metrics.tls_reload("success");
                tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
            }
            Err(e @ TlsError::OutsideValidity { .. }) => {
                // Not remembered as seen: time alone may make this pair good.
                self.fail(&mut seen, "expired", e.to_string())
            }
            Err(e) => {
                seen.contents = Some((c, k));
                self.fail(&mut seen, "error", e.to_string())
            }
        }
    }

    fn fail(&self, seen: &mut Seen, result: &'static str, why: String) {
        if seen.failure.as_deref() == Some(why.as_str()) {
            return;
        }
        tracing::warn!(error = %why, "certificate reload refused; keeping the last good one");
        self.metrics.tls_reload(result);
        seen.failure = Some(why);
    }
}

/// Load the pair (it must be valid now), then keep reloading it in the background on
/// file events and every `period`. Must be called inside a tokio runtime.
pub fn watch_pair(
    cert: &Path,
    key: &Path,
    metrics: ServerMetrics,
    period: Duration,
) -> Result<(Arc<SwappableCert>, CertWatch), TlsError> {
    start(cert, key, metrics, period, true)
}

/// Like [`watch_pair`] but by periodic re-read only (no file events).
pub fn poll_pair(
    cert: &Path,
    key: &Path,
    metrics: ServerMetrics,
    period: Duration,
) -> Result<(Arc<SwappableCert>, CertWatch), TlsError> {
    start(cert, key, metrics, period, false)
}

fn start(
    cert: &Path,
    key: &Path,
    metrics: ServerMetrics,
    period: Duration,
    events: bool,
) -> Result<(Arc<SwappableCert>, CertWatch), TlsError> {
    let (ck, c, k) = load_pair(cert, key)?;
    // At start an expired pair is still served (refusing to start would not help the
    // apiserver either); the gauge and its alert say so.
    let (_, not_after) = validity(&ck)?;
    metrics.tls_cert_not_after.set(not_after);
    if check_validity(&ck, unix_now()).is_err() {
        tracing::error!(cert = %cert.display(), not_after, "the serving certificate is not valid now");
    }
    let target = Arc::new(SwappableCert::new(ck));
    let reloader = Arc::new(Reloader {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        target: target.clone(),
        metrics,
        state: Mutex::new(Seen {
            contents: Some((c, k)),
            failure: None,
        }),
    });

    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watcher = match events.then(|| dir_watcher(&[cert, key], tx)) {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => {
            // The periodic re-read still works without events.
            tracing::warn!(error = %e, "cannot watch certificate directory; re-reading every {period:?} only");
            None
        }
    };

    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events_open = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                ev = rx.recv(), if events_open => {
                    if ev.is_none() {
                        // Watcher gone: keep polling.
                        events_open = false;
                        continue;
                    }
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                }
            }
            let r = reloader.clone();
            // File reads are blocking; keep them off the async workers.
            if let Err(e) = tokio::task::spawn_blocking(move || r.check()).await {
                tracing::error!(error = %e, "certificate reload task failed");
            }
        }
    });
    Ok((
        target,
        CertWatch {
            task,
            _watcher: watcher,
        },
    ))
}

/// A pair handed over in memory (`serve --certificate-secret`, `--self-signed`): parsed,
/// and its expiry published on `rightsizer_tls_cert_not_after_seconds` as for files, so
/// the expiry alert reads the certificate actually served in every mode.
pub fn from_pem(
    cert: &[u8],
    key: &[u8],
    what: &str,
    metrics: &ServerMetrics,
) -> Result<CertifiedKey, TlsError> {
    let ck = certified_key_from_pem(cert, key, what)?;
    let (_, not_after) = validity(&ck)?;
    metrics.tls_cert_not_after.set(not_after);
    Ok(ck)
}

fn dir_watcher(
    files: &[&Path],
    tx: mpsc::UnboundedSender<()>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Our own reads show up as Access events; only changes matter.
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    })?;
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.dedup();
    for d in dirs {
        w.watch(&d, RecursiveMode::NonRecursive)?;
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::Ca;
    use prometheus_client::registry::Registry;

    async fn wait_until(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..100 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Without any file event the periodic re-read picks up a new pair, refuses a
    /// mismatched one (keeping the last good) and counts both.
    #[tokio::test]
    async fn periodic_reread_swaps_good_pairs_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let ca = Ca::generate("t", 1).unwrap();
        let (p1, p2, p3) = (
            ca.issue_serving(&["localhost".to_string()], 1).unwrap(),
            ca.issue_serving(&["localhost".to_string()], 1).unwrap(),
            ca.issue_serving(&["localhost".to_string()], 1).unwrap(),
        );
        std::fs::write(&c, &p1.cert_pem).unwrap();
        std::fs::write(&k, &p1.key_pem).unwrap();
        let metrics = ServerMetrics::register(&mut Registry::default());
        let (cert, _w) = poll_pair(&c, &k, metrics.clone(), Duration::from_millis(100)).unwrap();
        let der = |pem: &str| {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
        };
        assert_eq!(cert.current().cert[0], der(&p1.cert_pem));

        std::fs::write(&c, &p2.cert_pem).unwrap();
        std::fs::write(&k, &p2.key_pem).unwrap();
        assert!(wait_until(|| cert.current().cert[0] == der(&p2.cert_pem)).await);

        // Certificate of one pair, key of another: refused.
        std::fs::write(&c, &p3.cert_pem).unwrap();
        let errors = || {
            metrics
                .tls_reloads
                .get_or_create(&crate::server::metrics::ResultLabels {
                    result: "error".into(),
                })
                .get()
        };
        assert!(wait_until(|| errors() == 1).await);
        assert_eq!(cert.current().cert[0], der(&p2.cert_pem));
        // A persistent failure is counted once, not once per re-read.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(errors(), 1);
    }

    /// An expired pair and a not-yet-valid pair are refused and counted as `expired`;
    /// the last good pair and its expiry gauge stay; the not-yet-valid pair is taken once
    /// its time comes, without another file change.
    #[tokio::test]
    async fn pairs_outside_their_validity_are_refused_until_valid() {
        use time::{Duration as TD, OffsetDateTime};
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let ca = Ca::generate("t", 1).unwrap();
        let names = ["localhost".to_string()];
        let now = OffsetDateTime::now_utc();
        let good = ca.issue_serving(&names, 1).unwrap();
        let expired = ca
            .issue_serving_between(&names, now - TD::days(2), now - TD::days(1))
            .unwrap();
        let soon = ca
            .issue_serving_between(&names, now + TD::seconds(2), now + TD::days(1))
            .unwrap();
        std::fs::write(&c, &good.cert_pem).unwrap();
        std::fs::write(&k, &good.key_pem).unwrap();
        let metrics = ServerMetrics::register(&mut Registry::default());
        let (cert, _w) = poll_pair(&c, &k, metrics.clone(), Duration::from_millis(100)).unwrap();
        let good_after = metrics.tls_cert_not_after.get();
        let want_after = (now + TD::days(1)).unix_timestamp();
        assert!(
            (good_after - want_after).abs() < 60,
            "{good_after} vs {want_after}"
        );
        let der = |pem: &str| {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
        };
        let count = |result: &str| {
            metrics
                .tls_reloads
                .get_or_create(&crate::server::metrics::ResultLabels {
                    result: result.into(),
                })
                .get()
        };

        std::fs::write(&c, &expired.cert_pem).unwrap();
        std::fs::write(&k, &expired.key_pem).unwrap();
        assert!(wait_until(|| count("expired") == 1).await);
        assert_eq!(cert.current().cert[0], der(&good.cert_pem));
        assert_eq!(metrics.tls_cert_not_after.get(), good_after);

        std::fs::write(&c, &soon.cert_pem).unwrap();
        std::fs::write(&k, &soon.key_pem).unwrap();
        assert!(wait_until(|| count("expired") == 2).await);
        assert_eq!(cert.current().cert[0], der(&good.cert_pem));
        assert!(wait_until(|| cert.current().cert[0] == der(&soon.cert_pem)).await);
        assert_eq!(count("success"), 1);
    }

    /// A pair given in memory publishes its expiry: the gauge is what the expiry alert
    /// reads, and it stayed 0 with `--certificate-secret`.
    #[test]
    fn a_pair_from_memory_sets_the_expiry_gauge() {
        let metrics = ServerMetrics::register(&mut Registry::default());
        let ca = Ca::generate("t", 1).unwrap();
        let pair = ca.issue_serving(&["localhost".to_string()], 30).unwrap();
        let ck = from_pem(
            pair.cert_pem.as_bytes(),
            pair.key_pem.as_bytes(),
            "mem",
            &metrics,
        )
        .unwrap();
        let (_, not_after) = validity(&ck).unwrap();
        assert_eq!(metrics.tls_cert_not_after.get(), not_after);
        let now = i64::try_from(unix_now()).unwrap();
        assert!(not_after > now + 29 * 86_400, "{not_after} vs {now}");
        let bad = from_pem(b"not a pem", pair.key_pem.as_bytes(), "mem", &metrics);
        assert!(bad.is_err());
        assert_eq!(metrics.tls_cert_not_after.get(), not_after);
    }
}
