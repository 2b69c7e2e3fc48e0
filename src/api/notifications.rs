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
use kanade_shared::ipc::notifications::{
    AudiencePc, Notification, NotificationAckEntry, NotificationAckStatus, NotificationAmend,
    NotificationAmendOp, NotificationDetail, NotificationPriority, NotificationTarget,
};
use kanade_shared::kv::STREAM_NOTIFICATIONS;
use kanade_shared::manifest::Target;
use kanade_shared::subject;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::jobs::audit;
use super::params::YamlOrJson;
use crate::api::state::AppState;
use crate::audit::Caller;
use crate::control::{check_key, check_token};

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
    check_content(&b.title, &b.priority)?;
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
    publish_to(&state, &n, &subjects).await?;
    audit(&state.control, &caller, "notification", &id, serde_json::json!({
        "notification_id": id, "priority": n.priority, "require_ack": n.require_ack, "subjects": subjects,
    }))
    .await;
    Ok(Json(Sent { id, subjects }))
}

/// One stored copy of a notification: the subject it went to and its
/// stream sequence (what an edit or recall deletes).
struct Copy {
    subject: String,
    seq: u64,
    notification: Notification,
}

/// The newest [`HISTORY_SCAN`] messages of the stream, decoded (a message
/// that does not decode is logged and left out).
async fn replay(state: &AppState) -> Result<Vec<Copy>, ApiError> {
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
        return Ok(Vec::new());
    }
    let start = last.saturating_sub(HISTORY_SCAN as u64 - 1).max(1);
    let read_err = |e: &dyn std::fmt::Display| {
        ApiError::BadGateway(format!("read {STREAM_NOTIFICATIONS}: {e}"))
    };
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
        .map_err(|e| read_err(&e))?;
    let mut out = Vec::new();
    let mut seen = 0u64;
    while seen < total.min(HISTORY_SCAN as u64) {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .map_err(|e| read_err(&e))?;
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| read_err(&e))?;
            got += 1;
            let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
            match serde_json::from_slice::<Notification>(&m.payload) {
                Ok(notification) => out.push(Copy {
                    subject: m.subject.to_string(),
                    seq,
                    notification,
                }),
                Err(_) => {
                    tracing::warn!(subject = %m.subject, "a NOTIFICATIONS message does not decode; left out")
                }
            }
        }
        seen += got;
        if got == 0 || m_done(seen, last, start) {
            break;
        }
    }
    Ok(out)
}

/// `GET /api/notifications`: the sent history, newest copy of each
/// id, newest first (at most 200).
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Notification>>, ApiError> {
    let mut newest: BTreeMap<String, Notification> = BTreeMap::new();
    for c in replay(&state).await? {
        let n = c.notification;
        match newest.get(&n.id) {
            Some(old) if newest_of(old, &n) => {}
            _ => {
                newest.insert(n.id.clone(), n);
            }
        }
    }
    let mut out: Vec<Notification> = newest.into_values().collect();
    out.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then_with(|| a.id.cmp(&b.id)));
    out.truncate(HISTORY_LIMIT);
    Ok(Json(out))
}

/// Whether `old` is at least as new as `new` (an edit keeps `issued_at`
/// and stamps `edited_at`).
fn newest_of(old: &Notification, new: &Notification) -> bool {
    (old.issued_at, old.edited_at) >= (new.issued_at, new.edited_at)
}

/// Whether every message from `start` to `last` was read.
fn m_done(seen: u64, last: u64, start: u64) -> bool {
    seen > last.saturating_sub(start)
}

/// The copies of `id` (404 when the stream holds none).
async fn copies_of(state: &AppState, id: &str) -> Result<Vec<Copy>, ApiError> {
    check_key("id", id)?;
    let copies: Vec<Copy> = replay(state)
        .await?
        .into_iter()
        .filter(|c| c.notification.id == id)
        .collect();
    if copies.is_empty() {
        return Err(ApiError::NotFound(format!("notification {id} not found")));
    }
    Ok(copies)
}

/// The target a notification was sent to, read back from its subjects.
fn target_of(copies: &[Copy]) -> NotificationTarget {
    let mut t = NotificationTarget::default();
    for c in copies {
        if c.subject == subject::NOTIFICATIONS_ALL {
            t.all = true;
        } else if let Some(g) = c.subject.strip_prefix(subject::NOTIFICATIONS_GROUP_PREFIX) {
            t.groups.push(g.to_string());
        } else if let Some(p) = c.subject.strip_prefix(subject::NOTIFICATIONS_PC_PREFIX) {
            t.pcs.push(p.to_string());
        }
    }
    for v in [&mut t.groups, &mut t.pcs] {
        v.sort();
        v.dedup();
    }
    t
}

