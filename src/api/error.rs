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
    #[error("{0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// Refused for now; the caller may retry after this many seconds.
    #[error("too many attempts; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// Our failure, not the caller's; the detail goes to the log.
    #[error("{0}")]
    Internal(String),
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
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Query(_) | Self::Storage(_) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
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
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if let Self::TooManyRequests { retry_after_secs } = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs),
            );
        }
        response
    }
}
