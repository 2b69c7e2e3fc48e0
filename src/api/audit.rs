//! `/api/audit`.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use kanade_storage::AuditRecord;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::offload;
use super::params::{compile_regex, parse_limit, parse_time, ApiQuery};
use crate::api::state::AppState;

const DEFAULT_LIMIT: u32 = 50;

#[derive(Serialize)]
pub struct AuditRow {
    id: u64,
    actor: String,
    action: String,
    target: Option<String>,
    payload: serde_json::Value,
    occurred_at: Option<DateTime<Utc>>,
}

impl From<AuditRecord> for AuditRow {
    fn from(a: AuditRecord) -> Self {
        Self {
            id: a.id,
            actor: a.actor,
            action: a.action,
            target: a.target,
            payload: a.payload,
            occurred_at: a.occurred_at,
        }
    }
}

#[derive(Deserialize)]
pub struct ListParams {
    limit: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    action: Option<String>,
    target: Option<String>,
    payload: Option<String>,
}

/// `GET /api/audit`: newest first; `actor` exact, `since` (RFC 3339),
/// regexes on `action`, `target` (NULL as "") and the JSON `payload`.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<Vec<AuditRow>>, ApiError> {
    let limit = parse_limit(p.limit.as_deref(), DEFAULT_LIMIT)?;
    let since = p
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?;
    let action = compile_regex("action", p.action.as_deref())?;
    let target = compile_regex("target", p.target.as_deref())?;
    let payload = compile_regex("payload", p.payload.as_deref())?;
    let actor = p.actor.filter(|a| !a.is_empty());
    if limit == 0 {
        return Ok(Json(Vec::new()));
    }
    let store = state.store.clone();
    let narrow = "narrow it with `since`, `actor` or a simpler filter";
    let out = offload::budgeted_scan(state.scan_budget, narrow, move |in_time| {
        let mut out = Vec::new();
        store.scan_audit_desc(since, |a| {
            if !in_time() {
                return false;
            }
            let keep = actor.as_deref().is_none_or(|x| a.actor == x)
                && action.as_ref().is_none_or(|re| re.is_match(&a.action))
                && target
                    .as_ref()
                    .is_none_or(|re| re.is_match(a.target.as_deref().unwrap_or("")))
                && payload
                    .as_ref()
                    .is_none_or(|re| re.is_match(&a.payload.to_string()));
            if keep {
                out.push(AuditRow::from(a));
            }
            out.len() < limit
        })?;
        Ok(out)
    })
    .await?;
    Ok(Json(out))
}
