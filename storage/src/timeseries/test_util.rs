//! Fixtures shared by the engine's tests.

use chrono::{DateTime, Utc};
use datafusion::arrow::record_batch::RecordBatch;

use super::table::{HostPerfRow, ProcessPerfRow};

/// One process tick of `pc` at `at`: a row per pid, cpu = pid.
pub(crate) fn process_tick(pc: &str, at: DateTime<Utc>, pids: &[i64]) -> RecordBatch {
    let rows: Vec<ProcessPerfRow> = pids
        .iter()
        .map(|&pid| ProcessPerfRow {
            pc_id: pc.into(),
            at,
            pid,
            name: format!("p{pid}"),
            cpu_pct: pid as f64,
            rss_bytes: 1,
            disk_read_bytes_per_sec: None,
            disk_written_bytes_per_sec: None,
        })
        .collect();
    ProcessPerfRow::to_batch(&rows).unwrap()
}

/// A host sample of `pc` at `secs` (unix seconds) with every metric null.
pub(crate) fn host_row(pc: &str, secs: i64) -> HostPerfRow {
    HostPerfRow {
        pc_id: pc.into(),
        at: DateTime::from_timestamp(secs, 0).unwrap(),
        cpu_pct: None,
        cpu_count: None,
        mem_used_bytes: None,
        mem_total_bytes: None,
        swap_used_bytes: None,
        swap_total_bytes: None,
        disk_read_bytes_per_sec: None,
        disk_written_bytes_per_sec: None,
        net_rx_bytes_per_sec: None,
        net_tx_bytes_per_sec: None,
    }
}
