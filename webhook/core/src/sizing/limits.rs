//! LimitRange rules. The apiserver's LimitRanger validates after mutating webhooks, so a
//! sized container that breaks min/max/maxLimitRequestRatio would get the Pod refused.

use k8s_openapi::api::core::v1::{LimitRangeItem, LimitRangeSpec};

use crate::quantity::Resource;
use crate::sizing::resources::{Resolved, Side, Source};

/// The tightest container bounds of all LimitRanges of a namespace for one resource,
/// with the apiserver's defaulting applied (default limit from max, default request
/// from the default limit, else from min).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bounds {
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub ratio: Option<f64>,
    pub default_limit: Option<u64>,
    pub default_request: Option<u64>,
}

fn get(
    map: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
    r: Resource,
) -> Option<u64> {
    map.as_ref()?
        .get(r.as_str())
        .and_then(|q| r.parse(&q.0).ok())
}

fn get_ratio(item: &LimitRangeItem, r: Resource) -> Option<f64> {
    let q = item.max_limit_request_ratio.as_ref()?.get(r.as_str())?;
    // The ratio is a plain number; parse in millis to accept decimals.
    crate::quantity::parse_millicores(&q.0)
        .ok()
        .map(|m| m as f64 / 1000.0)
}

fn tighter(a: Option<u64>, b: Option<u64>, pick: fn(u64, u64) -> u64) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(pick(x, y)),
        (x, y) => x.or(y),
    }
}

/// Bounds for items of `type` (`Container` or `Pod`).
pub fn bounds(ranges: &[LimitRangeSpec], kind: &str, r: Resource) -> Bounds {
    let mut b = Bounds::default();
    for item in ranges
        .iter()
        .flat_map(|s| s.limits.iter())
        .filter(|i| i.type_ == kind)
    {
        let min = get(&item.min, r);
        let max = get(&item.max, r);
        b.min = tighter(b.min, min, u64::max);
        b.max = tighter(b.max, max, u64::min);
        if let Some(ratio) = get_ratio(item, r) {
            b.ratio = Some(b.ratio.map_or(ratio, |x| x.min(ratio)));
        }
        if kind == "Container" {
            let default_limit = get(&item.default, r).or(max);
            let default_request = get(&item.default_request, r).or(default_limit).or(min);
            b.default_limit = b.default_limit.or(default_limit);
            b.default_request = b.default_request.or(default_request);
        }
    }
    b
}

/// A maxLimitRequestRatio in thousandths (as the apiserver compares), at least 1.
fn ratio_millis(ratio: f64) -> u128 {
    ((ratio * 1000.0).round() as u128).max(1)
}

/// Whether limit/request exceeds the ratio, compared exactly.
pub fn above_ratio(limit: u64, request: u64, ratio: f64) -> bool {
    u128::from(limit) * 1000 > u128::from(request) * ratio_millis(ratio)
}

fn set(side: &mut Option<Side>, value: u64, fallback: Source) {
    let source = side.map_or(fallback, |s| s.source);
    *side = Some(Side { value, source });
}

