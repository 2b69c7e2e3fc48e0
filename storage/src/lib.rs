//! The embedded stores of kanade-backend. Knows nothing of HTTP, NATS or
//! DataFusion sessions.
//!
//! A perf sample's journey through this crate (`timeseries/engine/`, one
//! file per stage):
//!
//! 1. **Write** (`engine/write.rs`). The projector hands a batch of rows
//!    (`HostPerfRow` / `ProcessPerfRow`, turned into an Arrow `RecordBatch`
//!    by [`TableSpec`]) to [`TimeSeriesTable::write`]. Rows whose key
//!    (pc_id + at, + pid for processes) is already known, in the head or among the files
//!    of the dedup window, are dropped: first writer wins. The rest are
//!    appended to the write-ahead log (`timeseries/wal.rs`) and fsynced (a failed append
//!    is cut back and the log moves to a fresh segment), then pushed into
//!    the head: from that moment they are durable and visible to every new
//!    [`Snapshot`]. The memory indexes see them too: the recent rows of each
//!    PC, the fleet's one-minute windows, and each PC's latest process tick.
//! 2. **Persist** (`engine/persist.rs`). [`TimeSeriesTable::persist`] seals
//!    the WAL segment and writes the head's rows, sorted by (PC, time), as
//!    one *fresh* file per date partition
//!    (`<table>/date=YYYY-MM-DD/<first>-<last>.fresh.parquet`: numbers plain,
//!    LZ4, cheap to write; see `timeseries/parquet_file.rs`), written to a temporary name,
//!    fsynced and renamed, then swaps the head rows for the new files in one
//!    step and deletes the sealed segments. A head over twice the persist
//!    thresholds persists inline on the write that crossed it.
//! 3. **Maintain** (`engine/maintain.rs`). [`TimeSeriesTable::compact`]
//!    merges a day's files into one sorted, deduplicated *final* file (zstd,
//!    encoded for size) and builds the 5-minute and hourly **rollups** of
//!    new files (sum / count / min / max per PC and window, LZ4);
//!    [`TimeSeriesTable::drop_expired`] removes whole partitions past their
//!    retention, raw and rollup levels each with their own.
//! 4. **Read** (`engine/reads.rs`). Readers take a [`Snapshot`] (head
//!    batches plus the partition files a range needs), or a
//!    [`RolledSnapshot`] that answers a coarse step from the rollups where
//!    they cover it and from raw rows elsewhere; the memory indexes answer
//!    the dashboard's hot questions without opening a file. Files a
//!    snapshot holds are deleted only once the last snapshot holding them
//!    is gone, so a query never loses a file mid-read.
//! 5. **Open and recover** (`engine/mod.rs`) and **back up**
//!    (`engine/backup.rs`): see below.
//!
//! Relational projections (agents, …) live in redb ([`RelationalStore`]):
//! typed tables of self-describing rows with index tables kept in the same
//! write transaction.
//!
//! File names carry the range of WAL segments they contain, which is what
//! makes recovery exact: on start-up a file whose range is covered by
//! another is a leftover of an interrupted compaction and is removed, and a
//! WAL segment's rows are replayed only into partitions that have no file
//! covering that segment.

mod error;
mod relational;
mod timeseries;

pub use error::{Error, Result};
pub use relational::{
    AckEvent, AgentRecord, AgentReported, AuditRecord, CheckChange, CheckStatusRecord,
    CompletionRow, DeployPlanRecord, ExecutionRecord, FinishedRun, HeartbeatUpdate, InstallAttempt,
    InstallEvent, InventoryFactRecord, InventoryPage, JobPcStanding, LatestRun,
    NotificationAckRecord, ObsRecord, ObsScan, PasskeyAdd, PasskeyRecord, PasswordSetupRecord,
    PendingWave, PermissionGroupRecord, RelationalStore, Reported, ResultRecord, RunOutcome,
    RunTime, SetupLookup, SqlTable, StartedRun, StreamPosition, UserChange, UserRecord, UserUpdate,
    ADMIN_ROLE,
};
pub use timeseries::{
    CompactionOutcome, HostPerfRow, InventoryHistoryRow, LatestRows, PartitionDate, PersistOutcome,
    PersistedFile, ProcessPerfRow, RolledSnapshot, RollupOutcome, Snapshot, TableBackup, TableSpec,
    TableStats, TimeSeriesConfig, TimeSeriesTable, WindowAcc, WriteOutcome, FLEET_WINDOW_SECS,
    HOST_PERF, HOST_PERF_1H, HOST_PERF_5M, HOST_PERF_FLEET_1M, INVENTORY_HISTORY, PROCESS_PERF,
    PROCESS_PERF_1H, PROCESS_PERF_5M,
};

/// FNV-1a of `bytes`: a hash that is the same on every machine, version
/// and run, for ids derived from stored keys and for ETags (not a security
/// boundary).
pub fn stable_hash(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Arrow and Parquet as this crate uses them, re-exported so every crate
/// of the workspace shares one version.
pub use datafusion::arrow;
pub use datafusion::parquet;
