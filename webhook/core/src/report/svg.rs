//! The usage-over-time chart of one container, as inline SVG: peak and mean memory per
//! interval against the request and limit the pods run with and the recommended request.

use std::fmt::Write as _;

use crate::report::text::{bytes, duration, escape};

const W: f64 = 640.0;
const H: f64 = 190.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 40.0;

/// What one chart shows.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    /// Names the chart for screen readers (escaped here).
    pub title: &'a str,
    /// [end unix seconds, peak bytes, mean bytes], oldest first.
    pub usage: &'a [(i64, f64, f64)],
    pub request: Option<u64>,
    pub limit: Option<u64>,
    pub recommended: Option<u64>,
    /// The right edge (when the report was made).
    pub now: u64,
}

/// The chart as an `<svg>` element that scales down with its container.
pub fn usage_chart(c: &Chart<'_>) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="usage" viewBox="0 0 {W} {H}" role="img" xmlns="http://www.w3.org/2000/svg"><title>{}</title><rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="#fafafa" stroke="#ccc"/>"##,
        escape(c.title),
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let Some(first) = c.usage.first().map(|u| u.0) else {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#666">no usage history</text></svg>"##,
            (LEFT + W - RIGHT) / 2.0,
            (TOP + H - BOTTOM) / 2.0
        );
        return s;
    };
    let t0 = first as f64;
    let t1 = (c.now as f64).max(c.usage.last().map_or(t0, |u| u.0 as f64));
    let span = (t1 - t0).max(1.0);
    let lines = [c.request, c.limit, c.recommended];
    let top = c
        .usage
        .iter()
        .map(|u| u.1.max(u.2))
        .chain(lines.iter().flatten().map(|v| *v as f64))
        .fold(1.0f64, f64::max)
        * 1.08;
    let x = |t: f64| LEFT + (t - t0) / span * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - v.max(0.0) / top * (H - TOP - BOTTOM);
    // y axis: 0, half, top
    for f in [0.0, 0.5, 1.0] {
        let v = top / 1.08 * f;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11" fill="#555">{}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            y(v) + 4.0,
            bytes(Some(v)),
            y = y(v),
        );
    }
    // x axis: how long before the report each edge is
    for (t, anchor) in [(t0, "start"), (t1, "end")] {
        let ago = (t1 - t).max(0.0) as u64;
        let label = if ago == 0 {
            "now".to_string()
        } else {
            format!("−{}", duration(ago))
        };
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" text-anchor="{anchor}" font-size="11" fill="#555">{label}</text>"##,
            x(t),
            H - BOTTOM + 14.0
        );
    }
    for (pick, colour, name) in [(2usize, "#4a7fc1", "mean"), (1usize, "#d9822b", "peak")] {
        let pts: Vec<String> = c
            .usage
            .iter()
            .map(|u| {
                let v = if pick == 1 { u.1 } else { u.2 };
                format!("{:.1},{:.1}", x(u.0 as f64), y(v))
            })
            .collect();
        let _ = write!(
            s,
            r##"<polyline class="{name}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##,
            pts.join(" ")
        );
    }
    let mut legend = vec![("#d9822b", "", "peak"), ("#4a7fc1", "", "mean")];
    for (v, colour, dash, name) in [
        (c.request, "#2e7d32", "", "request"),
        (c.limit, "#c62828", "6 3", "limit"),
        (c.recommended, "#6a1b9a", "2 3", "recommended"),
    ] {
        if let Some(v) = v {
            let _ = write!(
                s,
                r##"<line class="{name}" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="{dash}"/>"##,
                W - RIGHT,
                y = y(v as f64)
            );
            legend.push((colour, dash, name));
        }
    }
    let mut lx = LEFT;
    for (colour, dash, name) in legend {
        let _ = write!(
            s,
            r##"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}" font-size="11" fill="#333">{name}</text>"##,
            lx + 18.0,
            lx + 22.0,
            H - 6.0,
            ly = H - 10.0,
        );
        lx += 30.0 + name.len() as f64 * 6.5;
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::MI;

    #[test]
    fn a_chart_draws_usage_against_request_and_limit() {
        let usage: Vec<(i64, f64, f64)> = (1..=12)
            .map(|i| {
                (
                    i * 300,
                    (100 * MI) as f64 + i as f64 * 1e6,
                    (80 * MI) as f64,
                )
            })
            .collect();
        let svg = usage_chart(&Chart {
            title: "shop/Deployment/<web>/app",
            usage: &usage,
            request: Some(400 * MI),
            limit: Some(800 * MI),
            recommended: None,
            now: 3600,
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("<title>shop/Deployment/&lt;web&gt;/app</title>"));
        for class in ["peak", "mean", "request", "limit"] {
            assert!(svg.contains(&format!("class=\"{class}\"")), "{class}");
        }
        assert!(!svg.contains("class=\"recommended\""));
        // 12 points per line, the last at the right edge.
        let peak = svg.split("class=\"peak\"").nth(1).unwrap();
        let pts = peak
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(pts.split(' ').count(), 12);
        assert!(pts.ends_with(&format!("{:.1},", W - RIGHT)) || pts.contains("632.0,"));
        assert!(svg.contains(">−55m<") && svg.contains(">now<"), "{svg}");
    }

    #[test]
    fn no_history_says_so() {
        let svg = usage_chart(&Chart {
            title: "t",
            usage: &[],
            request: None,
            limit: None,
            recommended: None,
            now: 0,
        });
        assert!(svg.contains("no usage history"));
    }
}
