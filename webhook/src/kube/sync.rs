//! Every watcher's metrics and whether it has delivered its first complete list: what
//! `/readyz` waits for (`missing`) and what `rightsizer_watch_synced` shows.
//!
//! A watcher counts as synced from its first complete list on and stays so: a relist
//! after a watch restart (410 Gone, a lost connection) replaces its mirror at the next
//! InitDone but never makes the replica unready. A replica whose watch keeps failing
//! keeps answering with the facts it last had (unready replicas would only move the
//! load to the others, or with none left, admit everything unsized); the failures show
//! in `rightsizer_watch_errors_total`.

use std::hash::Hash;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

use crate::kube::mirror::Mirror;
use crate::lock::LockExt;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: &'static str,
}

/// The watchers this process started, by resource name.
pub struct WatchBoard {
    sizes: Family<ResourceLabel, Gauge>,
    synced: Family<ResourceLabel, Gauge>,
    errors: Family<ResourceLabel, Counter>,
    /// Watchers that gate readiness, in start order.
    gating: Mutex<Vec<&'static str>>,
    changed: Notify,
}

impl WatchBoard {
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let board = WatchBoard {
            sizes: Family::default(),
            synced: Family::default(),
            errors: Family::default(),
            gating: Mutex::new(Vec::new()),
            changed: Notify::new(),
        };
        registry.register(
            "rightsizer_watch_objects",
            "Objects held by the watchers, by resource",
            board.sizes.clone(),
        );
        registry.register(
            "rightsizer_watch_synced",
            "1 once a watcher has delivered its first complete list (stays 1 across relists)",
            board.synced.clone(),
        );
        registry.register(
            "rightsizer_watch_errors",
            "Failed list or watch calls, by resource (retried with backoff; the last facts stay in use)",
            board.errors.clone(),
        );
        Arc::new(board)
    }

    /// The `rightsizer_watch_objects` gauge of one resource.
    pub fn size(&self, resource: &'static str) -> Gauge {
        self.sizes
            .get_or_create(&ResourceLabel { resource })
            .clone()
    }

    /// The `rightsizer_watch_errors_total` counter of one resource.
    pub fn errors(&self, resource: &'static str) -> Counter {
        self.errors
            .get_or_create(&ResourceLabel { resource })
            .clone()
    }

    /// Gate readiness on `mirror`'s first complete list. The returned future marks it
    /// synced then and ends; run it beside the watch.
    pub fn track<K, V>(
        self: &Arc<Self>,
        resource: &'static str,
        mirror: &Arc<Mirror<K, V>>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        K: Eq + Hash + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let gauge = self
            .synced
            .get_or_create(&ResourceLabel { resource })
            .clone();
        self.gating.locked().push(resource);
        let (board, mirror) = (self.clone(), mirror.clone());
        async move {
            mirror.synced().await;
            gauge.set(1);
            board.changed.notify_waiters();
        }
    }

    fn is_synced(&self, resource: &'static str) -> bool {
        self.synced.get_or_create(&ResourceLabel { resource }).get() == 1
    }

    /// The gating watchers without their first complete list yet.
    pub fn missing(&self) -> Vec<&'static str> {
        let gating = self.gating.locked().clone();
        gating.into_iter().filter(|r| !self.is_synced(r)).collect()
    }

    /// `Err` naming what `/readyz` still waits for.
    pub fn check(&self) -> Result<(), String> {
        let missing = self.missing();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "waiting for the first list of: {}",
                missing.join(", ")
            ))
        }
    }

    /// Wait until every gating watcher has its first complete list.
    pub async fn synced(&self) {
        loop {
            let changed = self.changed.notified();
            if self.missing().is_empty() {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use kube::runtime::watcher::{self, Event as E};

    fn events(
        list: Vec<E<(&'static str, u32)>>,
    ) -> impl futures::Stream<Item = Result<E<(&'static str, u32)>, watcher::Error>> {
        futures::stream::iter(list.into_iter().map(Ok))
    }

    async fn feed(m: &Arc<Mirror<String, u32>>, list: Vec<E<(&'static str, u32)>>) {
        crate::kube::mirror::run(
            "test",
            events(list),
            m.clone(),
            |(k, v): &(&str, u32)| Some((k.to_string(), *v)),
            |_| {},
        )
        .await;
    }

    fn encoded(registry: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, registry).unwrap();
        s
    }

    #[tokio::test]
    async fn not_ready_until_every_tracked_watcher_has_listed_once() {
        let mut registry = Registry::default();
        let board = WatchBoard::new(&mut registry);
        let quotas = Mirror::<String, u32>::new(board.size("resourcequotas"));
        let hpas = Mirror::<String, u32>::new(board.size("horizontalpodautoscalers"));
        let q = tokio::spawn(board.track("resourcequotas", &quotas));
        let h = tokio::spawn(board.track("horizontalpodautoscalers", &hpas));
        assert_eq!(
            board.check(),
            Err("waiting for the first list of: resourcequotas, horizontalpodautoscalers".into())
        );

        // A list that started but failed (Init, then an error) is not a list.
        feed(&quotas, vec![E::Init, E::InitApply(("a", 1))]).await;
        feed(&hpas, vec![E::Init, E::InitDone]).await;
        h.await.unwrap();
        assert_eq!(
            board.check(),
            Err("waiting for the first list of: resourcequotas".into())
        );
        assert!(board.synced().now_or_never().is_none());

        feed(&quotas, vec![E::Init, E::InitApply(("a", 1)), E::InitDone]).await;
        q.await.unwrap();
        assert_eq!(board.check(), Ok(()));
        board.synced().await;
        let text = encoded(&registry);
        assert!(
            text.contains(r#"rightsizer_watch_synced{resource="resourcequotas"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_relist_after_the_first_does_not_make_it_unready() {
        let mut registry = Registry::default();
        let board = WatchBoard::new(&mut registry);
        let m = Mirror::<String, u32>::new(board.size("limitranges"));
        let t = tokio::spawn(board.track("limitranges", &m));
        feed(&m, vec![E::Init, E::InitApply(("a", 1)), E::InitDone]).await;
        t.await.unwrap();
        // A watch restart: a new list begins and has not finished (or keeps failing).
        feed(&m, vec![E::Init, E::InitApply(("b", 2))]).await;
        assert_eq!(board.check(), Ok(()));
        // The facts of the last complete list stay in use meanwhile.
        assert_eq!(m.read().get("a"), Some(&1));
    }

    #[test]
    fn untracked_watchers_do_not_gate() {
        let mut registry = Registry::default();
        let board = WatchBoard::new(&mut registry);
        // Sized and counted (e.g. pods for the analyzer) but not tracked.
        board.size("pods").set(3);
        board.errors("pods").inc();
        assert_eq!(board.check(), Ok(()));
        let text = encoded(&registry);
        assert!(
            text.contains(r#"rightsizer_watch_errors_total{resource="pods"} 1"#),
            "{text}"
        );
    }
}
