//! The time-series engine: head buffer + WAL in front of date-partitioned
//! Parquet files, one stage a file.

pub(crate) mod catalog;
mod compaction;
mod config;
mod head;
mod latest;
mod parquet_file;
mod partition;
mod read;
mod recent;
mod retention;
mod rollup;
mod table;
mod wal;

mod engine;
mod fleet;

pub use compaction::CompactionOutcome;
pub use config::TimeSeriesConfig;
pub use engine::{PersistOutcome, TableBackup, TableStats, TimeSeriesTable, WriteOutcome};
pub use fleet::{WindowAcc, FLEET_WINDOW_SECS};
pub use latest::LatestRows;
pub(crate) use partition::fsync_dir;
pub use partition::PartitionDate;
pub use read::{PersistedFile, Snapshot};
pub use rollup::{RolledSnapshot, RollupOutcome};
pub use table::{
    HostPerfRow, InventoryHistoryRow, ProcessPerfRow, TableSpec, HOST_PERF, HOST_PERF_1H,
    HOST_PERF_5M, HOST_PERF_FLEET_1M, INVENTORY_HISTORY, PROCESS_PERF, PROCESS_PERF_1H,
    PROCESS_PERF_5M,
};

#[cfg(test)]
mod rollup_tests;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;
