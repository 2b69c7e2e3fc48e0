//! `TimeSeriesTable`: one table's WAL, head and partition files, and the
//! orchestration of write, persist, compaction and retention.
//!
//! Locking: `writer` serialises appends (dedup keys + WAL); `persisting`
//! serialises persists, `compacting` compaction, rollups and retention, so
//! a persist (which is what bounds the head) never waits for a long
//! compaction; `state` is held only for the instant a snapshot is taken or
//! a stage swaps its result in, so readers never wait for I/O. Lock order:
//! `compacting`, `persisting`, `writer`, `state`.
//!
//! The head has a hard cap of [`HEAD_HARD_CAP`] times the persist
//! thresholds: a write that leaves it above that persists inline, so the
//! head stays bounded however far the persist pass falls behind.

mod backup;
mod maintain;
mod persist;
mod reads;
mod write;

pub use persist::HEAD_HARD_CAP;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::{concat_batches, interleave_record_batch};
use datafusion::arrow::record_batch::RecordBatch;

use super::compaction::{merge, merged_range, should_compact, CompactionOutcome};
use super::config::TimeSeriesConfig;
use super::fleet::{FleetWindows, WindowAcc};
use super::head::HeadChunk;
use super::latest::{LatestIndex, LatestRows};
use super::parquet_file::{read_key_columns, split_by_date, FileKind, FileWriter};
use super::partition::{scan, FoundFile, PartitionDate, SegmentRange};
use super::read::{PersistedFile, Snapshot};
use super::recent::RecentIndex;
use super::retention::RetentionPolicy;
use super::rollup::{
    self, coalesce, complement, RolledSnapshot, RollupBuilder, RollupLevel, RollupOutcome,
};
use super::table::{string_column, ts_column, KeySet, TableSpec};
use super::wal::{check_schema, Wal};
use crate::{Error, Result};

/// What a write did with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    /// Rows committed (durable and visible).
    pub inserted: usize,
    /// Rows dropped because their key was already known.
    pub duplicates: usize,
}

/// A table's sizes (see [`TimeSeriesTable::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableStats {
    pub head_rows: u64,
    /// Arrow memory of the head's batches.
    pub head_bytes: u64,
    pub wal_segments: u64,
    pub wal_bytes: u64,
    pub partitions: u64,
    pub files: u64,
    pub file_bytes: u64,
}

/// What a backup of a table copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableBackup {
    pub files: u64,
    /// Bytes of the Parquet files (hard-linked when the file system
    /// allows, so not necessarily copied).
    pub file_bytes: u64,
    pub wal_bytes: u64,
}

/// What a persist wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersistOutcome {
    pub rows: usize,
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Default)]
struct TableState {
    head: Vec<HeadChunk>,
    partitions: BTreeMap<PartitionDate, Vec<Arc<PersistedFile>>>,
}

#[derive(Debug)]
struct Writer {
    wal: Wal,
    /// Keys of the head's rows and of recently persisted rows, with their
    /// `at` (µs) so old ones can be forgotten.
    keys: KeySet,
}

