//! `/api/notifications`: end-user notifications published to agents
//! (`notifications.all|group.G|pc.P`, kept by the NOTIFICATIONS stream),
//! the sent history read back from that stream, and who acknowledged one
//! (projected `notification_acks`).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kanade_shared::ipc::notifications::{Notification, NotificationPriority};
use kanade_shared::kv::STREAM_NOTIFICATIONS;
use kanade_shared::manifest::Target;
use kanade_shared::subject;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::jobs::audit;
use super::params::YamlOrJson;
use crate::audit::Caller;
use crate::control::{check_key, check_token};
use crate::state::AppState;

/// Newest messages of the stream read for the history.
const HISTORY_SCAN: usize = 5000;
/// Notifications the history answers.
const HISTORY_LIMIT: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    #[serde(default)]
    id: Option<String>,
    priority: NotificationPriority,
    #[serde(default)]
    require_ack: bool,
    title: String,
    body: String,
    #[serde(default)]
    issued_by: Option<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    /// Also raise an OS toast on the desktop.
    #[serde(default)]
    toast: bool,
    target: Target,
}

#[derive(Serialize)]
pub struct Sent {
    id: String,
    subjects: Vec<String>,
}

/// `POST /api/notifications`: publish to every subject of the target
/// (each acknowledged by the stream).
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    body: YamlOrJson<SendBody>,
) -> Result<Json<Sent>, ApiError> {
    let b = body.value;
    if !b.target.is_specified() {
        return Err(ApiError::bad_param(
            "target",
            "must set at least one of `all`, `groups`, or `pcs`",
        ));
    }
    if b.title.trim().is_empty() {
        return Err(ApiError::bad_param("title", "must not be empty"));
    }
    if matches!(b.priority, NotificationPriority::Unknown) {
        return Err(ApiError::bad_param(
            "priority",
            "must be info, warn or emergency",
        ));
    }
    if b.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(ApiError::bad_param("expires_at", "must be in the future"));
    }
    let id = match b.id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => {
            check_key("id", id)?;
            id.to_string()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let mut subjects = Vec::new();
    if b.target.all {
        subjects.push(subject::NOTIFICATIONS_ALL.to_string());
    }
    for g in &b.target.groups {
        check_token("target.groups", g)?;
        subjects.push(subject::notifications_group(g));
    }
    for pc in &b.target.pcs {
        check_token("target.pcs", pc)?;
        subjects.push(subject::notifications_pc(pc));
    }
    let n = Notification {
        id: id.clone(),
        priority: b.priority,
        require_ack: b.require_ack,
        title: b.title,
        body: b.body,
        issued_at: Utc::now(),
        issued_by: b.issued_by.or_else(|| caller.sub.clone()),
        expires_at: b.expires_at,
        acked_at: None,
        toast: b.toast,
        edited_at: None,
        acks_reset_at: None,
    };
    let payload = serde_json::to_vec(&n).map_err(|e| ApiError::Internal(e.to_string()))?;
    for s in &subjects {
        let js = &state.control.js;
        let sent = match state.control.signer.headers(&payload) {
            Some(h) => {
                js.publish_with_headers(s.clone(), h, payload.clone().into())
                    .await
            }
            None => js.publish(s.clone(), payload.clone().into()).await,
        };
        let ack = sent.map_err(|e| ApiError::BadGateway(format!("publish to {s}: {e}")))?;
        ack.await.map_err(|e| {
            ApiError::BadGateway(format!("{s} not stored by {STREAM_NOTIFICATIONS}: {e}"))
        })?;
    }
    audit(&state.control, &caller, "notification", &id, serde_json::json!({
        "notification_id": id, "priority": n.priority, "require_ack": n.require_ack, "subjects": subjects,
    }))
    .await;
    Ok(Json(Sent { id, subjects }))
}

/// `GET /api/notifications`: the sent history from the stream, one per
/// id, newest first (at most 200).
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Notification>>, ApiError> {
    let stream = match state.control.js.get_stream(STREAM_NOTIFICATIONS).await {
        Ok(s) => s,
        Err(e) => {
            return Err(ApiError::Unavailable(format!(
                "stream {STREAM_NOTIFICATIONS} unavailable: {e}"
            )))
        }
    };
    let last = stream.cached_info().state.last_sequence;
    let total = stream.cached_info().state.messages;
    if total == 0 {
        return Ok(Json(Vec::new()));
    }
    let start = last.saturating_sub(HISTORY_SCAN as u64 - 1).max(1);
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::BadGateway(format!("read {STREAM_NOTIFICATIONS}: {e}")))?;
    let mut newest: BTreeMap<String, Notification> = BTreeMap::new();
    let mut seen = 0u64;
    while seen < total.min(HISTORY_SCAN as u64) {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .map_err(|e| ApiError::BadGateway(format!("read {STREAM_NOTIFICATIONS}: {e}")))?;
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m =
                m.map_err(|e| ApiError::BadGateway(format!("read {STREAM_NOTIFICATIONS}: {e}")))?;
            got += 1;
            let Ok(n) = serde_json::from_slice::<Notification>(&m.payload) else {
                tracing::warn!(subject = %m.subject, "a NOTIFICATIONS message does not decode; left out");
                continue;
            };
            match newest.get(&n.id) {
                Some(old) if old.issued_at >= n.issued_at => {}
                _ => {
                    newest.insert(n.id.clone(), n);
                }
            }
        }
        seen += got;
        if got == 0 || m_done(seen, last, start) {
            break;
        }
    }
    let mut out: Vec<Notification> = newest.into_values().collect();
    out.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then_with(|| a.id.cmp(&b.id)));
    out.truncate(HISTORY_LIMIT);
    Ok(Json(out))
}

/// Whether every message from `start` to `last` was read.
fn m_done(seen: u64, last: u64, start: u64) -> bool {
    seen > last.saturating_sub(start)
}

#[derive(Serialize)]
pub struct Ack {
    pc_id: String,
    user_sid: String,
    acked_at: DateTime<Utc>,
}

#[derive(Serialize)]
pub struct AckStatus {
    id: String,
    acks: Vec<Ack>,
}

/// `GET /api/notifications/{id}/ack_status`: who acknowledged it, oldest
/// first.
pub async fn ack_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AckStatus>, ApiError> {
    let mut acks: Vec<Ack> = state
        .store
        .notification_acks(&id)?
        .into_iter()
        .map(|a| Ack {
            pc_id: a.pc_id,
            user_sid: a.user_sid,
            acked_at: a.acked_at,
        })
        .collect();
    acks.sort_by(|a, b| {
        a.acked_at
            .cmp(&b.acked_at)
            .then_with(|| a.pc_id.cmp(&b.pc_id))
    });
    Ok(Json(AckStatus { id, acks }))
}
