//! Password hashing: argon2id PHC strings (the reference's format, so an
//! imported `users` table keeps working). Hashing costs tens of
//! milliseconds of CPU, so the async helpers run it on the blocking pool,
//! away from the projectors.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Shortest password accepted, in characters (not bytes).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Rejects a password too short to keep.
pub fn check_strength(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        Err(format!(
            "password too short (at least {MIN_PASSWORD_CHARS} characters)"
        ))
    } else {
        Ok(())
    }
}

/// An argon2id PHC string for `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("random salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hash: {e}"))
}

/// Whether `password` matches `phc`; an unparsable hash matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash nobody's password matches, verified against when the account
/// does not exist so that the answer takes as long as for a real one.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut secret = [0u8; 24];
        let _ = getrandom::fill(&mut secret);
        hash(&format!("{secret:?}")).unwrap_or_default()
    })
}

pub async fn hash_async(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| format!("hash task: {e}"))?
}

/// Verifies against `phc`, or against the decoy when there is none.
pub async fn verify_async(password: String, phc: Option<String>) -> bool {
    let matched = tokio::task::spawn_blocking(move || match phc {
        Some(phc) => verify(&password, &phc),
        None => {
            verify(&password, decoy_hash());
            false
        }
    })
    .await;
    matched.unwrap_or_else(|e| {
        tracing::error!(error = %e, "password verification task failed; refusing");
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password_and_are_salted() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify("correct horse", &a) && verify("correct horse", &b));
        assert!(!verify("correct hors", &a));
        assert!(!verify("anything", "not a phc string"));
    }

    #[test]
    fn strength_counts_characters_not_bytes() {
        assert!(check_strength("1234567").is_err());
        assert!(check_strength("12345678").is_ok());
        // 5 characters, 15 bytes.
        assert!(check_strength("ぱすわーど").is_err());
    }
}