/// One time-series table on disk. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct TimeSeriesTable {
    spec: &'static TableSpec,
    root: PathBuf,
    config: TimeSeriesConfig,
    retention: RetentionPolicy,
    state: RwLock<TableState>,
    writer: Mutex<Writer>,
    persisting: Mutex<()>,
    compacting: Mutex<()>,
    /// Each PC's latest rows, for tables whose spec tracks them.
    latest: RwLock<LatestIndex>,
    /// The table's rollups (`spec.rollups`): per PC finest first, then
    /// the fleet-wide ones.
    rollups: Vec<RollupLevel>,
    /// Every PC's newest rows (`spec.recent_secs`).
    recent: RwLock<RecentIndex>,
    /// Fleet-wide 1-minute windows (`spec.fleet_secs`).
    fleet: RwLock<FleetWindows>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TimeSeriesTable {
    /// Opens (or creates) the table under `data_dir`: lists its partition
    /// files, removes leftovers of interrupted writes and compactions, and
    /// replays the WAL into the head.
    pub fn open(
        spec: &'static TableSpec,
        data_dir: &Path,
        config: TimeSeriesConfig,
    ) -> Result<Self> {
        config.validate()?;
        let root = data_dir.join(spec.name);
        std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
        let partitions = load_partitions(scan(&root)?)?;
        let max_file_seq = partitions
            .values()
            .flatten()
            .map(|f| f.range.last + 1)
            .max()
            .unwrap_or(0);
        let wal_dir = data_dir.join("wal").join(spec.name);
        let (wal, replayed) = Wal::open(&wal_dir, spec.name, max_file_seq)?;
        let mut keys = recent_keys(spec, &partitions, dedup_horizon(&config))?;
        let mut head = Vec::new();
        for segment in replayed {
            for batch in segment.batches {
                if !check_schema(&batch, &spec.schema()) {
                    return Err(Error::InvalidConfig(format!(
                        "write-ahead log of {} holds a batch of another schema",
                        spec.name
                    )));
                }
                let fresh = not_yet_persisted(spec, &partitions, segment.seq, &batch)?;
                let fresh = spec.retain_new(&fresh, &mut keys)?;
                if fresh.num_rows() > 0 {
                    head.push(HeadChunk::new(segment.seq, fresh));
                }
            }
        }
        let complete_from = match partitions.values().next_back() {
            Some(newest) => newest_at(newest)?.saturating_add(1),
            None => i64::MIN,
        };
        let mut recent = RecentIndex::new(spec.name, spec.recent_secs, complete_from);
        let now = Utc::now().timestamp_micros();
        let mut fleet = fleet_windows_from_files(spec, &partitions, now, complete_from);
        for chunk in &head {
            recent.observe(&chunk.batch, now);
            fleet.observe(&chunk.batch, now);
        }
        let mut latest = LatestIndex::new(spec.name, !partitions.is_empty());
        if spec.tracks_latest {
            for chunk in &head {
                latest.observe(&chunk.batch)?;
            }
        }
        let replayed_rows: usize = head.iter().map(|c| c.batch.num_rows()).sum();
        tracing::info!(
            table = spec.name,
            files = partitions.values().map(Vec::len).sum::<usize>(),
            partitions = partitions.len(),
            replayed_rows,
            "time-series table opened"
        );
        let retention = RetentionPolicy {
            days: (spec.retention_days)(&config),
        };
        let rollups = spec
            .rollups
            .iter()
            .map(|r| RollupLevel::open(r, data_dir, &config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            spec,
            root,
            config,
            retention,
            state: RwLock::new(TableState { head, partitions }),
            writer: Mutex::new(Writer { wal, keys }),
            persisting: Mutex::new(()),
            compacting: Mutex::new(()),
            latest: RwLock::new(latest),
            rollups,
            recent: RwLock::new(recent),
            fleet: RwLock::new(fleet),
        })
    }

    /// Whether the write-ahead log can be written now (see
    /// [`super::wal::probe`]); the error names the directory and cause.
    pub fn probe_wal(&self) -> Result<()> {
        let dir = lock(&self.writer).wal.dir().to_path_buf();
        super::wal::probe(&dir)
    }

    pub fn spec(&self) -> &'static TableSpec {
        self.spec
    }

    /// The table's directory (`<data_dir>/<table>`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn state_ref(&self) -> std::sync::RwLockReadGuard<'_, TableState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, TableState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Oldest `at` (µs) whose key is remembered after a persist.
fn dedup_horizon(config: &TimeSeriesConfig) -> i64 {
    Utc::now().timestamp_micros() - (config.dedup_window_secs as i64).saturating_mul(1_000_000)
}

/// Keys of persisted rows newer than `horizon`, so a sample re-published
/// across a backend restart is still recognised as a repeat.
fn recent_keys(
    spec: &TableSpec,
    partitions: &BTreeMap<PartitionDate, Vec<Arc<PersistedFile>>>,
    horizon: i64,
) -> Result<KeySet> {
    let mut keys = KeySet::default();
    let Some(first_day) = PartitionDate::of_micros(horizon) else {
        return Ok(keys);
    };
    for files in partitions.range(first_day..).map(|(_, f)| f) {
        for file in files {
            for batch in read_key_columns(spec, &file.path)? {
                for key in spec.keys(&batch) {
                    if key.1 >= horizon {
                        keys.insert(key);
                    }
                }
            }
        }
    }
    Ok(keys)
}

