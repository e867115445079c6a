//! Kubernetes resource quantities, reduced to the two units rightsizer sizes in:
//! memory in bytes and CPU in millicores.
//!
//! Parsing accepts every suffix the apiserver accepts; formatting produces the
//! apiserver's canonical form (largest suffix that keeps the number whole), so a
//! value we write reads back unchanged and a second admission pass sees no change.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("invalid quantity {0:?}")]
    Invalid(String),
    #[error("quantity {0:?} is negative")]
    Negative(String),
    #[error("quantity {0:?} is out of range")]
    OutOfRange(String),
}

/// The resources rightsizer sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Memory,
    Cpu,
}

impl Resource {
    pub const ALL: [Resource; 2] = [Resource::Memory, Resource::Cpu];

    /// The key used in `resources.requests` / `resources.limits`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Cpu => "cpu",
        }
    }

    /// Parse a quantity string into this resource's unit (bytes or millicores).
    pub fn parse(self, s: &str) -> Result<u64, QuantityError> {
        match self {
            Resource::Memory => parse_bytes(s),
            Resource::Cpu => parse_millicores(s),
        }
    }

    /// Canonical quantity string for a value in this resource's unit.
    pub fn format(self, v: u64) -> String {
        match self {
            Resource::Memory => format_bytes(v),
            Resource::Cpu => format_millicores(v),
        }
    }
}

/// One value per resource (memory and CPU), indexed by [`Resource`]: the pair of
/// `memory`/`cpu` fields as one thing, so code over both resources is one loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerResource<T> {
    pub memory: T,
    pub cpu: T,
}

impl<T> PerResource<T> {
    /// The value of each resource from `f`.
    pub fn from_fn(mut f: impl FnMut(Resource) -> T) -> Self {
        PerResource {
            memory: f(Resource::Memory),
            cpu: f(Resource::Cpu),
        }
    }
}

impl<T> std::ops::Index<Resource> for PerResource<T> {
    type Output = T;
    fn index(&self, r: Resource) -> &T {
        match r {
            Resource::Memory => &self.memory,
            Resource::Cpu => &self.cpu,
        }
    }
}

impl<T> std::ops::IndexMut<Resource> for PerResource<T> {
    fn index_mut(&mut self, r: Resource) -> &mut T {
        match r {
            Resource::Memory => &mut self.memory,
            Resource::Cpu => &mut self.cpu,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parse a quantity into an exact rational `mantissa * 10^exp10 * 2^exp2`, then scale.
/// `scale` is the unit the caller wants, as a power of ten (0 for bytes, -3 for millicores).
/// Values are rounded up, as the apiserver does when it canonicalises sub-unit values.
fn parse_scaled(s: &str, scale10: i32) -> Result<u64, QuantityError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let invalid = || QuantityError::Invalid(s.to_string());
    if s.starts_with('-') {
        return Err(QuantityError::Negative(s.to_string()));
    }
    let body = s.strip_prefix('+').unwrap_or(s);
    // Split number and suffix.
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(invalid());
    }
    let (mut exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other => {
            // Decimal exponent form: 1e3, 5E-2.
            let rest = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(invalid)?;
            let e: i32 = rest.parse().map_err(|_| invalid())?;
            if e.abs() > 30 {
                return Err(QuantityError::OutOfRange(s.to_string()));
            }
            (e, 0)
        }
    };
    // Mantissa as an integer with a decimal exponent.
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    exp10 -= frac_part.len() as i32;
    let out_of_range = || QuantityError::OutOfRange(s.to_string());
    // Digits only here (checked above); at most 30 significant ones fit a u128.
    let mut mantissa: u128 = 0;
    let mut significant = 0usize;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        if significant == 0 && b == b'0' {
            continue;
        }
        significant += 1;
        if significant > 30 {
            return Err(out_of_range());
        }
        mantissa = mantissa * 10 + u128::from(b - b'0');
    }
    // value_in_unit = mantissa * 2^exp2 * 10^(exp10 - scale10)
    let mut v = mantissa.checked_shl(exp2).ok_or_else(out_of_range)?;
    if exp2 > 0 && (v >> exp2) != mantissa {
        return Err(out_of_range());
    }
    let e = exp10 - scale10;
    if e >= 0 {
        for _ in 0..e {
            v = v.checked_mul(10).ok_or_else(out_of_range)?;
        }
    } else {
        let div = 10u128.checked_pow((-e) as u32).ok_or_else(out_of_range)?;
        v = v.div_ceil(div);
    }
    u64::try_from(v).map_err(|_| out_of_range())
}

/// Parse a memory quantity into bytes (rounded up to a whole byte).
pub fn parse_bytes(s: &str) -> Result<u64, QuantityError> {
    parse_scaled(s, 0)
}

/// Parse a CPU quantity into millicores (rounded up to a whole millicore, as the apiserver does).
pub fn parse_millicores(s: &str) -> Result<u64, QuantityError> {
    parse_scaled(s, -3)
}

