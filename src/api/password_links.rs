//! Password set-up and reset links, as kanade 0.101 has them: an admin
//! creates an account by address (a set-up link) or sends a reset link,
//! anyone may ask for a reset link by username, and the link's page sets
//! the password. A link is a random token shown once, stored only as its
//! SHA-256, usable once, for 72 hours, and the account's newest only.
//!
//! Unlike the reference: a used link ends the account's sessions (as any
//! password change does), a changed address ends the links sent to the
//! old one, asking is throttled, and with mail off the admin is shown
//! the link to hand over instead of an error.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Duration, Utc};
use kanade_storage::{PasswordSetupRecord, SetupLookup};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::accounts::ClientAddr;
use super::error::ApiError;
use super::offload::store as blocking;
use super::params::ApiJson;
use crate::api::state::AppState;
use crate::audit::{self, Caller};
use crate::auth::password;
use crate::auth::throttle::{Account, Verdict};
use crate::mail::{self, Mail};

/// How long a link works.
const LINK_TTL: Duration = Duration::hours(72);

/// Why a link was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Setup,
    Reset,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Reset => "reset",
        }
    }
}

/// The stored form of a token.
fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where links point: `[server] public_url`, else the scheme and host the
/// request from `peer` came to (the forwarded scheme believed from trusted
/// proxies only); a 400 when neither is known.
pub fn link_base(state: &AppState, headers: &HeaderMap, peer: IpAddr) -> Result<String, ApiError> {
    if let Some(url) = &state.public_url {
        return Ok(url.clone());
    }
    let from_proxy = state.trusted_proxies.iter().any(|n| n.contains(&peer));
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '@']))
        .ok_or_else(|| {
            ApiError::BadRequest("cannot tell where links point: set [server] public_url".into())
        })?;
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|_| from_proxy)
        .and_then(|p| p.split(',').next())
        .map(str::trim)
        .filter(|p| matches!(*p, "http" | "https"))
        .unwrap_or("http");
    Ok(format!("{scheme}://{host}"))
}

/// Makes and stores a link for `username`; its URL. `None` when there is
/// no such account.
pub async fn issue(
    state: &AppState,
    username: &str,
    purpose: Purpose,
    base: &str,
) -> Result<Option<String>, ApiError> {
    let token =
        uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
    let now = Utc::now();
    let record = PasswordSetupRecord {
        token_hash: token_hash(&token),
        username: username.to_string(),
        purpose: purpose.as_str().into(),
        created_at: now,
        expires_at: now + LINK_TTL,
    };
    let store = state.store.clone();
    let stored = blocking(move || store.issue_password_setup(&record)).await?;
    Ok(stored.then(|| format!("{base}/password-setup/{token}")))
}

/// The message carrying a link.
fn message(to: &str, username: &str, purpose: Purpose, url: &str) -> Mail {
    let (subject, what) = match purpose {
        Purpose::Setup => (
            "kanade account password setup",
            "An account was created for you on kanade",
        ),
        Purpose::Reset => (
            "kanade password reset",
            "A password reset was asked for your kanade account",
        ),
    };
    Mail {
        to: vec![to.to_string()],
        subject: subject.into(),
        body: format!(
            "{what} ({username}).\n\nChoose your password here (the link works once, for 72 hours):\n\n{url}\n\nIf you did not expect this message, ignore it: nothing changes until the link is used.\n"
        ),
    }
}

/// The mail settings, when mail is on.
async fn mail_settings(
    state: &AppState,
) -> Result<Option<kanade_shared::config::MailSection>, ApiError> {
    super::server_settings::current(&state.control)
        .await
        .map(|s| s.mail)
        .map_err(ApiError::Internal)
}

/// Sends a link to the account's address. `Ok(true)` mailed, `Ok(false)`
/// mail is off; an error when the relay refused it.
pub async fn deliver(
    state: &AppState,
    to: &str,
    username: &str,
    purpose: Purpose,
    url: &str,
) -> Result<bool, ApiError> {
    let Some(settings) = mail_settings(state).await? else {
        return Ok(false);
    };
    mail::send(&settings, message(to, username, purpose, url))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, %username, "a password link could not be mailed");
            ApiError::BadGateway(format!(
                "link generated but email delivery failed — check the mail settings / SMTP ({e})"
            ))
        })?;
    Ok(true)
}

#[derive(Serialize)]
pub struct LinkInfo {
    username: String,
    purpose: String,
}

fn lookup_error(l: &SetupLookup) -> ApiError {
    match l {
        SetupLookup::Expired => ApiError::Gone("link expired".into()),
        _ => ApiError::NotFound("invalid link".into()),
    }
}

