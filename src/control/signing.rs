//! Command signing: every `Command` we publish (exec fan-out, rollout
//! waves, `POST /api/run`), every kill and every notification carries
//! the ed25519 headers of `kanade_shared::signing`, so hosts that enforce
//! signed commands run what we send and refuse anything else.
//!
//! The key comes from the environment as upstream reads it on Linux:
//! `KANADE_COMMAND_SIGNING_KEY` (base64 of the 32-byte seed) and
//! `KANADE_COMMAND_SIGNING_KID`. Neither set: commands go out unsigned
//! (a warning at start; hosts that do not enforce still run them). Half a
//! pair or a key that does not decode stops start-up naming the variable:
//! upstream logs and publishes unsigned, which every enforcing host then
//! refuses one command at a time.

use async_nats::HeaderMap;
use kanade_shared::signing::{self, MissingHalf, Signer};

/// Environment variable holding the signing key (base64 of the seed).
pub const ENV_KEY: &str = "KANADE_COMMAND_SIGNING_KEY";
/// Environment variable holding the key id agents look the key up by.
pub const ENV_KID: &str = "KANADE_COMMAND_SIGNING_KID";

/// The backend's command signer; `None` inside means unsigned.
#[derive(Debug, Default)]
pub struct CommandSigner {
    signer: Option<Signer>,
}

/// What `GET /api/command-signing` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SigningIdentity {
    pub kid: Option<String>,
    pub fingerprint: Option<String>,
}

impl CommandSigner {
    /// No key: publishes unsigned.
    pub fn unsigned() -> Self {
        Self { signer: None }
    }

    /// Signs with `secret` (base64 seed) under `kid`.
    pub fn try_new(secret: &str, kid: &str) -> Result<Self, String> {
        Signer::from_secret(secret.trim(), kid.trim()).map(|s| Self { signer: Some(s) })
    }

    /// The signer the environment configures (empty values count as unset).
    pub fn try_from_env() -> anyhow::Result<Self> {
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (key, kid) = (read(ENV_KEY), read(ENV_KID));
        match signing::pair(key.as_deref(), kid.as_deref()) {
            Ok(None) => {
                tracing::warn!(
                    "no command-signing key ({ENV_KEY} / {ENV_KID}): commands go out unsigned and hosts that enforce signed commands refuse them; `kanade-backend command-key-generate` makes one"
                );
                Ok(Self::unsigned())
            }
            Ok(Some((key, kid))) => {
                let s = Self::try_new(key, kid).map_err(|e| anyhow::anyhow!("{ENV_KEY}: {e}"))?;
                let id = s.identity();
                tracing::info!(kid = ?id.kid, fingerprint = ?id.fingerprint, "commands are signed");
                Ok(s)
            }
            Err(MissingHalf::Kid) => anyhow::bail!("{ENV_KEY} is set but {ENV_KID} is not"),
            Err(MissingHalf::Key) => anyhow::bail!("{ENV_KID} is set but {ENV_KEY} is not"),
        }
    }

    /// The key id and the public key's fingerprint (both `None` unsigned).
    pub fn identity(&self) -> SigningIdentity {
        match &self.signer {
            None => SigningIdentity {
                kid: None,
                fingerprint: None,
            },
            Some(s) => SigningIdentity {
                kid: Some(s.kid().to_string()),
                fingerprint: Some(signing::fingerprint(&s.verifying_key())),
            },
        }
    }

    /// The keyring an agent installed by us trusts (this key, as
    /// `[{kid, public_key, label: "backend"}]` JSON); `None` unsigned.
    pub fn keyring_json(&self) -> Option<String> {
        let s = self.signer.as_ref()?;
        let entry = signing::keyring_entry(s.kid(), &s.verifying_key(), "backend");
        Some(serde_json::Value::Array(vec![entry]).to_string())
    }

    /// The signature headers of `body` signed now; `None` when unsigned
    /// (no header at all: a partial set reads as malformed to an agent).
    pub fn headers(&self, body: &[u8]) -> Option<HeaderMap> {
        let signer = self.signer.as_ref()?;
        let sig = signer.headers(body, chrono::Utc::now().timestamp_millis());
        let mut h = HeaderMap::new();
        let pairs = [
            (signing::SIG, sig.sig_b64),
            (signing::SIG_KID, sig.kid),
            (signing::SIG_ALG, sig.alg),
            (signing::SIG_AT, sig.at_ms),
        ];
        for (name, value) in pairs {
            if let Some(v) = value {
                h.insert(name, v.as_str());
            }
        }
        Some(h)
    }
}

/// A fresh key pair for `command-key-generate`: the environment lines
/// that configure the backend and the entry every agent's keyring needs.
pub fn generate(kid: &str) -> anyhow::Result<String> {
    if kid.trim().is_empty() {
        anyhow::bail!("--kid must not be empty");
    }
    let key = signing::generate_keypair().map_err(|e| anyhow::anyhow!(e))?;
    let public = key.verifying_key();
    let entry = signing::keyring_entry(kid, &public, "backend");
    Ok(format!(
        "# Command-signing key {kid} (fingerprint {fp}).\n\
         # Give the backend these two variables (keep the key secret):\n\
         {ENV_KEY}={secret}\n\
         {ENV_KID}={kid}\n\
         # Add this entry to every agent's keyring (CommandKeys on Windows,\n\
         # /etc/kanade/command-keys.json elsewhere) before agents enforce:\n\
         # {entry}\n",
        fp = signing::fingerprint(&public),
        secret = signing::encode_secret(&key),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kanade_shared::signing::{KeyPolicy, KeyRing, SigHeaders};

    fn sig_headers(h: &HeaderMap) -> SigHeaders {
        let get = |n: &str| h.get(n).map(|v| v.as_str().to_string());
        SigHeaders {
            sig_b64: get(signing::SIG),
            kid: get(signing::SIG_KID),
            alg: get(signing::SIG_ALG),
            at_ms: get(signing::SIG_AT),
        }
    }

    #[test]
    fn a_generated_key_signs_what_an_enforcing_agent_verifies() {
        let out = generate("backend-test").unwrap();
        let secret = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{ENV_KEY}=")))
            .unwrap();
        let s = CommandSigner::try_new(secret, "backend-test").unwrap();
        let key = signing::decode_secret(secret).unwrap().verifying_key();
        let mut ring = KeyRing::new();
        ring.insert("backend-test", key, KeyPolicy::backend("backend"));
        let body = br#"{"id":"j","version":"1"}"#;
        let h = s.headers(body).unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        signing::verify(&ring, body, &sig_headers(&h), now).unwrap();
        // Another body under the same headers is refused.
        assert!(signing::verify(&ring, b"{}", &sig_headers(&h), now).is_err());
        assert_eq!(s.identity().kid.as_deref(), Some("backend-test"));
        assert_eq!(s.identity().fingerprint.unwrap().len(), 16);
    }

    #[test]
    fn unsigned_sends_no_header_and_bad_keys_are_refused() {
        assert!(CommandSigner::unsigned().headers(b"x").is_none());
        assert_eq!(
            CommandSigner::unsigned().identity(),
            SigningIdentity {
                kid: None,
                fingerprint: None
            }
        );
        assert!(CommandSigner::try_new("not base64!", "k").is_err());
        assert!(CommandSigner::try_new("AAAA", "k").is_err());
        let good = signing::encode_secret(&signing::generate_keypair().unwrap());
        assert!(CommandSigner::try_new(&good, " ").is_err());
        assert!(generate("").is_err());
    }
}
