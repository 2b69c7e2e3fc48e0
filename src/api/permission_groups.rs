//! `/api/permission-groups`: named page allow-lists accounts may belong
//! to (admin), with kanade 0.101's shapes. A group's pages apply to its
//! members on their next request; a group with members cannot be deleted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use kanade_shared::feature::Feature;
use kanade_storage::{PermissionGroupRecord, UserChange};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::offload::store as blocking;
use super::params::ApiJson;
use crate::api::state::AppState;
use crate::audit::{self, Caller};

/// One group as listed.
#[derive(Serialize)]
pub struct GroupRow {
    name: String,
    features: Vec<String>,
    member_count: usize,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// `GET /api/permission-groups`, by name.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<GroupRow>>, ApiError> {
    let store = state.store.clone();
    let groups = blocking(move || store.permission_groups()).await?;
    Ok(Json(
        groups
            .into_iter()
            .map(|(g, member_count)| GroupRow {
                name: g.name,
                // Keys the catalogue no longer knows are not shown.
                features: g
                    .features
                    .into_iter()
                    .filter(|k| Feature::parse(k).is_some())
                    .collect(),
                member_count,
                created_at: g.created_at,
                updated_at: g.updated_at,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct CreateRequest {
    name: String,
    #[serde(default)]
    features: Vec<String>,
}

/// Group names become URL path segments and audit targets: keep them plain.
fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ' '));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_param(
            "name",
            "1 to 64 letters, digits, spaces, '.', '_' or '-'",
        ))
    }
}

/// `POST /api/permission-groups` → 201; 409 when the name is taken.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<StatusCode, ApiError> {
    let name = req.name.trim().to_string();
    valid_name(&name)?;
    let features = super::params::feature_list("features", &req.features)?;
    let now = Utc::now();
    let record = PermissionGroupRecord {
        name: name.clone(),
        features: features.clone(),
        created_at: now,
        updated_at: now,
    };
    let store = state.store.clone();
    match blocking(move || store.insert_permission_group(&record)).await? {
        UserChange::Applied => {}
        UserChange::Taken => {
            return Err(ApiError::Conflict(format!("group {name} already exists")))
        }
        other => return Err(ApiError::Internal(format!("group insert: {other:?}"))),
    }
    audit::record(
        &state.nats,
        "admin",
        "permission_group.create",
        Some(&name),
        Some(&caller),
        serde_json::json!({ "features": features }),
    )
    .await;
    Ok(StatusCode::CREATED)
}

#[derive(Deserialize)]
pub struct UpdateRequest {
    features: Vec<String>,
}

/// `PATCH /api/permission-groups/{name}`: replaces its pages.
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: Caller,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Result<StatusCode, ApiError> {
    let features = super::params::feature_list("features", &req.features)?;
    let (store, n, f) = (state.store.clone(), name.clone(), features.clone());
    match blocking(move || store.update_permission_group(&n, &f, Utc::now())).await? {
        UserChange::Applied => {}
        UserChange::NotFound => return Err(ApiError::NotFound(format!("permission group {name}"))),
        other => return Err(ApiError::Internal(format!("group update: {other:?}"))),
    }
    audit::record(
        &state.nats,
        "admin",
        "permission_group.update",
        Some(&name),
        Some(&caller),
        serde_json::json!({ "features": features }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/permission-groups/{name}`; 409 while accounts belong to it.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let (store, n) = (state.store.clone(), name.clone());
    match blocking(move || store.delete_permission_group(&n)).await? {
        UserChange::Applied => {}
        UserChange::NotFound => return Err(ApiError::NotFound(format!("permission group {name}"))),
        UserChange::HasMembers => {
            return Err(ApiError::Conflict(
                "group still has member(s); reassign them first".into(),
            ))
        }
        other => return Err(ApiError::Internal(format!("group delete: {other:?}"))),
    }
    audit::record(
        &state.nats,
        "admin",
        "permission_group.delete",
        Some(&name),
        Some(&caller),
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
