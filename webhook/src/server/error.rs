//! The one error type of the HTTP layer: a status code and a reason, sent as
//! `{"error": "<reason>"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request body over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("could not read request body: {0}")]
    BodyRead(String),
    #[error("{0}")]
    BadReview(#[from] crate::admission::ReviewError),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("could not encode response: {0}")]
    Encode(String),
    /// The body could not be taken in (its bytes do not fit the budgets): no uid to
    /// answer with. A 503 without `Retry-After`, which the apiserver does not retry
    /// (see `server::guard`).
    #[error("overloaded; not retried, the webhook's failurePolicy applies")]
    Busy,
    #[error("request body not received in time")]
    BodyTimeout,
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::BodyRead(_) | HttpError::BadReview(_) => StatusCode::BAD_REQUEST,
            HttpError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            HttpError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}
