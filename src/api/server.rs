//! `POST /api/server/restart`: the backend stops as it does on SIGTERM
//! (intake stopped, the head persisted) and exits with status 1, which a
//! supervisor (systemd `Restart=on-failure`, the Windows service manager's
//! recovery actions) starts again on. Settings read only at start take
//! effect this way. Upstream exits after a fixed grace without flushing;
//! here nothing buffered is lost.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use crate::api::state::AppState;
use crate::audit::Caller;

#[derive(Serialize)]
pub struct RestartAck {
    status: &'static str,
}

/// 202 `{"status": "restarting"}`, audited, then the stop begins.
pub async fn restart(
    State(state): State<AppState>,
    caller: Caller,
) -> (StatusCode, Json<RestartAck>) {
    super::jobs::audit(
        &state.control,
        &caller,
        "server_restart",
        "backend",
        serde_json::json!({}),
    )
    .await;
    tracing::warn!("restart requested over the API: stopping, then exiting 1 for the supervisor");
    // Answer first: the graceful stop waits for open requests.
    let restart = std::sync::Arc::clone(&state.restart);
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        restart.notify_one();
    });
    (
        StatusCode::ACCEPTED,
        Json(RestartAck {
            status: "restarting",
        }),
    )
}
