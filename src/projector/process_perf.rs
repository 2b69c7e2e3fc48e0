//! `process_perf.<pc_id>` (core NATS, `ProcessPerf`: one tick, a list of
//! processes) → table `process_perf`, one row per process.

use kanade_shared::wire::ProcessPerf;
use kanade_storage::arrow::record_batch::RecordBatch;
use kanade_storage::ProcessPerfRow;

use super::Decoder;

/// Decodes `ProcessPerf` ticks into `process_perf` rows.
pub struct ProcessPerfDecoder;

impl Decoder for ProcessPerfDecoder {
    type Item = ProcessPerf;
    const SUBJECT: &'static str = "process_perf.>";

    fn decode(payload: &[u8]) -> Result<ProcessPerf, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    fn to_batch(items: &[ProcessPerf]) -> kanade_storage::Result<RecordBatch> {
        let rows: Vec<ProcessPerfRow> = items
            .iter()
            .flat_map(|tick| {
                tick.processes.iter().map(move |p| ProcessPerfRow {
                    pc_id: tick.pc_id.clone(),
                    at: tick.at,
                    pid: i64::from(p.pid),
                    name: p.name.clone(),
                    cpu_pct: p.cpu_pct,
                    rss_bytes: p.rss_bytes,
                    disk_read_bytes_per_sec: p.disk_read_bytes_per_sec,
                    disk_written_bytes_per_sec: p.disk_written_bytes_per_sec,
                })
            })
            .collect();
        ProcessPerfRow::to_batch(&rows)
    }
}
