//! A watched collection reduced to small derived values. kube's reflector keeps whole
//! objects; admission needs a few fields of each, so every object is turned into a
//! small value as it arrives and the object itself is dropped.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::lock::RwLockExt;

/// Derived values by key, replaced wholesale on every (re)list.
pub struct Mirror<Key, V> {
    map: RwLock<HashMap<Key, V>>,
    /// Moves on every write: indexes derived from the map rebuild when it has moved.
    generation: AtomicU64,
    synced: AtomicBool,
    synced_notify: Notify,
    size: Gauge,
}

impl<Key: Eq + Hash, V> Mirror<Key, V> {
    pub fn new(size: Gauge) -> Arc<Self> {
        Arc::new(Mirror {
            map: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            synced: AtomicBool::new(false),
            synced_notify: Notify::new(),
            size,
        })
    }

    /// Read access. Writers hold the lock only to swap or insert one entry.
    pub fn read(&self) -> RwLockReadGuard<'_, HashMap<Key, V>> {
        // A poisoned lock still holds a consistent map: every write is one insert,
        // remove or swap.
        self.map.read_locked()
    }

    fn write(&self) -> WriteGuard<'_, Key, V> {
        WriteGuard {
            map: self.map.write_locked(),
            generation: &self.generation,
        }
    }

    /// A number that differs after every write (an index built at generation `g` is
    /// current while this still returns `g`). Read it before reading the map.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Put one value now (a writer that knows what it just stored; the watch will
    /// deliver the same).
    pub fn put(&self, k: Key, v: V) {
        let mut map = self.write();
        map.insert(k, v);
        self.set_size(map.len());
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first complete list has arrived.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Wait for the first complete list.
    pub async fn synced(&self) {
        loop {
            let notified = self.synced_notify.notified();
            if self.is_synced() {
                return;
            }
            notified.await;
        }
    }

    fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
        self.synced_notify.notify_waiters();
    }

    fn set_size(&self, n: usize) {
        self.size.set(n as i64);
    }
}

/// Write access; the generation moves when it is released (after the change, so an index
/// built from the new map under the old generation is rebuilt, never the reverse).
struct WriteGuard<'a, Key, V> {
    map: RwLockWriteGuard<'a, HashMap<Key, V>>,
    generation: &'a AtomicU64,
}

impl<Key, V> std::ops::Deref for WriteGuard<'_, Key, V> {
    type Target = HashMap<Key, V>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<Key, V> std::ops::DerefMut for WriteGuard<'_, Key, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

impl<Key, V> Drop for WriteGuard<'_, Key, V> {
    fn drop(&mut self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// What changed in a mirror, for watchers that act on changes (policies, pods).
pub enum Change<'a, Key, V> {
    Upsert(&'a Key, &'a V),
    /// With the last value held (pods keep it after deletion).
    Remove(&'a Key, &'a V),
}

/// Drive `stream` into `mirror`: `derive` turns an object into its key and value (or
/// `None` to ignore it); `on_change` hears every applied change. Runs until the stream
/// ends (never, with the watcher's backoff); stream errors are logged and retried.
pub async fn run<K, Key, V, S>(
    name: &'static str,
    stream: S,
    mirror: Arc<Mirror<Key, V>>,
    derive: impl Fn(&K) -> Option<(Key, V)>,
    mut on_change: impl FnMut(Change<'_, Key, V>),
) where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    Key: Eq + Hash + Clone,
{
    let mut stream = std::pin::pin!(stream);
    // Objects of a relist in progress; swapped in at InitDone.
    let mut pending: Option<HashMap<Key, V>> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(watcher::Event::Apply(obj)) => {
                if let Some((k, v)) = derive(&obj) {
                    on_change(Change::Upsert(&k, &v));
                    let mut map = mirror.write();
                    map.insert(k, v);
                    mirror.set_size(map.len());
                }
            }
            Ok(watcher::Event::Delete(obj)) => {
                if let Some((k, v)) = derive(&obj) {
                    on_change(Change::Remove(&k, &v));
                    let mut map = mirror.write();
                    map.remove(&k);
                    mirror.set_size(map.len());
                }
            }
            Ok(watcher::Event::Init) => pending = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(obj)) => {
                if let Some((k, v)) = derive(&obj) {
                    pending.get_or_insert_with(HashMap::new).insert(k, v);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let fresh = pending.take().unwrap_or_default();
                {
                    let old = mirror.read();
                    for (k, v) in old.iter().filter(|(k, _)| !fresh.contains_key(*k)) {
                        on_change(Change::Remove(k, v));
                    }
                }
                for (k, v) in &fresh {
                    on_change(Change::Upsert(k, v));
                }
                mirror.set_size(fresh.len());
                *mirror.write() = fresh;
                mirror.mark_synced();
            }
            Err(e) => tracing::warn!(watch = name, error = %e, "watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watcher::Event as E;

    #[tokio::test]
    async fn relists_replace_the_map_and_report_removals() {
        let events: Vec<Result<E<(&str, u32)>, watcher::Error>> = vec![
            Ok(E::Init),
            Ok(E::InitApply(("a", 1))),
            Ok(E::InitApply(("b", 2))),
            Ok(E::InitDone),
            Ok(E::Apply(("c", 3))),
            Ok(E::Delete(("a", 1))),
            // A relist (e.g. after 410 Gone) that no longer holds b.
            Ok(E::Init),
            Ok(E::InitApply(("c", 4))),
            Ok(E::InitDone),
        ];
        let size = Gauge::default();
        let m = Mirror::<String, u32>::new(size.clone());
        let mut log = Vec::new();
        run(
            "test",
            futures::stream::iter(events),
            m.clone(),
            |(k, v): &(&str, u32)| Some((k.to_string(), *v)),
            |c| match c {
                Change::Upsert(k, v) => log.push(format!("+{k}{v}")),
                Change::Remove(k, v) => log.push(format!("-{k}{v}")),
            },
        )
        .await;
        assert!(m.is_synced());
        let map: Vec<_> = m.read().iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(map, vec![("c".to_string(), 4)]);
        assert_eq!(size.get(), 1);
        let first_list = log[..2].to_vec();
        assert!(first_list.contains(&"+a1".to_string()) && first_list.contains(&"+b2".to_string()));
        assert_eq!(&log[2..], &["+c3", "-a1", "-b2", "+c4"]);
    }
}
