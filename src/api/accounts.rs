//! Accounts: `POST /api/auth/login` (public), `GET /api/auth/me`,
//! `POST /api/auth/change-password`, and the admin-only
//! `GET/POST /api/accounts`, `PATCH/DELETE /api/accounts/{username}`.
//! Passwords are never logged, stored or echoed: only their argon2id hash
//! is kept, and no response carries it.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use kanade_storage::{UserChange, UserRecord, UserUpdate};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::offload::store as blocking;
use super::params::ApiJson;
use super::password_links;
use crate::api::state::AppState;
use crate::audit::{self, Caller};
use crate::auth::throttle::{Account, Verdict};
use crate::auth::{mfa, password, Identity, Role};
use kanade_shared::feature::Feature;

/// The client's address: the connection's peer, or, when that peer is a
/// trusted proxy, the address `X-Forwarded-For` names.
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Ok(Self(peer.map(|p| {
            client_ip(p, &forwarded.join(","), &state.trusted_proxies)
        })))
    }
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy;
/// then the right-most `X-Forwarded-For` entry that is not one (the
/// entries left of it could have been written by anyone). A malformed
/// entry stops the walk at the last trusted hop.
fn client_ip(peer: IpAddr, forwarded_for: &str, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut client = peer;
    if !is_trusted(&client) {
        return client;
    }
    for hop in forwarded_for
        .rsplit(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// Runs a redb call (or a password hash) off the async workers.
fn parse_role(role: &str) -> Result<Role, ApiError> {
    Role::parse(role)
        .ok_or_else(|| ApiError::bad_param("role", "must be viewer, operator or admin"))
}

fn strong(param: &'static str, pw: &str) -> Result<(), ApiError> {
    password::check_strength(pw).map_err(|m| ApiError::bad_param(param, m))
}

#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
    /// The TOTP code, for an account with a second factor; without it a
    /// right password answers `{"mfa_required": true}`.
    #[serde(default)]
    totp_code: Option<String>,
}

/// A login's answer: a token, or (the password was right, a code is
/// missing) `{"mfa_required": true}`, as the reference answers.
#[derive(Serialize)]
#[serde(untagged)]
pub enum LoginOutcome {
    Token(LoginResponse),
    MfaRequired { mfa_required: bool },
}

/// Seconds since the epoch, for TOTP steps.
pub(super) fn unix_now() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}

#[derive(Serialize)]
pub struct LoginResponse {
    token: String,
    role: Role,
    must_change_pw: bool,
    exp: i64,
}

/// `POST /api/auth/login`. Unknown user, wrong password and disabled
/// account all answer the same 401; repeated failures are slowed, then
/// refused with 429. An account with a second factor also needs a
/// `totp_code`: a right password without one answers `mfa_required`
/// (no failure, and no token), a wrong or replayed code is a failure.
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginOutcome>, ApiError> {
    let auth = &state.auth;
    let failure = |reason: &'static str| {
        let nats = state.nats.clone();
        let username = audit::shown(&req.username);
        let caller = caller.clone();
        async move {
            tracing::warn!(username = %username, client = ?addr, reason, "login failed");
            audit::record(
                &nats,
                "auth",
                "login.failure",
                Some(&username),
                Some(&caller),
                serde_json::json!({
                    "reason": reason,
                    "client": addr.map(|a| a.to_string()),
                }),
            )
            .await;
        }
    };
    let (user, last_admin) = {
        let (store, name) = (state.store.clone(), req.username.clone());
        blocking(move || Ok((store.user(&name)?, store.is_last_enabled_admin(&name)?))).await?
    };
    let account = if last_admin {
        Account::LastAdmin
    } else {
        Account::Any
    };
    match auth
        .throttle
        .begin(&req.username, account, addr, Instant::now())
    {
        Verdict::Refuse { after, first } => {
            // A lock is reported once; the attempts it refuses are
            // counted by the throttle, not written to the log and the
            // audit stream one by one.
            if first {
                failure("throttled").await;
            } else {
                tracing::debug!(client = ?addr, "login refused while throttled");
            }
            return Err(ApiError::TooManyRequests {
                retry_after_secs: after.as_secs().max(1),
            });
        }
        Verdict::Proceed(delay) if !delay.is_zero() => tokio::time::sleep(delay).await,
        Verdict::Proceed(_) => {}
    }
    let usable = user.filter(|u| !u.disabled);
    let matched = password::verify_async(
        req.password.clone(),
        usable.as_ref().map(|u| u.password_hash.clone()),
    )
    .await;
    let (Some(user), true) = (usable, matched) else {
        failure("invalid_credentials").await;
        return Err(ApiError::Unauthorized("invalid credentials".into()));
    };
    let role = Role::parse(&user.role).ok_or_else(|| {
        ApiError::Internal(format!(
            "account {} has role {:?}",
            user.username, user.role
        ))
    })?;
    if let Some(secret) = user.totp_secret.as_deref() {
        let Some(code) = req.totp_code.as_deref().filter(|c| !c.trim().is_empty()) else {
            auth.throttle.refund(&req.username, account, addr);
            return Ok(Json(LoginOutcome::MfaRequired { mfa_required: true }));
        };
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
            failure("invalid_totp_code").await;
            return Err(ApiError::Unauthorized("invalid credentials".into()));
        }
    }
    auth.throttle.succeeded(&req.username, account, addr);
    Ok(Json(LoginOutcome::Token(
        session(&state, &user, role).await?,
    )))
}

