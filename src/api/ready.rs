//! `/readyz`: whether this backend can do its work now, for load
//! balancers and orchestrators (`/health` stays the liveness probe: the
//! process answers). Not ready, with each reason named, when:
//! - the broker connection is down;
//! - a perf table's write-ahead log cannot be written (a full disk, a
//!   missing or read-only directory: a small probe file is written and
//!   fsynced each check);
//! - a stream projector has messages pending and has not committed a
//!   batch for [`STALL`].
//!
//! The same verdict is the `kanade_ready` gauge of `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::offload;
use crate::api::state::AppState;

/// A projector with work pending and no commit for this long is stalled.
pub const STALL: Duration = Duration::from_secs(120);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every reason this backend is not ready; empty when it is.
pub async fn reasons(state: &AppState) -> Vec<String> {
    let mut out = Vec::new();
    let connected = state.nats.connection_state() == async_nats::connection::State::Connected;
    if !connected {
        out.push("broker: not connected".to_string());
    }
    let tables = state.tables.clone();
    let probes = offload::blocking(move || {
        Ok(tables
            .each()
            .into_iter()
            .filter_map(|t| {
                t.probe_wal()
                    .err()
                    .map(|e| format!("{}: write-ahead log not writable: {e}", t.spec().name))
            })
            .collect::<Vec<_>>())
    })
    .await;
    match probes {
        Ok(failed) => out.extend(failed),
        Err(e) => out.push(format!("write-ahead log probe failed: {e}")),
    }
    if connected {
        for (stream, durable) in crate::ingest::stream::consumers() {
            let pending = tokio::time::timeout(PROBE_TIMEOUT, async {
                let s = state.control.js.get_stream(stream).await.ok()?;
                let info = s.consumer_info(durable).await.ok()?;
                Some(info.num_pending + info.num_ack_pending as u64)
            })
            .await
            .ok()
            .flatten();
            let since = crate::ingest::stream::since_advanced(durable);
            if let Some(why) = stalled(durable, stream, pending, since) {
                out.push(why);
            }
        }
    }
    out
}

/// The stall verdict of one projector: pending work and no commit for
/// [`STALL`] (unknown pending counts as none: the broker is the reason).
fn stalled(
    durable: &str,
    stream: &str,
    pending: Option<u64>,
    since: Option<Duration>,
) -> Option<String> {
    let pending = pending.filter(|p| *p > 0)?;
    let since = since.unwrap_or(Duration::MAX);
    (since >= STALL).then(|| {
        let quiet = if since == Duration::MAX {
            "never ran".to_string()
        } else {
            format!("no commit for {} s", since.as_secs())
        };
        format!("projector {durable} of {stream}: {pending} messages pending, {quiet}")
    })
}

/// `GET /readyz`: 200 `{"status": "ready"}`, else 503 with the reasons.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let reasons = reasons(&state).await;
    crate::metrics::get()
        .ready
        .set(i64::from(reasons.is_empty()));
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not ready",
                "error": format!("not ready: {}", reasons.join("; ")),
                "reasons": reasons,
            })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projector_is_stalled_only_with_work_pending_and_no_commit() {
        let long = Some(STALL + Duration::from_secs(1));
        let short = Some(Duration::from_secs(3));
        assert_eq!(stalled("d", "S", Some(0), long), None, "nothing pending");
        assert_eq!(stalled("d", "S", None, long), None, "pending unknown");
        assert_eq!(stalled("d", "S", Some(5), short), None, "committing");
        let why = stalled("d", "S", Some(5), long).unwrap();
        assert!(
            why.contains("5 messages pending") && why.contains("no commit for 121 s"),
            "{why}"
        );
        let why = stalled("d", "S", Some(5), None).unwrap();
        assert!(why.contains("never ran"), "{why}");
    }
}
