//! `/api/freeze`: the fleet-wide change freeze, one key (`freeze`) of the
//! `fleet_config` bucket. While it is active the scheduler skips every
//! tick.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kanade_shared::kv::{BUCKET_FLEET_CONFIG, KEY_FREEZE};
use kanade_shared::manifest::Freeze;

use super::error::ApiError;
use super::jobs::audit;
use super::params::ApiJson;
use crate::api::state::AppState;
use crate::audit::Caller;

/// `GET /api/freeze`: the stored freeze, or `null`.
pub async fn get(State(state): State<AppState>) -> Result<Json<Option<Freeze>>, ApiError> {
    Ok(Json(
        state
            .control
            .get_json::<Freeze>(BUCKET_FLEET_CONFIG, KEY_FREEZE)
            .await?,
    ))
}

/// `PUT /api/freeze`: validate the bounds, store, echo.
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(freeze): ApiJson<Freeze>,
) -> Result<Json<Freeze>, ApiError> {
    freeze
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("invalid freeze: {e}")))?;
    let json = serde_json::to_vec(&freeze).map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .control
        .put(BUCKET_FLEET_CONFIG, KEY_FREEZE, json)
        .await?;
    audit(
        &state.control,
        &caller,
        "freeze_set",
        KEY_FREEZE,
        serde_json::json!({
            "from": freeze.from, "reason": freeze.reason, "until": freeze.until,
        }),
    )
    .await;
    Ok(Json(freeze))
}

/// `DELETE /api/freeze`: lift it (absent is fine).
pub async fn delete(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    state
        .control
        .delete(BUCKET_FLEET_CONFIG, KEY_FREEZE)
        .await?;
    audit(
        &state.control,
        &caller,
        "freeze_clear",
        KEY_FREEZE,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
