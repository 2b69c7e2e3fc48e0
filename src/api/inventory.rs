//! Inventory: the latest facts of inventory jobs (manifests with an
//! `inventory` hint), per PC and per job — `GET /api/inventory/jobs`,
//! `/api/inventory/by-job/{manifest_id}?limit&offset&q` and
//! `/api/inventory/{pc_id}`, with the reference's shapes. Facts are the
//! raw JSON stdout of each PC's newest successful run (by when it
//! finished), stored with the display and summary columns it was shown
//! with. The fleet-wide search over exploded rows
//! (`/{manifest_id}/search/{field}`, and its CSV/Parquet export) and the
//! change history (`/{manifest_id}/history/{pc/{pc_id},search,first_seen}`)
//! are answered by the columnar engine.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use kanade_queries::inventory::{Filter, FirstSeen, HistoryEvent, HistoryFilter, Layout};
use kanade_shared::kv::BUCKET_JOBS;
use kanade_shared::manifest::{DisplayField, ExplodeSpec, Manifest};
use kanade_storage::InventoryFactRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::offload;
use super::params::{parse_clamped, parse_time, ApiQuery};
use crate::api::state::AppState;
use crate::control::check_key;
use crate::control::manifests::layouts;

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
    /// PCs with facts of this job (the fleet sidebar's tally).
    pc_count: u64,
}

/// `GET /api/inventory/jobs`: the registered inventory jobs, by id, each
/// with how many PCs reported it.
pub async fn jobs(State(state): State<AppState>) -> Result<Json<Vec<InventoryJob>>, ApiError> {
    let jobs = state.control.list_json::<Manifest>(BUCKET_JOBS).await?;
    let mut out: Vec<InventoryJob> = jobs
        .into_iter()
        .filter_map(|(_, m)| {
            let hint = m.inventory?;
            Some(InventoryJob {
                manifest_id: m.id,
                description: m.description,
                display: hint.display,
                summary: hint.summary,
                explode: hint.explode,
                pc_count: 0,
            })
        })
        .collect();
    let (store, ids) = (
        state.store.clone(),
        out.iter()
            .map(|j| j.manifest_id.clone())
            .collect::<Vec<_>>(),
    );
    // The job's index entries alone, no facts decoded.
    let counts = offload::blocking(move || {
        ids.iter()
            .map(|id| Ok(store.inventory_for_job(id, |_| true, 0, 0)?.total))
            .collect::<Result<Vec<u64>, ApiError>>()
    })
    .await?;
    for (job, n) in out.iter_mut().zip(counts) {
        job.pc_count = n;
    }
    Ok(Json(out))
}

/// A stored facts JSON as a value (`null` if it no longer parses).
fn facts(r: &InventoryFactRecord) -> Value {
    serde_json::from_str(&r.facts_json).unwrap_or(Value::Null)
}

fn columns(json: Option<&str>) -> Option<Vec<DisplayField>> {
    serde_json::from_str(json?).ok()
}

struct ByJobParams {
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
///
/// With `table=`, `distinct=` or `format=page` (the 0.101 dashboard), the
/// column state applies: see `inventory_table`.
pub async fn by_job(
    State(state): State<AppState>,
    Path(manifest_id): Path<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    check_key("manifest_id", &manifest_id)?;
    if super::inventory_table::wanted(&pairs) {
        let hint = super::inventory_table::hint_of(&state, &manifest_id).await?;
        let source = super::inventory_table::Source::Fleet(hint);
        return Ok(Json(
            super::inventory_table::run(&state, &manifest_id, source, &pairs, true).await?,
        )
        .into_response());
    }
    let last = |name: &str| super::inventory_table::param(&pairs, name).map(str::to_string);
    let p = ByJobParams {
        limit: last("limit"),
        offset: last("offset"),
        q: last("q"),
    };
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
    })
    .into_response())
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

/// Rows of a search per page: default and most.
const SEARCH_DEFAULT_LIMIT: i64 = 1_000;
const SEARCH_MAX_LIMIT: i64 = 5_000;
/// History events per page: default and most.
const HISTORY_DEFAULT_LIMIT: i64 = 500;
const HISTORY_MAX_LIMIT: i64 = 5_000;

/// The checked layout of one explode field of a registered manifest: 404
/// when the manifest, its inventory hint or the field is missing; 409
/// when the registered spec itself is unusable.
async fn layout_of(state: &AppState, manifest_id: &str, field: &str) -> Result<Layout, ApiError> {
    check_key("manifest_id", manifest_id)?;
    let m = state
        .inventory
        .manifests
        .get(manifest_id)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("manifest {manifest_id:?} not registered")))?;
    let specs = m
        .inventory
        .as_ref()
        .ok_or_else(|| {
            ApiError::NotFound(format!("manifest {manifest_id:?} has no inventory hint"))
        })?
        .explode
        .as_ref()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            ApiError::NotFound(format!("manifest {manifest_id:?} has no explode specs"))
        })?;
    let at = specs.iter().position(|s| s.field == field).ok_or_else(|| {
        ApiError::NotFound(format!(
            "manifest {manifest_id:?} has no explode field {field:?}"
        ))
    })?;
    layouts(&m)
        .swap_remove(at)
        .map_err(|e| ApiError::Conflict(format!("manifest {manifest_id:?}: {e}")))
}

