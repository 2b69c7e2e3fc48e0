//! Stream `OBS_EVENTS`, subjects `obs.>` (`ObsEvent`) → `obs_events`.

use kanade_shared::wire::ObsEvent;
use kanade_storage::{ObsRecord, RelationalStore, StreamPosition};

use super::stream::StreamProjection;
use super::Committed;

/// Applies agent observations.
pub struct ObsEventsProjection;

impl StreamProjection for ObsEventsProjection {
    type Item = (u64, ObsEvent);
    const STREAM: &'static str = "OBS_EVENTS";
    const DURABLE: &'static str = "columnar-obs-events-projector";
    const FILTER: Option<&'static str> = Some("obs.>");

    fn decode(_subject: &str, seq: u64, payload: &[u8]) -> Result<(u64, ObsEvent), String> {
        serde_json::from_slice(payload)
            .map(|e| (seq, e))
            .map_err(|e| e.to_string())
    }

    fn check(&self, (_, e): &(u64, ObsEvent)) -> Result<(), String> {
        super::wire::key("pc_id", &e.pc_id)
    }

    fn apply(
        &self,
        store: &RelationalStore,
        items: &[(u64, ObsEvent)],
        pos: StreamPosition<'_>,
    ) -> kanade_storage::Result<Committed> {
        let events: Vec<ObsRecord> = items
            .iter()
            .map(|(seq, e)| ObsRecord {
                id: *seq,
                pc_id: e.pc_id.clone(),
                at: e.at,
                kind: e.kind.clone(),
                source: e.source.clone(),
                event_record_id: e.event_record_id.clone(),
                payload: e.payload.clone(),
            })
            .collect();
        store.apply_obs_events(&events, Some(pos))?;
        Ok(Committed::all(items.len()))
    }
}
