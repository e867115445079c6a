//! What bounds the cost of `/mutate` on a replica, fairly between connections: body
//! bytes reserved as they arrive (per connection and per replica, the first bytes of each
//! body from a pool of their own so small reviews are not starved by large ones), how
//! many read reviews may wait or compute, how much memory the large reviews may take at
//! once (a budget each draws on in proportion to its body), how many compute at once
//! (one per core, off the async workers) and how long each may take. HTTP/2 streams per
//! connection are capped by the listener.
//!
//! Overload fails open at once. The apiserver (client-go's REST client) retries a 429 or
//! 5xx only when it carries `Retry-After`: a 503 with `Retry-After: 1` made each Pod
//! creation under overload take 3 attempts and 3.19 s, then be admitted unsized anyway.
//! So:
//! - when the body was read (the uid is known), a review that finds no slot, no memory
//!   budget or no time is answered `allowed: true`, unchanged, with a warning: the
//!   apiserver admits on the first answer;
//! - when the body could not be read (its bytes did not fit the budgets, or it did not
//!   arrive in time), there is no uid to answer with; the answer is a fast 503 *without*
//!   `Retry-After`: one attempt, and `failurePolicy: Ignore` admits the object. Closing
//!   the connection instead would cost the apiserver a new TLS handshake for its next
//!   review, and a reset HTTP/2 stream may be retried by its transport.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::admission::caps;

/// Limits of the review path. `Default` is what `rightsizer serve` uses.
#[derive(Debug, Clone)]
pub struct ReviewLimits {
    /// Reviews whose body was read, waiting for or holding a worker, on this replica
    /// (a body still arriving holds only its bytes: a stalled client cannot take these).
    pub max_in_flight: usize,
    /// Request-body bytes past each body's first [`Self::small_body_bytes`] buffered at
    /// once, over all reviews.
    pub max_buffered_bytes: usize,
    /// The first bytes of every body are drawn from a pool of their own
    /// ([`Self::small_pool_bytes`]): a review of a few KiB (the apiserver's usual) still
    /// finds room while large bodies hold the rest.
    pub small_body_bytes: usize,
    pub small_pool_bytes: usize,
    /// Body bytes one connection may have buffered at once (all its streams together).
    pub per_connection_bytes: usize,
    /// Working memory of the reviews computing on blocking threads at once, in bytes,
    /// estimated as [`Self::cost_per_body_byte`] times each body's length (counted up to
    /// [`caps::MAX_OBJECT_BYTES`]: a larger object is refused by its length, unmerged).
    /// It bounds memory where a count per core did not: two reviews just under the caps
    /// at once took ~60 MiB on 2 cores. A single review always fits (its cost is clamped
    /// to the budget).
    pub heavy_budget_bytes: usize,
    /// Peak working memory of a review per byte of its body: a merged object's parsed
    /// tree, its strict-type decode, the planned copy and the diff (measured: a 1.05 MB
    /// Pod just under the node cap grows RSS by 30.7 MiB while merged, 29 per byte).
    pub cost_per_body_byte: usize,
    /// Longest wait for the memory budget; past it the review is answered 503 (the
    /// apiserver retries after `Retry-After`), not queued until its deadline.
    pub budget_wait: Duration,
    /// Reviews computing at once (each on a blocking thread).
    pub workers: usize,
    /// Bodies up to this size are reviewed on the async worker that read them: their
    /// cost is bounded (tens of µs) and a hop to a blocking thread would cost more than
    /// the review (p99 at 2,000/s went from 0.24 ms to 2 ms on 2 cores). Larger ones go to
    /// a blocking thread, behind the deadline.
    pub inline_max_bytes: usize,
    /// Longest wait for a whole request body.
    pub body_timeout: Duration,
    /// Deadline of a review without the apiserver's `?timeout=`.
    pub default_timeout: Duration,
    /// Kept free before the apiserver's timeout, so the answer arrives before it gives up.
    pub margin: Duration,
}

