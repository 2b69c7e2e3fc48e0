//! Process perf endpoints: `/api/agents/{pc_id}/processes` and
//! `/api/agents/{pc_id}/processes/timeline`.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use kanade_queries::ProcessMetric;
use kanade_storage::ProcessPerfRow;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::offload;
use super::params::{parse_clamped, ApiQuery, TimeWindow, WindowParams};
use crate::api::state::AppState;

const DEFAULT_SPAN: Duration = Duration::hours(1);
const DEFAULT_STEP_SECS: i64 = 60;
const DEFAULT_TOP: i64 = 5;
const MAX_TOP: i64 = 20;

#[derive(Serialize)]
pub struct ProcessesResponse {
    pc_id: String,
    latest_at: Option<DateTime<Utc>>,
    processes: Vec<ProcessPerfRow>,
}

/// `GET /api/agents/{pc_id}/processes`: the latest tick, cpu descending.
pub async fn latest(
    State(state): State<AppState>,
    Path(pc_id): Path<String>,
) -> Result<Json<ProcessesResponse>, ApiError> {
    let (q, pc) = (state.queries.clone(), pc_id.clone());
    let tick = offload::query(async move { q.latest_tick(&pc).await }).await?;
    Ok(Json(ProcessesResponse {
        pc_id,
        latest_at: tick.latest_at,
        processes: tick.processes,
    }))
}

#[derive(Deserialize)]
pub struct TimelineParams {
    metric: Option<String>,
    top: Option<String>,
    #[serde(flatten)]
    window: WindowParams,
}

#[derive(Serialize)]
pub struct TimelineResponse {
    pc_id: String,
    metric: &'static str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step_seconds: i64,
    names: Vec<String>,
    points: Vec<TimelinePoint>,
}

#[derive(Serialize)]
pub struct TimelinePoint {
    at: DateTime<Utc>,
    values: HashMap<String, f64>,
}

/// `GET /api/agents/{pc_id}/processes/timeline?metric&from&to&step&top`.
pub async fn timeline(
    State(state): State<AppState>,
    Path(pc_id): Path<String>,
    ApiQuery(params): ApiQuery<TimelineParams>,
) -> Result<Json<TimelineResponse>, ApiError> {
    let raw = params.metric.as_deref().unwrap_or("cpu_pct");
    let metric = ProcessMetric::try_parse(raw).ok_or_else(|| {
        ApiError::bad_param(
            "metric",
            format!(
                "unknown metric {raw:?}; expected one of {}",
                ProcessMetric::ACCEPTED
            ),
        )
    })?;
    let w =
        TimeWindow::try_from_params(&params.window, Utc::now(), DEFAULT_SPAN, DEFAULT_STEP_SECS)?;
    let top = parse_clamped("top", params.top.as_deref(), DEFAULT_TOP, 1, MAX_TOP)?;
    let (q, pc) = (state.queries.clone(), pc_id.clone());
    let timeline = offload::query(async move {
        q.process_timeline(&pc, metric, w.from, w.to, w.step_secs, top as usize)
            .await
    })
    .await?;
    Ok(Json(TimelineResponse {
        pc_id,
        metric: metric.column(),
        from: w.from,
        to: w.to,
        step_seconds: w.step_secs,
        names: timeline.names,
        points: timeline
            .points
            .into_iter()
            .map(|p| TimelinePoint {
                at: p.at,
                values: p.values,
            })
            .collect(),
    }))
}
