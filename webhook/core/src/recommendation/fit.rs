//! A load model's fit as the analyzer publishes it with a recommendation. The fitting
//! is `loadmodel::fit`; the figures live here so a recommendation does not depend on
//! the load-model arithmetic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A fitted model and how well it explains the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fit {
    /// Bytes at zero load.
    pub base: f64,
    /// unit -> bytes per unit of load.
    pub coefficients: BTreeMap<String, f64>,
    /// Coefficient of determination, 1 − SSres/SStot.
    pub r2: f64,
    /// Number of (pod, time) samples behind the fit.
    pub samples: u64,
    /// 95th percentile of actual − predicted (bytes): what the model under-predicts by.
    pub residual_p95: f64,
}

/// A fit as the analyzer publishes it (in `/recommendations` and the snapshot): the
/// figures, and whether the policy's gate let it replace the declared coefficients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FitReport {
    #[serde(flatten)]
    pub fit: Fit,
    /// Above the policy's minR2 and minSamples.
    pub used: bool,
    /// Why it is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds of the fit.
    #[serde(default)]
    pub at: u64,
    /// The model in use (fitted or declared) against actual memory at the end of the
    /// window, averaged over pods: for dashboards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Current>,
}

/// Predicted against actual memory per pod (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Current {
    pub predicted: f64,
    pub actual: f64,
}
