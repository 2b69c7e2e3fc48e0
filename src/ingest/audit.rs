//! Stream `AUDIT` → `audit_log`, one row per message keyed by its stream
//! sequence.

use chrono::{DateTime, Utc};

use kanade_storage::{AuditRecord, RelationalStore, StreamPosition};
use serde::Deserialize;

use super::stream::StreamProjection;
use super::Committed;

/// The audit event as published on the stream.
#[derive(Debug, Deserialize)]
pub struct AuditEvent {
    actor: String,
    action: String,
    target: Option<String>,
    #[serde(default)]
    payload: serde_json::Value,
    occurred_at: DateTime<Utc>,
}

/// Applies audit events.
pub struct AuditProjection;

impl StreamProjection for AuditProjection {
    type Item = (u64, AuditEvent);
    const STREAM: &'static str = kanade_shared::kv::STREAM_AUDIT;
    const DURABLE: &'static str = "columnar-audit-projector";
    const FILTER: Option<&'static str> = None;

    fn decode(_subject: &str, seq: u64, payload: &[u8]) -> Result<(u64, AuditEvent), String> {
        serde_json::from_slice(payload)
            .map(|e| (seq, e))
            .map_err(|e| e.to_string())
    }

    fn apply(
        &self,
        store: &RelationalStore,
        items: &[(u64, AuditEvent)],
        pos: StreamPosition<'_>,
    ) -> kanade_storage::Result<Committed> {
        let entries: Vec<AuditRecord> = items
            .iter()
            .map(|(seq, e)| AuditRecord {
                id: *seq,
                actor: e.actor.clone(),
                action: e.action.clone(),
                target: e.target.clone(),
                payload: e.payload.clone(),
                occurred_at: Some(e.occurred_at),
            })
            .collect();
        store.apply_audit(&entries, Some(pos))?;
        Ok(Committed::all(items.len()))
    }
}
