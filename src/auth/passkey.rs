//! Passkeys (WebAuthn) as kanade 0.101 has them: `[server.webauthn]`
//! names the relying party; an account registers discoverable credentials
//! (user verification required) after re-entering its password (and code);
//! anyone signs in without a username, the authenticator choosing the
//! account. A passkey sign-in is a factor of its own: no TOTP code is asked.
//!
//! Ceremonies in flight live here, in memory: each is keyed by a random
//! 32-byte id, expires after [`CEREMONY_TTL`], is taken out before it is
//! checked (so an answer is tried once, right or wrong), and at most
//! [`MAX_PENDING`] are held. An account has at most one registration in
//! flight. A restart ends every ceremony, nothing else. The credentials
//! live in the store (`user_passkeys`); this module knows no HTTP.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use webauthn_rs::prelude::{
    CreationChallengeResponse, CredentialID, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::config::WebauthnSection;

/// How long a ceremony may take, and the timeout the browser is given.
pub const CEREMONY_TTL: Duration = Duration::from_secs(120);
/// Ceremonies held at most; past it new ones are refused until some end.
pub const MAX_PENDING: usize = 2048;
/// Passkeys one account may have.
pub const MAX_PER_ACCOUNT: usize = 10;
/// Longest passkey name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// The relying party `[server.webauthn]` describes, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RelyingParty {
    pub id: String,
    pub origins: Vec<Url>,
    pub name: String,
}

fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && !l.starts_with('-')
        && !l.ends_with('-')
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Reads `[server.webauthn]`: `None` when both `rp_id` and `rp_origins`
/// are empty (passkeys off); an error naming the key for anything
/// doubtful, so a typo stops the start instead of failing every sign-in.
pub fn relying_party(cfg: &WebauthnSection) -> Result<Option<RelyingParty>, String> {
    let id = cfg.rp_id.trim();
    if id.is_empty() && cfg.rp_origins.is_empty() {
        return Ok(None);
    }
    let key = "[server.webauthn] rp_id";
    if id.is_empty() {
        return Err(format!("{key} is required when rp_origins is set"));
    }
    if id.parse::<std::net::IpAddr>().is_ok() || id.starts_with('[') {
        return Err(format!(
            "{key} {id:?} is an IP address; passkeys need a domain name"
        ));
    }
    if id.len() > 253 || !id.split('.').all(valid_label) {
        return Err(format!(
            "{key} {id:?} must be a bare lowercase host name (no scheme, port or path)"
        ));
    }
    if id
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{key} {id:?} is not a domain name"));
    }
    let key = "[server.webauthn] rp_origins";
    if cfg.rp_origins.is_empty() {
        return Err(format!(
            "{key} needs at least one origin, e.g. \"https://{id}\""
        ));
    }
    let mut origins = Vec::new();
    for raw in &cfg.rp_origins {
        let url = Url::parse(raw.trim()).map_err(|e| format!("{key}: {raw:?}: {e}"))?;
        let host = url.host_str().unwrap_or_default();
        let bare = url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none();
        if !bare {
            return Err(format!(
                "{key}: {raw:?} must be a bare origin (scheme://host[:port])"
            ));
        }
        match url.scheme() {
            "https" => {}
            "http" if host == "localhost" => {}
            "http" => {
                return Err(format!(
                    "{key}: {raw:?}: plain http is only allowed for localhost"
                ))
            }
            other => return Err(format!("{key}: {raw:?}: scheme {other:?} is not https")),
        }
        if host != id && !host.ends_with(&format!(".{id}")) {
            return Err(format!(
                "{key}: {raw:?}: host {host:?} is neither rp_id {id:?} nor a subdomain of it"
            ));
        }
        origins.push(url);
    }
    let name = cfg
        .rp_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("Kanade")
        .to_string();
    Ok(Some(RelyingParty {
        id: id.to_string(),
        origins,
        name,
    }))
}

/// A registration in flight: whose, under which account state, and the
/// library's state.
struct Registration {
    username: String,
    handle: Uuid,
    epoch: u64,
    name: String,
    state: PasskeyRegistration,
}

enum Ceremony {
    Register(Box<Registration>),
    Login(Box<DiscoverableAuthentication>),
}