/// The apiserver's own webhook timeout ceiling.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ReviewLimits {
    fn default() -> Self {
        ReviewLimits {
            // A replica at 2,000 reviews/s has ~1 in flight; 64 absorbs bursts.
            max_in_flight: 64,
            // Five 3 MiB bodies at once; the apiserver's reviews are a few KiB, and at
            // 2,000/s about one is in flight.
            max_buffered_bytes: 16 * 1024 * 1024,
            // 128 bodies' first 64 KiB (8 MiB): more than the connections' streams a
            // few attackers can hold, with room left for the apiserver's reviews.
            small_body_bytes: 64 * 1024,
            small_pool_bytes: 8 * 1024 * 1024,
            // One body at the cap and a little more: six connections sending 16 MiB
            // each hold at most 6 x 3.1 MiB.
            per_connection_bytes: 3 * 1024 * 1024 + 128 * 1024,
            // One review at the caps (1.5 MiB × 28 = 42 MiB) plus smaller ones; with the
            // buffered bodies, the connections and the process itself, a replica stays
            // under 128 MiB.
            heavy_budget_bytes: 48 * 1024 * 1024,
            cost_per_body_byte: 28,
            budget_wait: Duration::from_secs(1),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            inline_max_bytes: 64 * 1024,
            // The apiserver sends a review's body with its head; the shipped webhook
            // timeout is 3 s, and a body is also bounded by the review's deadline.
            body_timeout: Duration::from_secs(2),
            default_timeout: Duration::from_secs(10),
            margin: Duration::from_millis(250),
        }
    }
}

/// Shared by every `/mutate` request of a server.
#[derive(Debug)]
pub struct ReviewGuard {
    pub limits: ReviewLimits,
    in_flight: Arc<Semaphore>,
    buffered: Arc<Semaphore>,
    small: Arc<Semaphore>,
    /// In KiB, so a 48 MiB budget stays far below the semaphore's permit limit.
    heavy: Arc<Semaphore>,
    workers: Arc<Semaphore>,
}

/// Units of [`ReviewGuard`]'s memory budget.
const KIB: usize = 1024;

impl Default for ReviewGuard {
    fn default() -> Self {
        ReviewGuard::new(ReviewLimits::default())
    }
}

/// Held while a review computes on a blocking thread: its share of the memory budget and
/// its compute slot.
pub struct Work {
    _memory: OwnedSemaphorePermit,
    _cpu: OwnedSemaphorePermit,
}

/// Held while a read review waits for or holds a worker.
pub struct ReviewSlot {
    _in_flight: OwnedSemaphorePermit,
}

/// One connection's share of the body-byte budget: the listener puts one in every
/// request of a connection (as an extension); created on first use.
#[derive(Clone, Default)]
pub struct ConnShare(Arc<std::sync::OnceLock<Arc<Semaphore>>>);

/// A body's bytes, reserved as they arrive (never by its declared length): from its
/// connection's share, and from the small pool up to `small_body_bytes`, the rest from
/// the replica's pool. Given back when dropped.
pub struct BodyBytes {
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
    conn: Option<Arc<Semaphore>>,
    small_cap: usize,
    small_held: usize,
    held: Vec<OwnedSemaphorePermit>,
}

impl BodyBytes {
    /// Account for `n` more bytes; `false` when a budget is spent.
    pub fn reserve(&mut self, n: usize) -> bool {
        let take = |pool: &Arc<Semaphore>, n: usize| -> Option<Option<OwnedSemaphorePermit>> {
            if n == 0 {
                return Some(None);
            }
            let n = u32::try_from(n).ok()?;
            pool.clone().try_acquire_many_owned(n).ok().map(Some)
        };
        let to_small = n.min(self.small_cap - self.small_held);
        let conn = match &self.conn {
            Some(c) => match take(c, n) {
                Some(p) => p,
                None => return false,
            },
            None => None,
        };
        let Some(small) = take(&self.small, to_small) else {
            return false;
        };
        let Some(large) = take(&self.large, n - to_small) else {
            return false;
        };
        self.small_held += to_small;
        self.held.extend([conn, small, large].into_iter().flatten());
        true
    }
}

