//! AdmissionReview in, AdmissionReview out. Knows nothing about HTTP.
//! (Interface fixed; the body is filled in by the admission-path work.)

use std::sync::Arc;

use crate::recommendation::{NoRecommendations, RecommendationSource};

/// Why a request body is not a review we can answer (the HTTP layer maps this to 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("not an AdmissionReview admission.k8s.io/v1: {0}")]
    NotReview(String),
}

/// How a review ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A patch was returned.
    Patched,
    /// Looked at, nothing to change.
    Unchanged,
    /// Not ours to change (other kind, system namespace, mode off, subresource...).
    Skipped,
    /// Admitted unchanged because the object could not be handled (warning returned).
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Invalid => "invalid",
        }
    }
}

/// A finished review.
#[derive(Debug)]
pub struct Reviewed {
    /// The AdmissionReview response document, serialized.
    pub body: Vec<u8>,
    /// `request.kind.kind`, e.g. "Pod".
    pub kind: String,
    /// `request.operation`, e.g. "CREATE".
    pub operation: String,
    pub outcome: Outcome,
    /// Number of JSONPatch operations returned.
    pub patch_ops: usize,
}

/// Answers reviews.
pub struct Admitter {
    recs: Arc<dyn RecommendationSource>,
}

impl Default for Admitter {
    fn default() -> Self {
        Admitter {
            recs: Arc::new(NoRecommendations),
        }
    }
}

impl Admitter {
    /// Answer one AdmissionReview body.
    pub fn review(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let _ = &self.recs;
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| ReviewError::NotJson(e.to_string()))?;
        let req = v
            .get("request")
            .ok_or_else(|| ReviewError::NotReview("missing request".into()))?;
        let uid = req.get("uid").cloned().unwrap_or_default();
        let out = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": true}
        });
        Ok(Reviewed {
            body: serde_json::to_vec(&out).map_err(|e| ReviewError::NotJson(e.to_string()))?,
            kind: String::new(),
            operation: String::new(),
            outcome: Outcome::Skipped,
            patch_ops: 0,
        })
    }
}
