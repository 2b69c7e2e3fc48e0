//! `host_perf.<pc_id>` (core NATS, `HostPerf`) → table `host_perf`.

use kanade_shared::wire::HostPerf;
use kanade_storage::HostPerfRow;

use super::{Committed, Projection};

/// Projects `HostPerf` samples into `host_perf` rows.
pub struct HostPerfProjection(pub std::sync::Arc<kanade_storage::TimeSeriesTable>);

impl Projection for HostPerfProjection {
    type Item = HostPerf;
    const SUBJECT: &'static str = "host_perf.>";

    fn decode(payload: &[u8]) -> Result<HostPerf, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    fn check(&self, s: &HostPerf, now: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
        super::wire::key("pc_id", &s.pc_id)?;
        super::wire::sample_time(&self.0, s.at, now)
    }

    fn commit(&self, items: &[HostPerf]) -> kanade_storage::Result<Committed> {
        let rows: Vec<HostPerfRow> = items
            .iter()
            .map(|s| HostPerfRow {
                pc_id: s.pc_id.clone(),
                at: s.at,
                cpu_pct: s.cpu_pct,
                cpu_count: s.cpu_count.map(i64::from),
                mem_used_bytes: s.mem_used_bytes,
                mem_total_bytes: s.mem_total_bytes,
                swap_used_bytes: s.swap_used_bytes,
                swap_total_bytes: s.swap_total_bytes,
                disk_read_bytes_per_sec: s.disk_read_bytes_per_sec,
                disk_written_bytes_per_sec: s.disk_written_bytes_per_sec,
                net_rx_bytes_per_sec: s.net_rx_bytes_per_sec,
                net_tx_bytes_per_sec: s.net_tx_bytes_per_sec,
            })
            .collect();
        let outcome = self.0.write(&HostPerfRow::to_batch(&rows)?)?;
        Ok(Committed {
            inserted: outcome.inserted,
            duplicates: outcome.duplicates,
        })
    }
}
