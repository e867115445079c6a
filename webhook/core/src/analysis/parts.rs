//! Which parts a cycle reads from Prometheus, and what the parts that answered allow.
//!
//! Instant queries are split by namespace into scopes that stay under a series bound;
//! range reads (the strategies' 5-minute intervals) are split the same way and, within a
//! scope, into time chunks of a bounded number of points, so no one answer is large
//! and one slow or failed part costs only itself. The shell runs the parts; this
//! module only plans them and says how far the history cursor may move.

/// One namespace scope: the namespaces of one split (`None`: everything) and the live
/// containers they hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub namespaces: Option<Vec<String>>,
    pub series: u64,
}

/// Namespaces grouped (largest first, first fit) so that each group stays under
/// `max_series`; one scope over everything when the whole cluster does. A namespace
/// larger than the bound is a scope of its own.
pub fn scopes(sizes: &[(String, f64)], max_series: usize) -> Vec<Scope> {
    let total: f64 = sizes.iter().map(|s| s.1.max(0.0)).sum();
    let max = max_series as f64;
    if total <= max {
        return vec![Scope {
            namespaces: None,
            series: total as u64,
        }];
    }
    let mut ns: Vec<&(String, f64)> = sizes.iter().collect();
    ns.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut groups: Vec<(Vec<String>, f64)> = Vec::new();
    for (n, c) in ns {
        let c = c.max(0.0);
        match groups.iter_mut().find(|g| g.1 + c <= max) {
            Some(g) => {
                g.0.push(n.clone());
                g.1 += c;
            }
            None => groups.push((vec![n.clone()], c)),
        }
    }
    groups
        .into_iter()
        .map(|(n, c)| Scope {
            namespaces: Some(n),
            series: c as u64,
        })
        .collect()
}

/// The most 5-minute steps one range query asks for (a day).
pub const MAX_STEPS: u64 = 288;
/// The most points (series × steps) one range query asks for: about 7 MiB of JSON
/// and 4 MiB decoded, whatever the cluster's size.
pub const MAX_POINTS: u64 = 250_000;

/// Split the evaluation times `first..=last` (on the `width` grid) into chunks, in
/// time order, each at most `MAX_STEPS` steps and, for a scope of `series` series, at
/// most `max_points` points (one step at least). Each chunk is `(first, last)`,
/// both included.
pub fn chunks(first: u64, last: u64, width: u32, series: u64, max_points: u64) -> Vec<(u64, u64)> {
    let w = u64::from(width.max(1));
    if first > last {
        return Vec::new();
    }
    let steps = (max_points / series.max(1)).clamp(1, MAX_STEPS);
    let mut out = Vec::new();
    let mut t = first;
    while t <= last {
        let end = (t + (steps - 1) * w).min(last);
        out.push((t, end));
        t = end + w;
    }
    out
}

/// Where the history cursor stands after a cycle: the evaluation time up to which
/// every scope's intervals were read. `fed_through` holds, per scope, the last
/// evaluation time of the chunks it read without a gap from the cursor (`None`: its
/// first chunk failed). The cursor never moves back, and moves only as far as the
/// slowest scope, so the intervals a failed part missed are read next cycle (the
/// scopes that had them skip them: an interval is fed once).
pub fn read_until(previous: Option<i64>, fed_through: &[Option<u64>]) -> Option<i64> {
    let Some(min) = fed_through
        .iter()
        .map(|f| f.map(|t| t as i64))
        .collect::<Option<Vec<i64>>>()
        .and_then(|v| v.into_iter().min())
    else {
        return previous;
    };
    Some(previous.map_or(min, |p| p.max(min)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(v: &[(&str, f64)]) -> Vec<(String, f64)> {
        v.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    fn names(s: &[Scope]) -> Vec<(Option<Vec<&str>>, u64)> {
        s.iter()
            .map(|s| {
                (
                    s.namespaces
                        .as_ref()
                        .map(|n| n.iter().map(String::as_str).collect()),
                    s.series,
                )
            })
            .collect()
    }

    type Want = Vec<(Option<Vec<&'static str>>, u64)>;
    type ScopeRow = (Vec<(&'static str, f64)>, usize, Want);
    type ChunkRow = (u64, u64, u64, u64, Vec<(u64, u64)>);
    type CursorRow = (Option<i64>, Vec<Option<u64>>, Option<i64>);

    #[test]
    fn scopes_stay_under_the_bound() {
        // (namespaces and their containers, bound) → scopes
        let table: Vec<ScopeRow> = vec![
            (vec![("a", 3.0), ("b", 2.0)], 5, vec![(None, 5)]),
            (vec![], 5, vec![(None, 0)]),
            (
                vec![("a", 3.0), ("b", 2.0), ("c", 4.0)],
                5,
                vec![(Some(vec!["c"]), 4), (Some(vec!["a", "b"]), 5)],
            ),
            // Larger than the bound: alone.
            (
                vec![("big", 9.0), ("s", 1.0)],
                5,
                vec![(Some(vec!["big"]), 9), (Some(vec!["s"]), 1)],
            ),
            // Ties in size keep a stable order (by name).
            (
                vec![("y", 3.0), ("x", 3.0)],
                5,
                vec![(Some(vec!["x"]), 3), (Some(vec!["y"]), 3)],
            ),
        ];
        for (s, max, want) in table {
            assert_eq!(names(&scopes(&sizes(&s), max)), want, "{s:?} {max}");
        }
    }

    #[test]
    fn chunks_cover_the_range_once_in_order_within_both_bounds() {
        // (first, last, series, max points) → chunks
        let table: Vec<ChunkRow> = vec![
            (300, 300, 1, 1000, vec![(300, 300)]),
            (600, 300, 1, 1000, vec![]),
            // 4 points per query at 2 series: 2 steps.
            (300, 1500, 2, 4, vec![(300, 600), (900, 1200), (1500, 1500)]),
            // More series than points: one step each.
            (300, 900, 10, 4, vec![(300, 300), (600, 600), (900, 900)]),
            // A day at most, however few the series.
            (
                300,
                300 * 300,
                1,
                MAX_POINTS,
                vec![(300, 288 * 300), (289 * 300, 300 * 300)],
            ),
            // No series known: as if one.
            (300, 600, 0, 1000, vec![(300, 600)]),
        ];
        for (first, last, series, max, want) in table {
            assert_eq!(
                chunks(first, last, 300, series, max),
                want,
                "{first}..{last} {series} {max}"
            );
        }
    }

    #[test]
    fn the_cursor_moves_only_as_far_as_every_scope_read() {
        // (previous cursor, per scope fed through) → cursor
        let table: Vec<CursorRow> = vec![
            (None, vec![Some(900), Some(900)], Some(900)),
            (Some(300), vec![Some(900), Some(600)], Some(600)),
            // A scope whose first chunk failed: the cursor stays.
            (Some(300), vec![Some(900), None], Some(300)),
            (None, vec![None], None),
            // Nothing read (no scope): stays.
            (Some(300), vec![], Some(300)),
            // Never back.
            (Some(1200), vec![Some(900)], Some(1200)),
        ];
        for (prev, fed, want) in table {
            assert_eq!(read_until(prev, &fed), want, "{prev:?} {fed:?}");
        }
    }
}
