//! The policy's bounds on memory (`rules.memory.request.min/max`, `limit.min/max`)
//! hold whichever strategy decided: a strategy sizes from usage alone, the policy
//! says what the cluster allows.

use super::MemorySizes;
use crate::rules::Rules;

/// The reason recorded when a bound changed a strategy's value.
pub const REASON_CLAMPED: &str = "clamped";

/// `d` with the request inside the policy's request bounds and the limit inside its
/// limit bounds (when the policy has limit rules), the limit never below the
/// request; `true` when a bound changed a value.
pub fn clamp(rules: &Rules, d: MemorySizes) -> (MemorySizes, bool) {
    let r = &rules.memory.request;
    // A max below the min (a policy typo) must not panic: the min wins, as in `Rules`.
    let request = d.request.clamp(r.min.0, r.max.0.max(r.min.0));
    let limit = match &rules.memory.limit {
        Some(l) => d.limit.clamp(l.min.0, l.max.0.max(l.min.0)),
        None => d.limit,
    }
    .max(request);
    let out = MemorySizes { request, limit };
    (out, out != d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::{GI, MI};
    use crate::strategy::test_support::iv_mib;
    use crate::strategy::ALL;
    use rstest::rstest;

    /// The seed's bounds: request 64Mi..4Gi, limit 128Mi..8Gi.
    #[rstest]
    #[case::inside((256 * MI, 512 * MI), (256 * MI, 512 * MI), false)]
    #[case::above((6 * GI, 12 * GI), (4 * GI, 8 * GI), true)]
    #[case::below((16 * MI, 32 * MI), (64 * MI, 128 * MI), true)]
    #[case::limit_only((GI, 9 * GI), (GI, 8 * GI), true)]
    fn seed_bounds(#[case] got: (u64, u64), #[case] want: (u64, u64), #[case] clamped: bool) {
        let d = MemorySizes {
            request: got.0,
            limit: got.1,
        };
        let (c, was) = clamp(&Rules::default(), d);
        assert_eq!((c.request, c.limit), want);
        assert_eq!(was, clamped);
    }

    #[test]
    fn limit_stays_above_a_clamped_request() {
        let mut rules = Rules::default();
        rules.memory.request.min = crate::quantity::Bytes(2 * GI);
        let d = MemorySizes {
            request: MI,
            limit: GI,
        };
        assert_eq!(clamp(&rules, d).0.limit, 2 * GI);
    }

    /// Every strategy, fed usage far above and far below the seed's bounds, ends
    /// inside them once clamped (at the bounds when above), and the clamp says so.
    #[rstest]
    #[case::huge(8.0 * 1024.0, (4 * GI, 8 * GI))]
    #[case::tiny(8.0, (64 * MI, 128 * MI))]
    fn every_strategy_is_clamped(#[case] usage_mib: f64, #[case] bound: (u64, u64)) {
        let rules = Rules::default();
        for spec in ALL {
            let mut s = spec.make();
            for i in 0..(3 * 288) {
                s.observe(&iv_mib(i * 300, usage_mib));
            }
            let d = s
                .recommend(3 * 86400, None)
                .unwrap_or_else(|| panic!("{} did not answer", spec.name));
            let (c, was) = clamp(&rules, d);
            assert!(c.request >= 64 * MI && c.request <= 4 * GI, "{}", spec.name);
            assert!(c.limit >= 128 * MI && c.limit <= 8 * GI, "{}", spec.name);
            if usage_mib > 1024.0 {
                assert_eq!((c.request, c.limit), bound, "{}", spec.name);
            } else {
                // Strategies with a floor of their own (VPA: 250 MiB) stay inside.
                assert!(c.request >= bound.0 && c.limit >= bound.1, "{}", spec.name);
            }
            assert_eq!(was, c != d, "{}", spec.name);
        }
    }
}
