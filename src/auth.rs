//! Who may call `/api/*`. `/health` and `/api/version` are public; every
//! other API route needs `Authorization: Bearer <KANADE_AUTH_STATIC_TOKEN>`
//! (compared in constant time) unless auth is disabled for development.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::state::AppState;

/// How requests are authenticated, read once at start-up.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// `KANADE_AUTH_DISABLE` set (to anything but `0`/`false`).
    pub disabled: bool,
    /// `KANADE_AUTH_STATIC_TOKEN`, when set and non-empty.
    pub static_token: Option<String>,
}

impl AuthConfig {
    /// Reads the environment.
    pub fn from_env() -> Self {
        let disabled = std::env::var("KANADE_AUTH_DISABLE")
            .map(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
            .unwrap_or(false);
        let static_token = std::env::var("KANADE_AUTH_STATIC_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        Self {
            disabled,
            static_token,
        }
    }

    /// Whether `presented` is the service token.
    fn accepts(&self, presented: &str) -> bool {
        self.static_token
            .as_deref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(presented.as_bytes())))
    }
}

/// Paths under `/api/` anyone may call.
const PUBLIC_API_PATHS: [&str; 2] = ["/api/version", "/api/auth/login"];

/// Layer over the whole router: every `/api/` path but the public ones
/// (known route or not) needs the token.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let auth = &state.auth;
    let path = req.uri().path();
    if auth.disabled || !path.starts_with("/api/") || PUBLIC_API_PATHS.contains(&path) {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match token {
        None => ApiError::Unauthorized("missing bearer token".into()).into_response(),
        Some(t) if auth.accepts(t) => next.run(req).await,
        Some(_) => ApiError::Unauthorized("invalid token".into()).into_response(),
    }
}