impl ReviewGuard {
    pub fn new(limits: ReviewLimits) -> Self {
        ReviewGuard {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            buffered: Arc::new(Semaphore::new(limits.max_buffered_bytes.max(1))),
            small: Arc::new(Semaphore::new(limits.small_pool_bytes.max(1))),
            heavy: Arc::new(Semaphore::new((limits.heavy_budget_bytes / KIB).max(1))),
            workers: Arc::new(Semaphore::new(limits.workers.max(1))),
            limits,
        }
    }

    /// A slot for one more read review, or `None` past [`ReviewLimits::max_in_flight`].
    pub fn enter(&self) -> Option<ReviewSlot> {
        let p = self.in_flight.clone().try_acquire_owned().ok()?;
        Some(ReviewSlot { _in_flight: p })
    }

    /// An empty reservation for one body arriving on the connection `share` is from.
    pub fn body_bytes(&self, share: Option<&ConnShare>) -> BodyBytes {
        let per_conn = self.limits.per_connection_bytes.max(1);
        BodyBytes {
            small: self.small.clone(),
            large: self.buffered.clone(),
            conn: share.map(|s| {
                s.0.get_or_init(|| Arc::new(Semaphore::new(per_conn)))
                    .clone()
            }),
            small_cap: self.limits.small_body_bytes,
            small_held: 0,
            held: Vec::new(),
        }
    }

    /// The estimated working memory of reviewing a body of `body_len` bytes, in budget
    /// units (KiB), never more than the whole budget.
    pub fn cost(&self, body_len: usize) -> u32 {
        let l = &self.limits;
        let bytes = body_len
            .min(caps::MAX_OBJECT_BYTES)
            .saturating_mul(l.cost_per_body_byte);
        let units = bytes
            .div_ceil(KIB)
            .clamp(1, (l.heavy_budget_bytes / KIB).max(1));
        u32::try_from(units).unwrap_or(u32::MAX)
    }

    /// Memory and a compute slot for reviewing a body of `body_len` bytes: the memory
    /// waited for at most [`ReviewLimits::budget_wait`], the compute slot until
    /// `deadline`. `None` when either is not had in time (answered 503). Both are held
    /// until the work ends.
    pub async fn worker(&self, body_len: usize, deadline: Instant) -> Option<Work> {
        let budget_by = deadline.min(Instant::now() + self.limits.budget_wait);
        let cost = self.cost(body_len);
        let memory =
            tokio::time::timeout_at(budget_by, self.heavy.clone().acquire_many_owned(cost))
                .await
                .ok()?
                .ok()?;
        let cpu = tokio::time::timeout_at(deadline, self.workers.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(Work {
            _memory: memory,
            _cpu: cpu,
        })
    }

    /// When a review that arrived at `start` must be answered: the apiserver's
    /// `?timeout=` (Go duration) or the default, minus the margin.
    pub fn deadline(&self, start: Instant, query: Option<&str>) -> Instant {
        let asked = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("timeout="))
            .and_then(parse_go_duration)
            .unwrap_or(self.limits.default_timeout)
            .min(MAX_TIMEOUT);
        // A timeout shorter than twice the margin keeps half of itself.
        let budget = if asked > self.limits.margin * 2 {
            asked - self.limits.margin
        } else {
            asked / 2
        };
        start + budget
    }
}

