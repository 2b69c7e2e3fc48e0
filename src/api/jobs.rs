//! `/api/jobs*`, `/api/exec/{job_id}`, `/api/scripts/*` and the JSON
//! schemas: the job catalog in the `jobs` KV bucket (YAML mirror in
//! `jobs_yaml`), revocation in `script_status`, exec through the one
//! pipeline of [`crate::control`].

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kanade_shared::kv::{
    BUCKET_JOBS, BUCKET_JOBS_YAML, BUCKET_SCHEDULES, BUCKET_SCRIPT_STATUS, SCRIPT_STATUS_ACTIVE,
    SCRIPT_STATUS_REVOKED,
};
use kanade_shared::manifest::{FanoutPlan, Manifest, Schedule};
use serde::Serialize;

use super::error::ApiError;
use super::params::{ApiJson, YamlOrJson};
use crate::api::state::AppState;
use crate::audit::Caller;
use crate::control::exec::{ExecOutcome, Initiator};
use crate::control::{check_key, Control};

/// Executions of a job still under way.
#[derive(Serialize)]
struct Live {
    running: usize,
    pending: usize,
}

/// `GET /api/jobs`: every manifest, sorted by id, with its live counts.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let jobs = state.control.list_json::<Manifest>(BUCKET_JOBS).await?;
    let mut out = Vec::with_capacity(jobs.len());
    for (_, m) in jobs {
        let live = Live {
            running: state.store.job_executions_in(&m.id, "running")?.len(),
            pending: state.store.job_executions_in(&m.id, "pending")?.len(),
        };
        let mut v = serde_json::to_value(&m).map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("live".into(), serde_json::json!(live));
        }
        out.push(v);
    }
    Ok(Json(out))
}

#[derive(Serialize)]
pub struct JobSummary {
    id: String,
    version: String,
    description: Option<String>,
    inventory: bool,
}

/// `POST /api/jobs` (JSON or YAML): validate, then upsert the manifest
/// and its YAML.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: YamlOrJson<Manifest>,
) -> Result<Json<JobSummary>, ApiError> {
    let m = body.value;
    check_key("id", &m.id)?;
    m.validate()
        .map_err(|e| ApiError::BadRequest(format!("invalid manifest: {e}")))?;
    // A typed deployment is valid (a deploy plan carries one) but never a
    // catalog job: stored, it would be runnable before any gate exists.
    if let Err(e) = m.execute.require_shell() {
        return Err(ApiError::Unprocessable(e.to_string()));
    }
    put_with_yaml(
        &state.control,
        (BUCKET_JOBS, BUCKET_JOBS_YAML),
        &m.id,
        &m,
        body.yaml,
    )
    .await?;
    let inventory = m.inventory.is_some();
    audit(
        &state.control,
        &caller,
        "job_upsert",
        &m.id,
        serde_json::json!({
            "inventory": inventory, "version": m.version,
        }),
    )
    .await;
    Ok(Json(JobSummary {
        id: m.id,
        version: m.version,
        description: m.description,
        inventory,
    }))
}

/// `GET /api/jobs/{id}/yaml`: the YAML as registered.
pub async fn yaml(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_key("id", &id)?;
    let text = match state
        .control
        .get_text(BUCKET_JOBS_YAML, &id)
        .await
        .ok()
        .flatten()
    {
        Some(t) => t,
        None => {
            let m = job(&state.control, &id).await?;
            serde_yaml::to_string(&m).map_err(|e| ApiError::Internal(e.to_string()))?
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/yaml")], text).into_response())
}

/// The manifest of `id`, or 404.
pub(super) async fn job(control: &Control, id: &str) -> Result<Manifest, ApiError> {
    control
        .get_json::<Manifest>(BUCKET_JOBS, id)
        .await
        .map_err(|e| match e {
            crate::control::Error::Unavailable(_) => ApiError::NotFound(format!("job '{id}' not found")),
            other => other.into(),
        })?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "job '{id}' not found in catalog — register it first with `kanade job create <manifest.yaml>`"
            ))
        })
}

