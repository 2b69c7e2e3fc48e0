//! Passkeys over HTTP, as kanade 0.101 has them (see [`crate::auth::passkey`]):
//!
//! - `GET /api/auth/passkey/config` (public): `{"enabled": bool}`;
//! - `POST /api/auth/passkey/login/start|finish` (public): a usernameless
//!   sign-in; `finish` answers as a password login does;
//! - `GET /api/auth/passkeys`, `POST /api/auth/passkeys/register/start|finish`,
//!   `POST /api/auth/passkeys/{id}/remove` (the caller's own; adding and
//!   removing re-enter the password, and the code of an account with one);
//! - `DELETE /api/accounts/{username}/passkeys` (admin): removes them all.
//!
//! Without `[server.webauthn]` every route but the config and the admin
//! reset answers 404. Failed sign-ins count in the login throttle per
//! client address (the account is not known until the answer verifies,
//! so no stranger can lock an account with made-up answers).

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use kanade_storage::{PasskeyAdd, PasskeyRecord, UserRecord};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{Passkey, PublicKeyCredential, RegisterPublicKeyCredential, Uuid};

use super::accounts::{session, unix_now, ClientAddr, LoginResponse};
use super::error::ApiError;
use super::offload::store as blocking;
use super::params::ApiJson;
use crate::api::state::AppState;
use crate::audit::{self, Caller};
use crate::auth::passkey::{clean_name, CeremonyError, Passkeys, MAX_NAME_CHARS, MAX_PER_ACCOUNT};
use crate::auth::throttle::{Account, Verdict};
use crate::auth::{mfa, password, Identity, Role};

fn service(state: &AppState) -> Result<&Passkeys, ApiError> {
    state
        .passkeys
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("passkeys are not enabled".into()))
}

fn ceremony_error(e: CeremonyError, failed: &str) -> ApiError {
    match e {
        CeremonyError::Busy => {
            ApiError::Unavailable("too many sign-ins in progress; try again shortly".into())
        }
        CeremonyError::Gone => {
            ApiError::BadRequest("challenge expired or already used; start again".into())
        }
        CeremonyError::Rejected(why) => {
            tracing::info!(reason = %why, "{failed}");
            ApiError::BadRequest(format!("{failed}: {why}"))
        }
    }
}

fn refused(verdict: Verdict) -> Result<(), ApiError> {
    match verdict {
        Verdict::Refuse { after, .. } => Err(ApiError::TooManyRequests {
            retry_after_secs: after.as_secs().max(1),
        }),
        Verdict::Proceed(_) => Ok(()),
    }
}

#[derive(Serialize)]
pub struct ConfigResponse {
    enabled: bool,
}

/// `GET /api/auth/passkey/config`: whether the login page offers passkeys.
pub async fn config(State(state): State<AppState>) -> Json<ConfigResponse> {
    Json(ConfigResponse {
        enabled: state.passkeys.is_some(),
    })
}

#[derive(Serialize)]
pub struct StartResponse {
    challenge_id: String,
    options: serde_json::Value,
}

/// `POST /api/auth/passkey/login/start`: a sign-in challenge; no account is
/// named or revealed. Bounded per client address.
pub async fn login_start(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
) -> Result<Json<StartResponse>, ApiError> {
    let pk = service(&state)?;
    let now = Instant::now();
    refused(state.auth.ceremonies.begin_anonymous(addr, now))?;
    let started = pk
        .start_login(now)
        .map_err(|e| ceremony_error(e, "passkey sign-in failed"))?;
    Ok(Json(StartResponse {
        challenge_id: started.challenge_id,
        options: started.options,
    }))
}

#[derive(Deserialize)]
pub struct LoginFinishRequest {
    challenge_id: String,
    credential: PublicKeyCredential,
}

