//! The authentication middleware and the role gates of the router: the
//! HTTP face of [`crate::auth`], which decides who a bearer is.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::api::state::AppState;
use crate::audit::{Caller, SOURCE_HEADER};
use crate::auth::{features, Identity, Role};

/// Paths under `/api/` anyone may call.
const PUBLIC_API_PATHS: [&str; 5] = [
    "/api/version",
    "/api/auth/login",
    "/api/auth/passkey/config",
    "/api/auth/passkey/login/start",
    "/api/auth/passkey/login/finish",
];

/// What an account that must change its password may still call.
const PASSWORD_CHANGE_PATHS: [&str; 2] = ["/api/auth/me", "/api/auth/change-password"];

/// Layer over the whole router: every `/api/` path but the public ones
/// (known route or not) needs an identity.
/// An install script's progress report: its attempt's key authenticates
/// it, not a session (a POST to `/api/install-reports/<uuid>` only).
fn install_report(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST
        && path
            .strip_prefix("/api/install-reports/")
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
}

pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let auth = &state.auth;
    if auth.disabled {
        req.extensions_mut()
            .insert(Identity::service("auth-disabled"));
        return next.run(req).await;
    }
    let path = req.uri().path();
    let protected = path.starts_with("/api/") || path == "/metrics";
    let public = PUBLIC_API_PATHS.contains(&path)
        || path.starts_with("/api/auth/password-setup/")
        || path == "/api/auth/forgot-password"
        || install_report(req.method(), path);
    if !protected || public {
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
    if claims.epoch != user.token_epoch {
        return ApiError::Unauthorized("token ended by a password change: log in again".into())
            .into_response();
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
    let group = match user.permission_group.as_deref() {
        None => None,
        Some(name) => match state.store.permission_group(name) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "permission group lookup failed");
                return ApiError::Unauthorized("account lookup failed".into()).into_response();
            }
        },
    };
    let allowed = features::effective(&user, group.as_ref());
    req.extensions_mut().insert(Identity {
        sub: user.username,
        role,
        account: true,
        allowed,
    });
    next.run(req).await
}

/// Route layer over every routed request: a caller limited to some pages
/// gets 403 on the routes of the others (see [`features::denial`]).
pub async fn require_features(req: Request, next: Next) -> Response {
    let denied = {
        let ext = req.extensions();
        features::denial(
            ext.get::<Identity>().and_then(|i| i.allowed.as_deref()),
            req.method(),
            ext.get::<MatchedPath>().map(MatchedPath::as_str),
        )
    };
    match denied {
        None => next.run(req).await,
        Some(why) => ApiError::Forbidden(why).into_response(),
    }
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

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            sub: parts.extensions.get::<Identity>().map(|i| i.sub.clone()),
            source: parts
                .headers
                .get(SOURCE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().chars().take(64).collect::<String>())
                .filter(|s| !s.is_empty()),
        })
    }
}