/// The fleet windows of a table being opened, filled from the stored
/// rows within their horizon so they answer at once; if a file cannot be
/// read, empty windows that vouch only for rows after `complete_from`.
fn fleet_windows_from_files(
    spec: &'static TableSpec,
    partitions: &BTreeMap<PartitionDate, Vec<Arc<PersistedFile>>>,
    now: i64,
    complete_from: i64,
) -> FleetWindows {
    let metrics = spec.metric_columns();
    if spec.fleet_secs == 0 {
        return FleetWindows::new(metrics, 0, complete_from);
    }
    let mut fleet = FleetWindows::new(metrics.clone(), spec.fleet_secs, i64::MIN);
    let horizon = now.saturating_sub(spec.fleet_secs.saturating_mul(1_000_000));
    let mut read = |f: &PersistedFile| -> Result<()> {
        use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use datafusion::parquet::arrow::ProjectionMask;
        let file = std::fs::File::open(&f.path).map_err(Error::io(&f.path))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(Error::parquet(&f.path))?;
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            std::iter::once("at").chain(metrics.iter().copied()),
        );
        let reader = builder
            .with_projection(mask)
            .with_batch_size(8_192)
            .build()
            .map_err(Error::parquet(&f.path))?;
        for b in reader {
            fleet.observe(&b.map_err(Error::arrow(spec.name))?, now);
        }
        Ok(())
    };
    for (date, files) in partitions {
        if date.next().start_micros() <= horizon {
            continue;
        }
        for f in files {
            if let Err(e) = read(f) {
                tracing::warn!(
                    table = spec.name,
                    path = %f.path.display(),
                    error = %e,
                    "fleet windows start empty: a file could not be read"
                );
                return FleetWindows::new(spec.metric_columns(), spec.fleet_secs, complete_from);
            }
        }
    }
    fleet
}

/// The newest `at` (µs) of `files`, from their footers' statistics.
fn newest_at(files: &[Arc<PersistedFile>]) -> Result<i64> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    use datafusion::parquet::file::statistics::Statistics;
    let mut newest = i64::MIN;
    for f in files {
        let file = std::fs::File::open(&f.path).map_err(Error::io(&f.path))?;
        let reader = SerializedFileReader::new(file).map_err(Error::parquet(&f.path))?;
        let md = reader.metadata();
        let schema = md.file_metadata().schema_descr();
        let Some(at) = (0..schema.num_columns()).find(|i| schema.column(*i).name() == "at") else {
            continue;
        };
        for rg in md.row_groups() {
            match rg.column(at).statistics() {
                Some(Statistics::Int64(s)) => {
                    if let Some(max) = s.max_opt() {
                        newest = newest.max(*max);
                    }
                }
                // No statistics: nothing can be vouched for.
                _ => return Ok(i64::MAX - 1),
            }
        }
    }
    Ok(newest)
}

/// Builds the partition map from the files on disk, deleting every file
/// whose segment range another file of its partition covers (the inputs
/// of a compaction that was interrupted before it removed them).
fn load_partitions(
    found: Vec<FoundFile>,
) -> Result<BTreeMap<PartitionDate, Vec<Arc<PersistedFile>>>> {
    let mut by_date: BTreeMap<PartitionDate, Vec<FoundFile>> = BTreeMap::new();
    for f in found {
        by_date.entry(f.date).or_default().push(f);
    }
    let mut partitions = BTreeMap::new();
    for (date, files) in by_date {
        let mut kept = Vec::new();
        for f in &files {
            // A lone fresh file's compaction keeps its range: the output
            // supersedes it just the same.
            let superseded = |o: &FoundFile| {
                o.range.covers(f.range) || (o.range == f.range && f.fresh && !o.fresh)
            };
            if files.iter().any(superseded) {
                tracing::warn!(path = %f.path.display(), "removing file superseded by a compaction");
                std::fs::remove_file(&f.path).map_err(Error::io(&f.path))?;
            } else {
                kept.push(Arc::new(PersistedFile::new(
                    f.path.clone(),
                    date,
                    f.range,
                    f.bytes,
                    f.fresh,
                )));
            }
        }
        if !kept.is_empty() {
            partitions.insert(date, kept);
        }
    }
    Ok(partitions)
}

/// The rows of WAL segment `seq` whose partition has no file covering
/// that segment yet.
fn not_yet_persisted(
    spec: &TableSpec,
    partitions: &BTreeMap<PartitionDate, Vec<Arc<PersistedFile>>>,
    seq: u64,
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let parts = split_by_date(spec, batch)?;
    let keep: Vec<RecordBatch> = parts
        .into_iter()
        .filter(|(date, _)| {
            !partitions
                .get(date)
                .is_some_and(|files| files.iter().any(|f| f.range.contains(seq)))
        })
        .map(|(_, b)| b)
        .collect();
    concat_batches(&spec.schema(), &keep).map_err(Error::arrow(spec.name))
}

/// Hands memory freed by a persist or compaction back to the system.
/// glibc's malloc keeps freed chunks of its arenas, and with persist and
/// compaction freeing on other threads than the writes it kept about as
/// much again as the heap held (full-scale benchmark: heap peak 103 MB,
/// RSS 201 MiB).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
