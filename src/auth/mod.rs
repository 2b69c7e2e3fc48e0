//! Who may call `/api/*`, and with which role.
//!
//! Per request, in order: `KANADE_AUTH_DISABLE` opens everything (as an
//! admin); `/health`, `/api/version` and `/api/auth/login` are public; the
//! static service token (`KANADE_AUTH_STATIC_TOKEN`, constant-time compare)
//! is an admin; otherwise the bearer must be a login JWT (HS256, audience
//! `kanade`, unexpired) whose subject is looked up in `users` on every
//! request. The stored account decides: missing → 401, disabled → 403,
//! a token minted before its last password change → 401,
//! and its role, not the token's, applies, so a demotion or a disable takes
//! effect at once. The HTTP side of this (the middleware and the route
//! gates) lives in `api::auth`; this module knows no HTTP.

pub mod features;
pub mod mfa;
pub mod passkey;
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
    /// The pages it may use (see [`features`]); `None`: all.
    pub allowed: Option<Vec<kanade_shared::feature::Feature>>,
}

impl Identity {
    pub(crate) fn service(sub: &str) -> Self {
        Self {
            sub: sub.into(),
            role: Role::Admin,
            account: false,
            allowed: None,
        }
    }
}

/// How requests are authenticated, read once at start-up.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `KANADE_AUTH_DISABLE` set to `1`, `true` or `yes` (any case).
    pub disabled: bool,
    /// `KANADE_AUTH_STATIC_TOKEN`, when set and non-empty.
    pub static_token: Option<String>,
    /// Signs and checks login tokens.
    pub jwt: Arc<JwtKeys>,
    /// Slows and then refuses repeated login failures.
    pub throttle: Arc<LoginThrottle>,
    /// Bounds the password-reset mails anyone may ask for.
    pub links: Arc<LoginThrottle>,
    /// Bounds the passkey sign-ins anyone may start.
    pub ceremonies: Arc<LoginThrottle>,
}

impl AuthConfig {
    /// Reads the environment; an error (a JWT secret too short) stops
    /// the start.
    pub fn from_env() -> Result<Self, String> {
        let disable = std::env::var("KANADE_AUTH_DISABLE").ok();
        let disabled = match auth_disabled(disable.as_deref()) {
            Some(d) => d,
            None => {
                tracing::warn!(
                    value = ?disable,
                    "KANADE_AUTH_DISABLE is neither 1/true/yes nor 0/false/no/off: ignored, \
                     authentication stays on"
                );
                false
            }
        };
        let static_token = std::env::var("KANADE_AUTH_STATIC_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        Ok(Self::new(disabled, static_token, JwtKeys::from_env()?))
    }

    /// The configuration with the default throttles.
    pub fn new(disabled: bool, static_token: Option<String>, jwt: JwtKeys) -> Self {
        Self {
            disabled,
            static_token,
            jwt: Arc::new(jwt),
            throttle: Arc::new(LoginThrottle::default()),
            links: Arc::new(LoginThrottle::new(throttle::ThrottlePolicy::links())),
            ceremonies: Arc::new(LoginThrottle::new(throttle::ThrottlePolicy::ceremonies())),
        }
    }

    /// Whether `presented` is the service token.
    pub(crate) fn is_service_token(&self, presented: &str) -> bool {
        self.static_token
            .as_deref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(presented.as_bytes())))
    }
}

/// What `KANADE_AUTH_DISABLE` says: only an explicit `1`, `true` or `yes`
/// (any case, trimmed) turns authentication off; unset, empty, `0`,
/// `false`, `no` or `off` keep it on; anything else is `None` (kept on,
/// and the caller says the value was ignored). Failing open on a value
/// like `False` is what this guards against.
pub fn auth_disabled(value: Option<&str>) -> Option<bool> {
    let Some(v) = value.map(str::trim) else {
        return Some(false);
    };
    if ["1", "true", "yes"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
    {
        Some(true)
    } else if v.is_empty()
        || ["0", "false", "no", "off"]
            .iter()
            .any(|f| v.eq_ignore_ascii_case(f))
    {
        Some(false)
    } else {
        None
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

    #[test]
    fn only_an_explicit_true_turns_authentication_off() {
        for on in ["1", "true", "TRUE", "True", " yes ", "YES"] {
            assert_eq!(auth_disabled(Some(on)), Some(true), "{on:?}");
        }
        for off in ["False", "FALSE", "No", "off", "OFF", "0", "", "  "] {
            assert_eq!(auth_disabled(Some(off)), Some(false), "{off:?}");
        }
        assert_eq!(auth_disabled(None), Some(false));
        for odd in ["banana", "2", "enabled", "y"] {
            assert_eq!(auth_disabled(Some(odd)), None, "{odd:?}");
        }
    }
}
