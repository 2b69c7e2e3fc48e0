//! The API's one error type. Every response it builds is
//! `{"error": "..."}`; a 5xx tells the caller little and logs the detail.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Everything a handler can answer with instead of its result.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter the caller sent is unusable.
    #[error("invalid `{param}`: {message}")]
    BadParam {
        param: &'static str,
        message: String,
    },
    /// The request as a whole is unusable (e.g. a malformed query string).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error(transparent)]
    Query(#[from] kanade_queries::Error),
    #[error(transparent)]
    Storage(#[from] kanade_storage::Error),
}

impl ApiError {
    pub fn bad_param(param: &'static str, message: impl Into<String>) -> Self {
        Self::BadParam {
            param,
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadParam { .. } | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Query(_) | Self::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            "internal error (see the backend log)".to_string()
        } else {
            self.to_string()
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