/// A login token for `user` (its factors checked), for the session
/// lifetime the server settings say.
pub(super) async fn session(
    state: &AppState,
    user: &UserRecord,
    role: Role,
) -> Result<LoginResponse, ApiError> {
    let ttl = super::server_settings::session_ttl_secs(&state.control).await;
    let (token, exp) = state
        .auth
        .jwt
        .mint(
            &user.username,
            role,
            user.token_epoch,
            Utc::now().timestamp(),
            ttl,
        )
        .map_err(ApiError::Internal)?;
    Ok(LoginResponse {
        token,
        role,
        must_change_pw: user.must_change_pw,
        exp,
    })
}

#[derive(Serialize)]
pub struct MeResponse {
    username: String,
    role: Role,
    must_change_pw: bool,
    /// Whether the account has a TOTP second factor.
    mfa_enabled: bool,
    /// The pages the caller may use; `null`: all.
    allowed_features: Option<Vec<&'static str>>,
}

/// `GET /api/auth/me`: the caller as the backend sees it.
pub async fn me(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
) -> Result<Json<MeResponse>, ApiError> {
    let account = if id.account {
        let (store, name) = (state.store.clone(), id.sub.clone());
        blocking(move || store.user(&name)).await?
    } else {
        None
    };
    let allowed_features = id
        .allowed
        .as_ref()
        .map(|fs| fs.iter().map(|f| f.as_str()).collect());
    Ok(Json(MeResponse {
        allowed_features,
        username: id.sub,
        role: id.role,
        must_change_pw: account.as_ref().is_some_and(|u| u.must_change_pw),
        mfa_enabled: account.is_some_and(|u| u.totp_secret.is_some()),
    }))
}

#[derive(Deserialize)]
pub struct ChangePasswordRequest {
    old_password: String,
    new_password: String,
}