/// The last value of each named parameter, and every other pair.
fn split_params<'a>(
    pairs: &'a [(String, String)],
    named: &[&'static str],
) -> (HashMap<&'static str, &'a str>, Vec<(&'a str, &'a str)>) {
    let mut found = HashMap::new();
    let mut rest = Vec::new();
    for (k, v) in pairs {
        match named.iter().find(|n| **n == k) {
            Some(n) => {
                found.insert(*n, v.as_str());
            }
            None => rest.push((k.as_str(), v.as_str())),
        }
    }
    (found, rest)
}

fn search_filters(layout: &Layout, pairs: &[(&str, &str)]) -> Result<Vec<Filter>, ApiError> {
    pairs
        .iter()
        .map(|(k, v)| Filter::parse(layout, k, v).map_err(ApiError::BadRequest))
        .collect()
}

/// `GET /api/inventory/{manifest_id}/search/{field}?<column>[__op]=value&limit&offset`:
/// the exploded rows of every PC matching all filters, by pc_id and
/// primary key. Operators `eq` (the default), `ne`, `lt`, `le`, `gt`,
/// `ge` compare numerically on integer and real columns (a value that is
/// no number is a 400) and as strings on text ones; `contains`, `prefix`
/// and `suffix` match text, ignoring case.
pub async fn search(
    State(state): State<AppState>,
    Path((manifest_id, field)): Path<(String, String)>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let layout = layout_of(&state, &manifest_id, &field).await?;
    if super::inventory_table::wanted(&pairs) {
        let source = super::inventory_table::Source::Explode(layout);
        return Ok(Json(
            super::inventory_table::run(&state, &manifest_id, source, &pairs, true).await?,
        )
        .into_response());
    }
    let (named, rest) = split_params(&pairs, &["limit", "offset"]);
    let limit = parse_clamped(
        "limit",
        named.get("limit").copied(),
        SEARCH_DEFAULT_LIMIT,
        0,
        SEARCH_MAX_LIMIT,
    )?;
    let offset = parse_clamped("offset", named.get("offset").copied(), 0, 0, i64::MAX)?;
    let filters = search_filters(&layout, &rest)?;
    let explode = Arc::clone(&state.inventory.explode);
    let page = offload::query(async move {
        explode
            .search(&layout, &filters, offset as usize, limit as usize)
            .await
    })
    .await?;
    Ok(Json(page.rows).into_response())
}

/// `GET /api/inventory/{manifest_id}/search-scalars?<field>[__op]=value&limit&offset`:
/// the PCs whose scalar display fields (all but tables) match every
/// filter, by pc_id (`limit` 1,000 by default, at most 5,000), each with
/// those fields, its collection time and last logon; with `table=`,
/// `distinct=` or `format=page` the dashboard's table (see
/// `inventory_table`).
pub async fn search_scalars(
    State(state): State<AppState>,
    Path(manifest_id): Path<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    check_key("manifest_id", &manifest_id)?;
    let hint = super::inventory_table::hint_of(&state, &manifest_id).await?;
    let table = super::inventory_table::wanted(&pairs);
    let source = super::inventory_table::Source::Scalars(hint);
    Ok(Json(
        super::inventory_table::run(&state, &manifest_id, source, &pairs, table).await?,
    ))
}

