//! The policy's `update:` section: whether and how the updater may reach Pods that
//! already run. Off unless a policy says otherwise.

use serde::{Deserialize, Serialize};

/// How running Pods of an enforce-mode workload are brought to the committed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UpdateMode {
    /// Leave running Pods alone: committed values wait for the next rollout.
    #[default]
    Off,
    /// Evict one Pod at a time through the Eviction API (its controller recreates it,
    /// and admission gives the new Pod the committed values).
    Evict,
    /// Resize in place where the apiserver serves `pods/resize`, else evict.
    InPlaceOrEvict,
}

/// Seconds a resize may stay pending (deferred by the kubelet) before the Pod is evicted.
pub const DEFAULT_RESIZE_TIMEOUT_SECONDS: u64 = 300;

fn default_resize_timeout() -> u64 {
    DEFAULT_RESIZE_TIMEOUT_SECONDS
}

/// The `update:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePolicy {
    #[serde(default)]
    pub mode: UpdateMode,
    /// Act only inside this daily window (UTC); none: any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Evict even when that leaves the workload without a ready Pod (single replicas).
    #[serde(default)]
    pub allow_last_replica: bool,
    /// A resize still pending after this long is given up: the Pod is evicted instead.
    #[serde(default = "default_resize_timeout")]
    pub resize_timeout_seconds: u64,
    /// Once every Pod carries the values, a new round (values changed again) waits this
    /// long after the last one ended; OOM loops and Pods below a floor never wait.
    #[serde(default)]
    pub round_interval_seconds: u64,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            mode: UpdateMode::Off,
            window: None,
            allow_last_replica: false,
            resize_timeout_seconds: DEFAULT_RESIZE_TIMEOUT_SECONDS,
            round_interval_seconds: 0,
        }
    }
}

/// A daily window in UTC, `HH:MM` to `HH:MM`; an end before the start wraps past
/// midnight (`22:00`-`06:00`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Window {
    pub start: String,
    pub end: String,
}

/// Minutes after midnight of `HH:MM`.
pub fn minute_of_day(s: &str) -> Result<u32, String> {
    let err = || format!("{s:?} is not a time of day as HH:MM (UTC)");
    let (h, m) = s.trim().split_once(':').ok_or_else(err)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
    if h > 23 || m > 59 || s.trim().len() != 5 {
        return Err(err());
    }
    Ok(h * 60 + m)
}

impl Window {
    /// Whether the window holds at `unix` seconds (UTC). An unparsable window (refused
    /// by validation) holds never.
    pub fn contains(&self, unix: i64) -> bool {
        let (Ok(start), Ok(end)) = (minute_of_day(&self.start), minute_of_day(&self.end)) else {
            return false;
        };
        let now = (unix.rem_euclid(86_400) / 60) as u32;
        if start <= end {
            start <= now && now < end
        } else {
            now >= start || now < end
        }
    }
}

impl UpdatePolicy {
    /// The section's mistakes (validation of the policy document).
    pub fn check(&self) -> Result<(), (String, String)> {
        if let Some(w) = &self.window {
            for (at, v) in [("window.start", &w.start), ("window.end", &w.end)] {
                minute_of_day(v).map_err(|e| (at.to_string(), e))?;
            }
            if w.start == w.end {
                return Err(("window".into(), "start and end are the same".into()));
            }
        }
        if self.resize_timeout_seconds == 0 {
            return Err(("resizeTimeoutSeconds".into(), "must be above 0".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn window(start: &str, end: &str) -> Window {
        Window {
            start: start.into(),
            end: end.into(),
        }
    }

    #[rstest]
    #[case::inside("09:00", "17:00", 10 * 3600, true)]
    #[case::at_start("09:00", "17:00", 9 * 3600, true)]
    #[case::at_end_excluded("09:00", "17:00", 17 * 3600, false)]
    #[case::before("09:00", "17:00", 8 * 3600, false)]
    #[case::wraps_late("22:00", "06:00", 23 * 3600, true)]
    #[case::wraps_early("22:00", "06:00", 5 * 3600 + 86_400 * 3, true)]
    #[case::wraps_outside("22:00", "06:00", 12 * 3600, false)]
    fn window_holds(#[case] s: &str, #[case] e: &str, #[case] unix: i64, #[case] inside: bool) {
        assert_eq!(window(s, e).contains(unix), inside);
    }

    #[rstest]
    #[case::hour_too_big("24:00")]
    #[case::no_colon("0900")]
    #[case::short("9:00")]
    #[case::minutes("09:60")]
    fn bad_times_are_refused(#[case] t: &str) {
        let p = UpdatePolicy {
            window: Some(window(t, "10:00")),
            ..Default::default()
        };
        assert_eq!(p.check().unwrap_err().0, "window.start");
    }

    #[test]
    fn the_section_reads_as_written_and_defaults_off() {
        let p: UpdatePolicy = serde_json::from_str(
            r#"{"mode":"inPlaceOrEvict","window":{"start":"22:00","end":"06:00"},"allowLastReplica":true}"#,
        )
        .unwrap();
        assert_eq!(p.mode, UpdateMode::InPlaceOrEvict);
        assert!(p.allow_last_replica);
        assert_eq!(p.resize_timeout_seconds, 300, "the README says 300");
        assert_eq!(p.round_interval_seconds, 0, "the README says 0");
        assert_eq!(UpdatePolicy::default().mode, UpdateMode::Off);
        assert!(serde_json::from_str::<UpdatePolicy>(r#"{"mode":"recreate"}"#).is_err());
    }
}
