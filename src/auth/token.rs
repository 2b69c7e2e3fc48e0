//! Login tokens: HS256 JWTs with audience `kanade`, signed with
//! `KANADE_JWT_SECRET`. The claims have the reference backend's shape, so a
//! token minted by either backend with the same secret passes the other.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Role;

/// The audience every login token carries.
pub const AUDIENCE: &str = "kanade";

/// How long a login token is valid unless the server settings' session
/// lifetime (`session_ttl_hours`) says otherwise: 24 h, as the reference.
/// The account is re-read on every request and a password change ends
/// earlier tokens (see `epoch`).
pub const TOKEN_TTL_SECS: i64 = 24 * 3600;

/// The claims of a login token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub aud: Option<String>,
    /// The role at login; informational only, the stored account decides.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The account's token epoch at login (absent, 0, in tokens of the
    /// reference backend): a token of an earlier epoch is refused.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The shortest `KANADE_JWT_SECRET` accepted: an HS256 key is as strong
/// as its secret, and anyone holding it can mint an admin token.
pub const MIN_SECRET_BYTES: usize = 32;

/// The signing secret, as keys.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// `KANADE_JWT_SECRET`; without it a random secret for this process
    /// (logins work, and their tokens end with the process). The reference
    /// falls back to a fixed, published secret, with which anyone could
    /// mint an admin token; we do not. A secret shorter than
    /// [`MIN_SECRET_BYTES`] is refused: the error stops the start.
    pub fn from_env() -> Result<Self, String> {
        Self::from_secret(std::env::var("KANADE_JWT_SECRET").ok().as_deref())
    }

    fn from_secret(secret: Option<&str>) -> Result<Self, String> {
        match secret {
            Some(s) if s.len() >= MIN_SECRET_BYTES => Ok(Self::new(s.as_bytes())),
            Some(s) if !s.is_empty() => Err(format!(
                "KANADE_JWT_SECRET is {} bytes; at least {MIN_SECRET_BYTES} are required \
                 (for example the output of `openssl rand -hex 32`)",
                s.len()
            )),
            _ => {
                tracing::warn!(
                    "KANADE_JWT_SECRET is not set: login tokens are signed with a random \
                     per-process secret and stop working when the backend restarts"
                );
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).expect("the OS random source is available");
                Ok(Self::new(&secret))
            }
        }
    }

    /// A signed token for `sub`, and its expiry (unix seconds).
    pub fn mint(
        &self,
        sub: &str,
        role: Role,
        epoch: u64,
        now: i64,
        ttl_secs: i64,
    ) -> Result<(String, i64), String> {
        let exp = now.saturating_add(ttl_secs);
        let claims = Claims {
            sub: sub.into(),
            exp,
            iat: Some(now),
            aud: Some(AUDIENCE.into()),
            roles: vec![role.as_str().into()],
            epoch,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map(|t| (t, exp))
            .map_err(|e| e.to_string())
    }

    /// The claims of a valid token; the error says why it is not.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".into(),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => "wrong audience".into(),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature".into(),
                _ => "malformed token".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_others_do_not() {
        let keys = JwtKeys::new(b"secret-a");
        let now = chrono::Utc::now().timestamp();
        let (token, exp) = keys
            .mint("alice", Role::Operator, 0, now, TOKEN_TTL_SECS)
            .unwrap();
        assert_eq!(exp, now + TOKEN_TTL_SECS);
        let claims = keys.verify(&token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.roles),
            ("alice", vec!["operator".to_string()])
        );

        assert_eq!(
            JwtKeys::new(b"secret-b").verify(&token).unwrap_err(),
            "bad signature"
        );
        let (old, _) = keys
            .mint(
                "alice",
                Role::Admin,
                0,
                now - TOKEN_TTL_SECS - 3600,
                TOKEN_TTL_SECS,
            )
            .unwrap();
        assert_eq!(keys.verify(&old).unwrap_err(), "token expired");
        assert_eq!(keys.verify("not.a.jwt").unwrap_err(), "malformed token");

        let foreign = encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "alice".into(),
                exp: now + 60,
                iat: None,
                aud: Some("elsewhere".into()),
                roles: vec![],
                epoch: 0,
            },
            &EncodingKey::from_secret(b"secret-a"),
        )
        .unwrap();
        assert_eq!(keys.verify(&foreign).unwrap_err(), "wrong audience");
    }

    #[test]
    fn a_short_secret_is_refused_and_an_absent_one_is_random() {
        let err = JwtKeys::from_secret(Some("hunter2")).unwrap_err();
        assert!(err.contains("KANADE_JWT_SECRET is 7 bytes"), "{err}");
        assert!(JwtKeys::from_secret(Some(&"k".repeat(31))).is_err());
        assert!(JwtKeys::from_secret(Some(&"k".repeat(32))).is_ok());
        let (a, b) = (
            JwtKeys::from_secret(None).unwrap(),
            JwtKeys::from_secret(Some("")).unwrap(),
        );
        let now = chrono::Utc::now().timestamp();
        let (token, _) = a.mint("alice", Role::Viewer, 3, now, 60).unwrap();
        assert_eq!(a.verify(&token).unwrap().epoch, 3);
        assert_eq!(b.verify(&token).unwrap_err(), "bad signature");
    }
}
