//! `POST /api/admin/backup {"dir": "/abs/path"}` (admin): an online backup
//! of the data directory and the broker's control plane into `dir` on the
//! backend's host (see [`crate::backup`]); `kanade-backend backup <dir>`
//! calls it.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::jobs::audit;
use super::offload;
use super::params::YamlOrJson;
use crate::api::state::AppState;
use crate::audit::Caller;
use crate::backup::Manifest;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// Absolute path on the backend's host; must not exist or be empty.
    dir: String,
}

pub async fn backup(
    State(state): State<AppState>,
    caller: Caller,
    body: YamlOrJson<BackupBody>,
) -> Result<Json<Manifest>, ApiError> {
    let dir = std::path::PathBuf::from(&body.value.dir);
    if !dir.is_absolute() {
        return Err(ApiError::bad_param(
            "dir",
            format!(
                "{:?} must be an absolute path on the backend's host",
                body.value.dir
            ),
        ));
    }
    crate::backup::check_empty(&dir).map_err(ApiError::Conflict)?;
    let (tables, store, to) = (state.tables.clone(), state.store.clone(), dir.clone());
    let started = std::time::Instant::now();
    let mut manifest = offload::blocking(move || {
        crate::backup::take_data(&tables, &store, &to).map_err(failed(&to))
    })
    .await?;
    manifest.broker = Some(
        crate::backup::broker::export(&state.control.js, &dir)
            .await
            .map_err(failed(&dir))?,
    );
    let (to, written) = (dir.clone(), manifest);
    let manifest = offload::blocking(move || {
        crate::backup::finish(&to, &written)
            .map(|()| written)
            .map_err(failed(&to))
    })
    .await?;
    tracing::info!(dir = %dir.display(), secs = started.elapsed().as_secs_f64(), "backup taken");
    audit(
        &state.control,
        &caller,
        "backup",
        &dir.display().to_string(),
        serde_json::json!({"tables": manifest.tables, "relational_bytes": manifest.relational_bytes}),
    )
    .await;
    Ok(Json(manifest))
}

/// A backup step's error, naming the destination.
fn failed(dir: &std::path::Path) -> impl Fn(anyhow::Error) -> ApiError + '_ {
    move |e| ApiError::Internal(format!("backup into {}: {e:#}", dir.display()))
}
