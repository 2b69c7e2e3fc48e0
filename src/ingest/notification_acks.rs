//! Stream `EVENTS`, subjects `events.notifications.acked.>`
//! (`NotificationAcked`) → `notification_acks`.

use chrono::Utc;
use kanade_shared::ipc::notifications::NotificationAcked;
use kanade_storage::{NotificationAckRecord, RelationalStore, StreamPosition};

use super::stream::StreamProjection;

/// Applies users' acknowledgements of notifications.
pub struct NotificationAcksProjection;

impl StreamProjection for NotificationAcksProjection {
    type Item = NotificationAcked;
    const STREAM: &'static str = kanade_shared::kv::STREAM_EVENTS;
    const DURABLE: &'static str = "columnar-notification-acks-projector";
    const FILTER: Option<&'static str> =
        Some(kanade_shared::subject::EVENTS_NOTIFICATIONS_ACKED_FILTER);

    fn decode(_subject: &str, _seq: u64, payload: &[u8]) -> Result<NotificationAcked, String> {
        serde_json::from_slice(payload).map_err(|e| e.to_string())
    }

    fn check(a: &NotificationAcked) -> Result<(), String> {
        super::wire::key("pc_id", &a.pc_id)?;
        super::wire::opaque("notification_id", Some(&a.notification_id))
    }

    fn apply(
        &self,
        store: &RelationalStore,
        items: &[NotificationAcked],
        pos: StreamPosition<'_>,
    ) -> kanade_storage::Result<()> {
        let now = Utc::now();
        let acks: Vec<NotificationAckRecord> = items
            .iter()
            .map(|a| NotificationAckRecord {
                notification_id: a.notification_id.clone(),
                pc_id: a.pc_id.clone(),
                user_sid: a.user_sid.clone(),
                acked_at: a.acked_at,
                recorded_at: Some(now),
            })
            .collect();
        store.apply_notification_acks(&acks, Some(pos))
    }
}