/// `GET /api/auth/password-setup/{token}` (public): whose link and why.
pub async fn info(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<LinkInfo>, ApiError> {
    let (store, hash) = (state.store.clone(), token_hash(&token));
    match blocking(move || store.password_setup(&hash, Utc::now())).await? {
        SetupLookup::Valid(link) => Ok(Json(LinkInfo {
            username: link.username,
            purpose: link.purpose,
        })),
        other => Err(lookup_error(&other)),
    }
}

#[derive(Deserialize)]
pub struct SetPassword {
    password: String,
}

/// `POST /api/auth/password-setup/{token}` (public): sets the password,
/// once.
pub async fn set(
    State(state): State<AppState>,
    Path(token): Path<String>,
    caller: Caller,
    ApiJson(req): ApiJson<SetPassword>,
) -> Result<StatusCode, ApiError> {
    password::check_strength(&req.password).map_err(|m| ApiError::bad_param("password", m))?;
    let hash = password::hash_async(req.password.clone())
        .await
        .map_err(ApiError::Internal)?;
    let (store, th) = (state.store.clone(), token_hash(&token));
    let link = match blocking(move || store.use_password_setup(&th, &hash, Utc::now())).await? {
        SetupLookup::Valid(link) => link,
        other => return Err(lookup_error(&other)),
    };
    audit::record(
        &state.nats,
        "admin",
        "account.password_set_via_link",
        Some(&link.username),
        Some(&caller),
        serde_json::json!({ "purpose": link.purpose }),
    )
    .await;
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
pub struct ForgotRequest {
    username: String,
}

/// `POST /api/auth/forgot-password` (public): mails a reset link to the
/// account's address when there is one, in the background; the answer is
/// the same whether or not the account exists. Asking is throttled per
/// username and per address alike (429), known or not.
pub async fn forgot(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<ForgotRequest>,
) -> Result<StatusCode, ApiError> {
    let username = req.username.trim().to_string();
    if username.is_empty() {
        return Err(ApiError::bad_param("username", "required"));
    }
    match state
        .auth
        .links
        .begin(&username, Account::Any, addr, std::time::Instant::now())
    {
        Verdict::Refuse { after, .. } => {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: after.as_secs().max(1),
            })
        }
        Verdict::Proceed(_) => {}
    }
    let Some(base) = state.public_url.clone() else {
        tracing::warn!("forgot-password asked but [server] public_url is not set: no link sent");
        return Ok(StatusCode::OK);
    };
    tokio::spawn(async move {
        let sent = async {
            let (store, name) = (state.store.clone(), username.clone());
            let Some(user) = blocking(move || store.user(&name)).await? else {
                return Ok::<_, ApiError>(());
            };
            let Some(to) = user.email.filter(|_| !user.disabled) else {
                return Ok(());
            };
            if mail_settings(&state).await?.is_none() {
                return Ok(());
            }
            if let Some(url) = issue(&state, &user.username, Purpose::Reset, &base).await? {
                deliver(&state, &to, &user.username, Purpose::Reset, &url).await?;
            }
            Ok(())
        };
        if let Err(e) = sent.await {
            tracing::warn!(error = %e, "forgot-password: no link sent");
        }
    });
    Ok(StatusCode::OK)
}

/// What a reset-link request did.
#[derive(Serialize)]
pub struct ResetLinkShown {
    /// The link, for the admin to hand over: mail is off.
    link: String,
    mailed: bool,
}

/// `POST /api/accounts/{username}/reset-link` (admin): mails a reset link
/// to the account's address (204), or with mail off answers it for the
/// admin to hand over (200 `{link}`).
pub async fn reset_link(
    State(state): State<AppState>,
    Path(username): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (store, name) = (state.store.clone(), username.clone());
    let user = blocking(move || store.user(&name))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("account {username}")))?;
    let mail_on = mail_settings(&state).await?.is_some();
    if mail_on && user.email.is_none() {
        return Err(ApiError::Conflict("account has no email on file".into()));
    }
    let base = link_base(&state, &headers, peer.ip())?;
    let url = issue(&state, &user.username, Purpose::Reset, &base)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("account {username}")))?;
    let mailed = match &user.email {
        Some(to) if mail_on => deliver(&state, to, &user.username, Purpose::Reset, &url).await?,
        _ => false,
    };
    audit::record(
        &state.nats,
        "admin",
        "account.reset_link",
        Some(&user.username),
        Some(&caller),
        serde_json::json!({ "mailed": mailed }),
    )
    .await;
    Ok(if mailed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Json(ResetLinkShown { link: url, mailed }).into_response()
    })
}
