//! Stream `EVENTS`, subjects `events.started.>` (`EventStarted`) → the
//! in-flight `execution_results` row.

use chrono::Utc;
use kanade_shared::wire::EventStarted;
use kanade_storage::{RelationalStore, StartedRun, StreamPosition};

use super::stream::StreamProjection;
use super::Committed;

/// Applies run starts.
pub struct StartedProjection;

impl StreamProjection for StartedProjection {
    type Item = EventStarted;
    const STREAM: &'static str = kanade_shared::kv::STREAM_EVENTS;
    const DURABLE: &'static str = "columnar-events-started-projector";
    const FILTER: Option<&'static str> = Some("events.started.>");

    fn decode(_subject: &str, _seq: u64, payload: &[u8]) -> Result<EventStarted, String> {
        serde_json::from_slice(payload).map_err(|e| e.to_string())
    }

    fn check(&self, e: &EventStarted) -> Result<(), String> {
        use super::wire;
        wire::key("pc_id", &e.pc_id)?;
        wire::optional_key("manifest_id", Some(&e.manifest_id))?;
        wire::optional_key("exec_id", Some(&e.exec_id))?;
        wire::opaque("result_id", Some(&e.result_id))?;
        wire::opaque("request_id", Some(&e.request_id))
    }

    fn apply(
        &self,
        store: &RelationalStore,
        items: &[EventStarted],
        pos: StreamPosition<'_>,
    ) -> kanade_storage::Result<Committed> {
        let runs: Vec<StartedRun> = items
            .iter()
            .map(|e| StartedRun {
                result_id: e.result_id.clone(),
                request_id: e.request_id.clone(),
                exec_id: e.exec_id.clone(),
                pc_id: e.pc_id.clone(),
                started_at: e.started_at,
                job_id: e.manifest_id.clone(),
                version: e.version.clone(),
            })
            .collect();
        store.apply_started(&runs, Utc::now(), Some(pos))?;
        Ok(Committed::all(items.len()))
    }
}
