//! Install attempts (`/api/agents/install-attempts*`, operators) and the
//! progress reports their scripts send (`POST /api/install-reports/{id}`,
//! no session: the attempt's key in `X-Install-Key`, a body of at most
//! 1 KiB). See `installer` for where attempts come from.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use kanade_storage::{InstallAttempt, InstallEvent, Reported};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::api::state::AppState;

/// Attempts listed at most.
const LIST_LIMIT: usize = 100;
/// Largest report body.
pub const REPORT_BYTES: usize = 1024;

const STAGES: [&str; 10] = [
    "platform",
    "temporary_directory",
    "download",
    "extract",
    "elevate",
    "install",
    "placement",
    "service_start",
    "connection_check",
    "complete",
];
const OUTCOMES: [&str; 3] = ["progress", "succeeded", "failed"];
const ERROR_KINDS: [&str; 11] = [
    "permission_denied",
    "file_not_found",
    "invalid_archive",
    "io_error",
    "service_error",
    "elevation_cancelled",
    "http_error",
    "configuration_error",
    "authentication_failed",
    "connection_failed",
    "command_failed",
];

#[derive(Serialize)]
pub struct Listed {
    id: String,
    issuer: Option<String>,
    os: String,
    created_at: i64,
    expires_at: i64,
    status: String,
    seq: u32,
    last_stage: Option<String>,
    last_outcome: Option<String>,
    last_error_kind: Option<String>,
    last_received_at: Option<i64>,
}

fn listed(a: InstallAttempt, now: DateTime<Utc>) -> Listed {
    let last = a.events.iter().find(|e| e.seq == a.seq).cloned();
    let status = if a.expires_at <= now && !a.is_terminal() {
        "unknown".to_string()
    } else {
        a.status.clone()
    };
    Listed {
        created_at: a.created_at.timestamp(),
        expires_at: a.expires_at.timestamp(),
        last_stage: last.as_ref().map(|e| e.stage.clone()),
        last_outcome: last.as_ref().map(|e| e.outcome.clone()),
        last_error_kind: last.as_ref().and_then(|e| e.error_kind.clone()),
        last_received_at: last.map(|e| e.received_at.timestamp()),
        id: a.id,
        issuer: a.issuer,
        os: a.os,
        status,
        seq: a.seq,
    }
}

/// `GET /api/agents/install-attempts`: the newest 100, newest first.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Listed>>, ApiError> {
    let store = state.store.clone();
    let attempts = super::offload::store(move || store.install_attempts(LIST_LIMIT)).await?;
    let now = Utc::now();
    Ok(Json(attempts.into_iter().map(|a| listed(a, now)).collect()))
}

#[derive(Serialize)]
pub struct EventRow {
    seq: u32,
    stage: String,
    outcome: String,
    exit_code: i32,
    received_at: i64,
    error_kind: Option<String>,
}

/// `GET /api/agents/install-attempts/{id}`: its events in order (none for
/// an attempt we do not hold).
pub async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<EventRow>>, ApiError> {
    let store = state.store.clone();
    let found = super::offload::store(move || store.install_attempt(&id)).await?;
    Ok(Json(
        found
            .map(|a| a.events)
            .unwrap_or_default()
            .into_iter()
            .map(|e| EventRow {
                seq: e.seq,
                stage: e.stage,
                outcome: e.outcome,
                exit_code: e.exit_code,
                received_at: e.received_at.timestamp(),
                error_kind: e.error_kind,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    seq: u32,
    stage: String,
    outcome: String,
    exit_code: i32,
    #[serde(default)]
    error_kind: Option<String>,
}

/// Why a report is not an event one attempt can have; `None` when it is.
fn refusal(r: &Report) -> Option<String> {
    if !(1..=InstallEvent::MAX_SEQ).contains(&r.seq) {
        return Some(format!("`seq` must be 1-{}", InstallEvent::MAX_SEQ));
    }
    if !STAGES.contains(&r.stage.as_str()) {
        return Some(format!("unknown `stage` {:?}", r.stage));
    }
    if !OUTCOMES.contains(&r.outcome.as_str()) {
        return Some(format!("unknown `outcome` {:?}", r.outcome));
    }
    if let Some(k) = &r.error_kind {
        if r.outcome != "failed" {
            return Some("`error_kind` goes with outcome `failed` only".into());
        }
        if !ERROR_KINDS.contains(&k.as_str()) {
            return Some(format!("unknown `error_kind` {k:?}"));
        }
    }
    match r.outcome.as_str() {
        "succeeded" if r.stage != "complete" || r.exit_code != 0 => {
            Some("`succeeded` is stage `complete` with exit code 0".into())
        }
        "failed" if r.exit_code == 0 => Some("`failed` needs a non-zero exit code".into()),
        "progress" if r.exit_code != 0 => Some("`progress` has exit code 0".into()),
        _ => None,
    }
}

/// `POST /api/install-reports/{id}`.
pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let key = headers
        .get("x-install-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| k.len() == 64)
        .ok_or_else(|| ApiError::Unauthorized("report key required".into()))?;
    if body.len() > REPORT_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "a report is at most {REPORT_BYTES} bytes"
        )));
    }
    let r: Report = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid installation event: {e}")))?;
    if let Some(why) = refusal(&r) {
        return Err(ApiError::BadRequest(format!(
            "invalid installation event: {why}"
        )));
    }
    let now = Utc::now();
    let event = InstallEvent {
        seq: r.seq,
        stage: r.stage,
        outcome: r.outcome,
        exit_code: r.exit_code,
        error_kind: r.error_kind,
        received_at: now,
    };
    let hash = super::installer::key_hash(key);
    let store = state.store.clone();
    match super::offload::store(move || store.report_install_event(&id, &hash, event, now)).await? {
        Reported::Stored | Reported::Repeated => Ok(StatusCode::NO_CONTENT),
        Reported::Unknown => Err(ApiError::Unauthorized(
            "invalid or expired report key".into(),
        )),
        Reported::Conflict(why) => Err(ApiError::Conflict(why.into())),
    }
}