/// Canonical memory quantity: binary suffix when the value is a whole number of KiB,
/// else plain bytes. This is the form the apiserver prints for binary-SI input.
pub fn format_bytes(v: u64) -> String {
    const SUFFIXES: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    if v == 0 {
        return "0".to_string();
    }
    for (suffix, shift) in SUFFIXES {
        if v.trailing_zeros() >= shift {
            return format!("{}{suffix}", v >> shift);
        }
    }
    v.to_string()
}

/// Canonical CPU quantity: whole cores without a suffix, else millicores.
pub fn format_millicores(v: u64) -> String {
    if v % 1000 == 0 {
        (v / 1000).to_string()
    } else {
        format!("{v}m")
    }
}

/// Round `v` up to a multiple of `step` (no-op for step 0).
pub fn round_up(v: u64, step: u64) -> u64 {
    if step == 0 {
        v
    } else {
        v.div_ceil(step).saturating_mul(step)
    }
}

pub const MI: u64 = 1 << 20;
pub const GI: u64 = 1 << 30;

/// A memory amount that reads and writes as a quantity string ("256Mi") but also
/// accepts a plain number of bytes. Used in policies and snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

/// A CPU amount in millicores that reads and writes as a quantity string ("250m").
/// A plain number is read as cores, as Kubernetes does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millicores(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Int(u64),
    Float(f64),
    Str(String),
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_bytes(self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Int(v) => Ok(Bytes(v)),
            NumOrStr::Float(f) if f >= 0.0 && f.is_finite() => Ok(Bytes(f.ceil() as u64)),
            NumOrStr::Float(f) => Err(serde::de::Error::custom(format!(
                "invalid memory quantity {f}"
            ))),
            NumOrStr::Str(s) => parse_bytes(&s).map(Bytes).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Millicores {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_millicores(self.0))
    }
}

impl<'de> Deserialize<'de> for Millicores {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Int(v) => Ok(Millicores(v.saturating_mul(1000))),
            NumOrStr::Float(f) if f >= 0.0 && f.is_finite() => {
                Ok(Millicores((f * 1000.0).ceil() as u64))
            }
            NumOrStr::Float(f) => Err(serde::de::Error::custom(format!(
                "invalid cpu quantity {f}"
            ))),
            NumOrStr::Str(s) => parse_millicores(&s)
                .map(Millicores)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_bytes(self.0))
    }
}

impl fmt::Display for Millicores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_millicores(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("128Mi", 128 * MI)]
    #[case("1Gi", GI)]
    #[case("1G", 1_000_000_000)]
    #[case("1.5Gi", 3 * GI / 2)]
    #[case("500k", 500_000)]
    #[case("1e3", 1000)]
    #[case("268435456", 256 * MI)]
    #[case("0.5", 1)]
    #[case("100m", 1)]
    #[case("+64Mi", 64 * MI)]
    fn parses_memory(#[case] input: &str, #[case] bytes: u64) {
        assert_eq!(parse_bytes(input), Ok(bytes));
    }

    #[rstest]
    #[case("100m", 100)]
    #[case("1", 1000)]
    #[case("0.25", 250)]
    #[case("2.5", 2500)]
    #[case("1500u", 2)]
    #[case("250000000n", 250)]
    fn parses_cpu(#[case] input: &str, #[case] milli: u64) {
        assert_eq!(parse_millicores(input), Ok(milli));
    }

    #[rstest]
    #[case("")]
    #[case("Mi")]
    #[case("12Xi")]
    #[case("1.2.3")]
    #[case("-1Gi")]
    #[case("99999999999Ei")]
    #[case("1e99")]
    fn rejects_bad_quantities(#[case] input: &str) {
        assert!(parse_bytes(input).is_err(), "{input} should be refused");
    }

    #[rstest]
    #[case(0, "0")]
    #[case(GI, "1Gi")]
    #[case(1536 * MI, "1536Mi")]
    #[case(1000, "1000")]
    #[case(2048, "2Ki")]
    fn formats_memory(#[case] v: u64, #[case] s: &str) {
        assert_eq!(format_bytes(v), s);
        assert_eq!(parse_bytes(s), Ok(v), "round trip");
    }

    #[rstest]
    #[case(1000, "1")]
    #[case(250, "250m")]
    #[case(0, "0")]
    fn formats_cpu(#[case] v: u64, #[case] s: &str) {
        assert_eq!(format_millicores(v), s);
        assert_eq!(parse_millicores(s), Ok(v));
    }

    #[test]
    fn serde_accepts_numbers_and_strings() {
        let b: Bytes = serde_json::from_str("\"64Mi\"").unwrap();
        assert_eq!(b, Bytes(64 * MI));
        let b: Bytes = serde_json::from_str("1024").unwrap();
        assert_eq!(b, Bytes(1024));
        let c: Millicores = serde_json::from_str("0.5").unwrap();
        assert_eq!(c, Millicores(500));
        assert_eq!(serde_json::to_string(&Bytes(GI)).unwrap(), "\"1Gi\"");
    }
}
