//! `process_perf.<pc_id>` (core NATS, `ProcessPerf`: one tick, a list of
//! processes) → table `process_perf`, one row per process.

use kanade_shared::wire::ProcessPerf;
use kanade_storage::ProcessPerfRow;

use super::{Committed, Projection};

/// Projects `ProcessPerf` ticks into `process_perf` rows.
pub struct ProcessPerfProjection(pub std::sync::Arc<kanade_storage::TimeSeriesTable>);

impl Projection for ProcessPerfProjection {
    type Item = ProcessPerf;
    const SUBJECT: &'static str = "process_perf.>";

    fn decode(payload: &[u8]) -> Result<ProcessPerf, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    fn check(&self, t: &ProcessPerf, now: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
        super::wire::key("pc_id", &t.pc_id)?;
        super::wire::sample_time(&self.0, t.at, now)
    }

    fn commit(&self, items: &[ProcessPerf]) -> kanade_storage::Result<Committed> {
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
        let outcome = self.0.write(&ProcessPerfRow::to_batch(&rows)?)?;
        Ok(Committed {
            inserted: outcome.inserted,
            duplicates: outcome.duplicates,
        })
    }
}