/// `POST /api/auth/passkey/login/finish`: a token, as a password login
/// answers; every failure is the same 401.
pub async fn login_finish(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
    ApiJson(req): ApiJson<LoginFinishRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let pk = service(&state)?;
    let now = Instant::now();
    refused(state.auth.throttle.begin_anonymous(addr, now))?;
    let failure = |username: Option<String>, reason: String| {
        let nats = state.nats.clone();
        let caller = caller.clone();
        async move {
            tracing::warn!(username = ?username, client = ?addr, %reason, "passkey sign-in failed");
            audit::record(
                &nats,
                "auth",
                "passkey.login_failed",
                username.as_deref(),
                Some(&caller),
                serde_json::json!({
                    "reason": reason,
                    "client": addr.map(|a| a.to_string()),
                }),
            )
            .await;
            ApiError::Unauthorized("passkey sign-in failed".into())
        }
    };
    let (sign_in, handle, credential_id) =
        match pk.identify(&req.challenge_id, &req.credential, now) {
            Ok(x) => x,
            Err(CeremonyError::Rejected(why)) => return Err(failure(None, why).await),
            Err(e) => return Err(ceremony_error(e, "passkey sign-in failed")),
        };
    let found = {
        let (store, key) = (state.store.clone(), credential_id.clone());
        blocking(move || {
            let Some(p) = store.passkey(&key)? else {
                return Ok(None);
            };
            let user = store.user(&p.username)?;
            Ok(user.map(|u| (p, u)))
        })
        .await?
    };
    let Some((stored, user)) = found.filter(|(p, _)| p.user_uuid == handle.to_string()) else {
        return Err(failure(None, "unknown credential".into()).await);
    };
    let name = Some(user.username.clone());
    if user.disabled {
        return Err(failure(name, "account disabled".into()).await);
    }
    let Some(role) = Role::parse(&user.role) else {
        return Err(failure(name, format!("stored role {:?}", user.role)).await);
    };
    let key: Passkey = serde_json::from_str(&stored.passkey).map_err(|e| {
        ApiError::Internal(format!("passkey {} of {}: {e}", stored.id, user.username))
    })?;
    let updated = match pk.verify(sign_in, &req.credential, &key) {
        Ok(u) => u,
        Err(CeremonyError::Rejected(why)) => return Err(failure(name, why).await),
        Err(e) => return Err(ceremony_error(e, "passkey sign-in failed")),
    };
    let updated = updated
        .map(|p| serde_json::to_string(&p))
        .transpose()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    {
        let store = state.store.clone();
        let expected = stored.passkey.clone();
        blocking(move || {
            store.passkey_used(&credential_id, &expected, updated.as_deref(), Utc::now())
        })
        .await?;
    }
    state.auth.throttle.succeeded_anonymous(addr);
    audit::record(
        &state.nats,
        "auth",
        "passkey.login",
        Some(&user.username),
        Some(&caller),
        serde_json::json!({ "passkey_id": stored.id, "client": addr.map(|a| a.to_string()) }),
    )
    .await;
    Ok(Json(session(&state, &user, role).await?))
}

/// One passkey as listed.
#[derive(Serialize)]
pub struct PasskeyRow {
    id: i64,
    name: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
}

impl From<PasskeyRecord> for PasskeyRow {
    fn from(p: PasskeyRecord) -> Self {
        Self {
            id: p.id,
            name: p.name,
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

/// The caller's account; the service token and an open backend have none.
async fn personal(state: &AppState, id: &Identity) -> Result<UserRecord, ApiError> {
    if !id.account {
        return Err(ApiError::Forbidden(
            "passkeys need a personal user account".into(),
        ));
    }
    super::accounts::own_account(state, id).await
}

/// `GET /api/auth/passkeys`: the caller's passkeys.
pub async fn list(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
) -> Result<Json<Vec<PasskeyRow>>, ApiError> {
    service(&state)?;
    let user = personal(&state, &id).await?;
    let store = state.store.clone();
    let rows = blocking(move || store.passkeys(&user.username)).await?;
    Ok(Json(rows.into_iter().map(PasskeyRow::from).collect()))
}

/// The current password, and a code when the account has a second factor:
/// what adding or removing a passkey asks for.
#[derive(Deserialize)]
pub struct Reauth {
    password: String,
    #[serde(default)]
    totp_code: Option<String>,
}

/// Checks `re` for the caller's account, counted in the login throttle as
/// a login attempt; the account as it was when checked.
async fn reauthenticate(
    state: &AppState,
    id: &Identity,
    addr: Option<std::net::IpAddr>,
    re: &Reauth,
) -> Result<UserRecord, ApiError> {
    let user = personal(state, id).await?;
    let throttle = &state.auth.throttle;
    refused(throttle.begin(&user.username, Account::Any, addr, Instant::now()))?;
    let wrong = || ApiError::BadRequest("current password or authenticator code incorrect".into());
    if !password::verify_async(re.password.clone(), Some(user.password_hash.clone())).await {
        return Err(wrong());
    }
    if let Some(secret) = user.totp_secret.as_deref() {
        let code = re.totp_code.as_deref().map(str::trim).unwrap_or_default();
        let step = mfa::matching_step(secret, &user.username, code, unix_now())
            .map_err(|e| ApiError::Internal(format!("account {}: {e}", user.username)))?;
        let fresh = match step {
            Some(step) => {
                let (store, name) = (state.store.clone(), user.username.clone());
                blocking(move || store.use_totp_step(&name, step)).await?
            }
            None => false,
        };
        if !fresh {
            return Err(wrong());
        }
    }
    throttle.succeeded(&user.username, Account::Any, addr);
    Ok(user)
}

#[derive(Deserialize)]
pub struct RegisterStartRequest {
    name: String,
    #[serde(flatten)]
    reauth: Reauth,
}

/// `POST /api/auth/passkeys/register/start`: the options for the browser's
/// `navigator.credentials.create`.
pub async fn register_start(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<RegisterStartRequest>,
) -> Result<Json<StartResponse>, ApiError> {
    let pk = service(&state)?;
    let name = clean_name(&req.name).ok_or_else(|| {
        ApiError::bad_param(
            "name",
            format!("must be 1-{MAX_NAME_CHARS} printable characters"),
        )
    })?;
    let user = reauthenticate(&state, &id, addr, &req.reauth).await?;
    if user.must_change_pw {
        return Err(ApiError::Forbidden(
            "change your password before adding a passkey".into(),
        ));
    }
    let (user, existing) = {
        let (store, name) = (state.store.clone(), user.username.clone());
        let candidate = Uuid::new_v4().to_string();
        blocking(move || {
            let user = store.ensure_passkey_handle(&name, &candidate)?;
            Ok((user, store.passkeys(&name)?))
        })
        .await?
    };
    let user = user.ok_or_else(|| ApiError::Unauthorized("unknown account".into()))?;
    if existing.len() >= MAX_PER_ACCOUNT {
        return Err(ApiError::Conflict(
            "passkey limit reached; remove one first".into(),
        ));
    }
    let handle = user
        .passkey_handle
        .as_deref()
        .and_then(|h| Uuid::parse_str(h).ok())
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "account {} has no usable user handle",
                user.username
            ))
        })?;
    let ids: Vec<String> = existing.into_iter().map(|p| p.credential_id).collect();
    let started = pk
        .start_registration(
            &user.username,
            handle,
            user.passkey_epoch,
            &name,
            &ids,
            Instant::now(),
        )
        .map_err(|e| ceremony_error(e, "passkey registration failed"))?;
    Ok(Json(StartResponse {
        challenge_id: started.challenge_id,
        options: started.options,
    }))
}

