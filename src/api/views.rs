//! `/api/views*`: views, kanade 0.101's declarative analytics (aggregate
//! widgets over observation events, SQL widgets over the catalog), kept in
//! the `views` KV bucket with the YAML as sent in `views_yaml` (which we
//! create at start; upstream never does, so its `…/yaml` loses comments).
//!
//! A view is decoded strictly (an unknown key is a 400 naming its path),
//! validated by kanade-shared's rules, and each SQL widget's query is
//! planned before the view is stored: SQL that is not a query, names a
//! table or column we lack, or does not plan answers 400 naming the
//! widget, rather than a widget that silently never renders.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use kanade_shared::kv::{BUCKET_VIEWS, BUCKET_VIEWS_YAML};
use kanade_shared::manifest::{is_valid_resource_id, View};
use serde::Serialize;

use super::error::ApiError;
use super::jobs::{audit, delete_with_yaml, put_with_yaml, yaml_answer};
use super::params::YamlOrJson;
use crate::api::state::AppState;
use crate::audit::Caller;

/// What a POST answers.
#[derive(Serialize)]
pub struct Summary {
    id: String,
    description: Option<String>,
    widget_count: usize,
    tags: Vec<String>,
}

/// An id from the path, checked before it reaches the broker.
fn check_id(id: &str) -> Result<(), ApiError> {
    if is_valid_resource_id(id) && id.len() <= 256 {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid view id {} (allowed: [A-Za-z0-9._-], at most 256)",
            crate::control::abbreviated(id)
        )))
    }
}

/// Every view, sorted by id (a missing bucket is none).
pub async fn all(state: &AppState) -> Result<Vec<View>, ApiError> {
    match state.control.list_json::<View>(BUCKET_VIEWS).await {
        Ok(views) => Ok(views.into_iter().map(|(_, v)| v).collect()),
        Err(crate::control::Error::Unavailable(_)) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/views`: every view as stored, sorted by id.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<View>>, ApiError> {
    Ok(Json(all(&state).await?))
}

/// `POST /api/views` (YAML or JSON): validate, plan each SQL widget, upsert.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: YamlOrJson<View>,
) -> Result<Json<Summary>, ApiError> {
    let view = body.value;
    view.validate()
        .map_err(|e| ApiError::BadRequest(format!("invalid view: {e}")))?;
    if view.id.len() > 256 {
        return Err(ApiError::BadRequest(
            "invalid view: view.id is longer than 256 characters".into(),
        ));
    }
    for (i, w) in view.sql_widgets.iter().enumerate() {
        let (sql, _) = crate::sql::bind_pc_id(&w.query, Some(""));
        state.sql.run(&sql, 0).await.map_err(|e| {
            ApiError::BadRequest(format!("invalid view: sql_widgets[{i}].query: {e}"))
        })?;
    }
    put_with_yaml(
        &state.control,
        (BUCKET_VIEWS, BUCKET_VIEWS_YAML),
        &view.id,
        &view,
        body.yaml,
    )
    .await?;
    let widget_count = view.widgets.len() + view.sql_widgets.len();
    audit(
        &state.control,
        &caller,
        "view_upsert",
        &view.id,
        serde_json::json!({ "widgets": widget_count }),
    )
    .await;
    state.view_answers.forget_view(&view.id);
    Ok(Json(Summary {
        id: view.id,
        description: view.description,
        widget_count,
        tags: view.tags,
    }))
}

/// The view `id`, or 404.
async fn find(state: &AppState, id: &str) -> Result<View, ApiError> {
    check_id(id)?;
    let found = match state.control.get_json::<View>(BUCKET_VIEWS, id).await {
        Err(crate::control::Error::Unavailable(_)) => None,
        other => other?,
    };
    found.ok_or_else(|| ApiError::NotFound(format!("view '{id}' not found")))
}

/// `GET /api/views/{id}/yaml`: the YAML as registered.
pub async fn yaml(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let view = find(&state, &id).await?;
    yaml_answer(&state.control, BUCKET_VIEWS_YAML, &id, &view).await
}

/// `DELETE /api/views/{id}`: 404 when absent.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    find(&state, &id).await?;
    delete_with_yaml(&state.control, (BUCKET_VIEWS, BUCKET_VIEWS_YAML), &id).await?;
    state.view_answers.forget_view(&id);
    audit(
        &state.control,
        &caller,
        "view_delete",
        &id,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/schemas/view.json`: the JSON Schema of a view.
pub async fn schema() -> Json<serde_json::Value> {
    Json(serde_json::to_value(schemars::schema_for!(View)).unwrap_or_default())
}