struct Pending {
    started: Instant,
    ceremony: Ceremony,
}

/// Why a ceremony could not start or finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CeremonyError {
    /// Too many in flight.
    Busy,
    /// No such ceremony: unknown, expired, already used, or not this
    /// caller's.
    Gone,
    /// The authenticator's answer does not verify.
    Rejected(String),
}

/// The relying party and the ceremonies in flight.
pub struct Passkeys {
    webauthn: Webauthn,
    rp: RelyingParty,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passkeys")
            .field("rp", &self.rp)
            .finish_non_exhaustive()
    }
}

/// What a started registration hands the browser.
pub struct Started {
    pub challenge_id: String,
    pub options: serde_json::Value,
}

/// A registration that verified, to be stored.
pub struct Registered {
    pub username: String,
    pub handle: Uuid,
    pub epoch: u64,
    pub name: String,
    pub credential_id: String,
    pub passkey: Passkey,
}

/// The credential id as stored and as browsers report it.
pub fn credential_key(id: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

impl Passkeys {
    /// From `[server.webauthn]`; `Ok(None)` when passkeys are off.
    pub fn from_config(cfg: &WebauthnSection) -> Result<Option<Self>, String> {
        let Some(rp) = relying_party(cfg)? else {
            return Ok(None);
        };
        let mut builder = WebauthnBuilder::new(&rp.id, &rp.origins[0])
            .map_err(|e| format!("[server.webauthn] rejected: {e}"))?
            .rp_name(&rp.name)
            .timeout(CEREMONY_TTL);
        for o in &rp.origins[1..] {
            builder = builder.append_allowed_origin(o);
        }
        let webauthn = builder
            .build()
            .map_err(|e| format!("[server.webauthn] rejected: {e}"))?;
        Ok(Some(Self {
            webauthn,
            rp,
            pending: Mutex::new(HashMap::new()),
        }))
    }

    pub fn relying_party(&self) -> &RelyingParty {
        &self.rp
    }

    fn insert(&self, ceremony: Ceremony, now: Instant) -> Result<String, CeremonyError> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| now.saturating_duration_since(p.started) < CEREMONY_TTL);
        if let Ceremony::Register(r) = &ceremony {
            pending.retain(
                |_, p| !matches!(&p.ceremony, Ceremony::Register(o) if o.username == r.username),
            );
        }
        if pending.len() >= MAX_PENDING {
            return Err(CeremonyError::Busy);
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| CeremonyError::Rejected(e.to_string()))?;
        let id = URL_SAFE_NO_PAD.encode(raw);
        pending.insert(
            id.clone(),
            Pending {
                started: now,
                ceremony,
            },
        );
        Ok(id)
    }

    /// Takes a ceremony out (whatever its fate, it is tried once).
    fn take(&self, id: &str, now: Instant) -> Option<Ceremony> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let p = pending.remove(id)?;
        (now.saturating_duration_since(p.started) < CEREMONY_TTL).then_some(p.ceremony)
    }

    /// How many ceremonies are in flight (expired ones not yet swept
    /// included).
    pub fn in_flight(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Starts a registration for `username` (user handle `handle`, account
    /// state `epoch`), its existing credentials excluded. The options ask
    /// for a discoverable credential: sign-in names no account, so a
    /// credential the authenticator cannot offer by itself would be
    /// useless (the library asks `residentKey: discouraged`).
    pub fn start_registration(
        &self,
        username: &str,
        handle: Uuid,
        epoch: u64,
        name: &str,
        existing: &[String],
        now: Instant,
    ) -> Result<Started, CeremonyError> {
        let exclude: Vec<CredentialID> = existing
            .iter()
            .filter_map(|c| URL_SAFE_NO_PAD.decode(c).ok())
            .collect();
        let (ccr, state) = self
            .webauthn
            .start_passkey_registration(
                handle,
                username,
                username,
                (!exclude.is_empty()).then_some(exclude),
            )
            .map_err(|e| CeremonyError::Rejected(e.to_string()))?;
        let options = registration_options(&ccr)?;
        let challenge_id = self.insert(
            Ceremony::Register(Box::new(Registration {
                username: username.to_string(),
                handle,
                epoch,
                name: name.to_string(),
                state,
            })),
            now,
        )?;
        Ok(Started {
            challenge_id,
            options,
        })
    }

    /// Verifies a registration answer; only the account that started it
    /// may finish it.
    pub fn finish_registration(
        &self,
        username: &str,
        challenge_id: &str,
        credential: &RegisterPublicKeyCredential,
        now: Instant,
    ) -> Result<Registered, CeremonyError> {
        let Some(Ceremony::Register(r)) = self.take(challenge_id, now) else {
            return Err(CeremonyError::Gone);
        };
        if r.username != username {
            return Err(CeremonyError::Gone);
        }
        let passkey = self
            .webauthn
            .finish_passkey_registration(credential, &r.state)
            .map_err(|e| CeremonyError::Rejected(e.to_string()))?;
        Ok(Registered {
            credential_id: credential_key(passkey.cred_id().as_ref()),
            username: r.username,
            handle: r.handle,
            epoch: r.epoch,
            name: r.name,
            passkey,
        })
    }

    /// Starts a usernameless sign-in. The library marks it for
    /// conditional mediation (autofill); the login page asks with a
    /// button, so that mark is dropped.
    pub fn start_login(&self, now: Instant) -> Result<Started, CeremonyError> {
        let (mut rcr, state): (RequestChallengeResponse, _) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| CeremonyError::Rejected(e.to_string()))?;
        rcr.mediation = None;
        let options =
            serde_json::to_value(&rcr).map_err(|e| CeremonyError::Rejected(e.to_string()))?;
        let challenge_id = self.insert(Ceremony::Login(Box::new(state)), now)?;
        Ok(Started {
            challenge_id,
            options,
        })
    }

    /// The ceremony of a sign-in answer and who the answer claims to be:
    /// (user handle, credential id). The ceremony is used up.
    pub fn identify(
        &self,
        challenge_id: &str,
        credential: &PublicKeyCredential,
        now: Instant,
    ) -> Result<(SignIn, Uuid, String), CeremonyError> {
        let Some(Ceremony::Login(state)) = self.take(challenge_id, now) else {
            return Err(CeremonyError::Gone);
        };
        let (handle, cred) = self
            .webauthn
            .identify_discoverable_authentication(credential)
            .map_err(|e| CeremonyError::Rejected(e.to_string()))?;
        Ok((SignIn(state), handle, credential_key(cred)))
    }

    /// Verifies a sign-in answer against the stored credential; the
    /// credential as it should be stored after (counter, backup state),
    /// `None` when unchanged.
    pub fn verify(
        &self,
        sign_in: SignIn,
        credential: &PublicKeyCredential,
        stored: &Passkey,
    ) -> Result<Option<Passkey>, CeremonyError> {
        let key = DiscoverableKey::from(stored);
        let result = self
            .webauthn
            .finish_discoverable_authentication(credential, *sign_in.0, &[key])
            .map_err(|e| CeremonyError::Rejected(e.to_string()))?;
        if !result.user_verified() {
            return Err(CeremonyError::Rejected("user not verified".into()));
        }
        let mut updated = stored.clone();
        Ok(updated
            .update_credential(&result)
            .filter(|changed| *changed)
            .map(|_| updated))
    }
}

