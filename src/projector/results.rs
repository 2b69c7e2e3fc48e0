//! Stream `RESULTS` (`ExecResult`) → `execution_results`: creates the row
//! or finishes the in-flight one.

use chrono::Utc;
use kanade_shared::wire::ExecResult;
use kanade_storage::{FinishedRun, RelationalStore, StreamPosition};

use super::stream::StreamProjection;

/// Applies agents' results.
pub struct ResultsProjection;

impl StreamProjection for ResultsProjection {
    type Item = ExecResult;
    const STREAM: &'static str = kanade_shared::kv::STREAM_RESULTS;
    const DURABLE: &'static str = "columnar-results-projector";
    const FILTER: Option<&'static str> = None;

    fn decode(_subject: &str, _seq: u64, payload: &[u8]) -> Result<ExecResult, String> {
        serde_json::from_slice(payload).map_err(|e| e.to_string())
    }

    fn apply(
        &self,
        store: &RelationalStore,
        items: &[ExecResult],
        pos: StreamPosition<'_>,
    ) -> kanade_storage::Result<()> {
        let runs: Vec<FinishedRun> = items
            .iter()
            .map(|r| FinishedRun {
                result_id: r.stable_result_id(),
                request_id: r.request_id.clone(),
                exec_id: r.exec_id.clone(),
                pc_id: r.pc_id.clone(),
                exit_code: i64::from(r.exit_code),
                stdout: r.stdout.clone(),
                stderr: r.stderr.clone(),
                started_at: r.started_at,
                finished_at: r.finished_at,
                job_id: r.manifest_id.clone(),
            })
            .collect();
        store.apply_finished(&runs, Utc::now(), Some(pos))
    }
}
