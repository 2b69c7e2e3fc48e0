//! `/api/group-defs*`: declared groups in the `group_defs` KV bucket
//! (YAML as sent in `group_defs_yaml`). A static group lists its PCs; a
//! dynamic (`query:`) group's members are the `pc_id`s its read-only SQL
//! answers (checked to plan with that column before it is stored, run
//! through `crate::sql::GroupMembers`). The derived membership agents
//! read is written by `tasks::groups`; the list says when each dynamic
//! group last resolved, to how many PCs, or why it did not.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use kanade_shared::kv::{BUCKET_GROUP_DEFS, BUCKET_GROUP_DEFS_YAML};
use kanade_shared::manifest::{is_valid_resource_id, GroupDef};
use serde::Serialize;

use super::error::ApiError;
use super::jobs::{audit, delete_with_yaml, put_with_yaml, yaml_answer};
use super::params::YamlOrJson;
use crate::api::state::AppState;
use crate::audit::Caller;
use crate::control::groups::static_members;

/// What a POST answers.
#[derive(Serialize)]
pub struct Summary {
    id: String,
    description: Option<String>,
    kind: &'static str,
    member_count: Option<usize>,
    tags: Vec<String>,
}

fn kind(def: &GroupDef) -> &'static str {
    if def.dynamic_query().is_some() {
        "dynamic"
    } else {
        "static"
    }
}

/// An id from the path, checked before it reaches the broker.
fn check_id(id: &str) -> Result<(), ApiError> {
    if is_valid_resource_id(id) && id.len() <= 256 {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid group id {} (allowed: [A-Za-z0-9._-], at most 256)",
            crate::control::abbreviated(id)
        )))
    }
}

/// The definition of `id`, or 404.
async fn find(state: &AppState, id: &str) -> Result<GroupDef, ApiError> {
    check_id(id)?;
    let found = match state
        .control
        .get_json::<GroupDef>(BUCKET_GROUP_DEFS, id)
        .await
    {
        Err(crate::control::Error::Unavailable(_)) => None,
        other => other?,
    };
    found.ok_or_else(|| ApiError::NotFound(format!("group '{id}' not found")))
}

/// A definition as listed: the group as registered, and for a dynamic
/// one its last resolution.
#[derive(Serialize)]
pub struct Listed {
    #[serde(flatten)]
    def: GroupDef,
    #[serde(skip_serializing_if = "Option::is_none")]
    membership: Option<crate::sql::Resolution>,
}

/// `GET /api/group-defs`: every definition, sorted by id.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Listed>>, ApiError> {
    Ok(Json(
        state
            .control
            .group_defs()
            .await?
            .into_iter()
            .map(|def| Listed {
                membership: def
                    .dynamic_query()
                    .and_then(|_| state.group_members.resolution(&def.id)),
                def,
            })
            .collect(),
    ))
}

/// `POST /api/group-defs` (YAML or JSON): validate, then upsert.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: YamlOrJson<GroupDef>,
) -> Result<Json<Summary>, ApiError> {
    let def = body.value;
    def.validate()
        .map_err(|e| ApiError::BadRequest(format!("invalid group: {e}")))?;
    if def.id.len() > 256 {
        return Err(ApiError::BadRequest(
            "invalid group: group.id is longer than 256 characters".into(),
        ));
    }
    for pc in &def.members {
        crate::control::check_key("members", pc.trim())?;
    }
    if let Some(query) = def.dynamic_query() {
        crate::sql::GroupMembers::check_query(&state.sql, query).await?;
    }
    put_with_yaml(
        &state.control,
        (BUCKET_GROUP_DEFS, BUCKET_GROUP_DEFS_YAML),
        &def.id,
        &def,
        body.yaml,
    )
    .await?;
    let kind = kind(&def);
    audit(
        &state.control,
        &caller,
        "group_def_upsert",
        &def.id,
        serde_json::json!({ "kind": kind }),
    )
    .await;
    Ok(Json(Summary {
        member_count: static_members(&def).map(|m| m.len()),
        id: def.id,
        description: def.description,
        kind,
        tags: def.tags,
    }))
}

#[derive(Serialize)]
pub struct Members {
    id: String,
    kind: &'static str,
    count: usize,
    members: Vec<String>,
}

/// `GET /api/group-defs/{id}/members`: the PCs a group declares, or its
/// query finds (kept for the group's `refresh`).
pub async fn members(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Members>, ApiError> {
    let def = find(&state, &id).await?;
    let members: Vec<String> = state
        .group_members
        .resolve(&state.sql, &def)
        .await
        .map_err(|e| ApiError::BadRequest(format!("resolve group '{id}': {e}")))?
        .into_iter()
        .collect();
    Ok(Json(Members {
        kind: kind(&def),
        count: members.len(),
        members,
        id,
    }))
}

/// `GET /api/group-defs/{id}/yaml`: the YAML as registered.
pub async fn yaml(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let def = find(&state, &id).await?;
    yaml_answer(&state.control, BUCKET_GROUP_DEFS_YAML, &id, &def).await
}

/// `DELETE /api/group-defs/{id}`: 404 when absent; the members leave the
/// group at the next pass of the derived-membership writer.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    find(&state, &id).await?;
    delete_with_yaml(
        &state.control,
        (BUCKET_GROUP_DEFS, BUCKET_GROUP_DEFS_YAML),
        &id,
    )
    .await?;
    audit(
        &state.control,
        &caller,
        "group_def_delete",
        &id,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/schemas/group-def.json`.
pub async fn schema() -> Json<serde_json::Value> {
    Json(serde_json::to_value(schemars::schema_for!(GroupDef)).unwrap_or_default())
}