/// A Go `time.Duration` string as client-go writes `?timeout=`: `3s`, `1.5s`, `500ms`,
/// `1m30s` (the one duration grammar, `rightsizer_core::duration`, with a unit: Go always
/// writes one). `None` for anything else or zero (the default applies); at most a day.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.len() > 32 || s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let d = rightsizer_core::duration::parse_duration(s).ok()?;
    (!d.is_zero()).then(|| d.min(Duration::from_secs(86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        for (s, want) in [
            ("3s", Some(ms(3000))),
            ("1.5s", Some(ms(1500))),
            ("500ms", Some(ms(500))),
            ("1m30s", Some(ms(90_000))),
            ("10s", Some(ms(10_000))),
            ("", None),
            ("3", None),
            ("s", None),
            ("-3s", None),
            ("0s", None),
            ("3x", None),
        ] {
            assert_eq!(parse_go_duration(s), want, "{s:?}");
        }
    }

    #[test]
    fn the_deadline_keeps_a_margin_before_the_apiservers_timeout() {
        let g = ReviewGuard::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(g.deadline(t0, Some("timeout=3s")), t0 + ms(2750));
        assert_eq!(g.deadline(t0, Some("a=b&timeout=1s")), t0 + ms(750));
        assert_eq!(g.deadline(t0, Some("timeout=200ms")), t0 + ms(100));
        assert_eq!(g.deadline(t0, None), t0 + ms(9750));
        assert_eq!(g.deadline(t0, Some("timeout=junk")), t0 + ms(9750));
        assert_eq!(g.deadline(t0, Some("timeout=1h")), t0 + ms(29_750));
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        let g = ReviewGuard::new(ReviewLimits {
            max_in_flight: 2,
            ..ReviewLimits::default()
        });
        let a = g.enter().unwrap();
        let _b = g.enter().unwrap();
        assert!(g.enter().is_none());
        drop(a);
        assert!(g.enter().is_some());
    }

    #[test]
    fn body_bytes_are_bounded_per_connection_and_small_bodies_keep_a_pool() {
        let g = ReviewGuard::new(ReviewLimits {
            max_buffered_bytes: 100,
            small_body_bytes: 10,
            small_pool_bytes: 30,
            per_connection_bytes: 80,
            ..ReviewLimits::default()
        });
        let (c1, c2) = (ConnShare::default(), ConnShare::default());
        // A large body: its first 10 bytes from the small pool, the rest from the large.
        let mut a = g.body_bytes(Some(&c1));
        assert!(a.reserve(5));
        assert!(a.reserve(70));
        assert!(!a.reserve(10), "over its connection's share");
        let mut b = g.body_bytes(Some(&c2));
        assert!(b.reserve(40));
        assert!(!b.reserve(6), "the large pool is spent (65 + 30 + 6 > 100)");
        // A small body on another connection still fits.
        let mut small = g.body_bytes(Some(&ConnShare::default()));
        assert!(small.reserve(10));
        drop(a);
        assert!(b.reserve(40));
        let mut c = g.body_bytes(Some(&c1));
        assert!(c.reserve(30), "the connection's share came back");
    }

    #[tokio::test]
    async fn large_reviews_draw_on_one_memory_budget() {
        let g = ReviewGuard::new(ReviewLimits {
            heavy_budget_bytes: 10 * 1024 * 1024,
            cost_per_body_byte: 10,
            budget_wait: Duration::from_millis(50),
            workers: 8,
            ..ReviewLimits::default()
        });
        let kib = 1024;
        assert_eq!(g.cost(600 * kib), 6000);
        // Counted up to the object cap, and never more than the whole budget.
        assert_eq!(g.cost(3 * 1024 * kib), 10 * 1024);
        let far = Instant::now() + Duration::from_secs(5);
        let a = g.worker(600 * kib, far).await.unwrap();
        assert!(g.worker(600 * kib, far).await.is_none(), "over the budget");
        let small = g.worker(100 * kib, far).await.unwrap();
        drop(a);
        assert!(g.worker(600 * kib, far).await.is_some());
        drop(small);
        assert!(
            g.worker(3 * 1024 * kib, far).await.is_some(),
            "one always fits"
        );
    }
}
