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
    /// Well-formed, but a value is out of its range (upstream's 422s).
    #[error("{0}")]
    Unprocessable(String),
    /// Refused for now; the caller may retry after this many seconds.
    #[error("too many attempts; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// A bucket or store the request needs is missing; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The broker failed an operation on the caller's behalf.
    #[error("{0}")]
    BadGateway(String),
    /// The body is over the size the route accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A request past its time budget (the reference's 408 for a query).
    #[error("{0}")]
    RequestTimeout(String),
    /// It existed but its time is over (an expired plan).
    #[error("{0}")]
    Gone(String),
    /// An `If-Match` precondition does not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// An agent did not answer in time (or is not connected).
    #[error("{0}")]
    GatewayTimeout(String),
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
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Gone(_) => StatusCode::GONE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::Query(_) | Self::Storage(_) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl From<crate::control::Error> for ApiError {
    fn from(e: crate::control::Error) -> Self {
        use crate::control::Error as C;
        match e {
            C::NotFound(m) => Self::NotFound(m),
            invalid @ C::Invalid { .. } => Self::BadRequest(invalid.to_string()),
            C::Conflict(m) => Self::Conflict(m),
            C::Unavailable(m) => Self::Unavailable(m),
            C::Broker(m) => Self::BadGateway(m),
            C::Storage(e) => Self::Storage(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Our own failures say little; a broker or agent that failed or
        // did not answer (502/503/504) is named, the caller can act on it.
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "request failed");
            "internal error (see the backend log)".to_string()
        } else {
            if status.is_server_error() {
                tracing::warn!(error = %self, "request failed upstream");
            }
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

/// Longest non-JSON error body carried into the JSON error.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// A handler that panics answers a JSON 500 instead of a closed
/// connection; the panic itself (message, location, backtrace) is logged
/// by the process's panic hook, this names the request.
pub async fn catch_panics(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use futures::FutureExt;
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(%method, path = %crate::control::abbreviated(&path), "request handler panicked; answered 500");
            ApiError::Internal("handler panicked".into()).into_response()
        }
    }
}

/// Outermost layer: an error response that is not JSON (axum's own 405,
/// a path or query rejection in plain text, ...) becomes
/// `{"error": ...}` with its status and headers (`Allow` on a 405) kept.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (text.is_empty(), status) {
        (false, _) => text,
        (true, StatusCode::METHOD_NOT_ALLOWED) => {
            let allow = parts
                .headers
                .get(axum::http::header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("method not allowed here (allowed: {allow})")
        }
        (true, s) => s.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({ "error": message }).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over a real socket: the connection must answer, not just close.
    #[tokio::test]
    async fn a_panicking_handler_answers_a_json_500() {
        async fn boom() -> &'static str {
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 3;
            if v[i] == 0 {
                "unreachable"
            } else {
                "also unreachable"
            }
        }
        let app = axum::Router::new()
            .route("/boom", axum::routing::get(boom))
            .route("/fine", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(catch_panics))
            .layer(axum::middleware::map_response(json_errors));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let r = client
            .get(format!("http://{addr}/boom"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 500);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "internal error (see the backend log)");
        let r = client
            .get(format!("http://{addr}/fine"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "ok", "the server still serves");
    }
}
