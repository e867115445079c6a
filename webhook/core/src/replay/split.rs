//! Splits of a trace for tuning on one half and reporting on the other: by series
//! (odd or even series numbers) and by time (the first or second half of each
//! series' scored steps).

/// Which series a replay keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeriesSplit {
    #[default]
    All,
    /// Series whose number is odd: the trailing digits of the id (`bitbrains-rnd-7`),
    /// or its 1-based position in the trace when the id does not end in digits.
    Odd,
    Even,
}

impl SeriesSplit {
    /// Whether the series `id`, the `index`-th (0-based) of the trace, is kept.
    pub fn keeps(self, id: &str, index: usize) -> bool {
        let digits = id.len() - id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let last = if digits > 0 {
            u32::from(id.as_bytes()[id.len() - 1] - b'0')
        } else {
            ((index + 1) % 10) as u32
        };
        match self {
            SeriesSplit::All => true,
            SeriesSplit::Odd => last % 2 == 1,
            SeriesSplit::Even => last % 2 == 0,
        }
    }
}

/// Which of a series' scored steps are scored: all, or the first or second half
/// (the halves hold the same number of steps, the second one more when odd). The
/// strategies always see the whole history before a step; only the scoring moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DaySplit {
    #[default]
    All,
    FirstHalf,
    SecondHalf,
}

impl DaySplit {
    /// The scored step starts `[from, to)` given the first scored step start and the
    /// last step start of the series (both on the step grid).
    pub fn range(self, first: i64, last: i64, step: i64) -> (i64, i64) {
        let n = if last >= first {
            (last - first) / step + 1
        } else {
            0
        };
        let mid = first + (n / 2) * step;
        match self {
            DaySplit::All => (first, i64::MAX),
            DaySplit::FirstHalf => (first, mid),
            DaySplit::SecondHalf => (mid, i64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("bitbrains-rnd-7", 0, SeriesSplit::Odd, true)]
    #[case("bitbrains-rnd-10", 0, SeriesSplit::Odd, false)]
    #[case("bitbrains-rnd-10", 0, SeriesSplit::Even, true)]
    #[case("web", 0, SeriesSplit::Odd, true)] // first in the trace: number 1
    #[case("web", 1, SeriesSplit::Even, true)]
    #[case("web", 1, SeriesSplit::All, true)]
    fn series_split(
        #[case] id: &str,
        #[case] index: usize,
        #[case] split: SeriesSplit,
        #[case] kept: bool,
    ) {
        assert_eq!(split.keeps(id, index), kept);
    }

    #[rstest]
    #[case(DaySplit::All, (0, i64::MAX))]
    #[case(DaySplit::FirstHalf, (0, 200))] // 5 steps 0..=400: 2 then 3
    #[case(DaySplit::SecondHalf, (200, i64::MAX))]
    fn day_split(#[case] split: DaySplit, #[case] want: (i64, i64)) {
        assert_eq!(split.range(0, 400, 100), want);
    }
}
