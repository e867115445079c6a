//! The AdmissionReview answer: always `allowed`, with the patch and warnings if any,
//! and the identity a review needs to be answered unchanged when it cannot finish.

use base64::Engine;
use serde::Serialize;

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
            withheld: Vec::new(),
            node_capped: Vec::new(),
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

/// The AdmissionReview answer document. Fields in name order: the bytes are those of the
/// same document built as a `serde_json::Value`, without building that tree per review.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    uid: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// The AdmissionReview answer: always allowed, with the patch and warnings if any.
pub(super) fn response(uid: &str, patch: Option<&[u8]>, warnings: &[String]) -> Vec<u8> {
    let out = ReviewOut {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: ResponseOut {
            allowed: true,
            patch: patch.map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes)),
            patch_type: patch.map(|_| "JSONPatch"),
            uid,
            warnings: warnings
                .iter()
                .take(MAX_WARNINGS)
                .map(|w| truncate(&format!("rightsizer: {w}"), MAX_WARNING_LEN))
                .collect(),
        },
    };
    // Strings and bools always serialize.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The typed document serializes to the bytes of the same document as a JSON tree
    /// (keys in name order), with and without a patch and warnings.
    #[test]
    fn same_bytes_as_the_json_tree() {
        let long = "x".repeat(400);
        let cases: [(Option<&[u8]>, Vec<String>); 3] = [
            (None, vec![]),
            (Some(b"[{\"op\":\"add\"}]"), vec![]),
            (
                Some(b"[]"),
                vec!["a \"quoted\" warning".into(), long.clone()],
            ),
        ];
        for (patch, warnings) in cases {
            let mut r = json!({"uid": "u-1", "allowed": true});
            if let Some(p) = patch {
                r["patchType"] = json!("JSONPatch");
                r["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(p));
            }
            if !warnings.is_empty() {
                r["warnings"] = json!(warnings
                    .iter()
                    .map(|w| truncate(&format!("rightsizer: {w}"), MAX_WARNING_LEN))
                    .collect::<Vec<_>>());
            }
            let tree = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": r});
            assert_eq!(
                String::from_utf8(response("u-1", patch, &warnings)).unwrap(),
                serde_json::to_string(&tree).unwrap()
            );
        }
    }
}