/// The subjects of a target.
fn subjects_of(t: &NotificationTarget) -> Vec<String> {
    let mut out = Vec::new();
    if t.all {
        out.push(subject::NOTIFICATIONS_ALL.to_string());
    }
    out.extend(t.groups.iter().map(|g| subject::notifications_group(g)));
    out.extend(t.pcs.iter().map(|p| subject::notifications_pc(p)));
    out
}

/// Each ack of `id` as the API shows it, oldest first; the account
/// falls back to who the agent last saw logged on.
fn ack_entries(state: &AppState, id: &str) -> Result<Vec<NotificationAckEntry>, ApiError> {
    let agents: BTreeMap<String, kanade_storage::AgentRecord> = state
        .store
        .agents()?
        .into_iter()
        .map(|a| (a.pc_id.clone(), a))
        .collect();
    let mut acks: Vec<NotificationAckEntry> = state
        .store
        .notification_acks(id)?
        .into_iter()
        .map(|a| {
            let seen = agents.get(&a.pc_id).map(|g| &g.reported);
            let account = a.account.clone().or_else(|| {
                seen.and_then(|r| {
                    r.last_logon_display_name
                        .clone()
                        .or(r.last_logon_user.clone())
                })
            });
            NotificationAckEntry {
                pc_id: a.pc_id,
                user_sid: a.user_sid,
                acked_at: a.acked_at,
                account,
                unacked_at: a.unacked_at,
            }
        })
        .collect();
    acks.sort_by(|a, b| {
        a.acked_at
            .cmp(&b.acked_at)
            .then_with(|| a.pc_id.cmp(&b.pc_id))
    });
    Ok(acks)
}

/// `GET /api/notifications/{id}`: the notification, its acks, who it
/// was for (each PC confirmed, revoked or pending) and its target.
pub async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NotificationDetail>, ApiError> {
    let copies = copies_of(&state, &id).await?;
    let target = target_of(&copies);
    let notification = newest(&copies);
    let acks = ack_entries(&state, &id)?;
    let audience = audience(&state, &target, &acks).await?;
    Ok(Json(NotificationDetail {
        notification,
        acks,
        audience,
        target: Some(target),
    }))
}

/// The newest of the copies (`copies_of` answers at least one).
fn newest(copies: &[Copy]) -> Notification {
    let mut best = &copies[0].notification;
    for c in &copies[1..] {
        if !newest_of(best, &c.notification) {
            best = &c.notification;
        }
    }
    best.clone()
}

/// Every PC the target reaches (and every PC that acked), each with its
/// standing: confirmed when an ack stands, revoked when all were taken
/// back, pending otherwise; unconfirmed first.
async fn audience(
    state: &AppState,
    target: &NotificationTarget,
    acks: &[NotificationAckEntry],
) -> Result<Vec<AudiencePc>, ApiError> {
    let roster = Target {
        all: target.all,
        groups: target.groups.clone(),
        pcs: target.pcs.clone(),
    };
    let mut pcs: std::collections::BTreeSet<String> = state
        .control
        .roster(&roster, false)
        .await?
        .into_iter()
        .collect();
    pcs.extend(acks.iter().map(|a| a.pc_id.clone()));
    let mut out = Vec::with_capacity(pcs.len());
    for pc in pcs {
        let mine: Vec<&NotificationAckEntry> = acks.iter().filter(|a| a.pc_id == pc).collect();
        let standing = mine.iter().any(|a| a.unacked_at.is_none());
        let agent = state
            .store
            .agent(&pc)?
            .map(|a| a.reported)
            .unwrap_or_default();
        out.push(AudiencePc {
            pc_id: pc,
            last_logon_user: agent.last_logon_user,
            last_logon_display_name: agent.last_logon_display_name,
            confirmed: standing,
            acked_at: mine.iter().map(|a| a.acked_at).min(),
            unacked_at: if standing || mine.is_empty() {
                None
            } else {
                mine.iter().filter_map(|a| a.unacked_at).max()
            },
        });
    }
    out.sort_by(|a, b| {
        a.confirmed
            .cmp(&b.confirmed)
            .then_with(|| a.pc_id.cmp(&b.pc_id))
    });
    Ok(out)
}

