//! `/api/executions` and `/api/executions/{exec_id}`.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use kanade_storage::ExecutionRecord;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::params::{parse_limit, ApiQuery};
use crate::api::state::AppState;

const DEFAULT_LIMIT: u32 = 50;

#[derive(Serialize)]
pub struct ExecutionRow {
    exec_id: String,
    job_id: String,
    version: String,
    initiated_by: String,
    initiated_at: Option<DateTime<Utc>>,
    target_count: i64,
    success_count: i64,
    failure_count: i64,
    status: String,
}

impl From<ExecutionRecord> for ExecutionRow {
    fn from(e: ExecutionRecord) -> Self {
        Self {
            exec_id: e.exec_id,
            job_id: e.job_id,
            version: e.version,
            initiated_by: e.initiated_by,
            initiated_at: Some(e.initiated_at),
            target_count: e.target_count,
            success_count: e.success_count,
            failure_count: e.failure_count,
            status: e.status,
        }
    }
}

#[derive(Deserialize)]
pub struct ListParams {
    limit: Option<String>,
    job_id: Option<String>,
    status: Option<String>,
}

/// `GET /api/executions?limit&job_id&status`: newest first.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<Vec<ExecutionRow>>, ApiError> {
    let limit = parse_limit(p.limit.as_deref(), DEFAULT_LIMIT)?;
    let job = p.job_id.filter(|s| !s.is_empty());
    let status = p.status.filter(|s| !s.is_empty());
    let mut out = Vec::new();
    if limit > 0 {
        state.store.scan_executions_desc(|e| {
            if job.as_deref().is_none_or(|j| e.job_id == j)
                && status.as_deref().is_none_or(|s| e.status == s)
            {
                out.push(ExecutionRow::from(e));
            }
            out.len() < limit
        })?;
    }
    Ok(Json(out))
}

#[derive(Serialize)]
pub struct ExecutionDetail {
    execution: ExecutionRow,
    results: Vec<ResultSummary>,
}

#[derive(Serialize)]
pub struct ResultSummary {
    result_id: String,
    request_id: String,
    pc_id: String,
    exit_code: i64,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

/// `GET /api/executions/{exec_id}`: the execution and its results, most
/// recently recorded first.
pub async fn detail(
    State(state): State<AppState>,
    Path(exec_id): Path<String>,
) -> Result<Json<ExecutionDetail>, ApiError> {
    let execution = state
        .store
        .execution(&exec_id)?
        .ok_or_else(|| ApiError::NotFound(format!("execution {exec_id}")))?;
    let mut results = state.store.results_of_execution(&exec_id)?;
    results.sort_by(|a, b| {
        b.recorded_at
            .cmp(&a.recorded_at)
            .then_with(|| b.result_id.cmp(&a.result_id))
    });
    Ok(Json(ExecutionDetail {
        execution: execution.into(),
        results: results
            .into_iter()
            .map(|r| ResultSummary {
                result_id: r.result_id,
                request_id: r.request_id,
                pc_id: r.pc_id,
                exit_code: r.exit_code.unwrap_or(0),
                started_at: Some(r.started_at),
                finished_at: r.finished_at,
            })
            .collect(),
    }))
}
