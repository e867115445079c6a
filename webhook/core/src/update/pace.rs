//! How often the updater may come back to one workload: a backoff after evictions its
//! PodDisruptionBudget refused, and a pause between rounds (a round brings every Pod of
//! the workload to the values; the next one starts when values change again). Neither
//! holds an OOM loop or a Pod below its floor back: those wait at most one pass.

/// Evictions of one workload refused in a row (429 from the Eviction API), and when the
/// last one was (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refusals {
    pub count: u32,
    pub last: i64,
}

/// The first wait after a refusal; it doubles with each refusal in a row.
pub const BACKOFF_BASE_SECONDS: i64 = 30;
/// The longest wait between two tries.
pub const BACKOFF_MAX_SECONDS: i64 = 600;

impl Refusals {
    /// Seconds to wait after the last refusal before trying again.
    pub fn backoff_seconds(&self) -> i64 {
        if self.count == 0 {
            return 0;
        }
        let doublings = (self.count - 1).min(16);
        BACKOFF_BASE_SECONDS
            .saturating_mul(1 << doublings)
            .min(BACKOFF_MAX_SECONDS)
    }

    /// Whether a try at `now` must still wait.
    pub fn waiting(&self, now: i64) -> bool {
        now < self.last.saturating_add(self.backoff_seconds())
    }

    /// After an eviction: one more refusal in a row, or none once one went through.
    pub fn after(self, refused: bool, now: i64) -> Refusals {
        if refused {
            Refusals {
                count: self.count.saturating_add(1),
                last: now,
            }
        } else {
            Refusals::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::none(0, 0)]
    #[case::first(1, 30)]
    #[case::second(2, 60)]
    #[case::third(3, 120)]
    #[case::capped(6, 600)]
    #[case::many(1000, 600)]
    fn backoff_doubles_up_to_ten_minutes(#[case] count: u32, #[case] want: i64) {
        assert_eq!(Refusals { count, last: 0 }.backoff_seconds(), want);
    }

    #[rstest]
    #[case::just_refused(1, 1_000, 1_010, true)]
    #[case::after_the_wait(1, 1_000, 1_030, false)]
    #[case::third_in_a_row(3, 1_000, 1_100, true)]
    fn a_try_waits_for_the_backoff(
        #[case] count: u32,
        #[case] last: i64,
        #[case] now: i64,
        #[case] waits: bool,
    ) {
        assert_eq!(Refusals { count, last }.waiting(now), waits);
    }

    #[test]
    fn refusals_count_in_a_row_and_an_eviction_resets_them() {
        let r = Refusals::default().after(true, 10).after(true, 50);
        assert_eq!(r, Refusals { count: 2, last: 50 });
        assert_eq!(r.after(false, 90), Refusals::default());
    }
}
