//! `POST /api/query` (admin; `kanade query`): an operator's read-only SQL
//! over the backend's tables, as kanade 0.101 has it, answered by
//! DataFusion (see `kanade_queries::sql`) through `crate::sql::SqlRunner`, on the query runtime, so ingest
//! and `/health` never wait for it.
//!
//! Body `{sql, limit?}` → `{columns, rows, row_count, truncated,
//! elapsed_ms}`. `limit` defaults to 1,000 rows and is held to 1-10,000;
//! a query runs for at most `[server] query_budget_secs` (default 15;
//! then 408, as the reference) and its sorts, joins and aggregates hold
//! at most `query_memory_mib` (default 256; then 413 naming the cap). Only queries plan: DDL, DML and statements (`SET`,
//! transactions) are refused by the planner, whatever the text; stacked
//! statements are refused too. Bad SQL is a 400 with the planner's words.

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::params::ApiJson;
use crate::api::state::AppState;

const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 10_000;
/// Longest SQL text accepted, in bytes.
const MAX_SQL_BYTES: usize = 64 << 10;

#[derive(Deserialize)]
pub struct QueryRequest {
    sql: String,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct QueryResponse {
    columns: Vec<String>,
    rows: Vec<Vec<serde_json::Value>>,
    row_count: usize,
    truncated: bool,
    elapsed_ms: u128,
}

pub async fn execute(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<QueryRequest>,
) -> Result<Json<QueryResponse>, ApiError> {
    let started = Instant::now();
    let sql = req.sql.trim().to_string();
    if sql.is_empty() {
        return Err(ApiError::bad_param("sql", "empty query"));
    }
    if sql.len() > MAX_SQL_BYTES {
        return Err(ApiError::bad_param(
            "sql",
            format!("{} bytes; at most {MAX_SQL_BYTES} are accepted", sql.len()),
        ));
    }
    let rows = req.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let answer = state.sql.run(&sql, rows).await?;
    Ok(Json(QueryResponse {
        row_count: answer.rows.len(),
        columns: answer.columns,
        rows: answer.rows,
        truncated: answer.truncated,
        elapsed_ms: started.elapsed().as_millis(),
    }))
}
