//! Text for people: HTML escaping and short human figures (`1.5Gi`, `250m`, `6h`).

use crate::quantity::{GI, MI};

/// `s` safe inside HTML/SVG text and double- or single-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes as Mi or Gi with at most one decimal (`-` for none).
pub fn bytes(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= GI as f64 => trim(format!("{:.1}", v / GI as f64)) + "Gi",
        Some(v) => trim(format!("{:.1}", v / MI as f64)) + "Mi",
    }
}

/// Millicores as `250m`, or cores with at most two decimals from one core up.
pub fn millis(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 1000.0 => trim(format!("{:.2}", v / 1000.0)),
        Some(v) => format!("{}m", v.round()),
    }
}

/// A signed figure with an explicit `+` (added) or `−` (freed), in the resource's unit.
pub fn signed(v: i64, fmt: fn(Option<f64>) -> String) -> String {
    match v {
        0 => "0".into(),
        v if v > 0 => format!("−{}", fmt(Some(v as f64))),
        v => format!("+{}", fmt(Some(v.unsigned_abs() as f64))),
    }
}

/// Seconds as `3d 4h`, `5h 20m` or `12m`.
pub fn duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Money with two decimals and the currency.
pub fn money(v: f64, currency: &str) -> String {
    format!("{v:.2} {}", escape(currency))
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert('x')</script>&"q""#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;q&quot;"
        );
    }

    #[test]
    fn figures_read_short() {
        assert_eq!(bytes(Some(150.0 * MI as f64)), "150Mi");
        assert_eq!(bytes(Some(1.25 * GI as f64)), "1.2Gi");
        assert_eq!(bytes(Some(100.55 * MI as f64)), "100.5Mi");
        assert_eq!(bytes(None), "-");
        assert_eq!(millis(Some(250.0)), "250m");
        assert_eq!(millis(Some(1500.0)), "1.5");
        assert_eq!(signed(-(64 * MI as i64), bytes), "+64Mi");
        assert_eq!(signed(64 * MI as i64, bytes), "−64Mi");
        assert_eq!(duration(6 * 3600 + 60), "6h 1m");
        assert_eq!(duration(3 * 86400 + 7200), "3d 2h");
        assert_eq!(money(12.5, "<EUR>"), "12.50 &lt;EUR&gt;");
    }
}
