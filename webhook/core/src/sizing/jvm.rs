//! JVM heap settings in a container's command, args and the environment variables the JVM
//! reads, and the memory limit they need. A JVM's heap is not bounded by its cgroup: a
//! limit below heap plus the non-heap memory gets the container OOM-killed once the heap
//! fills (VPA's issue 5029), so such a limit from usage alone is never applied.

use serde_json::Value;

/// The heap a container's JVM will have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Heap {
    /// A fixed size in bytes (`-Xmx`, `-XX:MaxHeapSize`, or `-XX:MaxRAM` × the percentage).
    Fixed(u64),
    /// A percentage of the container's memory limit (`-XX:MaxRAMPercentage` alone): the
    /// heap shrinks with the limit.
    OfLimit(f64),
}

/// The JVM's default `MaxRAMPercentage`.
const DEFAULT_MAX_RAM_PERCENTAGE: f64 = 25.0;

/// The options in the order the JVM applies them (a later one wins): `JAVA_TOOL_OPTIONS`,
/// `JDK_JAVA_OPTIONS` (the launcher puts it before the command line), the command and
/// args, then `_JAVA_OPTIONS` (applied after the command line). Only literal `env`
/// values are read (`valueFrom` is not known at admission).
fn options(container: &Value) -> Vec<&str> {
    let env = |name: &str| {
        container
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .rev()
            .filter(|e| e.get("name").and_then(Value::as_str) == Some(name))
            .find_map(|e| e.get("value").and_then(Value::as_str))
    };
    let list = |key: &str| {
        container
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    };
    let lines = env("JAVA_TOOL_OPTIONS")
        .into_iter()
        .chain(env("JDK_JAVA_OPTIONS"))
        .chain(list("command"))
        .chain(list("args"))
        .chain(env("_JAVA_OPTIONS"));
    // A shell line (`sh -c "java -Xmx3g ..."`) is one string: split it into words.
    lines
        .flat_map(str::split_whitespace)
        .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
        .collect()
}

/// A JVM size: digits with an optional k, m, g or t suffix (either case); none is bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 10),
        'm' | 'M' => (&s[..s.len() - 1], 20),
        'g' | 'G' => (&s[..s.len() - 1], 30),
        't' | 'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// The heap a container's JVM will have, when its settings say.
pub fn heap(container: &Value) -> Option<Heap> {
    let (mut xmx, mut max_ram, mut percentage) = (None, None, None);
    for w in options(container) {
        if let Some(v) = w
            .strip_prefix("-Xmx")
            .or_else(|| w.strip_prefix("-XX:MaxHeapSize="))
        {
            xmx = parse_size(v).or(xmx);
        } else if let Some(v) = w.strip_prefix("-XX:MaxRAM=") {
            max_ram = parse_size(v).or(max_ram);
        } else if let Some(v) = w.strip_prefix("-XX:MaxRAMPercentage=") {
            percentage = v
                .parse::<f64>()
                .ok()
                .filter(|p| p.is_finite() && *p > 0.0 && *p <= 100.0)
                .or(percentage);
        }
    }
    if let Some(x) = xmx {
        return Some(Heap::Fixed(x));
    }
    if let Some(ram) = max_ram {
        let p = percentage.unwrap_or(DEFAULT_MAX_RAM_PERCENTAGE);
        return Some(Heap::Fixed((ram as f64 * p / 100.0).ceil() as u64));
    }
    percentage.map(Heap::OfLimit)
}

/// The lowest memory limit the heap allows: a fixed heap plus `non_heap`; for a heap that
/// is a percentage of the limit, the declared limit (a lower limit would shrink the heap
/// the application was sized and tested with; a higher one only grows it). `None`: no
/// bound (a percentage heap with no declared limit).
pub fn limit_floor(heap: Heap, non_heap: u64, declared_limit: Option<u64>) -> Option<u64> {
    match heap {
        Heap::Fixed(h) => Some(h.saturating_add(non_heap)),
        Heap::OfLimit(_) => declared_limit,
    }
}

