//! Inventory: the latest facts of inventory jobs (manifests with an
//! `inventory` hint), per PC and per job — `GET /api/inventory/jobs`,
//! `/api/inventory/by-job/{manifest_id}?limit&offset&q` and
//! `/api/inventory/{pc_id}`, with the reference's shapes. Facts are the
//! raw JSON stdout of each PC's newest successful run (by when it
//! finished), stored with the display and summary columns it was shown
//! with.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use kanade_shared::kv::BUCKET_JOBS;
use kanade_shared::manifest::{DisplayField, ExplodeSpec, Manifest};
use kanade_storage::InventoryFactRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::offload;
use super::params::{parse_clamped, ApiQuery};
use crate::control::check_key;
use crate::state::AppState;

/// Rows of `/by-job` per page: default and most.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1_000;

#[derive(Serialize)]
pub struct InventoryJob {
    manifest_id: String,
    description: Option<String>,
    display: Vec<DisplayField>,
    summary: Option<Vec<DisplayField>>,
    explode: Option<Vec<ExplodeSpec>>,
}

/// `GET /api/inventory/jobs`: the registered inventory jobs, by id.
pub async fn jobs(State(state): State<AppState>) -> Result<Json<Vec<InventoryJob>>, ApiError> {
    let jobs = state.control.list_json::<Manifest>(BUCKET_JOBS).await?;
    Ok(Json(
        jobs.into_iter()
            .filter_map(|(_, m)| {
                let hint = m.inventory?;
                Some(InventoryJob {
                    manifest_id: m.id,
                    description: m.description,
                    display: hint.display,
                    summary: hint.summary,
                    explode: hint.explode,
                })
            })
            .collect(),
    ))
}

/// A stored facts JSON as a value (`null` if it no longer parses).
fn facts(r: &InventoryFactRecord) -> Value {
    serde_json::from_str(&r.facts_json).unwrap_or(Value::Null)
}

fn columns(json: Option<&str>) -> Option<Vec<DisplayField>> {
    serde_json::from_str(json?).ok()
}

#[derive(Deserialize)]
pub struct ByJobParams {
    limit: Option<String>,
    offset: Option<String>,
    q: Option<String>,
}

#[derive(Serialize)]
pub struct ByJobRow {
    pc_id: String,
    facts: Value,
    collected_at: DateTime<Utc>,
}

#[derive(Serialize)]
pub struct ByJob {
    manifest_id: String,
    display: Vec<DisplayField>,
    summary: Option<Vec<DisplayField>>,
    rows: Vec<ByJobRow>,
    total: u64,
    limit: i64,
    offset: i64,
}

/// `GET /api/inventory/by-job/{manifest_id}`: one job's facts across the
/// fleet by pc_id, `q` a case-insensitive pc_id substring; `total` counts
/// the matches before paging. The columns are those the rows were stored
/// with.
pub async fn by_job(
    State(state): State<AppState>,
    Path(manifest_id): Path<String>,
    ApiQuery(p): ApiQuery<ByJobParams>,
) -> Result<Json<ByJob>, ApiError> {
    check_key("manifest_id", &manifest_id)?;
    let limit = parse_clamped("limit", p.limit.as_deref(), DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let offset = parse_clamped("offset", p.offset.as_deref(), 0, 0, i64::MAX)?;
    let q = p.q.unwrap_or_default().to_lowercase();
    let (store, id) = (state.store.clone(), manifest_id.clone());
    let (page, first) = offload::blocking(move || {
        let keep = |pc: &str| q.is_empty() || pc.to_lowercase().contains(&q);
        let page = store.inventory_for_job(&id, keep, offset as usize, limit as usize)?;
        // The columns when this page is empty: any row of the job's.
        let first = match page.rows.first() {
            Some(_) => None,
            None => store.inventory_for_job(&id, |_| true, 0, 1)?.rows.pop(),
        };
        Ok((page, first))
    })
    .await?;
    let shown = page.rows.first().or(first.as_ref());
    Ok(Json(ByJob {
        display: columns(shown.map(|r| r.display_json.as_str())).unwrap_or_default(),
        summary: columns(shown.and_then(|r| r.summary_json.as_deref())),
        rows: page
            .rows
            .iter()
            .map(|r| ByJobRow {
                pc_id: r.pc_id.clone(),
                facts: facts(r),
                collected_at: r.collected_at,
            })
            .collect(),
        manifest_id,
        total: page.total,
        limit,
        offset,
    }))
}

#[derive(Serialize)]
pub struct PcFacts {
    job_id: String,
    facts: Value,
    display: Vec<DisplayField>,
    summary: Option<Vec<DisplayField>>,
    collected_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
}

/// `GET /api/inventory/{pc_id}`: every inventory job's latest facts of
/// one PC, by job id.
pub async fn for_pc(
    State(state): State<AppState>,
    Path(pc_id): Path<String>,
) -> Result<Json<Vec<PcFacts>>, ApiError> {
    let store = state.store.clone();
    let rows = offload::blocking(move || Ok(store.inventory_for_pc(&pc_id)?)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| PcFacts {
                facts: facts(&r),
                display: columns(Some(&r.display_json)).unwrap_or_default(),
                summary: columns(r.summary_json.as_deref()),
                job_id: r.manifest_id,
                collected_at: r.collected_at,
                recorded_at: r.recorded_at,
            })
            .collect(),
    ))
}
