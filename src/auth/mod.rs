//! Who may call `/api/*`, and with which role.
//!
//! Per request, in order: `KANADE_AUTH_DISABLE` opens everything (as an
//! admin); `/health`, `/api/version` and `/api/auth/login` are public; the
//! static service token (`KANADE_AUTH_STATIC_TOKEN`, constant-time compare)
//! is an admin; otherwise the bearer must be a login JWT (HS256, audience
//! `kanade`, unexpired) whose subject is looked up in `users` on every
//! request. The stored account decides: missing → 401, disabled → 403,
//! and its role, not the token's, applies, so a demotion or a disable takes
//! effect at once. Route groups then demand a minimum role
//! ([`require_operator`], [`require_admin`]) before their handler runs.

pub mod password;
pub mod throttle;
pub mod token;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::state::AppState;

pub use throttle::LoginThrottle;
pub use token::JwtKeys;

/// Viewer < operator < admin; a higher role may do all a lower one may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// The authenticated caller, put into the request extensions.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Account name, or `service-token` / `auth-disabled`.
    pub sub: String,
    pub role: Role,
    /// Whether a `users` row stands behind it.
    pub account: bool,
}

impl Identity {
    fn service(sub: &str) -> Self {
        Self {
            sub: sub.into(),
            role: Role::Admin,
            account: false,
        }
    }
}

/// How requests are authenticated, read once at start-up.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `KANADE_AUTH_DISABLE` set (to anything but `0`/`false`/`no`).
    pub disabled: bool,
    /// `KANADE_AUTH_STATIC_TOKEN`, when set and non-empty.
    pub static_token: Option<String>,
    /// Signs and checks login tokens.
    pub jwt: Arc<JwtKeys>,
    /// Slows and then refuses repeated login failures.
    pub throttle: Arc<LoginThrottle>,
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
        let jwt = JwtKeys::from_env();
        Self {
            disabled,
            static_token,
            jwt: Arc::new(jwt),
            throttle: Arc::new(LoginThrottle::default()),
        }
    }

    /// Whether `presented` is the service token.
    fn is_service_token(&self, presented: &str) -> bool {
        self.static_token
            .as_deref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(presented.as_bytes())))
    }
}

/// Paths under `/api/` anyone may call.
const PUBLIC_API_PATHS: [&str; 2] = ["/api/version", "/api/auth/login"];

/// What an account that must change its password may still call.
const PASSWORD_CHANGE_PATHS: [&str; 2] = ["/api/auth/me", "/api/auth/change-password"];

/// Layer over the whole router: every `/api/` path but the public ones
/// (known route or not) needs an identity.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let auth = &state.auth;
    if auth.disabled {
        req.extensions_mut()
            .insert(Identity::service("auth-disabled"));
        return next.run(req).await;
    }
    let path = req.uri().path();
    if !path.starts_with("/api/") || PUBLIC_API_PATHS.contains(&path) {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return ApiError::Unauthorized("missing bearer token".into()).into_response();
    };
    if auth.is_service_token(token) {
        req.extensions_mut()
            .insert(Identity::service("service-token"));
        return next.run(req).await;
    }
    let claims = match auth.jwt.verify(token) {
        Ok(c) => c,
        Err(e) => return ApiError::Unauthorized(format!("invalid token: {e}")).into_response(),
    };
    let user = match state.store.user(&claims.sub) {
        Ok(u) => u,
        Err(e) => {
            // Fail closed: a storage error never grants access.
            tracing::error!(error = %e, "account lookup failed");
            return ApiError::Unauthorized("account lookup failed".into()).into_response();
        }
    };
    let Some(user) = user else {
        return ApiError::Unauthorized("unknown account".into()).into_response();
    };
    if user.disabled {
        return ApiError::Forbidden("account disabled".into()).into_response();
    }
    let Some(role) = Role::parse(&user.role) else {
        tracing::error!(username = %user.username, role = %user.role, "stored account has an unknown role");
        return ApiError::Unauthorized("account has no valid role".into()).into_response();
    };
    if user.must_change_pw && !PASSWORD_CHANGE_PATHS.contains(&path) {
        return ApiError::Forbidden(
            "password change required: POST /api/auth/change-password first".into(),
        )
        .into_response();
    }
    req.extensions_mut().insert(Identity {
        sub: user.username,
        role,
        account: true,
    });
    next.run(req).await
}

fn gate(req: &Request, required: Role) -> Result<(), ApiError> {
    match req.extensions().get::<Identity>() {
        None => Err(ApiError::Unauthorized("not authenticated".into())),
        Some(id) if id.role >= required => Ok(()),
        Some(id) => Err(ApiError::Forbidden(format!(
            "{} role required (caller is {})",
            required.as_str(),
            id.role.as_str()
        ))),
    }
}

/// Route layer: the caller must be at least an operator.
pub async fn require_operator(req: Request, next: Next) -> Response {
    match gate(&req, Role::Operator) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Route layer: the caller must be an admin.
pub async fn require_admin(req: Request, next: Next) -> Response {
    match gate(&req, Role::Admin) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::parse("Admin"), None);
    }
}
