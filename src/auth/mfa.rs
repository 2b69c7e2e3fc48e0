//! TOTP second factors (RFC 6238) as the reference backend's accounts use
//! them: base32 secrets (stored as the reference stores them, so imported
//! accounts keep their authenticators), SHA-1, 6 digits, 30-second steps,
//! one step of clock drift either way, issuer `kanade`.
//!
//! Unlike the reference, a code is usable once: [`matching_step`] says
//! which time step a code belongs to, and the store refuses a step at or
//! before the last one the account used (see
//! `RelationalStore::use_totp_step`), so a code seen over a shoulder or in
//! a log cannot be replayed within its 90-second window.

use totp_rs::{Algorithm, Secret, TOTP};

const ISSUER: &str = "kanade";
const DIGITS: usize = 6;
const STEP_SECS: u64 = 30;
/// Steps of drift accepted either side of the current one.
const SKEW: u64 = 1;

/// A fresh secret, base32 (160 random bits).
pub fn generate_secret() -> String {
    Secret::generate_secret().to_encoded().to_string()
}

fn totp(secret_base32: &str, account: &str) -> Result<TOTP, String> {
    let bytes = Secret::Encoded(secret_base32.trim().to_string())
        .to_bytes()
        .map_err(|e| format!("the secret is not base32: {e:?}"))?;
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECS,
        bytes,
        Some(ISSUER.into()),
        account.into(),
    )
    .map_err(|e| format!("not a usable TOTP secret: {e}"))
}

/// The `otpauth://` URL an authenticator app scans (as a QR code).
pub fn otpauth_url(secret_base32: &str, account: &str) -> Result<String, String> {
    Ok(totp(secret_base32, account)?.get_url())
}

/// The time step (`unix_secs / 30`) whose code `code` is, among the
/// current step and one either side; `None` when it is none of them or
/// not six digits. An error means the secret itself is unusable.
pub fn matching_step(
    secret_base32: &str,
    account: &str,
    code: &str,
    unix_secs: u64,
) -> Result<Option<u64>, String> {
    let code = code.trim();
    let totp = totp(secret_base32, account)?;
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let now = unix_secs / STEP_SECS;
    let mut found = None;
    // Every candidate is computed and compared in constant time, so the
    // answer's timing does not tell which step matched.
    for step in now.saturating_sub(SKEW)..=now.saturating_add(SKEW) {
        let expected = totp.generate(step.saturating_mul(STEP_SECS));
        let same: bool = subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), code.as_bytes()).into();
        if same {
            found = Some(step);
        }
    }
    Ok(found)
}

/// The current code of a secret (tests, and the stand-in authenticator of
/// the end-to-end tests).
pub fn code_at(secret_base32: &str, unix_secs: u64) -> Result<String, String> {
    Ok(totp(secret_base32, "")?.generate(unix_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_matches_its_step_and_its_neighbours_only() {
        let secret = generate_secret();
        let t = 1_800_000_015;
        let code = code_at(&secret, t).unwrap();
        let step = t / 30;
        assert_eq!(matching_step(&secret, "ann", &code, t).unwrap(), Some(step));
        assert_eq!(
            matching_step(&secret, "ann", &format!(" {code} "), t + 30).unwrap(),
            Some(step),
            "a step of drift"
        );
        assert_eq!(
            matching_step(&secret, "ann", &code, t - 30).unwrap(),
            Some(step)
        );
        assert_eq!(matching_step(&secret, "ann", &code, t + 60).unwrap(), None);
        for bad in ["", "12345", "1234567", "abcdef"] {
            assert_eq!(matching_step(&secret, "ann", bad, t).unwrap(), None);
        }
        assert!(matching_step("not base32!", "ann", "123456", t).is_err());
    }

    /// RFC 6238 appendix B, SHA-1, truncated to 6 digits: the reference's
    /// authenticators and ours agree on the codes.
    #[test]
    fn codes_are_those_of_rfc_6238() {
        // "12345678901234567890" in base32.
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert_eq!(code_at(secret, 59).unwrap(), "287082");
        assert_eq!(code_at(secret, 1_111_111_109).unwrap(), "081804");
        assert_eq!(code_at(secret, 2_000_000_000).unwrap(), "279037");
    }

    #[test]
    fn the_url_names_issuer_and_account() {
        let secret = generate_secret();
        let url = otpauth_url(&secret, "ann").unwrap();
        assert!(url.starts_with("otpauth://totp/kanade:ann?"), "{url}");
        assert!(url.contains(&format!("secret={secret}")), "{url}");
    }
}
