//! Host perf endpoints: `/api/agents/{pc_id}/perf`, `/api/perf/fleet`,
//! `/api/perf/top`, `/api/perf/active-investigations`.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use kanade_queries::{Aggregate, HostMetric, HostPoint};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::offload;
use super::params::{parse_clamped, parse_duration_secs, ApiQuery, TimeWindow, WindowParams};
use crate::api::state::AppState;

const DEFAULT_SPAN: Duration = Duration::hours(1);
const DEFAULT_STEP_SECS: i64 = 300;
const DEFAULT_TOP_WINDOW_SECS: i64 = 300;
const DEFAULT_TOP_LIMIT: i64 = 5;
const MAX_TOP_LIMIT: i64 = 50;
const ACTIVE_WINDOW_SECS: i64 = 300;

#[derive(Serialize)]
pub struct PerfResponse {
    pc_id: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step_seconds: i64,
    points: Vec<HostPoint>,
}

/// `GET /api/agents/{pc_id}/perf?from&to&step`.
pub async fn host_timeline(
    State(state): State<AppState>,
    Path(pc_id): Path<String>,
    ApiQuery(params): ApiQuery<WindowParams>,
) -> Result<Json<PerfResponse>, ApiError> {
    let w = TimeWindow::try_from_params(&params, Utc::now(), DEFAULT_SPAN, DEFAULT_STEP_SECS)?;
    let (q, pc) = (state.queries.clone(), pc_id.clone());
    let points =
        offload::query(async move { q.host_timeline(&pc, w.from, w.to, w.step_secs).await })
            .await?;
    Ok(Json(PerfResponse {
        pc_id,
        from: w.from,
        to: w.to,
        step_seconds: w.step_secs,
        points,
    }))
}

/// Parses a host metric parameter (default `cpu_pct`).
pub fn host_metric(raw: Option<&str>) -> Result<HostMetric, ApiError> {
    let raw = raw.unwrap_or("cpu_pct");
    HostMetric::try_parse(raw).ok_or_else(|| {
        ApiError::bad_param(
            "metric",
            format!(
                "unknown metric {raw:?}; expected one of {}",
                HostMetric::ACCEPTED
            ),
        )
    })
}

#[derive(Deserialize)]
pub struct FleetParams {
    metric: Option<String>,
    agg: Option<String>,
    #[serde(flatten)]
    window: WindowParams,
}

#[derive(Serialize)]
pub struct FleetResponse {
    metric: &'static str,
    agg: &'static str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step_seconds: i64,
    points: Vec<FleetPoint>,
}

#[derive(Serialize)]
pub struct FleetPoint {
    at: DateTime<Utc>,
    value: Option<f64>,
}

/// `GET /api/perf/fleet?metric&agg&from&to&step`.
pub async fn fleet(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<FleetParams>,
) -> Result<Json<FleetResponse>, ApiError> {
    let metric = host_metric(params.metric.as_deref())?;
    let agg_raw = params.agg.as_deref().unwrap_or("avg");
    let agg = Aggregate::try_parse(agg_raw).ok_or_else(|| {
        ApiError::bad_param(
            "agg",
            format!("unknown aggregate {agg_raw:?}; expected avg or max"),
        )
    })?;
    let w =
        TimeWindow::try_from_params(&params.window, Utc::now(), DEFAULT_SPAN, DEFAULT_STEP_SECS)?;
    let q = state.queries.clone();
    let points =
        offload::query(async move { q.fleet_series(metric, agg, w.from, w.to, w.step_secs).await })
            .await?;
    Ok(Json(FleetResponse {
        metric: metric.column(),
        agg: agg.name(),
        from: w.from,
        to: w.to,
        step_seconds: w.step_secs,
        points: points
            .into_iter()
            .map(|p| FleetPoint {
                at: p.at,
                value: p.value,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
pub struct TopParams {
    metric: Option<String>,
    window: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
pub struct TopResponse {
    metric: &'static str,
    window_seconds: i64,
    rows: Vec<TopRow>,
}

#[derive(Serialize)]
pub struct TopRow {
    pc_id: String,
    hostname: Option<String>,
    value: f64,
}

/// `GET /api/perf/top?metric&window&limit`.
pub async fn top(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<TopParams>,
) -> Result<Json<TopResponse>, ApiError> {
    let metric = host_metric(params.metric.as_deref())?;
    let window_secs = match params.window.as_deref() {
        Some(raw) => parse_duration_secs("window", raw)?,
        None => DEFAULT_TOP_WINDOW_SECS,
    };
    let limit = parse_clamped(
        "limit",
        params.limit.as_deref(),
        DEFAULT_TOP_LIMIT,
        1,
        MAX_TOP_LIMIT,
    )?;
    let now = Utc::now();
    let q = state.queries.clone();
    let from = now - Duration::seconds(window_secs);
    let rows =
        offload::query(async move { q.top_pcs(metric, from, now, limit as usize).await }).await?;
    Ok(Json(TopResponse {
        metric: metric.column(),
        window_seconds: window_secs,
        rows: rows
            .into_iter()
            .map(|r| TopRow {
                hostname: r.hostname,
                pc_id: r.pc_id,
                value: r.value,
            })
            .collect(),
    }))
}

#[derive(Serialize)]
pub struct ActiveResponse {
    window_seconds: i64,
    rows: Vec<ActiveRow>,
}

#[derive(Serialize)]
pub struct ActiveRow {
    pc_id: String,
    hostname: Option<String>,
    latest_at: DateTime<Utc>,
}

/// `GET /api/perf/active-investigations`.
pub async fn active_investigations(
    State(state): State<AppState>,
) -> Result<Json<ActiveResponse>, ApiError> {
    let now = Utc::now();
    let q = state.queries.clone();
    let from = now - Duration::seconds(ACTIVE_WINDOW_SECS);
    let rows = offload::query(async move { q.active_investigations(from, now).await }).await?;
    Ok(Json(ActiveResponse {
        window_seconds: ACTIVE_WINDOW_SECS,
        rows: rows
            .into_iter()
            .map(|r| ActiveRow {
                hostname: r.hostname,
                pc_id: r.pc_id,
                latest_at: r.latest_at,
            })
            .collect(),
    }))
}
