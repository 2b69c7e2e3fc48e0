//! `/api/server-settings*`: the fleet-wide settings 0.101 keeps in the
//! `server_settings` KV bucket (key `current`): controller group, agent
//! pruning, retention days, mail, object-store caps, the agent installer's
//! broker credentials and the support codes. A PUT merges key by key (an
//! absent key is kept, `null` removes it) under compare-and-set, so two
//! operators editing different keys never lose each other's change.
//! Secrets never leave: reads are redacted.

use axum::extract::{Path, State};
use axum::Json;
use kanade_shared::kv::{
    BUCKET_FLEET_CONFIG, BUCKET_SERVER_SETTINGS, KEY_SERVER_SETTINGS, KEY_SUPPORT_CODES,
};
use kanade_shared::manifest::is_valid_resource_id;
use kanade_shared::wire::{
    ServerSettings, SupportCode, SupportCodesProjection, MAX_AGENT_PRUNE_DAYS,
    MAX_CHECK_STATUS_STALE_DAYS, MAX_COLLECT_RETENTION_DAYS, MAX_OBJECT_STORE_CAP_MIB,
    MAX_OBJECT_STORE_TOTAL_MIB, MAX_RESULT_OUTPUT_RETENTION_DAYS, MAX_SESSION_TTL_HOURS,
    MAX_SUPPORT_UNLOCK_TTL_MINUTES,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::jobs::audit;
use crate::api::state::AppState;
use crate::audit::Caller;
use crate::control::{Control, Error as ControlError};

/// Compare-and-set attempts before a write gives up.
const CAS_ATTEMPTS: usize = 32;

/// The stored document as JSON (`{}` when unset) and its revision.
async fn read_raw(c: &Control) -> Result<(Map<String, Value>, u64), ApiError> {
    let (doc, rev) = c
        .get_json_rev::<Value>(BUCKET_SERVER_SETTINGS, KEY_SERVER_SETTINGS)
        .await?;
    match doc {
        None => Ok((Map::new(), rev)),
        Some(Value::Object(m)) => Ok((m, rev)),
        Some(_) => Err(ApiError::Internal(
            "stored server_settings is not a JSON object".into(),
        )),
    }
}

fn typed(doc: &Map<String, Value>) -> Result<ServerSettings, serde_json::Error> {
    serde_json::from_value(Value::Object(doc.clone()))
}

fn redacted(doc: &Map<String, Value>) -> Result<Value, ApiError> {
    let s = typed(doc)
        .map_err(|e| ApiError::Internal(format!("stored server_settings is corrupt: {e}")))?;
    serde_json::to_value(s.redacted()).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The stored settings, typed (the defaults where unset).
pub async fn current(c: &Control) -> Result<ServerSettings, String> {
    let (doc, _) = read_raw(c).await.map_err(|e| e.to_string())?;
    typed(&doc).map_err(|e| format!("stored server_settings is corrupt: {e}"))
}

/// How long a login token lasts: `session_ttl_hours` of the stored
/// settings (24 h unset, clamped as the reference clamps it). A broker
/// that does not answer, or a corrupt document, gives the default and a
/// warning: a login never fails on it.
pub async fn session_ttl_secs(c: &Control) -> i64 {
    let hours = match current(c).await {
        Ok(s) => s.effective_session_ttl_hours(),
        Err(e) => {
            tracing::warn!(error = %e, "server settings unreadable; default session lifetime");
            ServerSettings::default().effective_session_ttl_hours()
        }
    };
    i64::from(hours) * 3_600
}

/// `GET /api/server-settings`: the settings, secrets left out.
pub async fn get(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (doc, _) = read_raw(&state.control).await?;
    Ok(Json(redacted(&doc)?))
}

/// `GET /api/server-settings/defaults`: what applies where nothing is set.
pub async fn defaults() -> Json<ServerSettings> {
    Json(ServerSettings::defaults())
}

/// Read, change, write back only if nobody wrote meanwhile; retried.
/// `change` answers whether it changed anything (no write otherwise).
async fn update(
    c: &Control,
    mut change: impl FnMut(&mut Map<String, Value>) -> Result<bool, ApiError>,
) -> Result<Map<String, Value>, ApiError> {
    for _ in 0..CAS_ATTEMPTS {
        let (mut doc, rev) = read_raw(c).await?;
        if !change(&mut doc)? {
            return Ok(doc);
        }
        let bytes = serde_json::to_vec(&doc).map_err(|e| ApiError::Internal(e.to_string()))?;
        match c
            .put_if(
                BUCKET_SERVER_SETTINGS,
                KEY_SERVER_SETTINGS,
                bytes,
                Some(rev),
            )
            .await
        {
            Ok(_) => return Ok(doc),
            Err(ControlError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(
        "server_settings kept changing under this write; retry".into(),
    ))
}

/// Puts the settings' object-store limits on the broker: the retention
/// windows of `collections` and `result_output` and every store's size
/// cap (`object_store_caps`), as `kanade_shared::bootstrap` reconciles
/// them. At start (a bucket keeps the limits it was born with otherwise)
/// and after each change. A failure is logged and leaves the old limit;
/// the next change or start tries again.
pub(crate) async fn apply_store_limits(
    js: &async_nats::jetstream::Context,
    settings: &ServerSettings,
) {
    use kanade_shared::bootstrap::{
        reconcile_object_store_max_age, reconcile_object_store_max_bytes,
    };
    use kanade_shared::kv::{OBJECT_COLLECTIONS, OBJECT_RESULT_OUTPUT};
    let windows = [
        (
            OBJECT_COLLECTIONS,
            settings.effective_collect_retention_days(),
        ),
        (
            OBJECT_RESULT_OUTPUT,
            settings.effective_result_output_retention_days(),
        ),
    ];
    for (bucket, days) in windows {
        match reconcile_object_store_max_age(js, bucket, days).await {
            Ok(true) => tracing::info!(bucket, days, "object store retention applied"),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                bucket,
                days,
                "object store retention not applied"
            ),
        }
    }
    for (bucket, mib) in settings.effective_object_store_caps().effective_all() {
        match reconcile_object_store_max_bytes(js, bucket, mib).await {
            Ok(true) => tracing::info!(bucket, mib, "object store cap applied"),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                bucket,
                mib,
                "object store cap not applied"
            ),
        }
    }
}

/// The stored settings for [`apply_store_limits`] at start (defaults when
/// unset; a corrupt document is logged and skipped).
pub(crate) async fn apply_stored_store_limits(js: &async_nats::jetstream::Context) {
    let stored = async {
        let kv = js
            .get_key_value(BUCKET_SERVER_SETTINGS)
            .await
            .map_err(|e| e.to_string())?;
        let raw = kv
            .get(KEY_SERVER_SETTINGS)
            .await
            .map_err(|e| e.to_string())?;
        match raw {
            None => Ok(ServerSettings::default()),
            Some(b) => serde_json::from_slice::<ServerSettings>(&b).map_err(|e| e.to_string()),
        }
    }
    .await;
    match stored {
        Ok(settings) => apply_store_limits(js, &settings).await,
        Err(e) => {
            tracing::warn!(error = %e, "server_settings unreadable: object store limits left as they are")
        }
    }
}

/// `PUT /api/server-settings`: merges the body into the stored settings
/// key by key; answers the result, redacted.
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let Value::Object(patch) = body else {
        return Err(ApiError::Unprocessable(
            "server_settings body must be a JSON object".into(),
        ));
    };
    let doc = update(&state.control, |doc| {
        let before = doc.clone();
        merge(doc, &patch);
        let settings = typed(doc)
            .map_err(|e| ApiError::Unprocessable(format!("invalid server_settings body: {e}")))?;
        validate(&settings)?;
        let normalized = normalize(settings);
        stamp_auth_mode_change(doc, &before);
        // Keep keys a newer kanade stored that we do not know.
        if let Value::Object(known) =
            serde_json::to_value(&normalized).map_err(|e| ApiError::Internal(e.to_string()))?
        {
            for (k, v) in known {
                doc.insert(k, v);
            }
        }
        Ok(*doc != before)
    })
    .await?;
    if let Ok(settings) = typed(&doc) {
        apply_store_limits(&state.control.js, &settings).await;
    }
    let shown = redacted(&doc)?;
    audit(
        &state.control,
        &caller,
        "server_settings_set",
        KEY_SERVER_SETTINGS,
        shown.clone(),
    )
    .await;
    Ok(Json(shown))
}

/// Applies `patch`: `null` removes a key, a value replaces it;
/// `agent_install` merges per inner key (an omitted secret is kept). The
/// support codes have their own routes and the auth-mode stamp is ours.
fn merge(doc: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match key.as_str() {
            "support_codes" | "nats_auth_mode_changed_at" => {}
            "agent_install" => match value {
                Value::Object(inner) => {
                    let slot = doc
                        .entry(key.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !slot.is_object() {
                        *slot = Value::Object(Map::new());
                    }
                    let Value::Object(section) = slot else {
                        continue;
                    };
                    for (k, v) in inner {
                        if k.ends_with("_set") {
                            continue;
                        }
                        if v.is_null() {
                            section.remove(k);
                        } else {
                            section.insert(k.clone(), v.clone());
                        }
                    }
                }
                _ => {
                    doc.remove(key);
                }
            },
            _ if value.is_null() => {
                doc.remove(key);
            }
            _ => {
                doc.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Records when the broker auth mode changed.
fn stamp_auth_mode_change(doc: &mut Map<String, Value>, before: &Map<String, Value>) {
    let mode = |d: &Map<String, Value>| d.get("nats_auth_mode").cloned();
    if mode(doc) != mode(before) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        doc.insert("nats_auth_mode_changed_at".into(), Value::String(now));
    }
}

/// A 422 unless `v` is within `1..=max` (or absent).
fn check_range(field: &str, v: Option<u32>, min: u32, max: u32, why: &str) -> Result<(), ApiError> {
    match v {
        Some(v) if v < min => Err(ApiError::Unprocessable(format!(
            "{field} must be >= {min}; omit it or send null to use the default"
        ))),
        Some(v) if v > max => Err(ApiError::Unprocessable(format!(
            "{field} must be <= {max} ({why})"
        ))),
        _ => Ok(()),
    }
}

fn validate(s: &ServerSettings) -> Result<(), ApiError> {
    if s.agent_prune_days == Some(0) {
        return Err(ApiError::Unprocessable(
            "agent_prune_days must be >= 1; omit it or send null to disable pruning".into(),
        ));
    }
    check_range(
        "agent_prune_days",
        s.agent_prune_days,
        1,
        MAX_AGENT_PRUNE_DAYS,
        "100 years",
    )?;
    check_range(
        "collect_retention_days",
        s.collect_retention_days,
        1,
        MAX_COLLECT_RETENTION_DAYS,
        "10 years",
    )?;
    check_range(
        "result_output_retention_days",
        s.result_output_retention_days,
        1,
        MAX_RESULT_OUTPUT_RETENTION_DAYS,
        "the RESULTS stream's own retention",
    )?;
    check_range(
        "session_ttl_hours",
        s.session_ttl_hours,
        1,
        MAX_SESSION_TTL_HOURS,
        "365 days",
    )?;
    check_range(
        "check_status_stale_days",
        s.check_status_stale_days,
        0,
        MAX_CHECK_STATUS_STALE_DAYS,
        "10 years",
    )?;
    if s.controller_group
        .as_deref()
        .is_some_and(|g| g.trim().is_empty())
    {
        return Err(ApiError::Unprocessable(
            "controller_group must be a non-empty group name; omit it or send null to unset".into(),
        ));
    }
    if let Some(m) = &s.mail {
        if m.host.trim().is_empty() {
            return Err(ApiError::Unprocessable(
                "mail.host must not be empty".into(),
            ));
        }
        if m.port == 0 {
            return Err(ApiError::Unprocessable(
                "mail.port must be between 1 and 65535".into(),
            ));
        }
        if !crate::mail::is_mailbox(&m.from) {
            return Err(ApiError::Unprocessable(format!(
                "mail.from is not a valid email address: {:?}",
                m.from
            )));
        }
    }
    validate_caps(s)?;
    validate_agent_install(s)
}

fn validate_caps(s: &ServerSettings) -> Result<(), ApiError> {
    let Some(caps) = &s.object_store_caps else {
        return Ok(());
    };
    let given = [
        ("result_output_mib", caps.result_output_mib),
        ("agent_releases_mib", caps.agent_releases_mib),
        ("app_packages_mib", caps.app_packages_mib),
        ("scripts_mib", caps.scripts_mib),
        ("collections_mib", caps.collections_mib),
    ];
    for (name, v) in given {
        check_range(
            &format!("object_store_caps.{name}"),
            v,
            1,
            MAX_OBJECT_STORE_CAP_MIB,
            "50 GiB",
        )?;
    }
    let total: u64 = s
        .effective_object_store_caps()
        .effective_all()
        .iter()
        .map(|(_, mib)| u64::from(*mib))
        .sum();
    if total > u64::from(MAX_OBJECT_STORE_TOTAL_MIB) {
        return Err(ApiError::Unprocessable(format!(
            "object_store_caps total {total} MiB exceeds {MAX_OBJECT_STORE_TOTAL_MIB} MiB"
        )));
    }
    Ok(())
}

fn validate_agent_install(s: &ServerSettings) -> Result<(), ApiError> {
    let Some(ai) = &s.agent_install else {
        return Ok(());
    };
    if let Some(url) = &ai.nats_url {
        if url.trim().is_empty() || url.contains('\'') || url.contains('\n') {
            return Err(ApiError::BadRequest(
                "agent_install.nats_url must be non-empty and contain no single quote or newline"
                    .into(),
            ));
        }
    }
    if ai.nats_token.as_deref().is_some_and(|t| t.contains('\n')) {
        return Err(ApiError::BadRequest(
            "agent_install.nats_token must not contain a newline".into(),
        ));
    }
    for (name, v) in [
        ("nats_user", &ai.nats_user),
        ("nats_password", &ai.nats_password),
    ] {
        if v.as_deref()
            .is_some_and(|v| v.is_empty() || v.contains('\n'))
        {
            return Err(ApiError::BadRequest(format!(
                "agent_install.{name} must be non-empty and must not contain a newline"
            )));
        }
    }
    if ai.nats_user.is_some() != ai.nats_password.is_some() {
        return Err(ApiError::BadRequest(
            "agent_install.nats_user and agent_install.nats_password are a pair: set both or neither"
                .into(),
        ));
    }
    Ok(())
}

fn normalize(mut s: ServerSettings) -> ServerSettings {
    s.controller_group = s.controller_group.map(|g| g.trim().to_string());
    if let Some(m) = s.mail.as_mut() {
        m.host = m.host.trim().to_string();
        m.from = m.from.trim().to_string();
        m.username = m.username.take().filter(|u| !u.trim().is_empty());
    }
    s
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupportCodeBody {
    code: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    ttl_minutes: Option<u32>,
    #[serde(default)]
    disabled: bool,
}

/// `PUT /api/server-settings/support-codes/{scope}`: sets the code that
/// unlocks the jobs whose `client.unlock` is `scope` (stored as an
/// argon2id hash, never in clear), and republishes the codes agents read.
pub async fn put_support_code(
    State(state): State<AppState>,
    caller: Caller,
    Path(scope): Path<String>,
    super::params::ApiJson(body): super::params::ApiJson<SupportCodeBody>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope.trim().to_string();
    if !is_valid_resource_id(&scope) || scope.len() > 128 {
        return Err(ApiError::Unprocessable(
            "scope must be a slug ([A-Za-z0-9._-]) matching a job's client.unlock".into(),
        ));
    }
    if body.code.trim() != body.code {
        return Err(ApiError::Unprocessable(
            "code must not start or end with whitespace".into(),
        ));
    }
    if body.code.chars().count() < 8 {
        return Err(ApiError::Unprocessable(
            "code must be at least 8 characters".into(),
        ));
    }
    if body
        .ttl_minutes
        .is_some_and(|t| !(1..=MAX_SUPPORT_UNLOCK_TTL_MINUTES).contains(&t))
    {
        return Err(ApiError::Unprocessable(format!(
            "ttl_minutes must be 1..={MAX_SUPPORT_UNLOCK_TTL_MINUTES}"
        )));
    }
    let label = match body.label.map(|l| l.trim().to_string()) {
        Some(l) if l.is_empty() => {
            return Err(ApiError::Unprocessable(
                "label must not be blank when set; omit it instead".into(),
            ))
        }
        other => other,
    };
    let hash = crate::auth::password::hash(&body.code)
        .map_err(|e| ApiError::Internal(format!("hash the support code: {e}")))?;
    let code = SupportCode {
        scope: scope.clone(),
        hash,
        label: label.clone(),
        ttl_minutes: body.ttl_minutes,
        disabled: body.disabled,
    };
    let doc = edit_codes(&state.control, |codes| {
        codes.retain(|c| c.scope != scope);
        codes.push(code.clone());
        true
    })
    .await?;
    audit(
        &state.control,
        &caller,
        "support_code_set",
        &scope,
        serde_json::json!({"scope": scope, "label": label, "ttl_minutes": body.ttl_minutes, "disabled": body.disabled}),
    )
    .await;
    Ok(Json(redacted(&doc)?))
}

/// `DELETE /api/server-settings/support-codes/{scope}`: removes it (a
/// scope without a code is no error).
pub async fn delete_support_code(
    State(state): State<AppState>,
    caller: Caller,
    Path(scope): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope.trim().to_string();
    let doc = edit_codes(&state.control, |codes| {
        let before = codes.len();
        codes.retain(|c| c.scope != scope);
        codes.len() != before
    })
    .await?;
    audit(
        &state.control,
        &caller,
        "support_code_deleted",
        &scope,
        serde_json::json!({"scope": scope}),
    )
    .await;
    Ok(Json(redacted(&doc)?))
}

/// Changes the support codes under compare-and-set, then writes the
/// projection agents verify codes against (`fleet_config/support_codes`).
async fn edit_codes(
    c: &Control,
    mut change: impl FnMut(&mut Vec<SupportCode>) -> bool,
) -> Result<Map<String, Value>, ApiError> {
    let doc = update(c, |doc| {
        let mut s = typed(doc)
            .map_err(|e| ApiError::Internal(format!("stored server_settings is corrupt: {e}")))?;
        if !change(&mut s.support_codes) {
            return Ok(false);
        }
        let codes = serde_json::to_value(&s.support_codes)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        doc.insert("support_codes".into(), codes);
        Ok(true)
    })
    .await?;
    let settings = typed(&doc).map_err(|e| ApiError::Internal(format!("server_settings: {e}")))?;
    let projection = serde_json::to_vec(&SupportCodesProjection::from_settings(&settings))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    c.put(BUCKET_FLEET_CONFIG, KEY_SUPPORT_CODES, projection)
        .await?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_put_merges_key_by_key_and_keeps_omitted_secrets() {
        let mut doc = obj(json!({
            "agent_prune_days": 30, "controller_group": "ctl",
            "agent_install": {"nats_url": "nats://a:4222", "nats_token": "s3cret"},
            "support_codes": [{"scope": "desk", "hash": "h"}],
        }));
        merge(
            &mut doc,
            &obj(json!({
                "agent_prune_days": null, "session_ttl_hours": 8,
                "agent_install": {"nats_url": "nats://b:4222", "nats_token_set": false},
                "support_codes": [],
            })),
        );
        assert_eq!(
            Value::Object(doc),
            json!({
                "controller_group": "ctl", "session_ttl_hours": 8,
                "agent_install": {"nats_url": "nats://b:4222", "nats_token": "s3cret"},
                "support_codes": [{"scope": "desk", "hash": "h"}],
            })
        );
    }

    #[test]
    fn out_of_range_values_are_named() {
        let cases = [
            (json!({"agent_prune_days": 0}), "agent_prune_days"),
            (json!({"agent_prune_days": 40000}), "agent_prune_days"),
            (
                json!({"result_output_retention_days": 31}),
                "result_output_retention_days",
            ),
            (json!({"controller_group": "  "}), "controller_group"),
            (
                json!({"mail": {"host": "smtp", "port": 25, "from": "nobody"}}),
                "mail.from",
            ),
            (
                json!({"object_store_caps": {"scripts_mib": 0}}),
                "scripts_mib",
            ),
            (
                json!({"object_store_caps": {"app_packages_mib": 51200, "collections_mib": 51200}}),
                "total",
            ),
            (json!({"agent_install": {"nats_user": "u"}}), "pair"),
        ];
        for (body, needle) in cases {
            let s: ServerSettings = serde_json::from_value(body.clone()).unwrap();
            let err = validate(&s).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let ok: ServerSettings = serde_json::from_value(json!({
            "agent_prune_days": 90, "controller_group": "ctl",
            "mail": {"host": "smtp.example.com", "port": 587, "from": "Kanade <kanade@example.com>"},
        }))
        .unwrap();
        validate(&ok).unwrap();
    }
}
