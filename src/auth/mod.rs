//! Who may call `/api/*`, and with which role.
//!
//! Per request, in order: `KANADE_AUTH_DISABLE` opens everything (as an
//! admin); `/health`, `/api/version` and `/api/auth/login` are public; the
//! static service token (`KANADE_AUTH_STATIC_TOKEN`, constant-time compare)
//! is an admin; otherwise the bearer must be a login JWT (HS256, audience
//! `kanade`, unexpired) whose subject is looked up in `users` on every
//! request. The stored account decides: missing → 401, disabled → 403,
//! and its role, not the token's, applies, so a demotion or a disable takes
//! effect at once. The HTTP side of this (the middleware and the route
//! gates) lives in `api::auth`; this module knows no HTTP.

pub mod password;
pub mod throttle;
pub mod token;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

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
    pub(crate) fn service(sub: &str) -> Self {
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
    pub(crate) fn is_service_token(&self, presented: &str) -> bool {
        self.static_token
            .as_deref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(presented.as_bytes())))
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
