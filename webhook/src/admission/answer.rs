//! The AdmissionReview answer: always `allowed`, with the patch and warnings if any,
//! and the identity a review needs to be answered unchanged when it cannot finish.

use base64::Engine;
use serde_json::json;

use super::{caps, Outcome, Reviewed};

/// The most warnings returned, and the longest one (the apiserver truncates beyond).
const MAX_WARNINGS: usize = 8;
const MAX_WARNING_LEN: usize = 256;

/// A parsed request's identity: enough to admit it unchanged when its review cannot
/// finish (deadline passed, worker lost).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub uid: String,
    pub kind: &'static str,
    pub operation: &'static str,
    pub dry_run: bool,
}

impl Envelope {
    /// The answer that changes nothing, with one warning.
    pub fn unchanged(&self, outcome: Outcome, warning: &str) -> Reviewed {
        Reviewed {
            body: response(&self.uid, None, &[warning.to_string()]),
            kind: self.kind,
            operation: self.operation,
            outcome,
            patch_ops: 0,
            dry_run: self.dry_run,
            workload: None,
        }
    }
}

/// `request.operation` as a metric label (a closed set).
pub fn operation_label(op: &str) -> &'static str {
    match op {
        "CREATE" => "CREATE",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

/// The serialized patch, or the cap it passes.
pub(super) fn encode_patch(patch: &json_patch::Patch) -> Result<Option<Vec<u8>>, caps::Cap> {
    if patch.0.is_empty() {
        return Ok(None);
    }
    // Patches are built from a capped object; serializing cannot fail on a Value tree.
    let bytes = serde_json::to_vec(patch).unwrap_or_default();
    if bytes.len() > caps::MAX_PATCH_BYTES {
        return Err(caps::Cap::PatchBytes);
    }
    Ok(Some(bytes))
}

/// The AdmissionReview answer: always allowed, with the patch and warnings if any.
pub(super) fn response(uid: &str, patch: Option<&[u8]>, warnings: &[String]) -> Vec<u8> {
    let mut response = json!({"uid": uid, "allowed": true});
    if let Some(bytes) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings
            .iter()
            .take(MAX_WARNINGS)
            .map(|w| truncate(&format!("rightsizer: {w}"), MAX_WARNING_LEN))
            .collect::<Vec<_>>());
    }
    let out = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    // A Value of strings and bools always serializes.
    serde_json::to_vec(&out).unwrap_or_default()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
