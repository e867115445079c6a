//! The `loadModels` section of a policy: memory as a function of declared load.
//!
//! ```yaml
//! loadModels:
//! - name: backend
//!   selector: {kinds: [Deployment], names: [backend]}
//!   headroom: 1.2
//!   fit: {minR2: 0.8, minSamples: 200}
//!   containers:
//!     backend:
//!       base: 100Mi
//!       fitted: true
//!       units:
//!         participant_video: {coefficient: 15Mi, query: 'sum by (namespace, pod) (...)'}
//!     frontend: {constant: 16Mi}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::quantity::Bytes;
use crate::selector::Selector;

/// One load model: the workloads it covers and a model per container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadModelSpec {
    pub name: String,
    /// Which workloads (and, through `containers`, which of their containers) it covers.
    #[serde(default)]
    pub selector: Selector,
    /// container name -> model.
    pub containers: BTreeMap<String, ContainerModelSpec>,
    /// The prediction is multiplied by this before it becomes a request.
    #[serde(default = "default_headroom")]
    pub headroom: f64,
    /// When a fitted model may replace the declared coefficients.
    #[serde(default)]
    pub fit: FitGate,
}

pub fn default_headroom() -> f64 {
    1.2
}

/// The model of one container: either constant, or base + Σ coefficient × load.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerModelSpec {
    /// A container whose memory does not depend on load (e.g. a 16Mi frontend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant: Option<Bytes>,
    /// Memory at zero load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Bytes>,
    /// unit name -> coefficient and the PromQL that measures that load per pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<String, UnitSpec>,
    /// Learn base and coefficients from Prometheus (used above the fit gate).
    #[serde(default)]
    pub fitted: bool,
    /// PromQL for this container's per-pod memory; default: working set of the
    /// container summed by namespace and pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_query: Option<String>,
}

/// One unit of load.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnitSpec {
    /// Memory per unit of load (declared). Fractions allowed: `2.5Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coefficient: Option<Bytes>,
    /// PromQL giving the current load per pod, with `namespace` and `pod` labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// The minimum quality of a fit before it is used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FitGate {
    #[serde(default = "default_min_r2", rename = "minR2")]
    pub min_r2: f64,
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
}

fn default_min_r2() -> f64 {
    0.8
}
fn default_min_samples() -> u64 {
    200
}

impl Default for FitGate {
    fn default() -> Self {
        FitGate {
            min_r2: default_min_r2(),
            min_samples: default_min_samples(),
        }
    }
}

/// Unit names are free but plain, so the annotation and PromQL labels stay readable.
pub fn valid_unit_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let y = r#"
name: backend
selector: {kinds: [Deployment], names: [backend]}
fit: {minR2: 0.9}
containers:
  backend:
    base: 100Mi
    fitted: true
    units:
      participant_video: {coefficient: 15Mi, query: 'sum by (namespace, pod) (x)'}
  frontend: {constant: 16Mi}
"#;
        let m: LoadModelSpec = serde_norway::from_str(y).unwrap();
        assert_eq!(m.headroom, 1.2);
        assert_eq!(m.fit.min_r2, 0.9);
        assert_eq!(m.fit.min_samples, 200);
        assert_eq!(m.containers["frontend"].constant, Some(Bytes(16 << 20)));
        assert!(
            serde_norway::from_str::<LoadModelSpec>("name: x\ncontainers: {}\nheadrom: 1").is_err()
        );
    }

    #[test]
    fn unit_names() {
        assert!(valid_unit_name("participant_video"));
        assert!(valid_unit_name("conn2"));
        assert!(!valid_unit_name("2conn"));
        assert!(!valid_unit_name("Video"));
        assert!(!valid_unit_name("a-b"));
        assert!(!valid_unit_name(""));
    }
}