/// `DELETE /api/jobs/{id}`: 409 while a schedule uses it; else revoke
/// its script, then remove the manifest and its YAML.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_key("id", &id)?;
    let schedules = state
        .control
        .list_json::<Schedule>(BUCKET_SCHEDULES)
        .await?;
    if let Some((_, s)) = schedules.iter().find(|(_, s)| s.job_id == id) {
        return Err(ApiError::Conflict(format!(
            "job '{id}' is referenced by schedule '{}'; remove the schedule first",
            s.id
        )));
    }
    state
        .control
        .put(BUCKET_SCRIPT_STATUS, &id, SCRIPT_STATUS_REVOKED)
        .await?;
    state.control.delete(BUCKET_JOBS, &id).await?;
    state.control.delete(BUCKET_JOBS_YAML, &id).await?;
    audit(
        &state.control,
        &caller,
        "job_delete",
        &id,
        serde_json::json!({"cascade_revoke": true}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/jobs/{id}/kill`: `kill.<exec_id>` for every execution of
/// the job still pending or running and every run still in flight.
pub async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_key("id", &id)?;
    let killed = kill_job_runs(&state.control, &id).await?;
    audit(
        &state.control,
        &caller,
        "job_kill",
        &id,
        serde_json::json!({"killed_execs": killed}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Publishes `kill.<exec_id>` for `job_id`'s live executions and
/// in-flight runs (index reads by job); returns how many.
pub(super) async fn kill_job_runs(control: &Control, job_id: &str) -> Result<usize, ApiError> {
    let mut execs = control.store.job_in_flight_exec_ids(job_id)?;
    for status in ["pending", "running"] {
        execs.extend(control.store.job_executions_in(job_id, status)?);
    }
    for exec_id in &execs {
        control
            .publish(kanade_shared::subject::kill(exec_id), bytes::Bytes::new())
            .await?;
    }
    control.flush().await;
    Ok(execs.len())
}

/// `POST /api/exec/{job_id}`: fan the job out (see `control::exec`).
pub async fn exec(
    State(state): State<AppState>,
    caller: Caller,
    Path(job_id): Path<String>,
    ApiJson(plan): ApiJson<FanoutPlan>,
) -> Result<Json<ExecOutcome>, ApiError> {
    check_key("job_id", &job_id)?;
    let manifest = job(&state.control, &job_id).await?;
    let by = Initiator {
        actor: "operator",
        caller: Some(&caller),
    };
    Ok(Json(state.control.exec(&manifest, &plan, by, None).await?))
}

/// `GET /api/scripts/status`: job id → `ACTIVE` / `REVOKED`.
pub async fn scripts_status(
    State(state): State<AppState>,
) -> Result<Json<std::collections::BTreeMap<String, String>>, ApiError> {
    Ok(Json(state.control.list_text(BUCKET_SCRIPT_STATUS).await?))
}

/// `POST /api/scripts/{id}/revoke`.
pub async fn revoke(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<StatusCode, ApiError> {
    set_script_status(state, caller, id, SCRIPT_STATUS_REVOKED, "script_revoke").await
}

/// `POST /api/scripts/{id}/unrevoke`.
pub async fn unrevoke(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<StatusCode, ApiError> {
    set_script_status(state, caller, id, SCRIPT_STATUS_ACTIVE, "script_unrevoke").await
}

async fn set_script_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    value: &'static str,
    action: &str,
) -> Result<StatusCode, ApiError> {
    check_key("id", &id)?;
    state.control.put(BUCKET_SCRIPT_STATUS, &id, value).await?;
    audit(&state.control, &caller, action, &id, serde_json::json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/schemas/manifest.json`.
pub async fn manifest_schema() -> Json<serde_json::Value> {
    Json(serde_json::to_value(schemars::schema_for!(Manifest)).unwrap_or_default())
}

/// `GET /api/schemas/schedule.json`.
pub async fn schedule_schema() -> Json<serde_json::Value> {
    Json(serde_json::to_value(schemars::schema_for!(Schedule)).unwrap_or_default())
}

/// Stores `value` as JSON under `id` of `buckets.0` and its YAML (as the
/// caller sent it, else rendered) under `id` of `buckets.1`.
pub(super) async fn put_with_yaml<T: serde::Serialize>(
    control: &Control,
    buckets: (&str, &str),
    id: &str,
    value: &T,
    yaml: Option<String>,
) -> Result<(), ApiError> {
    let json = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let yaml = match yaml {
        Some(y) => y,
        None => serde_yaml::to_string(value).map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    control.put(buckets.0, id, json).await?;
    control.put(buckets.1, id, yaml).await?;
    Ok(())
}

/// The YAML of `id` as registered in `yaml_bucket`, else `value` rendered,
/// as an `application/yaml` answer.
pub(super) async fn yaml_answer<T: serde::Serialize>(
    control: &Control,
    yaml_bucket: &str,
    id: &str,
    value: &T,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let text = match control.get_text(yaml_bucket, id).await {
        Ok(Some(t)) => t,
        _ => serde_yaml::to_string(value).map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        text,
    )
        .into_response())
}

/// Deletes `id` from `buckets.0` and, best effort, its YAML from `buckets.1`.
pub(super) async fn delete_with_yaml(
    control: &Control,
    buckets: (&str, &str),
    id: &str,
) -> Result<(), ApiError> {
    control.delete(buckets.0, id).await?;
    if let Err(e) = control.delete(buckets.1, id).await {
        tracing::warn!(bucket = buckets.1, %id, error = %e, "YAML mirror not deleted");
    }
    Ok(())
}

/// An operator's mutation, audited as the reference does.
pub(super) async fn audit(
    control: &Control,
    caller: &Caller,
    action: &str,
    target: &str,
    payload: serde_json::Value,
) {
    crate::audit::record(
        &control.nats,
        "operator",
        action,
        Some(target),
        Some(caller),
        payload,
    )
    .await;
}