#[derive(Deserialize)]
pub struct RegisterFinishRequest {
    challenge_id: String,
    credential: RegisterPublicKeyCredential,
}

/// `POST /api/auth/passkeys/register/finish`: stores the new passkey
/// (201), if the account is still as it was when the registration started.
pub async fn register_finish(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    caller: Caller,
    ApiJson(req): ApiJson<RegisterFinishRequest>,
) -> Result<(StatusCode, Json<PasskeyRow>), ApiError> {
    let pk = service(&state)?;
    if !id.account {
        return Err(ApiError::Forbidden(
            "passkeys need a personal user account".into(),
        ));
    }
    let done = pk
        .finish_registration(&id.sub, &req.challenge_id, &req.credential, Instant::now())
        .map_err(|e| ceremony_error(e, "passkey registration failed"))?;
    let record = PasskeyRecord {
        id: 0,
        username: done.username.clone(),
        user_uuid: done.handle.to_string(),
        credential_id: done.credential_id,
        passkey: serde_json::to_string(&done.passkey)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        name: done.name,
        created_at: Utc::now(),
        last_used_at: None,
    };
    let added = {
        let (store, r, epoch) = (state.store.clone(), record.clone(), done.epoch);
        blocking(move || store.add_passkey(&r, epoch, MAX_PER_ACCOUNT)).await?
    };
    let id = match added {
        PasskeyAdd::Added(id) => id,
        PasskeyAdd::Duplicate => {
            return Err(ApiError::Conflict(
                "this authenticator is already registered".into(),
            ))
        }
        PasskeyAdd::Limit => {
            return Err(ApiError::Conflict(
                "passkey limit reached; remove one first".into(),
            ))
        }
        PasskeyAdd::Stale => {
            return Err(ApiError::Conflict(
                "the account changed since this registration started (password, second \
                 factor or passkeys reset); start again"
                    .into(),
            ))
        }
    };
    audit::record(
        &state.nats,
        "admin",
        "passkey.register",
        Some(&record.username),
        Some(&caller),
        serde_json::json!({ "passkey_id": id, "name": record.name }),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(PasskeyRow::from(PasskeyRecord { id, ..record })),
    ))
}

/// `POST /api/auth/passkeys/{id}/remove`: removes one of the caller's.
pub async fn remove(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(re): ApiJson<Reauth>,
) -> Result<StatusCode, ApiError> {
    service(&state)?;
    let id: i64 = raw
        .parse()
        .map_err(|_| ApiError::bad_param("id", format!("{raw:?} is not a passkey id")))?;
    let user = reauthenticate(&state, &identity, addr, &re).await?;
    let (store, name) = (state.store.clone(), user.username.clone());
    if !blocking(move || store.remove_passkey(&name, id)).await? {
        return Err(ApiError::NotFound("no such passkey".into()));
    }
    audit::record(
        &state.nats,
        "admin",
        "passkey.remove",
        Some(&user.username),
        Some(&caller),
        serde_json::json!({ "passkey_id": id }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/accounts/{username}/passkeys` (admin): removes every
/// passkey of an account (a lost or stolen authenticator); works with
/// passkeys turned off too.
pub async fn admin_reset(
    State(state): State<AppState>,
    Path(username): Path<String>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let (store, name) = (state.store.clone(), username.clone());
    let Some(removed) = blocking(move || store.remove_passkeys(&name, Utc::now())).await? else {
        return Err(ApiError::NotFound(format!("account {username}")));
    };
    audit::record(
        &state.nats,
        "admin",
        "passkey.admin_reset",
        Some(&username),
        Some(&caller),
        serde_json::json!({ "removed": removed }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
