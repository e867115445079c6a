//! The recommendation cache the admission path reads: bounded by entries (LRU), each
//! entry with its timestamps and a staleness flag. Stale entries keep being served
//! until they are older than the TTL, after which admission falls back to template
//! values (it sees no entry).

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};

use lru::LruCache;

use crate::clock::unix_now;
use crate::lock::LockExt;
use rightsizer_core::recommendation::{
    ContainerKey, ContainerRecommendation, RecommendationSource, Snapshot,
};

/// Default bound on the number of containers held.
pub const DEFAULT_CAPACITY: usize = 100_000;

use rightsizer_core::analysis::entry::Entry;

pub struct RecommendationCache {
    inner: Mutex<LruCache<ContainerKey, Entry>>,
    stale_ttl_secs: u64,
}

impl RecommendationCache {
    /// `capacity` 0 is treated as 1.
    pub fn new(capacity: usize, stale_ttl_secs: u64) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        RecommendationCache {
            inner: Mutex::new(LruCache::new(cap)),
            stale_ttl_secs,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<ContainerKey, Entry>> {
        // A panic elsewhere while holding the lock leaves consistent data; keep serving.
        self.inner.locked()
    }

    fn servable(&self, e: &Entry, now: u64) -> bool {
        !e.rec.stale || now <= e.rec.updated_at.saturating_add(self.stale_ttl_secs)
    }

    /// The entry as admission sees it at `now` (None once stale past the TTL).
    pub fn get_at(&self, key: &ContainerKey, now: u64) -> Option<ContainerRecommendation> {
        let g = self.lock();
        let e = g.peek(key)?;
        self.servable(e, now).then(|| e.rec.clone())
    }

    pub fn snapshot_at(&self, now: u64) -> Snapshot {
        let g = self.lock();
        let recommendations: BTreeMap<_, _> = g
            .iter()
            .filter(|(_, e)| self.servable(e, now))
            .map(|(k, e)| (k.clone(), e.rec.clone()))
            .collect();
        Snapshot {
            generated_at: now,
            recommendations,
        }
    }

    /// The full entry, for the analyzer's next decision.
    pub fn entry(&self, key: &ContainerKey) -> Option<Entry> {
        self.lock().peek(key).cloned()
    }

    /// Every entry (most recently used first), for reports.
    pub fn entries(&self) -> Vec<(ContainerKey, Entry)> {
        self.lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    pub fn put(&self, key: ContainerKey, e: Entry) {
        self.lock().put(key, e);
    }

    /// Mark every entry not in `fresh` stale (all of them when `fresh` is empty and the
    /// cycle failed). Returns the number of stale entries.
    pub fn mark_stale_except(&self, fresh: &HashSet<ContainerKey>) -> usize {
        let mut g = self.lock();
        let mut n = 0;
        for (k, e) in g.iter_mut() {
            if !fresh.contains(k) {
                e.rec.stale = true;
            }
            if e.rec.stale {
                n += 1;
            }
        }
        n
    }

    /// Drop entries that are stale past the TTL (workloads that went away).
    pub fn purge_expired(&self, now: u64) -> usize {
        let mut g = self.lock();
        let dead: Vec<ContainerKey> = g
            .iter()
            .filter(|(_, e)| !self.servable(e, now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            g.pop(k);
        }
        dead.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stale_len(&self) -> usize {
        self.lock().iter().filter(|(_, e)| e.rec.stale).count()
    }
}

impl RecommendationSource for RecommendationCache {
    fn get(&self, key: &ContainerKey) -> Option<ContainerRecommendation> {
        self.get_at(key, unix_now())
    }
    fn snapshot(&self) -> Snapshot {
        self.snapshot_at(unix_now())
    }
    fn visit(&self, f: &mut dyn FnMut(&ContainerKey, &ContainerRecommendation)) {
        let now = unix_now();
        let g = self.lock();
        for (k, e) in g.iter().filter(|(_, e)| self.servable(e, now)) {
            f(k, &e.rec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> ContainerKey {
        ContainerKey::parse(&format!("ns/Deployment/{n}/app")).unwrap()
    }

    #[test]
    fn bounded_stale_and_expiring() {
        let c = RecommendationCache::new(2, 100);
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            let mut e = Entry::default();
            e.rec.updated_at = 1000 + i as u64;
            c.put(key(n), e);
        }
        assert_eq!(c.len(), 2);
        assert!(c.get_at(&key("a"), 1000).is_none()); // evicted
        let fresh: HashSet<_> = [key("c")].into_iter().collect();
        assert_eq!(c.mark_stale_except(&fresh), 1);
        let b = c.get_at(&key("b"), 1050).unwrap();
        assert!(b.stale);
        assert!(c.get_at(&key("b"), 1102).is_none()); // past the TTL
        assert!(c.get_at(&key("c"), 5000).is_some()); // fresh entries do not expire
        assert_eq!(c.snapshot_at(1102).recommendations.len(), 1);
        assert_eq!(c.purge_expired(1102), 1);
        assert_eq!(c.len(), 1);
    }
}
