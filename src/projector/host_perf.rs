//! `host_perf.<pc_id>` (core NATS, `HostPerf`) → table `host_perf`.

use kanade_shared::wire::HostPerf;
use kanade_storage::arrow::record_batch::RecordBatch;
use kanade_storage::HostPerfRow;

use super::Decoder;

/// Decodes `HostPerf` samples into `host_perf` rows.
pub struct HostPerfDecoder;

impl Decoder for HostPerfDecoder {
    type Item = HostPerf;
    const SUBJECT: &'static str = "host_perf.>";

    fn decode(payload: &[u8]) -> Result<HostPerf, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    fn to_batch(items: &[HostPerf]) -> kanade_storage::Result<RecordBatch> {
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
        HostPerfRow::to_batch(&rows)
    }
}
