//! `POST /api/query` (admin; `kanade query`): an operator's read-only SQL
//! over the backend's tables, as kanade 0.101 has it, answered by
//! DataFusion (see `kanade_queries::sql`) on the query runtime, so ingest
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
use kanade_queries::{SqlExtras, SqlLimits};
use kanade_shared::kv::BUCKET_AGENT_META;
use kanade_shared::wire::AgentMeta;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::offload;
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
    let limits = SqlLimits {
        rows: req.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        memory_bytes: state.query_limits.memory_bytes,
    };
    let extras = SqlExtras {
        agent_meta: state
            .control
            .list_json::<AgentMeta>(BUCKET_AGENT_META)
            .await?
            .into_iter()
            .flat_map(|(pc, m)| {
                m.entries
                    .into_iter()
                    .map(move |e| (pc.clone(), e.key, e.value))
            })
            .collect(),
    };
    let queries = state.queries.clone();
    let budget = state.query_limits.budget;
    // The budget runs inside the query's task: past it the query is
    // dropped there (its scans stop), not just no longer awaited here.
    let run = offload::query(async move {
        match tokio::time::timeout(budget, queries.sql(&sql, limits, extras)).await {
            Ok(answer) => answer.map(Some),
            Err(_) => Ok(None),
        }
    });
    let answer = match run.await {
        Ok(None) => {
            return Err(ApiError::RequestTimeout(format!(
                "query exceeded the {}s budget; narrow it",
                budget.as_secs()
            )))
        }
        Err(ApiError::Query(kanade_queries::Error::Sql { message, memory })) => {
            return Err(if memory {
                ApiError::PayloadTooLarge(format!(
                    "query needs more than the {} MiB a query may hold; narrow it ({message})",
                    limits.memory_bytes >> 20
                ))
            } else {
                ApiError::BadRequest(format!("query failed: {message}"))
            })
        }
        Ok(Some(answer)) => answer,
        Err(e) => return Err(e),
    };
    Ok(Json(QueryResponse {
        row_count: answer.rows.len(),
        columns: answer.columns,
        rows: answer.rows,
        truncated: answer.truncated,
        elapsed_ms: started.elapsed().as_millis(),
    }))
}
