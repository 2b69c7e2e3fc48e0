//! Stream `EVENTS`, subjects `events.notifications.>`: users' acks
//! (`acked.…`, `NotificationAcked`) and the acks they took back
//! (`unacked.…`, `NotificationUnacked`) → `notification_acks`.

use chrono::Utc;
use kanade_shared::ipc::notifications::{NotificationAcked, NotificationUnacked};
use kanade_storage::{AckEvent, NotificationAckRecord, RelationalStore, StreamPosition};

use super::stream::StreamProjection;
use super::Committed;

/// Subject prefix of a taken-back ack.
const UNACKED_PREFIX: &str = "events.notifications.unacked.";

/// One message of the notification events, decoded by its subject.
#[derive(Debug)]
pub enum NotificationEvent {
    Acked(NotificationAcked),
    Unacked(NotificationUnacked),
}

/// Applies users' acknowledgements of notifications.
pub struct NotificationAcksProjection;

impl StreamProjection for NotificationAcksProjection {
    type Item = NotificationEvent;
    const STREAM: &'static str = kanade_shared::kv::STREAM_EVENTS;
    /// A new name: a durable's filter cannot change in place, and the
    /// wider filter replays the stream's acks once (they apply idempotently).
    const DURABLE: &'static str = "columnar-notification-acks-projector-v2";
    const FILTER: Option<&'static str> = Some(kanade_shared::subject::EVENTS_NOTIFICATIONS_FILTER);

    fn decode(subject: &str, _seq: u64, payload: &[u8]) -> Result<NotificationEvent, String> {
        let event = if subject.starts_with(UNACKED_PREFIX) {
            serde_json::from_slice(payload).map(NotificationEvent::Unacked)
        } else {
            serde_json::from_slice(payload).map(NotificationEvent::Acked)
        };
        event.map_err(|e| e.to_string())
    }

    fn check(&self, e: &NotificationEvent) -> Result<(), String> {
        let (pc, nid) = match e {
            NotificationEvent::Acked(a) => (&a.pc_id, &a.notification_id),
            NotificationEvent::Unacked(u) => (&u.pc_id, &u.notification_id),
        };
        super::wire::key("pc_id", pc)?;
        super::wire::opaque("notification_id", Some(nid))
    }

    fn apply(
        &self,
        store: &RelationalStore,
        items: &[NotificationEvent],
        pos: StreamPosition<'_>,
    ) -> kanade_storage::Result<Committed> {
        let now = Utc::now();
        let events: Vec<AckEvent> = items
            .iter()
            .map(|e| match e {
                NotificationEvent::Acked(a) => AckEvent::Acked(NotificationAckRecord {
                    notification_id: a.notification_id.clone(),
                    pc_id: a.pc_id.clone(),
                    user_sid: a.user_sid.clone(),
                    acked_at: a.acked_at,
                    recorded_at: Some(now),
                    account: a.account.clone(),
                    unacked_at: None,
                }),
                NotificationEvent::Unacked(u) => AckEvent::Unacked(
                    u.notification_id.clone(),
                    u.pc_id.clone(),
                    u.user_sid.clone(),
                    u.unacked_at,
                ),
            })
            .collect();
        store.apply_ack_events(&events, Some(pos))?;
        Ok(Committed::all(items.len()))
    }
}
