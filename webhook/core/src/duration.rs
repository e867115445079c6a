//! The one duration grammar: every duration flag reads its value with [`parse_duration`],
//! and the apiserver's `?timeout=` (a Go duration) is the same grammar.
//!
//! A duration is a plain number of seconds (`90`, `0`) or one or more terms of a decimal
//! number and a unit, as Go writes them: `90s`, `1m30s`, `1.5h`, `500ms`, `14d`. Units:
//! `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`. No sign, no spaces inside, at most
//! `i64::MAX` seconds (so a value also fits signed time arithmetic).

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?} (e.g. 90s, 1m30s, 5m, 1h, 14d)")]
    Invalid(String),
    #[error("invalid duration unit in {0:?} (use ms, s, m, h or d)")]
    Unit(String),
    #[error("duration {0:?} is too long")]
    TooLong(String),
    #[error("duration {0:?} is not a whole number of seconds")]
    NotWholeSeconds(String),
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Nanoseconds in one `unit`.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        "d" => 86_400 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// `s` (surrounding whitespace ignored) as a duration; see the module comment.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let invalid = || DurationError::Invalid(s.to_string());
    let too_long = || DurationError::TooLong(s.to_string());
    let max = u128::from(i64::MAX.unsigned_abs()) * NANOS_PER_SEC;
    if s.is_empty() {
        return Err(invalid());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| too_long())?;
        return i64::try_from(secs)
            .map(|_| Duration::from_secs(secs))
            .map_err(|_| too_long());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_end);
        let (frac, after) = match after.strip_prefix('.') {
            Some(f) => f.split_at(f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len())),
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        if unit.is_empty() {
            return Err(invalid());
        }
        let scale = unit_nanos(unit).ok_or_else(|| DurationError::Unit(s.to_string()))?;
        // Digits past the 18th of a fraction are below a nanosecond of any unit up to a day.
        let frac = &frac[..frac.len().min(18)];
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| too_long())?
        };
        let part = if frac.is_empty() {
            0
        } else {
            let digits: u128 = frac.parse().map_err(|_| invalid())?;
            digits * scale / 10u128.pow(frac.len() as u32)
        };
        total = whole
            .checked_mul(scale)
            .and_then(|t| t.checked_add(part))
            .and_then(|t| t.checked_add(total))
            .filter(|t| *t <= max)
            .ok_or_else(too_long)?;
        rest = next;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| too_long())?;
    Ok(Duration::new(secs, (total % NANOS_PER_SEC) as u32))
}

/// [`parse_duration`] for a value kept in whole seconds: refuses a fraction of a second.
pub fn parse_seconds(s: &str) -> Result<u64, DurationError> {
    let d = parse_duration(s)?;
    if d.subsec_nanos() != 0 {
        return Err(DurationError::NotWholeSeconds(s.trim().to_string()));
    }
    Ok(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_and_refused_spellings() {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let table = [
            ("0", Ok(secs(0))),
            ("90", Ok(secs(90))),
            ("90s", Ok(secs(90))),
            ("1m30s", Ok(secs(90))),
            ("1h1m1s", Ok(secs(3661))),
            ("1s1m", Ok(secs(61))),
            (" 5m ", Ok(secs(300))),
            ("5m", Ok(secs(300))),
            ("1h", Ok(secs(3600))),
            ("24h", Ok(secs(86_400))),
            ("14d", Ok(secs(14 * 86_400))),
            ("0s", Ok(secs(0))),
            ("1.5s", Ok(ms(1500))),
            ("1.5h", Ok(secs(5400))),
            (".5s", Ok(ms(500))),
            ("1.s", Ok(secs(1))),
            ("500ms", Ok(ms(500))),
            ("1m0.5s", Ok(ms(60_500))),
            ("250us", Ok(Duration::from_micros(250))),
            ("250µs", Ok(Duration::from_micros(250))),
            ("7ns", Ok(Duration::from_nanos(7))),
            ("0.0000000001s", Ok(secs(0))),
            ("9223372036854775807", Ok(secs(i64::MAX as u64))),
            ("9223372036854775807s", Ok(secs(i64::MAX as u64))),
            ("", Err(())),
            ("   ", Err(())),
            ("x", Err(())),
            ("m", Err(())),
            (".s", Err(())),
            ("1w", Err(())),
            ("1y", Err(())),
            ("5M", Err(())),
            ("1sec", Err(())),
            ("-5m", Err(())),
            ("+5m", Err(())),
            ("5 m", Err(())),
            ("1m 30s", Err(())),
            ("1m30", Err(())),
            ("1..5s", Err(())),
            ("1.5", Err(())),
            ("1e3s", Err(())),
            ("9223372036854775808", Err(())),
            ("99999999999999999999", Err(())),
            ("106751991167301d", Err(())),
            ("9223372036854775807s1ns", Err(())),
            ("99999999999999999999999999999999999999999h", Err(())),
        ];
        for (text, want) in table {
            assert_eq!(parse_duration(text).map_err(|_| ()), want, "{text:?}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(parse_duration("1w"), Err(DurationError::Unit(_))));
        assert!(matches!(parse_duration("5 m"), Err(DurationError::Unit(_))));
        assert!(matches!(
            parse_duration("-5m"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("106751991167301d"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn whole_seconds() {
        assert_eq!(parse_seconds("1m30s"), Ok(90));
        assert_eq!(parse_seconds("1.5m"), Ok(90));
        assert_eq!(parse_seconds("2000ms"), Ok(2));
        assert!(matches!(
            parse_seconds("1500ms"),
            Err(DurationError::NotWholeSeconds(_))
        ));
        assert!(parse_seconds("1w").is_err());
    }
}