/// `GET /api/inventory/{manifest_id}/search/{field}/export?format=csv|parquet&<filters>`:
/// every matching row as a download named after the explode table.
pub async fn search_export(
    State(state): State<AppState>,
    Path((manifest_id, field)): Path<(String, String)>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let layout = layout_of(&state, &manifest_id, &field).await?;
    let (named, rest) = split_params(&pairs, &["format"]);
    let csv = match named.get("format").copied().unwrap_or("csv") {
        "csv" => true,
        "parquet" => false,
        other => {
            return Err(ApiError::bad_param(
                "format",
                format!("{other:?} is not csv or parquet"),
            ))
        }
    };
    let filters = search_filters(&layout, &rest)?;
    let file = format!(
        "{}.{}",
        layout.table.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-',
            "_"
        ),
        if csv { "csv" } else { "parquet" }
    );
    let explode = Arc::clone(&state.inventory.explode);
    let export = offload::query(async move { explode.export(&layout, &filters).await }).await?;
    let (writer, reader) = tokio::io::duplex(256 * 1024);
    if csv {
        offload::spawn_query_task(super::export::write_csv(export, writer));
    } else {
        offload::spawn_query_task(super::export::write_parquet(export, writer));
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/vnd.apache.parquet"
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// The filters of the history routes; `kinds` says whether `kind` and
/// `until` are accepted (the fleet search) or not (first_seen).
fn history_filter(
    manifest_id: &str,
    pairs: &[(String, String)],
    kinds: bool,
) -> Result<(HistoryFilter, HashMap<&'static str, String>), ApiError> {
    check_key("manifest_id", manifest_id)?;
    let mut f = HistoryFilter {
        job_id: manifest_id.to_string(),
        ..HistoryFilter::default()
    };
    let mut paging = HashMap::new();
    let nonempty = |v: &str| (!v.is_empty()).then(|| v.to_string());
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => drop(paging.insert("limit", v.clone())),
            "offset" => drop(paging.insert("offset", v.clone())),
            "field" => f.field = nonempty(v),
            "since" if !v.is_empty() => f.since = Some(parse_time("since", v)?),
            "until" if kinds && !v.is_empty() => f.until = Some(parse_time("until", v)?),
            "kind" if kinds => {
                f.kind = match v.as_str() {
                    "" => None,
                    "added" | "removed" | "changed" => Some(v.clone()),
                    other => {
                        return Err(ApiError::bad_param(
                            "kind",
                            format!("kind must be one of added / removed / changed (got {other:?})"),
                        ))
                    }
                }
            }
            "since" | "until" | "kind" if v.is_empty() => {}
            key => match key.strip_prefix("identity.") {
                Some("") => {
                    return Err(ApiError::BadRequest(
                        "identity.: the identity key is empty".into(),
                    ))
                }
                Some(id) => f.identity.push((id.to_string(), v.clone())),
                None => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown parameter {key:?} (expected limit, offset, field, since{}, identity.<key>)",
                        if kinds { ", until, kind" } else { "" }
                    )))
                }
            },
        }
    }
    Ok((f, paging))
}

/// `limit` (at most 5,000) and `offset` of the history routes.
fn history_paging(
    paging: &HashMap<&'static str, String>,
    default_limit: i64,
) -> Result<(i64, i64), ApiError> {
    let raw = |k: &str| paging.get(k).map(String::as_str);
    let limit = parse_clamped("limit", raw("limit"), default_limit, 0, HISTORY_MAX_LIMIT)?;
    let offset = parse_clamped("offset", raw("offset"), 0, 0, i64::MAX)?;
    Ok((limit, offset))
}

#[derive(Deserialize)]
pub struct PcHistoryParams {
    field: Option<String>,
    since: Option<String>,
    limit: Option<String>,
}

/// `GET /api/inventory/{manifest_id}/history/pc/{pc_id}?field&since&limit`:
/// one PC's changes of one job, newest first (500 by default, 5,000 at
/// most).
pub async fn history_for_pc(
    State(state): State<AppState>,
    Path((manifest_id, pc_id)): Path<(String, String)>,
    ApiQuery(p): ApiQuery<PcHistoryParams>,
) -> Result<Json<Vec<HistoryEvent>>, ApiError> {
    check_key("manifest_id", &manifest_id)?;
    let limit = parse_clamped(
        "limit",
        p.limit.as_deref(),
        HISTORY_DEFAULT_LIMIT,
        0,
        HISTORY_MAX_LIMIT,
    )?;
    let since = match p.since.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(parse_time("since", s)?),
        None => None,
    };
    let f = HistoryFilter {
        job_id: manifest_id,
        pc_id: Some(pc_id),
        field: p.field.filter(|s| !s.is_empty()),
        since,
        ..HistoryFilter::default()
    };
    let q = state.inventory.history.clone();
    let rows = offload::query(async move { q.events(&f, 0, limit as usize).await }).await?;
    Ok(Json(rows))
}

/// `GET /api/inventory/{manifest_id}/history/search?kind&since&until&field&identity.<key>=v&limit&offset`:
/// the fleet's changes of one job, newest first.
pub async fn history_search(
    State(state): State<AppState>,
    Path(manifest_id): Path<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<Vec<HistoryEvent>>, ApiError> {
    let (f, paging) = history_filter(&manifest_id, &pairs, true)?;
    let (limit, offset) = history_paging(&paging, HISTORY_DEFAULT_LIMIT)?;
    let q = state.inventory.history.clone();
    let rows =
        offload::query(async move { q.events(&f, offset as usize, limit as usize).await }).await?;
    Ok(Json(rows))
}

/// `GET /api/inventory/{manifest_id}/history/first_seen?field&since&identity.<key>=v&limit&offset`:
/// each PC's earliest matching change, earliest first.
pub async fn history_first_seen(
    State(state): State<AppState>,
    Path(manifest_id): Path<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<Vec<FirstSeen>>, ApiError> {
    let (f, paging) = history_filter(&manifest_id, &pairs, false)?;
    let (limit, offset) = history_paging(&paging, HISTORY_MAX_LIMIT)?;
    let q = state.inventory.history.clone();
    let rows =
        offload::query(async move { q.first_seen(&f, offset as usize, limit as usize).await })
            .await?;
    Ok(Json(rows))
}
