//! `GET /api/checks?check=&include_ok=`: compliance from the projected
//! `check_status` (the latest state of each check on each PC).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::params::{parse_bool, ApiQuery};
use crate::api::state::AppState;

#[derive(Deserialize)]
pub struct Params {
    check: Option<String>,
    include_ok: Option<String>,
}

#[derive(Serialize, Default)]
pub struct CheckCounts {
    check_name: String,
    ok: i64,
    warn: i64,
    fail: i64,
    unknown: i64,
}

#[derive(Serialize)]
pub struct CheckRow {
    pc_id: String,
    check_name: String,
    status: String,
    detail: Option<String>,
    recorded_at: DateTime<Utc>,
}

#[derive(Serialize)]
pub struct Checks {
    counts: Vec<CheckCounts>,
    rows: Vec<CheckRow>,
}

/// Counts per check (always every status), and the rows that are not
/// `ok` unless `include_ok=true`, by check then PC.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Json<Checks>, ApiError> {
    let include_ok = parse_bool("include_ok", p.include_ok.as_deref(), false)?;
    let rows = match p.check.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => state.store.check_status_by_name(c)?,
        None => state.store.check_status_all()?,
    };
    let mut counts: BTreeMap<String, CheckCounts> = BTreeMap::new();
    for r in &rows {
        let c = counts
            .entry(r.check_name.clone())
            .or_insert_with(|| CheckCounts {
                check_name: r.check_name.clone(),
                ..Default::default()
            });
        match r.status.as_str() {
            "ok" => c.ok += 1,
            "warn" => c.warn += 1,
            "fail" => c.fail += 1,
            _ => c.unknown += 1,
        }
    }
    Ok(Json(Checks {
        counts: counts.into_values().collect(),
        rows: rows
            .into_iter()
            .filter(|r| include_ok || r.status != "ok")
            .map(|r| CheckRow {
                pc_id: r.pc_id,
                check_name: r.check_name,
                status: r.status,
                detail: r.detail,
                recorded_at: r.recorded_at,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
pub struct DeleteParams {
    pc_id: Option<String>,
}

#[derive(Serialize)]
pub struct Deleted {
    deleted: u64,
}

/// `DELETE /api/checks/{check_name}?pc_id=`: forgets a check's state on
/// every PC (or one), e.g. after the check was retired; 200 with how
/// many states went, 0 included.
pub async fn delete(
    State(state): State<AppState>,
    caller: crate::audit::Caller,
    axum::extract::Path(check_name): axum::extract::Path<String>,
    ApiQuery(p): ApiQuery<DeleteParams>,
) -> Result<Json<Deleted>, ApiError> {
    let name = check_name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_param("check_name", "must be non-empty"));
    }
    let pc = p.pc_id.as_deref().map(str::trim).filter(|p| !p.is_empty());
    let deleted = {
        let (store, name, pc) = (state.store.clone(), name.to_string(), pc.map(String::from));
        super::offload::store(move || store.delete_check_status(&name, pc.as_deref())).await?
    };
    super::jobs::audit(
        &state.control,
        &caller,
        "check_clear",
        name,
        serde_json::json!({"check_name": name, "pc_id": pc, "deleted": deleted}),
    )
    .await;
    Ok(Json(Deleted { deleted }))
}