/// How a heap reads in a warning.
pub fn describe(heap: Heap) -> String {
    match heap {
        Heap::Fixed(h) => format!(
            "a JVM heap of {}",
            crate::quantity::Resource::Memory.format(h)
        ),
        Heap::OfLimit(p) => format!("a JVM heap of {p}% of the limit (-XX:MaxRAMPercentage)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::{GI, MI};
    use rstest::rstest;
    use serde_json::json;

    #[rstest]
    #[case::bytes("1048576", Some(MI))]
    #[case::k("2048k", Some(2 << 20))]
    #[case::m("512m", Some(512 * MI))]
    #[case::upper_g("3G", Some(3 * GI))]
    #[case::t("1t", Some(1 << 40))]
    #[case::fraction("1.5g", None)]
    #[case::empty("", None)]
    #[case::suffix_only("g", None)]
    #[case::quantity_suffix("3Gi", None)]
    #[case::overflow("99999999999t", None)]
    fn sizes(#[case] s: &str, #[case] want: Option<u64>) {
        assert_eq!(parse_size(s), want);
    }

    fn env(pairs: &[(&str, &str)]) -> Value {
        Value::Array(
            pairs
                .iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect(),
        )
    }

    #[rstest]
    #[case::none(json!({"command": ["nginx"]}), None)]
    #[case::xmx_in_args(json!({"command": ["java"], "args": ["-Xmx3g", "-jar", "app.jar"]}), Some(Heap::Fixed(3 * GI)))]
    #[case::xmx_in_command(json!({"command": ["java", "-Xmx512m", "-jar", "app.jar"]}), Some(Heap::Fixed(512 * MI)))]
    #[case::shell_line(json!({"command": ["sh", "-c"], "args": ["exec java -Xmx2g -jar app.jar"]}), Some(Heap::Fixed(2 * GI)))]
    #[case::max_heap_size(json!({"args": ["-XX:MaxHeapSize=1g"]}), Some(Heap::Fixed(GI)))]
    #[case::last_wins(json!({"args": ["-Xmx1g", "-Xmx2g"]}), Some(Heap::Fixed(2 * GI)))]
    #[case::tool_options(json!({"env": env(&[("JAVA_TOOL_OPTIONS", "-Xms1g -Xmx1536m")])}), Some(Heap::Fixed(1536 * MI)))]
    #[case::jdk_options(json!({"env": env(&[("JDK_JAVA_OPTIONS", "-Xmx768m")])}), Some(Heap::Fixed(768 * MI)))]
    // The command line overrides JAVA_TOOL_OPTIONS; _JAVA_OPTIONS overrides the command line.
    #[case::command_line_over_tool_options(json!({"args": ["-Xmx2g"], "env": env(&[("JAVA_TOOL_OPTIONS", "-Xmx4g")])}), Some(Heap::Fixed(2 * GI)))]
    #[case::underscore_options_last(json!({"args": ["-Xmx2g"], "env": env(&[("_JAVA_OPTIONS", "-Xmx1g")])}), Some(Heap::Fixed(GI)))]
    #[case::max_ram_default_percentage(json!({"args": ["-XX:MaxRAM=4g"]}), Some(Heap::Fixed(GI)))]
    #[case::max_ram_with_percentage(json!({"args": ["-XX:MaxRAM=4g", "-XX:MaxRAMPercentage=50"]}), Some(Heap::Fixed(2 * GI)))]
    #[case::xmx_beats_max_ram(json!({"args": ["-XX:MaxRAM=8g", "-Xmx1g"]}), Some(Heap::Fixed(GI)))]
    #[case::percentage_alone(json!({"env": env(&[("JAVA_TOOL_OPTIONS", "-XX:MaxRAMPercentage=75.0")])}), Some(Heap::OfLimit(75.0)))]
    #[case::unreadable_ignored(json!({"args": ["-Xmx3Gi", "-XX:MaxRAMPercentage=250"]}), None)]
    #[case::value_from_ignored(json!({"env": [{"name": "JAVA_TOOL_OPTIONS", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}), None)]
    fn heaps(#[case] container: Value, #[case] want: Option<Heap>) {
        assert_eq!(heap(&container), want);
    }

    #[rstest]
    #[case::fixed(Heap::Fixed(3 * GI), Some(2 * GI), Some(3 * GI + 256 * MI))]
    #[case::percentage_keeps_declared(Heap::OfLimit(75.0), Some(2 * GI), Some(2 * GI))]
    #[case::percentage_nothing_declared(Heap::OfLimit(75.0), None, None)]
    fn floors(#[case] heap: Heap, #[case] declared: Option<u64>, #[case] want: Option<u64>) {
        assert_eq!(limit_floor(heap, 256 * MI, declared), want);
    }
}