/// Deletes every stored copy; all of them or an error naming how many.
async fn delete_copies(state: &AppState, id: &str, copies: &[Copy]) -> Result<usize, ApiError> {
    let stream = state
        .control
        .js
        .get_stream(STREAM_NOTIFICATIONS)
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!("stream {STREAM_NOTIFICATIONS} unavailable: {e}"))
        })?;
    let (mut deleted, mut failed) = (0, 0);
    for c in copies.iter().filter(|c| c.seq > 0) {
        match stream.delete_message(c.seq).await {
            Ok(_) => deleted += 1,
            Err(e) => {
                tracing::warn!(%id, seq = c.seq, error = %e, "notification copy not deleted");
                failed += 1;
            }
        }
    }
    if deleted == 0 || failed > 0 {
        return Err(ApiError::BadGateway(format!(
            "notification {id}: deleted {deleted}, failed {failed} of {} copies",
            copies.len()
        )));
    }
    Ok(deleted)
}

/// `POST /api/notifications/{id}/recall`: removes it from the stream (no
/// agent receives it any more) and tells the agents to take it off
/// screens that show it now (`notif-amend`); the acks stay.
pub async fn recall(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let copies = copies_of(&state, &id).await?;
    let deleted = delete_copies(&state, &id, &copies).await?;
    let amend = NotificationAmend {
        id: id.clone(),
        op: NotificationAmendOp::Recall,
    };
    let payload = serde_json::to_vec(&amend).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Err(e) = state
        .control
        .publish(subject::NOTIFICATIONS_AMEND_SUBJECT.to_string(), payload)
        .await
    {
        tracing::warn!(%id, error = %e, "recall amend not published; the copies are gone");
    }
    state.control.flush().await;
    audit(
        &state.control,
        &caller,
        "notification.recall",
        &id,
        serde_json::json!({
            "notification_id": id, "deleted_copies": deleted,
        }),
    )
    .await;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    priority: NotificationPriority,
    #[serde(default)]
    require_ack: bool,
    title: String,
    body: String,
    #[serde(default)]
    toast: bool,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    /// Ask everyone to confirm again: the acks so far are forgotten.
    #[serde(default)]
    reset_acks: bool,
}

/// What a sent or edited notification must carry: a title and a known
/// priority.
fn check_content(title: &str, priority: &NotificationPriority) -> Result<(), ApiError> {
    if title.trim().is_empty() {
        return Err(ApiError::bad_param("title", "must not be empty"));
    }
    if matches!(priority, NotificationPriority::Unknown) {
        return Err(ApiError::bad_param(
            "priority",
            "must be info, warn or emergency",
        ));
    }
    Ok(())
}

/// `PATCH /api/notifications/{id}`: replaces the content (the audience,
/// id and issue time stay): the old copies are deleted and the edit
/// published to the same subjects, which clients show in place.
pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: YamlOrJson<EditBody>,
) -> Result<Json<Sent>, ApiError> {
    let b = body.value;
    check_content(&b.title, &b.priority)?;
    let copies = copies_of(&state, &id).await?;
    let subjects = subjects_of(&target_of(&copies));
    let old = newest(&copies);
    let now = Utc::now();
    let n = Notification {
        priority: b.priority,
        require_ack: b.require_ack,
        title: b.title,
        body: b.body,
        toast: b.toast,
        expires_at: b.expires_at,
        acked_at: None,
        edited_at: Some(now),
        acks_reset_at: if b.reset_acks {
            Some(now)
        } else {
            old.acks_reset_at
        },
        ..old
    };
    delete_copies(&state, &id, &copies).await?;
    publish_to(&state, &n, &subjects).await?;
    let cleared = if b.reset_acks {
        let (store, nid) = (state.store.clone(), id.clone());
        super::offload::store(move || store.clear_notification_acks(&nid)).await?
    } else {
        0
    };
    audit(&state.control, &caller, "notification.edit", &id, serde_json::json!({
        "notification_id": id, "subjects": subjects, "reset_acks": b.reset_acks, "acks_cleared": cleared,
    }))
    .await;
    Ok(Json(Sent { id, subjects }))
}

/// Publishes `n` to each subject, each stored by the stream (signed).
async fn publish_to(
    state: &AppState,
    n: &Notification,
    subjects: &[String],
) -> Result<(), ApiError> {
    Ok(state.control.publish_notification(n, subjects).await?)
}

/// `GET /api/notifications/{id}/ack_status`: who acknowledged it, oldest
/// first.
pub async fn ack_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NotificationAckStatus>, ApiError> {
    let acks = ack_entries(&state, &id)?;
    Ok(Json(NotificationAckStatus { id, acks }))
}