/// A sign-in ceremony taken out by [`Passkeys::identify`].
pub struct SignIn(Box<DiscoverableAuthentication>);

fn registration_options(
    ccr: &CreationChallengeResponse,
) -> Result<serde_json::Value, CeremonyError> {
    let mut options =
        serde_json::to_value(ccr).map_err(|e| CeremonyError::Rejected(e.to_string()))?;
    let selection = options
        .pointer_mut("/publicKey/authenticatorSelection")
        .and_then(|v| v.as_object_mut())
        .ok_or_else(|| CeremonyError::Rejected("no authenticatorSelection".into()))?;
    selection.insert("residentKey".into(), "required".into());
    selection.insert("requireResidentKey".into(), true.into());
    Ok(options)
}

/// A passkey's name as given, trimmed; `None` when empty or too long.
pub fn clean_name(raw: &str) -> Option<String> {
    let name = raw.trim();
    let n = name.chars().count();
    (n > 0 && n <= MAX_NAME_CHARS && !name.chars().any(char::is_control)).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(id: &str, origins: &[&str]) -> WebauthnSection {
        WebauthnSection {
            rp_id: id.into(),
            rp_origins: origins.iter().map(|o| o.to_string()).collect(),
            rp_name: None,
        }
    }

    #[test]
    fn the_relying_party_is_checked_at_start() {
        assert_eq!(relying_party(&cfg("", &[])).unwrap(), None);
        let rp = relying_party(&cfg(
            "kanade.example.com",
            &[
                "https://kanade.example.com",
                "https://eu.kanade.example.com:8443",
            ],
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            (rp.id.as_str(), rp.name.as_str(), rp.origins.len()),
            ("kanade.example.com", "Kanade", 2)
        );
        assert!(relying_party(&cfg("localhost", &["http://localhost:8080"]))
            .unwrap()
            .is_some());
        for (id, origins, says) in [
            ("", &["https://a.example"][..], "rp_id is required"),
            ("a.example", &[][..], "at least one origin"),
            ("10.0.0.1", &["https://10.0.0.1"][..], "IP address"),
            (
                "Kanade.Example",
                &["https://kanade.example"][..],
                "lowercase",
            ),
            (
                "https://a.example",
                &["https://a.example"][..],
                "bare lowercase",
            ),
            (
                "a.example:443",
                &["https://a.example"][..],
                "bare lowercase",
            ),
            (
                "a.example",
                &["http://a.example"][..],
                "only allowed for localhost",
            ),
            ("a.example", &["https://b.example"][..], "neither rp_id"),
            (
                "a.example",
                &["https://evil-a.example"][..],
                "neither rp_id",
            ),
            ("a.example", &["https://a.example/login"][..], "bare origin"),
            ("a.example", &["ftp://a.example"][..], "is not https"),
            ("a.example", &["not a url"][..], "rp_origins"),
        ] {
            let e = relying_party(&cfg(id, origins)).unwrap_err();
            assert!(e.contains(says), "{id} {origins:?}: {e}");
        }
    }

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(clean_name("  laptop "), Some("laptop".into()));
        assert_eq!(clean_name(&"é".repeat(64)), Some("é".repeat(64)));
        for bad in ["", "   ", "a\nb"] {
            assert_eq!(clean_name(bad), None, "{bad:?}");
        }
        assert_eq!(clean_name(&"x".repeat(65)), None);
    }

    #[test]
    fn a_ceremony_is_taken_once_expires_and_one_registration_per_account_is_held() {
        let pk = Passkeys::from_config(&cfg("localhost", &["http://localhost:1"]))
            .unwrap()
            .unwrap();
        let t0 = Instant::now();
        let login = pk.start_login(t0).unwrap();
        assert!(login.options.pointer("/publicKey/challenge").is_some());
        assert_eq!(login.options.get("mediation"), None);
        assert!(pk.take(&login.challenge_id, t0).is_some());
        assert!(pk.take(&login.challenge_id, t0).is_none(), "used once");
        let late = pk.start_login(t0).unwrap();
        assert!(
            pk.take(&late.challenge_id, t0 + CEREMONY_TTL).is_none(),
            "expired"
        );
        let handle = Uuid::new_v4();
        let first = pk
            .start_registration("ann", handle, 0, "a", &[], t0)
            .unwrap();
        assert_eq!(
            first
                .options
                .pointer("/publicKey/authenticatorSelection/residentKey"),
            Some(&serde_json::json!("required"))
        );
        let second = pk
            .start_registration("ann", handle, 0, "b", &[], t0)
            .unwrap();
        assert!(
            pk.take(&first.challenge_id, t0).is_none(),
            "replaced by the second"
        );
        assert!(pk.take(&second.challenge_id, t0).is_some());
    }

    #[test]
    fn ceremonies_in_flight_are_bounded() {
        let pk = Passkeys::from_config(&cfg("localhost", &["http://localhost:1"]))
            .unwrap()
            .unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_PENDING {
            pk.start_login(t0).unwrap();
        }
        assert_eq!(pk.start_login(t0).err(), Some(CeremonyError::Busy));
        // Expired ones make room again.
        assert!(pk.start_login(t0 + CEREMONY_TTL).is_ok());
    }
}