/// Bring one container's resolved values within the bounds, noting each change.
/// Values the LimitRanger would default in are made explicit when they would conflict.
pub fn fit_container(res: Resource, b: &Bounds, r: &mut Resolved, notes: &mut Vec<String>) {
    if *b == Bounds::default() {
        return;
    }
    let fmt = |v: u64| res.format(v);
    // What the LimitRanger will fill in for missing sides.
    if r.limit.is_none() {
        if let (Some(req), Some(dl)) = (r.request, b.default_limit) {
            if req.value > dl {
                notes.push(format!(
                    "limit set to the request: the LimitRange default limit {} is below it",
                    fmt(dl)
                ));
                set(&mut r.limit, req.value, req.source);
            }
        }
    }
    if let Some(min) = b.min {
        if let Some(req) = r.request.filter(|s| s.value < min) {
            notes.push(format!(
                "request raised to the LimitRange min ({} < {})",
                fmt(req.value),
                fmt(min),
            ));
            set(&mut r.request, min, req.source);
        }
        if let Some(lim) = r.limit.filter(|s| s.value < min) {
            notes.push(format!(
                "limit raised to the LimitRange min ({} < {})",
                fmt(lim.value),
                fmt(min),
            ));
            set(&mut r.limit, min, lim.source);
        }
    }
    if let Some(max) = b.max {
        if let Some(lim) = r.limit.filter(|s| s.value > max) {
            notes.push(format!(
                "limit lowered to the LimitRange max ({} > {})",
                fmt(lim.value),
                fmt(max),
            ));
            set(&mut r.limit, max, lim.source);
        }
        if let Some(req) = r.request.filter(|s| s.value > max) {
            notes.push(format!(
                "request lowered to the LimitRange max ({} > {})",
                fmt(req.value),
                fmt(max),
            ));
            set(&mut r.request, max, req.source);
        }
    }
    if let Some(ratio) = b.ratio {
        let lim = r.limit.map(|s| s.value).or(b.default_limit);
        // A missing request becomes the declared limit (Pod defaulting) before the
        // LimitRanger's default request.
        let req = r.request.or(r.limit).map(|s| s.value).or(b.default_request);
        if let (Some(l), Some(q)) = (lim, req) {
            // A zero request breaks any ratio (the LimitRanger refuses it outright).
            if l > 0 && above_ratio(l, q, ratio) {
                // In integers: with f64, 8Ei / 3 rounds down and still breaks the ratio.
                let m = ratio_millis(ratio);
                let need = u64::try_from((u128::from(l) * 1000).div_ceil(m)).unwrap_or(l);
                // Never below the min it was already raised to (fuzz seed 1593075104).
                let need = need.max(b.min.unwrap_or(0));
                notes.push(format!(
                    "request raised to {} for the LimitRange maxLimitRequestRatio {ratio}",
                    fmt(need)
                ));
                let src = r.request.map_or(Source::Default, |s| s.source);
                set(&mut r.request, need.min(l), src);
            }
        }
    }
    if let (Some(q), Some(l)) = (r.request, r.limit) {
        if q.value > l.value {
            notes.push("request lowered to the limit to satisfy the LimitRange".into());
            set(&mut r.request, l.value, q.source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::MI;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use rstest::rstest;
    use std::collections::BTreeMap;

    fn lr(
        min: Option<&str>,
        max: Option<&str>,
        ratio: Option<&str>,
        default: Option<&str>,
    ) -> Vec<LimitRangeSpec> {
        let m = |v: Option<&str>| {
            v.map(|v| BTreeMap::from([("memory".to_string(), Quantity(v.to_string()))]))
        };
        vec![LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                min: m(min),
                max: m(max),
                max_limit_request_ratio: m(ratio),
                default: m(default),
                default_request: None,
            }],
        }]
    }

    fn side(v: u64, s: Source) -> Option<Side> {
        Some(Side {
            value: v * MI,
            source: s,
        })
    }

    #[rstest]
    #[case::within(
        lr(Some("64Mi"), Some("1Gi"), None, None),
        Some(128),
        Some(256),
        Some(128),
        Some(256)
    )]
    #[case::below_min(
        lr(Some("200Mi"), None, None, None),
        Some(128),
        Some(256),
        Some(200),
        Some(256)
    )]
    #[case::above_max(
        lr(None, Some("512Mi"), None, None),
        Some(600),
        Some(1024),
        Some(512),
        Some(512)
    )]
    #[case::ratio(
        lr(None, None, Some("2"), None),
        Some(100),
        Some(400),
        Some(200),
        Some(400)
    )]
    #[case::default_limit_below_request(
        lr(None, None, None, Some("256Mi")),
        Some(300),
        None,
        Some(300),
        Some(300)
    )]
    #[case::max_becomes_default_limit(
        lr(None, Some("256Mi"), None, None),
        Some(300),
        None,
        Some(256),
        Some(256)
    )]
    #[case::ratio_against_default_limit(
        lr(None, None, Some("2"), Some("1Gi")),
        Some(256),
        None,
        Some(512),
        None
    )]
    fn fit_table(
        #[case] ranges: Vec<LimitRangeSpec>,
        #[case] req: Option<u64>,
        #[case] lim: Option<u64>,
        #[case] want_req: Option<u64>,
        #[case] want_lim: Option<u64>,
    ) {
        let b = bounds(&ranges, "Container", Resource::Memory);
        let mut r = Resolved {
            request: req.and_then(|v| side(v, Source::Recommendation)),
            limit: lim.and_then(|v| side(v, Source::Recommendation)),
        };
        let mut notes = vec![];
        fit_container(Resource::Memory, &b, &mut r, &mut notes);
        assert_eq!(r.request.map(|s| s.value / MI), want_req);
        assert_eq!(r.limit.map(|s| s.value / MI), want_lim);
        if want_req != req || want_lim != lim {
            assert!(!notes.is_empty(), "every adjustment is explained");
        }
        // Whatever the LimitRanger fills in must still pass its own checks.
        let l = r.limit.map(|s| s.value).or(b.default_limit);
        let q = r.request.map(|s| s.value).or(b.default_request);
        if let (Some(l), Some(q)) = (l, q) {
            assert!(q <= l);
            if let Some(ratio) = b.ratio {
                assert!(l as f64 / q as f64 <= ratio + 1e-9);
            }
        }
    }

    #[test]
    fn ratio_holds_exactly_for_huge_limits() {
        // Fuzz seed 1013568: an 8Ei limit with a ratio of 3 got a request 511 bytes short.
        let b = bounds(
            &lr(None, None, Some("3"), None),
            "Container",
            Resource::Memory,
        );
        let mut r = Resolved {
            request: Some(Side {
                value: 1,
                source: Source::Template,
            }),
            limit: Some(Side {
                value: i64::MAX as u64,
                source: Source::Template,
            }),
        };
        fit_container(Resource::Memory, &b, &mut r, &mut vec![]);
        let (q, l) = (r.request.unwrap().value, r.limit.unwrap().value);
        assert!(u128::from(l) <= u128::from(q) * 3, "{l}/{q}");
    }

    #[test]
    fn zero_request_is_raised_for_the_ratio() {
        // Fuzz seed 90028973: an override's CPU request "0" under a ratio LimitRange.
        let b = bounds(
            &lr(None, None, Some("5"), Some("890Mi")),
            "Container",
            Resource::Memory,
        );
        let mut r = Resolved {
            request: Some(Side {
                value: 0,
                source: Source::Override,
            }),
            limit: None,
        };
        fit_container(Resource::Memory, &b, &mut r, &mut vec![]);
        assert_eq!(r.request.map(|s| s.value), Some((890 * MI).div_ceil(5)));
    }

    #[test]
    fn limit_only_counts_as_its_request_and_min_holds() {
        // Fuzz seed 1593075104: limit 512Mi, no request, min 86Mi, ratio 7. The Pod's
        // request defaults to its limit, so nothing breaks the ratio; nothing is written.
        let mut ranges = lr(Some("86Mi"), None, Some("7"), None);
        ranges.insert(0, lr(Some("63Mi"), None, None, None).remove(0));
        let b = bounds(&ranges, "Container", Resource::Memory);
        let mut r = Resolved {
            request: None,
            limit: side(512, Source::Template),
        };
        fit_container(Resource::Memory, &b, &mut r, &mut vec![]);
        assert_eq!(r.request, None);
    }

    #[test]
    fn tightest_of_several() {
        let mut a = lr(Some("64Mi"), Some("2Gi"), Some("4"), None);
        a.extend(lr(Some("128Mi"), Some("1Gi"), Some("3"), None));
        let b = bounds(&a, "Container", Resource::Memory);
        assert_eq!(b.min, Some(128 * MI));
        assert_eq!(b.max, Some(1024 * MI));
        assert_eq!(b.ratio, Some(3.0));
    }
}