/// `POST /api/auth/change-password`: the caller's own password; clears
/// `must_change_pw`.
pub async fn change_password(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    caller: Caller,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    strong("new_password", &req.new_password)?;
    if !id.account {
        return Err(ApiError::BadRequest(format!(
            "{} is not an account and has no password",
            id.sub
        )));
    }
    let user = {
        let (store, name) = (state.store.clone(), id.sub.clone());
        blocking(move || store.user(&name)).await?
    }
    .ok_or_else(|| ApiError::Unauthorized("unknown account".into()))?;
    if !password::verify_async(req.old_password.clone(), Some(user.password_hash)).await {
        return Err(ApiError::Forbidden("old_password is wrong".into()));
    }
    if req.new_password == req.old_password {
        return Err(ApiError::bad_param(
            "new_password",
            "must differ from the old password",
        ));
    }
    let hash = password::hash_async(req.new_password.clone())
        .await
        .map_err(ApiError::Internal)?;
    let update = UserUpdate {
        password_hash: Some(hash),
        must_change_pw: Some(false),
        ..Default::default()
    };
    let (store, name) = (state.store.clone(), id.sub.clone());
    match blocking(move || store.update_user(&name, &update, Utc::now())).await? {
        UserChange::Applied => {}
        UserChange::NotFound => return Err(ApiError::Unauthorized("unknown account".into())),
        other => return Err(ApiError::Internal(format!("password change: {other:?}"))),
    }
    audit::record(
        &state.nats,
        "admin",
        "account.change_password",
        Some(&id.sub),
        Some(&caller),
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own account, for the self-service MFA routes (the service
/// token and an open backend have none).
pub(super) async fn own_account(state: &AppState, id: &Identity) -> Result<UserRecord, ApiError> {
    if !id.account {
        return Err(ApiError::BadRequest(format!(
            "{} is not an account and has no second factor",
            id.sub
        )));
    }
    let (store, name) = (state.store.clone(), id.sub.clone());
    blocking(move || store.user(&name))
        .await?
        .ok_or_else(|| ApiError::Unauthorized("unknown account".into()))
}

/// The time step of `code` of `secret`; a 400 naming `param` when the
/// code is not current (whether it was used before is the store's call).
fn code_step(
    username: &str,
    secret: &str,
    code: &str,
    param: &'static str,
) -> Result<u64, ApiError> {
    mfa::matching_step(secret, username, code, unix_now())
        .map_err(|e| ApiError::bad_param(param, e))?
        .ok_or_else(|| ApiError::bad_param(param, "invalid code"))
}

#[derive(Serialize)]
pub struct MfaInitResponse {
    secret: String,
    otpauth_url: String,
}

/// `POST /api/auth/mfa/init`: a candidate secret and its `otpauth://` URL
/// (for a QR code). Nothing is stored until `mfa/verify` confirms it.
pub async fn mfa_init(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
) -> Result<Json<MfaInitResponse>, ApiError> {
    let user = own_account(&state, &id).await?;
    let secret = mfa::generate_secret();
    let otpauth_url = mfa::otpauth_url(&secret, &user.username).map_err(ApiError::Internal)?;
    Ok(Json(MfaInitResponse {
        secret,
        otpauth_url,
    }))
}

#[derive(Deserialize)]
pub struct MfaVerifyRequest {
    secret: String,
    code: String,
    /// A code of the secret in use, when replacing one.
    #[serde(default)]
    current_code: Option<String>,
}

/// `POST /api/auth/mfa/verify`: confirms a candidate secret with one of
/// its codes and makes it the account's second factor. Replacing a secret
/// in use also needs a code of that one (`current_code`), so a session
/// left open cannot swap in a secret of its own.
pub async fn mfa_verify(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    caller: Caller,
    ApiJson(req): ApiJson<MfaVerifyRequest>,
) -> Result<StatusCode, ApiError> {
    let user = own_account(&state, &id).await?;
    if let Some(current) = user.totp_secret.as_deref() {
        let code = req
            .current_code
            .as_deref()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| {
                ApiError::bad_param(
                    "current_code",
                    "a code of the current second factor is required to replace it",
                )
            })?;
        let step = code_step(&user.username, current, code, "current_code")?;
        let (store, name) = (state.store.clone(), user.username.clone());
        if !blocking(move || store.use_totp_step(&name, step)).await? {
            return Err(ApiError::bad_param("current_code", "code already used"));
        }
    }
    let step = code_step(&user.username, &req.secret, &req.code, "code")?;
    let (store, name, secret) = (
        state.store.clone(),
        user.username.clone(),
        req.secret.trim().to_string(),
    );
    if !blocking(move || store.set_totp_secret(&name, Some(&secret), step, Utc::now())).await? {
        return Err(ApiError::Unauthorized("unknown account".into()));
    }
    audit::record(
        &state.nats,
        "admin",
        "account.mfa_enable",
        Some(&user.username),
        Some(&caller),
        serde_json::json!({ "replaced": user.totp_secret.is_some() }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct MfaDisableRequest {
    code: String,
}

/// `POST /api/auth/mfa/disable`: removes the second factor, given one of
/// its codes (not used before); already off is a no-op.
pub async fn mfa_disable(
    State(state): State<AppState>,
    Extension(id): Extension<Identity>,
    caller: Caller,
    ApiJson(req): ApiJson<MfaDisableRequest>,
) -> Result<StatusCode, ApiError> {
    let user = own_account(&state, &id).await?;
    let Some(secret) = user.totp_secret.as_deref() else {
        return Ok(StatusCode::NO_CONTENT);
    };
    let step = code_step(&user.username, secret, &req.code, "code")?;
    let (store, name) = (state.store.clone(), user.username.clone());
    if !blocking(move || store.use_totp_step(&name, step)).await? {
        return Err(ApiError::bad_param("code", "code already used"));
    }
    let (store, name) = (state.store.clone(), user.username.clone());
    blocking(move || store.set_totp_secret(&name, None, 0, Utc::now())).await?;
    audit::record(
        &state.nats,
        "admin",
        "account.mfa_disable",
        Some(&user.username),
        Some(&caller),
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/accounts/{username}/mfa` (admin): removes an account's
/// second factor, for one whose authenticator is lost (the reference has
/// no way back); 404 for no such account, 204 also when it had none.
pub async fn mfa_reset(
    State(state): State<AppState>,
    Path(username): Path<String>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let (store, name) = (state.store.clone(), username.clone());
    if !blocking(move || store.set_totp_secret(&name, None, 0, Utc::now())).await? {
        return Err(ApiError::NotFound(format!("account {username}")));
    }
    audit::record(
        &state.nats,
        "admin",
        "account.mfa_reset",
        Some(&username),
        Some(&caller),
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// One account as listed: never the hash. The flags are 0/1 as the
/// reference's SQLite rows give them.
#[derive(Serialize)]
pub struct AccountRow {
    username: String,
    role: String,
    disabled: i64,
    must_change_pw: i64,
    email: Option<String>,
    /// The account's own page list (`null`: all pages); a group, when
    /// set, decides instead.
    allowed_features: Option<Vec<String>>,
    permission_group: Option<String>,
    mfa_enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<UserRecord> for AccountRow {
    fn from(u: UserRecord) -> Self {
        Self {
            username: u.username,
            role: u.role,
            disabled: i64::from(u.disabled),
            must_change_pw: i64::from(u.must_change_pw),
            email: u.email,
            allowed_features: u.allowed_features.map(|keys| {
                keys.into_iter()
                    .filter(|k| Feature::parse(k).is_some())
                    .collect()
            }),
            permission_group: u.permission_group,
            mfa_enabled: u.totp_secret.is_some(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A contact address as given (trimmed), `None` when blank; a 400 when it
/// is not `local@domain`.
fn email_param(raw: &str) -> Result<Option<String>, ApiError> {
    let e = raw.trim();
    if e.is_empty() {
        return Ok(None);
    }
    let ok = crate::mail::is_address(e);
    if ok {
        Ok(Some(e.to_string()))
    } else {
        Err(ApiError::bad_param("email", "invalid email address"))
    }
}

/// A group name as given, `None` when blank.
fn group_param(raw: &str) -> Option<String> {
    Some(raw.trim().to_string()).filter(|g| !g.is_empty())
}

/// `Some(None)` for an explicit JSON `null`, `None` when the field is
/// absent (with `#[serde(default)]`).
fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `GET /api/accounts`, by username.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<AccountRow>>, ApiError> {
    let store = state.store.clone();
    let users = blocking(move || store.users()).await?;
    Ok(Json(users.into_iter().map(AccountRow::from).collect()))
}

#[derive(Deserialize)]
pub struct CreateRequest {
    username: String,
    /// Without it, `email` is required and the account gets a set-up
    /// link instead.
    #[serde(default)]
    password: Option<String>,
    role: String,
    #[serde(default)]
    email: Option<String>,
    /// Absent or `null`: every page.
    #[serde(default)]
    allowed_features: Option<Vec<String>>,
    #[serde(default)]
    permission_group: Option<String>,
}

/// Usernames become audit subjects and URL path segments: keep them plain.
fn valid_username(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_param(
            "username",
            "1 to 64 letters, digits, '.', '_', '-' or '@'",
        ))
    }
}

#[derive(Serialize)]
pub struct CreateResponse {
    /// Whether a set-up link was mailed to the account's address.
    setup_link_sent: bool,
    /// The set-up link, for the admin to hand over (mail is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    setup_link: Option<String>,
}

/// `POST /api/accounts` → 201 `{setup_link_sent}`; 409 when the name is
/// taken. With an `email` and no `password` the account gets a random
/// unusable password and a set-up link: mailed when mail is on, else
/// answered as `setup_link` for the admin to hand over.
pub async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<CreateResponse>), ApiError> {
    let username = req.username.trim().to_string();
    valid_username(&username)?;
    let role = parse_role(&req.role)?;
    let email = req.email.as_deref().map(email_param).transpose()?.flatten();
    let allowed_features = req
        .allowed_features
        .as_deref()
        .map(|keys| super::params::feature_list("allowed_features", keys))
        .transpose()?;
    let permission_group = req.permission_group.as_deref().and_then(group_param);
    let given = req.password.clone().filter(|p| !p.is_empty());
    let link_base = match (&given, &email) {
        (Some(pw), _) => {
            strong("password", pw)?;
            None
        }
        (None, Some(_)) => Some(password_links::link_base(&state, &headers, peer.ip())?),
        (None, None) => {
            return Err(ApiError::bad_param(
                "password",
                "password or email required (an email gets a set-up link)",
            ))
        }
    };
    // Without a password the account gets one nobody knows until the
    // link sets it.
    let password = given.unwrap_or_else(|| {
        uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
    });
    let hash = password::hash_async(password)
        .await
        .map_err(ApiError::Internal)?;
    let now = Utc::now();
    let record = UserRecord {
        username: username.clone(),
        password_hash: hash,
        role: role.as_str().into(),
        disabled: false,
        must_change_pw: false,
        created_at: now,
        updated_at: now,
        token_epoch: 0,
        totp_secret: None,
        totp_last_step: 0,
        email: email.clone(),
        allowed_features: allowed_features.clone(),
        permission_group: permission_group.clone(),
        ..Default::default()
    };
    let store = state.store.clone();
    match blocking(move || store.insert_user(&record)).await? {
        UserChange::Applied => {}
        UserChange::Taken => {
            return Err(ApiError::Conflict(format!(
                "username {username} already exists"
            )))
        }
        UserChange::NoSuchGroup => return Err(no_such_group(permission_group.as_deref())),
        other => return Err(ApiError::Internal(format!("account insert: {other:?}"))),
    }
    audit::record(
        &state.nats,
        "admin",
        "account.create",
        Some(&username),
        Some(&caller),
        serde_json::json!({
            "role": role.as_str(),
            "allowed_features": allowed_features,
            "permission_group": permission_group,
        }),
    )
    .await;
    let mut answer = CreateResponse {
        setup_link_sent: false,
        setup_link: None,
    };
    if let (Some(base), Some(to)) = (link_base, email) {
        let purpose = password_links::Purpose::Setup;
        if let Some(url) = password_links::issue(&state, &username, purpose, &base).await? {
            // The account exists either way: a relay that refuses the
            // mail leaves the link for the admin, not a failed create.
            match password_links::deliver(&state, &to, &username, purpose, &url).await {
                Ok(true) => answer.setup_link_sent = true,
                Ok(false) | Err(_) => answer.setup_link = Some(url),
            }
        }
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Deserialize)]
pub struct UpdateRequest {
    role: Option<String>,
    password: Option<String>,
    disabled: Option<bool>,
    /// Blank clears.
    #[serde(default)]
    email: Option<String>,
    /// `null` clears (every page); absent leaves it.
    #[serde(default, deserialize_with = "double_option")]
    allowed_features: Option<Option<Vec<String>>>,
    /// `null` or blank clears; absent leaves it.
    #[serde(default, deserialize_with = "double_option")]
    permission_group: Option<Option<String>>,
}

fn no_such_group(name: Option<&str>) -> ApiError {
    ApiError::bad_param(
        "permission_group",
        format!("no such permission group: {}", name.unwrap_or_default()),
    )
}

/// `PATCH /api/accounts/{username}`: any of role, password (a reset, so
/// the user must change it at next login) and disabled, all or nothing.
/// 409 when it would leave no enabled admin.
pub async fn update(
    State(state): State<AppState>,
    Path(username): Path<String>,
    caller: Caller,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Result<StatusCode, ApiError> {
    let role = req.role.as_deref().map(parse_role).transpose()?;
    if let Some(pw) = &req.password {
        strong("password", pw)?;
    }
    let password_hash = match req.password.clone() {
        Some(pw) => Some(password::hash_async(pw).await.map_err(ApiError::Internal)?),
        None => None,
    };
    let email = req.email.as_deref().map(email_param).transpose()?;
    let allowed_features = match &req.allowed_features {
        None => None,
        Some(None) => Some(None),
        Some(Some(keys)) => Some(Some(super::params::feature_list("allowed_features", keys)?)),
    };
    let permission_group = req
        .permission_group
        .as_ref()
        .map(|g| g.as_deref().and_then(group_param));
    let update = UserUpdate {
        role: role.map(|r| r.as_str().to_string()),
        disabled: req.disabled,
        must_change_pw: password_hash.as_ref().map(|_| true),
        password_hash,
        email,
        allowed_features: allowed_features.clone(),
        permission_group: permission_group.clone(),
    };
    let (store, name) = (state.store.clone(), username.clone());
    match blocking(move || store.update_user(&name, &update, Utc::now())).await? {
        UserChange::Applied => {}
        UserChange::NotFound => return Err(ApiError::NotFound(format!("account {username}"))),
        UserChange::LastAdmin => {
            return Err(ApiError::Conflict(
                "cannot demote or disable the last enabled admin".into(),
            ))
        }
        UserChange::NoSuchGroup => {
            return Err(no_such_group(permission_group.flatten().as_deref()))
        }
        other => return Err(ApiError::Internal(format!("account update: {other:?}"))),
    }
    audit::record(
        &state.nats,
        "admin",
        "account.update",
        Some(&username),
        Some(&caller),
        serde_json::json!({
            "role": req.role,
            "disabled": req.disabled,
            "password_reset": req.password.is_some(),
            "allowed_features": allowed_features,
            "permission_group": permission_group,
        }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/accounts/{username}`; 409 for the last enabled admin.
pub async fn delete(
    State(state): State<AppState>,
    Path(username): Path<String>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let (store, name) = (state.store.clone(), username.clone());
    match blocking(move || store.delete_user(&name)).await? {
        UserChange::Applied => {}
        UserChange::NotFound => return Err(ApiError::NotFound(format!("account {username}"))),
        UserChange::LastAdmin => {
            return Err(ApiError::Conflict(
                "cannot delete the last enabled admin".into(),
            ))
        }
        other => return Err(ApiError::Internal(format!("account delete: {other:?}"))),
    }
    audit::record(
        &state.nats,
        "admin",
        "account.delete",
        Some(&username),
        Some(&caller),
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Seeds the first admin when there is no account and
/// `KANADE_BOOTSTRAP_ADMIN_PASSWORD` is set (`KANADE_BOOTSTRAP_ADMIN_USER`,
/// default `admin`); it must change its password at first login.
pub async fn seed_bootstrap_admin(store: &kanade_storage::RelationalStore) -> anyhow::Result<()> {
    let Some(pw) = std::env::var("KANADE_BOOTSTRAP_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        let s = store.clone();
        if tokio::task::spawn_blocking(move || s.users())
            .await??
            .is_empty()
        {
            tracing::warn!(
                "no accounts and no KANADE_BOOTSTRAP_ADMIN_PASSWORD: only the service token can \
                 log in; set it and restart to seed an admin"
            );
        }
        return Ok(());
    };
    let username = std::env::var("KANADE_BOOTSTRAP_ADMIN_USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "admin".into());
    let hash = password::hash_async(pw)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap admin: {e}"))?;
    let now = Utc::now();
    let record = UserRecord {
        username: username.clone(),
        password_hash: hash,
        role: Role::Admin.as_str().into(),
        disabled: false,
        must_change_pw: true,
        created_at: now,
        updated_at: now,
        ..Default::default()
    };
    let s = store.clone();
    if tokio::task::spawn_blocking(move || s.insert_first_user(&record)).await?? {
        tracing::warn!(%username, "seeded the bootstrap admin; it must change its password at first login");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted: Vec<ipnet::IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ];
        let xff = "198.51.100.9, 203.0.113.7, 10.1.2.3";
        assert_eq!(client_ip(ip("127.0.0.1"), xff, &trusted), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("192.0.2.1"), xff, &trusted), ip("192.0.2.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), "", &trusted), ip("127.0.0.1"));
        assert_eq!(
            client_ip(ip("127.0.0.1"), "10.0.0.5, junk", &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), "2001:db8::1", &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(client_ip(ip("127.0.0.1"), xff, &[]), ip("127.0.0.1"));
    }
}
