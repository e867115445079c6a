//! Prediction: memory = base + Σ coefficient[unit] × load[unit], and the request and
//! limit that follow from it with the policy's headroom and memory rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::loadmodel::annotation::Load;
use crate::loadmodel::schema::{ContainerModelSpec, FitGate};
use crate::quantity::round_up;
use crate::recommendation::fit::Fit;
use crate::rules::{Rules, Sizes};

/// A linear model, in bytes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Linear {
    pub base: f64,
    /// unit -> bytes per unit of load.
    pub coefficients: BTreeMap<String, f64>,
}

impl Linear {
    /// base + Σ coefficient × load; units the model does not know add nothing.
    pub fn predict(&self, load: &Load) -> f64 {
        self.base
            + self
                .coefficients
                .iter()
                .map(|(u, c)| c * load.get(u).copied().unwrap_or(0.0))
                .sum::<f64>()
    }
}

/// Where the coefficients in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Constant,
    Declared,
    Fitted,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Constant => "constant",
            Origin::Declared => "declared",
            Origin::Fitted => "fitted",
        }
    }
}

/// The model that applies to one container, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    pub model: Linear,
    pub origin: Origin,
    /// Why a fitted model was not used (when the spec asks for one).
    pub note: Option<String>,
}

/// Whether a fit passes the policy's gate; `Err` says why not.
pub fn gate(g: &FitGate, fit: &Fit) -> Result<(), String> {
    if fit.samples < g.min_samples {
        return Err(format!(
            "fit has {} samples, fewer than minSamples {}",
            fit.samples, g.min_samples
        ));
    }
    // NaN R² fails the gate too.
    if fit.r2.is_nan() || fit.r2 < g.min_r2 {
        return Err(format!("fit R² {:.3} is below minR2 {}", fit.r2, g.min_r2));
    }
    Ok(())
}

fn declared(spec: &ContainerModelSpec) -> Option<Linear> {
    let coefficients: BTreeMap<String, f64> = spec
        .units
        .iter()
        .filter_map(|(u, s)| s.coefficient.map(|c| (u.clone(), c.0 as f64)))
        .collect();
    if spec.base.is_none() && coefficients.is_empty() {
        return None;
    }
    Some(Linear {
        base: spec.base.map_or(0.0, |b| b.0 as f64),
        coefficients,
    })
}

/// Pick the model for a container: constant; fitted when asked for and above the gate;
/// else the declared coefficients (or none, when nothing is declared).
pub fn choose(spec: &ContainerModelSpec, g: &FitGate, fit: Option<&Fit>) -> Option<Chosen> {
    if let Some(c) = spec.constant {
        return Some(Chosen {
            model: Linear {
                base: c.0 as f64,
                coefficients: BTreeMap::new(),
            },
            origin: Origin::Constant,
            note: None,
        });
    }
    let mut note = None;
    if spec.fitted {
        match fit {
            Some(f) => match gate(g, f) {
                Ok(()) => {
                    return Some(Chosen {
                        model: Linear {
                            base: f.base,
                            coefficients: f.coefficients.clone(),
                        },
                        origin: Origin::Fitted,
                        note: None,
                    })
                }
                Err(why) => note = Some(why),
            },
            None => note = Some("no fit available yet".to_string()),
        }
    }
    let model = declared(spec)?;
    Some(Chosen {
        model,
        origin: Origin::Declared,
        note: note.map(|n| format!("{n}; declared coefficients apply")),
    })
}

fn scaled(v: f64, factor: f64) -> u64 {
    let x = (v * factor).ceil();
    if x.is_finite() && x > 0.0 {
        x.min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Request and limit for a predicted memory figure (bytes):
/// request = prediction × headroom, rounded up and clamped like a recommended request;
/// limit = the policy's limit rule applied to that request (request × requestFactor,
/// rounded, clamped, never below the request). No limit rule: no limit.
pub fn sizes(rules: &Rules, headroom: f64, predicted: f64) -> Sizes {
    let r = &rules.memory.request;
    let request =
        round_up(scaled(predicted, headroom), r.round_to.0).clamp(r.min.0, r.max.0.max(r.min.0));
    let limit = rules.memory.limit.as_ref().map(|l| {
        round_up(scaled(request as f64, l.request_factor), l.round_to.0)
            .clamp(l.min.0, l.max.0.max(l.min.0))
            .max(request)
    });
    Sizes {
        request: Some(request),
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadmodel::schema::UnitSpec;
    use crate::quantity::{Bytes, MI};

    fn backend() -> ContainerModelSpec {
        let unit = |mi: u64| UnitSpec {
            coefficient: Some(Bytes(mi * MI)),
            query: Some("q".into()),
        };
        ContainerModelSpec {
            base: Some(Bytes(100 * MI)),
            units: [
                ("participant_video".to_string(), unit(15)),
                ("experimenter".to_string(), unit(25)),
            ]
            .into(),
            ..Default::default()
        }
    }

    fn fit(r2: f64, samples: u64) -> Fit {
        Fit {
            base: 50.0 * MI as f64,
            coefficients: [("participant_video".to_string(), 10.0 * MI as f64)].into(),
            r2,
            samples,
            residual_p95: 0.0,
        }
    }

    #[test]
    fn declared_prediction() {
        let c = choose(&backend(), &FitGate::default(), None).unwrap();
        assert_eq!(c.origin, Origin::Declared);
        assert_eq!(c.note, None);
        let load: Load = [
            ("participant_video".into(), 40.0),
            ("experimenter".into(), 2.0),
        ]
        .into();
        // 100 + 40×15 + 2×25 = 750Mi
        assert_eq!(c.model.predict(&load), 750.0 * MI as f64);
    }

    #[test]
    fn fitted_only_above_the_gate() {
        let mut spec = backend();
        spec.fitted = true;
        let g = FitGate::default();
        let c = choose(&spec, &g, Some(&fit(0.95, 500))).unwrap();
        assert_eq!(c.origin, Origin::Fitted);
        assert_eq!(c.model.base, 50.0 * MI as f64);
        let c = choose(&spec, &g, Some(&fit(0.5, 500))).unwrap();
        assert_eq!(c.origin, Origin::Declared);
        assert!(c.note.unwrap().contains("R² 0.500 is below minR2 0.8"));
        let c = choose(&spec, &g, Some(&fit(0.99, 10))).unwrap();
        assert!(c.note.unwrap().contains("10 samples"));
        let c = choose(&spec, &g, None).unwrap();
        assert!(c.note.unwrap().contains("no fit"));
        // Fitted-only spec with nothing declared and no usable fit: no model.
        let bare = ContainerModelSpec {
            fitted: true,
            ..Default::default()
        };
        assert_eq!(choose(&bare, &g, Some(&fit(0.1, 500))), None);
    }

    #[test]
    fn sizes_follow_the_rules() {
        let rules = Rules::default();
        // 750Mi × 1.2 = 900Mi -> 912Mi (16Mi steps); limit 912 × 1.5 = 1368Mi -> 1376Mi
        let s = sizes(&rules, 1.2, 750.0 * MI as f64);
        assert_eq!(s.request, Some(912 * MI));
        assert_eq!(s.limit, Some(1376 * MI));
        // 16Mi constant: request clamped up to 64Mi, limit to its 128Mi minimum
        let s = sizes(&rules, 1.0, 16.0 * MI as f64);
        assert_eq!((s.request, s.limit), (Some(64 * MI), Some(128 * MI)));
    }
}
