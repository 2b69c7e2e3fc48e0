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
use super::partition::{scan, FoundFile, PartitionDate, SegmentRange};
use super::persist::{read_key_columns, split_by_date, FileKind, FileWriter};
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

    /// Commits `batch` (of this table's schema): rows whose key is already
    /// known are dropped, the rest are fsynced to the WAL and then visible
    /// to every new snapshot. Blocking (fsync): call off the async runtime.
    /// A write that leaves the head above its hard cap persists it before
    /// returning (see the module doc).
    pub fn write(&self, batch: &RecordBatch) -> Result<WriteOutcome> {
        let outcome = self.append(batch)?;
        if outcome.inserted > 0 && self.head_over(HEAD_HARD_CAP) {
            // The rows are committed whatever the persist does: a failure
            // is the persist pass's to retry, not the writer's.
            if let Err(e) = self.persist_if(|t| t.head_over(HEAD_HARD_CAP)) {
                tracing::error!(table = self.spec.name, error = %e, "inline persist of a full head failed");
            }
        }
        Ok(outcome)
    }

    /// Dedup, WAL append and head push, under the writer lock.
    fn append(&self, batch: &RecordBatch) -> Result<WriteOutcome> {
        let mut writer = lock(&self.writer);
        let fresh = self.spec.retain_new(batch, &mut writer.keys)?;
        let outcome = WriteOutcome {
            inserted: fresh.num_rows(),
            duplicates: batch.num_rows() - fresh.num_rows(),
        };
        if fresh.num_rows() == 0 {
            return Ok(outcome);
        }
        if let Err(e) = writer.wal.append(&fresh) {
            for key in self.spec.keys(&fresh) {
                writer.keys.remove(key);
            }
            return Err(e);
        }
        let now = Utc::now().timestamp_micros();
        if self.spec.recent_secs > 0 {
            self.recent
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .observe(&fresh, now);
        }
        if self.spec.fleet_secs > 0 {
            self.fleet
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .observe(&fresh, now);
        }
        if self.spec.tracks_latest {
            // Under the writer lock, so the index sees writes in commit order.
            let observed = self.latest_mut().observe(&fresh);
            if let Err(e) = observed {
                tracing::warn!(table = self.spec.name, error = %e, "latest-rows index not updated");
            }
        }
        let chunk = HeadChunk::new(writer.wal.current_seq(), fresh);
        self.state_mut().head.push(chunk);
        Ok(outcome)
    }

    /// The oldest and newest `at` a sample may carry at `now`: the start
    /// of the oldest partition retention keeps, and `now` plus
    /// `max_future_secs`. Ingest refuses what falls outside, so a broken
    /// clock never creates a partition retention cannot reach.
    pub fn accepted_times(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let oldest = PartitionDate::of(now).minus_days(self.retention.days);
        let oldest = DateTime::from_timestamp_micros(oldest.start_micros()).unwrap_or(now);
        let ahead = chrono::TimeDelta::try_seconds(
            i64::try_from(self.config.max_future_secs).unwrap_or(i64::MAX),
        )
        .unwrap_or(chrono::TimeDelta::MAX);
        (
            oldest,
            now.checked_add_signed(ahead)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    /// The PC's rows with `at` in `[from, to)` from memory (see
    /// `recent.rs`): `None` when the window starts before what the index
    /// holds completely; inside, `None` when the PC has no such rows.
    pub fn recent_rows(
        &self,
        pc_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Option<Result<Option<RecordBatch>>> {
        self.recent.read().unwrap_or_else(|p| p.into_inner()).rows(
            pc_id,
            from.timestamp_micros(),
            to.timestamp_micros(),
        )
    }

    /// The earliest `at` (µs) from which [`Self::recent_rows`] holds
    /// every row of a PC (the horizon moves forward as rows commit);
    /// `None` when the table keeps no recent rows.
    pub fn recent_from(&self) -> Option<i64> {
        self.recent
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .vouched_from()
    }

    /// Every PC's rows with `at` in `[from, to)` from memory, as
    /// [`Self::recent_rows`] for one PC.
    pub fn recent_fleet_rows(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Option<Result<Option<RecordBatch>>> {
        self.recent
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .all_rows(from.timestamp_micros(), to.timestamp_micros())
    }

    /// The fleet-wide 1-minute windows of `metric` starting in `[from,
    /// to)` (µs, multiples of [`crate::FLEET_WINDOW_SECS`]) that hold rows,
    /// from memory (see `fleet.rs`): (start µs, rows, the metric's sum,
    /// count, min and max). `None` when the range starts before
    /// [`Self::fleet_vouched_from`] or the metric is unknown.
    pub fn fleet_windows(
        &self,
        metric: &str,
        from: i64,
        to: i64,
    ) -> Option<Vec<(i64, u64, WindowAcc)>> {
        self.fleet
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .windows(metric, from, to)
    }

    /// The first window start (µs) [`Self::fleet_windows`] answers from
    /// (`i64::MAX` for a table that keeps none).
    pub fn fleet_vouched_from(&self) -> i64 {
        if self.spec.fleet_secs == 0 {
            return i64::MAX;
        }
        self.fleet
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .vouched_from()
    }

    /// The PC's rows at its latest `at`, when the in-memory index knows
    /// them to be the latest over every row stored (always `None` for a
    /// table that does not track them). On `None`, a reader scans and
    /// hands its finding to [`TimeSeriesTable::record_latest_scan`].
    pub fn latest_rows(&self, pc_id: &str) -> Option<LatestRows> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(pc_id)
    }

    /// A reader's scan of every row of `pc_id`: its newest rows (`None`
    /// if it has none). Later [`TimeSeriesTable::latest_rows`] calls for
    /// the PC are answered from memory.
    pub fn record_latest_scan(&self, pc_id: &str, found: Option<LatestRows>) {
        if self.spec.tracks_latest {
            self.latest_mut().record_scan(pc_id, found);
        }
    }

    fn latest_mut(&self) -> std::sync::RwLockWriteGuard<'_, LatestIndex> {
        self.latest.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Sizes for monitoring: the head in memory, the write-ahead log and
    /// the Parquet files on disk.
    pub fn stats(&self) -> Result<TableStats> {
        let mut stats = {
            let state = self.state_ref();
            let files = state.partitions.values().flatten();
            TableStats {
                head_rows: state.head.iter().map(|c| c.batch.num_rows() as u64).sum(),
                head_bytes: state.head.iter().map(|c| c.bytes as u64).sum(),
                partitions: state.partitions.len() as u64,
                files: files.clone().count() as u64,
                file_bytes: files.map(|f| f.bytes).sum(),
                ..TableStats::default()
            }
        };
        (stats.wal_segments, stats.wal_bytes) = lock(&self.writer).wal.disk_usage()?;
        Ok(stats)
    }

    /// Copies the table as it is now into the data directory `dest`: the
    /// write-ahead log and the list of files are taken together under the
    /// writer, persist and compaction locks (no append, persist or compaction
    /// in between, so every row is in exactly one of them), then the
    /// files, pinned by the snapshot, are hard-
    /// linked (copied across file systems). Writes go on meanwhile; only
    /// persist and compaction wait. Opening `dest` gives the same rows.
    pub fn backup_to(&self, dest: &Path) -> Result<TableBackup> {
        let _compacting = lock(&self.compacting);
        let _persisting = lock(&self.persisting);
        let (snapshot, wal_bytes) = {
            let writer = lock(&self.writer);
            let wal_bytes = writer.wal.copy_to(&dest.join("wal").join(self.spec.name))?;
            (self.snapshot(None), wal_bytes)
        };
        let mut out = TableBackup {
            wal_bytes,
            ..TableBackup::default()
        };
        // The table's files, then each rollup's (which may be all that is
        // left of days past the raw retention).
        let mut copies: Vec<(Arc<PersistedFile>, &Path, PathBuf)> = snapshot
            .files()
            .iter()
            .map(|f| {
                (
                    Arc::clone(f),
                    self.root.as_path(),
                    dest.join(self.spec.name),
                )
            })
            .collect();
        for level in &self.rollups {
            copies.extend(level.read().values().flatten().map(|f| {
                (
                    Arc::clone(f),
                    level.root.as_path(),
                    dest.join(level.spec.name),
                )
            }));
        }
        let mut dirs = std::collections::BTreeSet::new();
        for (file, from_root, root) in copies {
            let relative = file.path().strip_prefix(from_root).map_err(|_| {
                Error::InvalidConfig(format!(
                    "{} is outside the table directory {}",
                    file.path().display(),
                    from_root.display()
                ))
            })?;
            let to = root.join(relative);
            let dir = to.parent().unwrap_or(&root).to_path_buf();
            std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
            if std::fs::hard_link(file.path(), &to).is_err() {
                std::fs::copy(file.path(), &to).map_err(Error::io(&to))?;
            }
            out.files += 1;
            out.file_bytes += file.bytes;
            dirs.insert(dir);
        }
        for dir in dirs {
            super::partition::fsync_dir(&dir)?;
        }
        Ok(out)
    }

    /// Decodes every row of every file and counts them with the head's:
    /// a full read, for checking a backup.
    pub fn verify(&self) -> Result<u64> {
        let snapshot = self.snapshot(None);
        let mut rows: u64 = snapshot.head.iter().map(|b| b.num_rows() as u64).sum();
        for f in &snapshot.files {
            rows += super::persist::read_file(self.spec, &f.path)?.num_rows() as u64;
        }
        Ok(rows)
    }

    /// Rows waiting in the head buffer.
    pub fn head_rows(&self) -> usize {
        self.state_ref()
            .head
            .iter()
            .map(|c| c.batch.num_rows())
            .sum()
    }

    /// Rows stored: the head plus every file's row count (read from the
    /// Parquet footers, not the data).
    pub fn stored_rows(&self) -> Result<u64> {
        use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
        let snapshot = self.snapshot(None);
        let mut rows: u64 = snapshot.head.iter().map(|b| b.num_rows() as u64).sum();
        for f in &snapshot.files {
            let file = std::fs::File::open(&f.path).map_err(Error::io(&f.path))?;
            let reader = SerializedFileReader::new(file).map_err(|e| Error::Parquet {
                path: f.path.clone(),
                source: e,
            })?;
            rows += reader.metadata().file_metadata().num_rows().max(0) as u64;
        }
        Ok(rows)
    }

    /// A consistent view of the rows with `at` in `[from, to)` (all rows
    /// when `None`): partitions outside the range are left out before any
    /// file is opened.
    pub fn snapshot(&self, range: Option<(DateTime<Utc>, DateTime<Utc>)>) -> Snapshot {
        let state = self.state_ref();
        let (from, to) = range
            .map(|(f, t)| (f.timestamp_micros(), t.timestamp_micros()))
            .unwrap_or((i64::MIN, i64::MAX));
        self.snapshot_of(&state, from, to, |_| true)
    }

    /// The head chunks overlapping `[from, to)` (µs) and the files of the
    /// partitions in it for which `keep_day` holds.
    fn snapshot_of(
        &self,
        state: &TableState,
        from: i64,
        to: i64,
        keep_day: impl Fn(PartitionDate) -> bool,
    ) -> Snapshot {
        let first_day = PartitionDate::of_micros(from);
        let last_day = PartitionDate::of_micros(to.saturating_sub(1));
        let files = state
            .partitions
            .iter()
            .filter(|(d, _)| first_day.is_none_or(|f| **d >= f))
            .filter(|(d, _)| last_day.is_none_or(|l| **d <= l))
            .filter(|(d, _)| keep_day(**d))
            .flat_map(|(_, files)| files.iter().cloned())
            .collect();
        let head = state
            .head
            .iter()
            .filter(|c| c.overlaps(from, to))
            .map(|c| c.batch.clone())
            .collect();
        Snapshot {
            schema: self.spec.schema(),
            head,
            files,
        }
    }

    /// A consistent view of `[from, to)` for a question bucketed by
    /// `step_secs`: the coarsest rollup whose window divides the step
    /// answers the whole windows of every day it is current for (see
    /// `rollup.rs`), together with the rows of those windows it has not
    /// seen (the day's newer files and the head); the rest (the range's
    /// ragged ends, days whose rollup is missing or stale) is read raw.
    /// The answer is the raw answer either way; with no rollup that
    /// fits, everything is raw.
    /// Only per-PC rollups answer: the plan of a question about one PC
    /// (or one that must see each PC's rows).
    pub fn rolled_snapshot(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
    ) -> RolledSnapshot {
        self.rolled_snapshot_of(from, to, step_secs, false)
    }

    /// [`Self::rolled_snapshot`] for a question over every PC together
    /// (a fleet series): only the fleet-wide rollups answer, their
    /// windows summing every PC's rows. Days they do not hold (a data
    /// directory from before them, past their retention) are left to
    /// `raw_ranges`, which a caller may plan again per PC.
    pub fn rolled_fleet_snapshot(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
    ) -> RolledSnapshot {
        self.rolled_snapshot_of(from, to, step_secs, true)
    }

    fn rolled_snapshot_of(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
        fleet: bool,
    ) -> RolledSnapshot {
        let (from, to) = (from.timestamp_micros(), to.timestamp_micros());
        let state = self.state_ref();
        let level = self.rollups.iter().rev().find(|l| {
            l.spec.fleet == fleet
                && step_secs >= l.spec.window_secs
                && step_secs % l.spec.window_secs == 0
        });
        let mut rolled_files = Vec::new();
        let mut rolled_ranges = Vec::new();
        let mut covered = Vec::new();
        let mut unseen_files = Vec::new();
        if let (Some(level), true) = (level, from < to) {
            let window = level.spec.window_secs * 1_000_000;
            let floor = |t: i64| t.div_euclid(window) * window;
            let ceil = |t: i64| floor(t + window - 1);
            let files = level.read();
            let first_day = PartitionDate::of_micros(from);
            let last_day = PartitionDate::of_micros(to.saturating_sub(1));
            let days = files
                .iter()
                .filter(|(d, _)| first_day.is_none_or(|f| **d >= f))
                .filter(|(d, _)| last_day.is_none_or(|l| **d <= l));
            for (date, rollups) in days {
                let start = date.start_micros();
                let end = date.next().start_micros();
                let raw = state.partitions.get(date).map_or(&[][..], Vec::as_slice);
                let retired = raw.is_empty();
                let rolled = |f: &PersistedFile| rollups.iter().any(|r| r.range == f.range);
                // A raw file answers through its rollup; a retired day
                // through all its rollups.
                let seen: Vec<&Arc<PersistedFile>> = if retired {
                    rollups.iter().collect()
                } else {
                    rollups
                        .iter()
                        .filter(|r| raw.iter().any(|f| f.range == r.range))
                        .collect()
                };
                // A retired day counts windows whole, so rows of it still
                // in the head (which would not) send it to the raw read.
                let head_rows = state.head.iter().any(|c| c.overlaps(start, end));
                if seen.is_empty() || (retired && head_rows) {
                    continue;
                }
                let (a, b) = (from.max(start), to.min(end));
                // Past the raw retention a window overlapping the range
                // counts whole (there is nothing finer to read).
                let (lo, hi) = if retired {
                    (floor(a), b)
                } else {
                    (ceil(a), floor(b))
                };
                if lo >= hi {
                    continue;
                }
                rolled_ranges.push((lo, hi));
                covered.push(if retired { (a, b) } else { (lo, hi) });
                rolled_files.extend(seen.into_iter().cloned());
                unseen_files.extend(raw.iter().filter(|f| !rolled(f)).cloned());
            }
        }
        let raw_ranges = complement(from, to, &covered);
        let rolled_ranges = coalesce(rolled_ranges);
        let touches = |d: PartitionDate| {
            let (start, end) = (d.start_micros(), d.next().start_micros());
            raw_ranges.iter().any(|(a, b)| *a < end && *b > start)
        };
        let raw = self.snapshot_of(&state, from, to, touches);
        let unseen = Snapshot {
            schema: self.spec.schema(),
            head: match (rolled_ranges.first(), rolled_ranges.last()) {
                (Some(&(lo, _)), Some(&(_, hi))) => state
                    .head
                    .iter()
                    .filter(|c| c.overlaps(lo, hi))
                    .map(|c| c.batch.clone())
                    .collect(),
                _ => Vec::new(),
            },
            files: unseen_files,
        };
        let (rollup_schema, window_secs) = match (level, rolled_files.is_empty()) {
            (Some(l), false) => (l.spec.schema(), l.spec.window_secs),
            _ => (self.spec.schema(), 0),
        };
        RolledSnapshot {
            raw,
            raw_ranges,
            unseen,
            rollup: Snapshot {
                schema: rollup_schema,
                head: Vec::new(),
                files: rolled_files,
            },
            window_secs,
            rolled_ranges,
        }
    }

    /// The rollup tables of this table and their files now.
    pub fn rollup_files(&self) -> Vec<(&'static str, Vec<Arc<PersistedFile>>)> {
        self.rollups
            .iter()
            .map(|l| (l.spec.name, l.read().values().flatten().cloned().collect()))
            .collect()
    }

    /// Partition dates currently holding files.
    pub fn partitions(&self) -> Vec<PartitionDate> {
        self.state_ref().partitions.keys().copied().collect()
    }

    /// Whether the head has reached its persist threshold (rows or bytes).
    pub fn wants_persist(&self) -> bool {
        self.head_over(1)
    }

    /// Whether the head holds `factor` times a persist threshold.
    fn head_over(&self, factor: usize) -> bool {
        let state = self.state_ref();
        let (rows, bytes) = state
            .head
            .iter()
            .fold((0, 0), |(r, b), c| (r + c.batch.num_rows(), b + c.bytes));
        rows >= self.config.persist_max_rows.saturating_mul(factor)
            || bytes >= self.config.persist_max_bytes.saturating_mul(factor)
    }

    /// Writes every row in the head to Parquet (one file per partition),
    /// swaps them in and deletes the WAL segments they came from. Rows
    /// written meanwhile stay in the head for the next persist. Runs
    /// beside a compaction; waits only for another persist.
    pub fn persist(&self) -> Result<PersistOutcome> {
        self.persist_if(|_| true)
    }

    /// [`Self::persist`] if `still`, asked once the persist lock is held
    /// (a persist that ran meanwhile may have emptied the head).
    fn persist_if(&self, still: impl Fn(&Self) -> bool) -> Result<PersistOutcome> {
        let _persisting = lock(&self.persisting);
        if !still(self) {
            return Ok(PersistOutcome::default());
        }
        let sealed = {
            let mut writer = lock(&self.writer);
            if self.state_ref().head.is_empty() {
                return Ok(PersistOutcome::default());
            }
            writer.wal.rotate()
        };
        let chunks: Vec<HeadChunk> = self
            .state_ref()
            .head
            .iter()
            .filter(|c| c.segment <= sealed)
            .cloned()
            .collect();
        let written = self.write_chunks(&chunks, sealed)?;
        let outcome = PersistOutcome {
            rows: chunks.iter().map(|c| c.batch.num_rows()).sum(),
            files: written.iter().map(|f| f.path.clone()).collect(),
        };
        {
            let mut state = self.state_mut();
            for file in written {
                state
                    .partitions
                    .entry(file.date)
                    .or_default()
                    .push(Arc::new(file));
            }
            state.head.retain(|c| c.segment > sealed);
        }
        lock(&self.writer).wal.remove_through(sealed)?;
        self.forget_old_keys();
        drop(chunks);
        release_freed_memory();
        tracing::debug!(
            table = self.spec.name,
            rows = outcome.rows,
            files = outcome.files.len(),
            "persisted head"
        );
        Ok(outcome)
    }

    /// Writes the chunks' rows as one sorted file per partition, in
    /// slices: the rows are ordered by a permutation over the chunks (8
    /// bytes a row) and copied out [`PERSIST_SLICE`] rows at a time, so a
    /// persist holds the head plus one slice, not copies of the head.
    fn write_chunks(&self, chunks: &[HeadChunk], sealed: u64) -> Result<Vec<PersistedFile>> {
        let keys: Vec<KeyColumns<'_>> = chunks
            .iter()
            .map(|c| KeyColumns::of(self.spec, &c.batch))
            .collect();
        let ranks = pc_ranks(&keys);
        let pcs = ranks.iter().flatten().max().map_or(0, |&r| r as usize + 1);
        // A counting sort by (day, PC) in commit order: the rows of each
        // day's file by PC, each PC's in the order they came. One pass
        // counts, the second places each row at its PC's next slot.
        let mut days: Vec<Day> = Vec::new();
        let mut last = 0;
        for (chunk, ranks) in chunks.iter().zip(&ranks) {
            let at = ts_column(&chunk.batch);
            for (i, &rank) in ranks.iter().enumerate() {
                let d = Day::find(&mut days, &mut last, at.value(i), pcs, self.spec.name)?;
                let day = &mut days[d];
                day.first = day.first.min(chunk.segment);
                day.next[rank as usize] += 1;
            }
        }
        for day in &mut days {
            let mut start = 0;
            for n in &mut day.next {
                (*n, start) = (start, start + *n);
            }
            day.rows = vec![(0, 0); start];
        }
        for (c, (chunk, ranks)) in chunks.iter().zip(&ranks).enumerate() {
            let at = ts_column(&chunk.batch);
            for (i, &rank) in ranks.iter().enumerate() {
                let d = Day::find(&mut days, &mut last, at.value(i), pcs, self.spec.name)?;
                let day = &mut days[d];
                let slot = &mut day.next[rank as usize];
                day.rows[*slot] = (c as u32, i as u32);
                *slot += 1;
            }
        }
        drop(ranks);
        days.sort_by_key(|d| d.date);
        let batches: Vec<&RecordBatch> = chunks.iter().map(|c| &c.batch).collect();
        let mut written = Vec::with_capacity(days.len());
        for Day {
            date,
            first,
            next: ends,
            mut rows,
            ..
        } in days
        {
            // Each PC's rows (`next` now holds where each ends) by time
            // and sequence, then commit order: rows of equal key keep it.
            let mut from = 0;
            for end in ends {
                order_by_time(&mut rows[from..end], &keys);
                from = end;
            }
            let range = SegmentRange {
                first,
                last: sealed,
            };
            let mut w = FileWriter::create(
                self.spec,
                &self.config,
                &self.root,
                date,
                range,
                FileKind::Fresh,
            )?;
            let mut picks = Vec::with_capacity(PERSIST_SLICE);
            for slice in rows.chunks(PERSIST_SLICE) {
                picks.clear();
                picks.extend(slice.iter().map(|&(c, i)| (c as usize, i as usize)));
                let batch = interleave_record_batch(&batches, &picks)
                    .map_err(Error::arrow(self.spec.name))?;
                w.write(&batch)?;
            }
            written.push(w.finish()?);
        }
        Ok(written)
    }

    fn forget_old_keys(&self) {
        let horizon = dedup_horizon(&self.config);
        let mut writer = lock(&self.writer);
        writer.keys.retain_since(horizon);
        let state = self.state_ref();
        for chunk in &state.head {
            for key in self.spec.keys(&chunk.batch) {
                writer.keys.insert(key);
            }
        }
    }

    /// Compacts every partition that qualifies (closed partitions with two
    /// or more files, today's with `compaction_min_files` or more). A head
    /// holding rows of a closed day (its last hours, late samples) is
    /// persisted first, so the day is merged once with all its rows rather
    /// than again when they land as one more file.
    pub fn compact(&self, today: PartitionDate) -> Result<Vec<CompactionOutcome>> {
        let _compacting = lock(&self.compacting);
        let today_from = today.start_micros();
        let holds_closed = |t: &Self| t.state_ref().head.iter().any(|c| c.min_at < today_from);
        if holds_closed(self) {
            self.persist_if(holds_closed)?;
        }
        let candidates: Vec<(PartitionDate, Vec<Arc<PersistedFile>>)> = self
            .state_ref()
            .partitions
            .iter()
            .filter(|(d, f)| should_compact(&self.config, **d, today, f))
            .map(|(d, f)| (*d, f.clone()))
            .collect();
        let mut outcomes = Vec::new();
        for (date, inputs) in candidates {
            outcomes.push(self.compact_date(date, &inputs, today)?.1);
        }
        self.roll_up(today)?;
        release_freed_memory();
        Ok(outcomes)
    }

    /// Merges `inputs` (files of partition `date`) into one file and
    /// swaps it in, keeping files a persist added meanwhile; the day's
    /// rollups (those retention still keeps on `today`) are built from
    /// the merged rows as they are written and installed after the swap.
    /// Under the compaction lock.
    fn compact_date(
        &self,
        date: PartitionDate,
        inputs: &[Arc<PersistedFile>],
        today: PartitionDate,
    ) -> Result<(Arc<PersistedFile>, CompactionOutcome)> {
        let range = merged_range(inputs);
        let levels = self.stale_rollups(date, range, today);
        let mut rollups = match levels.as_slice() {
            [] => None,
            some => Some(RollupBuilder::new(
                self.spec,
                &self.config,
                some,
                date,
                range,
            )?),
        };
        let mut sink = |b: &RecordBatch| rollups.as_mut().map_or(Ok(()), |r| r.push(b));
        let (file, outcome) = merge(self.spec, &self.config, &self.root, date, inputs, &mut sink)?;
        let built = rollups.map(RollupBuilder::finish).transpose()?;
        let file = Arc::new(file);
        let mut state = self.state_mut();
        let files = state.partitions.entry(date).or_default();
        files.retain(|f| !inputs.iter().any(|i| Arc::ptr_eq(f, i)));
        files.push(Arc::clone(&file));
        for input in inputs {
            input.mark_obsolete();
        }
        drop(state);
        tracing::info!(table = self.spec.name, %date, files = outcome.input_files, rows = outcome.output_rows, "compacted partition");
        if let Some((files, done)) = built {
            install_rollups(&levels, files, &done);
        }
        Ok((file, outcome))
    }

    /// Rolls up every raw file that lacks a rollup retention still keeps
    /// (the files persists wrote since the last pass, a data directory
    /// from before rollups), each on its own. Runs under the compaction
    /// lock, after compaction.
    fn roll_up(&self, today: PartitionDate) -> Result<Vec<RollupOutcome>> {
        if self.rollups.is_empty() {
            return Ok(Vec::new());
        }
        let sources: Vec<Arc<PersistedFile>> = self
            .state_ref()
            .partitions
            .values()
            .flatten()
            .cloned()
            .collect();
        let mut outcomes = Vec::new();
        for source in sources {
            outcomes.extend(self.roll_up_file(&source, today)?);
        }
        Ok(outcomes)
    }

    /// Rolls `source` (one file of its partition) up into every rollup
    /// that lacks a file of its range and keeps its day (nothing when
    /// none does).
    fn roll_up_file(
        &self,
        source: &PersistedFile,
        today: PartitionDate,
    ) -> Result<Vec<RollupOutcome>> {
        let stale = self.stale_rollups(source.date, source.range, today);
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let (files, done) = rollup::build(self.spec, &self.config, &stale, source)?;
        install_rollups(&stale, files, &done);
        Ok(done)
    }

    /// The rollups that want a file of `date` built from the raw file
    /// covering segments `range`: those retention keeps on `today` without
    /// one of that range. A rollup of the same segments is of the same
    /// rows (a lone fresh file rolled up, then compacted) and stays: a new
    /// one would take its file name.
    fn stale_rollups(
        &self,
        date: PartitionDate,
        range: SegmentRange,
        today: PartitionDate,
    ) -> Vec<&RollupLevel> {
        self.rollups
            .iter()
            .filter(|l| !l.retention.is_expired(date, today))
            .filter(|l| !l.has(date, range))
            .collect()
    }

    /// Removes every partition past retention on `today`; returns the
    /// dropped dates. Files are deleted at once unless a running query
    /// still holds them, in which case they go when it finishes.
    pub fn drop_expired(&self, today: PartitionDate) -> Result<Vec<PartitionDate>> {
        let _compacting = lock(&self.compacting);
        // A day about to go is rolled up first if it never was (a
        // partition left with several files, a data directory from before
        // rollups): its rollups outlive it.
        if !self.rollups.is_empty() {
            let expiring: Vec<(PartitionDate, Vec<Arc<PersistedFile>>)> = self
                .state_ref()
                .partitions
                .iter()
                .filter(|(d, _)| self.retention.is_expired(**d, today))
                .map(|(d, f)| (*d, f.clone()))
                .collect();
            for (date, files) in expiring {
                let source = match files.as_slice() {
                    [] => continue,
                    [one] => Arc::clone(one),
                    _ => self.compact_date(date, &files, today)?.0,
                };
                self.roll_up_file(&source, today)?;
            }
        }
        let expired: Vec<(PartitionDate, Vec<Arc<PersistedFile>>)> = {
            let mut state = self.state_mut();
            let dates: Vec<PartitionDate> = state
                .partitions
                .keys()
                .copied()
                .filter(|d| self.retention.is_expired(*d, today))
                .collect();
            dates
                .into_iter()
                .filter_map(|d| state.partitions.remove(&d).map(|f| (d, f)))
                .collect()
        };
        let mut dropped = Vec::new();
        for (date, files) in expired {
            for f in &files {
                f.mark_obsolete();
            }
            drop(files);
            tracing::info!(table = self.spec.name, %date, "dropped expired partition");
            dropped.push(date);
        }
        if !dropped.is_empty() {
            let kept_from = today.minus_days(self.retention.days);
            self.latest_mut().evict_before(kept_from.start_micros());
        }
        for level in &self.rollups {
            level.drop_expired(today);
        }
        Ok(dropped)
    }

    fn state_ref(&self) -> std::sync::RwLockReadGuard<'_, TableState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, TableState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Puts each level's new file in place (`files` in `levels`' order).
fn install_rollups(levels: &[&RollupLevel], files: Vec<PersistedFile>, done: &[RollupOutcome]) {
    for (level, file) in levels.iter().zip(files) {
        level.install(file);
    }
    for o in done {
        tracing::info!(table = o.table, date = %o.date, rows = o.input_rows, windows = o.windows, "rolled up partition");
    }
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

/// The head's hard cap, in multiples of the persist thresholds
/// (`persist_max_rows`, `persist_max_bytes`).
pub const HEAD_HARD_CAP: usize = 2;

/// Rows copied out of the head per write of a persist.
const PERSIST_SLICE: usize = 8_192;

/// A chunk's key columns, for ordering its rows without copying them.
struct KeyColumns<'a> {
    pc: &'a StringArray,
    at: &'a TimestampMicrosecondArray,
    seq: Option<&'a Int64Array>,
}

impl<'a> KeyColumns<'a> {
    fn of(spec: &TableSpec, batch: &'a RecordBatch) -> Self {
        Self {
            pc: string_column(batch, "pc_id"),
            at: ts_column(batch),
            seq: spec.seq_column().and_then(|c| {
                batch
                    .column_by_name(c)
                    .and_then(|a| a.as_any().downcast_ref::<Int64Array>())
            }),
        }
    }
}

/// Per chunk and row, the rank of the row's pc_id among every pc_id of
/// `chunks` in text order. A chunk holds a PC's rows together, so the
/// previous row's PC is nearly always the row's.
fn pc_ranks(chunks: &[KeyColumns<'_>]) -> Vec<Vec<u32>> {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut names: Vec<&str> = Vec::new();
    let by_id: Vec<Vec<u32>> = chunks
        .iter()
        .map(|k| {
            let mut last: Option<(&str, u32)> = None;
            (0..datafusion::arrow::array::Array::len(k.pc))
                .map(|i| {
                    let pc = k.pc.value(i);
                    match last {
                        Some((p, id)) if p == pc => id,
                        _ => {
                            let id = *ids.entry(pc).or_insert_with(|| {
                                names.push(pc);
                                names.len() as u32 - 1
                            });
                            last = Some((pc, id));
                            id
                        }
                    }
                })
                .collect()
        })
        .collect();
    let mut sorted: Vec<u32> = (0..names.len() as u32).collect();
    sorted.sort_unstable_by_key(|&id| names[id as usize]);
    let mut rank = vec![0; names.len()];
    for (r, id) in sorted.into_iter().enumerate() {
        rank[id as usize] = r as u32;
    }
    by_id
        .into_iter()
        .map(|ids| ids.into_iter().map(|id| rank[id as usize]).collect())
        .collect()
}

/// One partition's share of a persist: its first WAL segment, and its
/// rows as (chunk, row) grouped by PC rank (`next`: per rank, the next
/// free slot once counted).
struct Day {
    day: i64,
    date: PartitionDate,
    first: u64,
    next: Vec<usize>,
    rows: Vec<(u32, u32)>,
}

impl Day {
    const MICROS: i64 = 86_400 * 1_000_000;

    /// The index in `days` of the day of `micros`, added if new; `last`
    /// (the previous row's) is tried first.
    fn find(
        days: &mut Vec<Day>,
        last: &mut usize,
        micros: i64,
        pcs: usize,
        table: &'static str,
    ) -> Result<usize> {
        let day = micros.div_euclid(Self::MICROS);
        if days.get(*last).is_some_and(|d| d.day == day) {
            return Ok(*last);
        }
        *last = match days.iter().position(|d| d.day == day) {
            Some(i) => i,
            None => {
                let date = PartitionDate::of_micros(micros)
                    .ok_or(Error::TimestampOutOfRange { table, micros })?;
                days.push(Day {
                    day,
                    date,
                    first: u64::MAX,
                    next: vec![0; pcs],
                    rows: Vec::new(),
                });
                days.len() - 1
            }
        };
        Ok(*last)
    }
}

/// Orders one PC's rows (in commit order) by (at, seq, commit order). A
/// PC's ticks come in time order, each tick's rows together, so sorting
/// each run of equal `at` by its sequence nearly always orders them all;
/// anything else (late samples) is sorted whole.
fn order_by_time(rows: &mut [(u32, u32)], keys: &[KeyColumns<'_>]) {
    let at = |&(c, i): &(u32, u32)| keys[c as usize].at.value(i as usize);
    let seq = |&(c, i): &(u32, u32)| keys[c as usize].seq.map_or(0, |s| s.value(i as usize));
    let mut from = 0;
    while from < rows.len() {
        let t = at(&rows[from]);
        let end = from + rows[from..].iter().take_while(|r| at(r) == t).count();
        if end - from > 1 {
            rows[from..end].sort_unstable_by_key(|r| (seq(r), *r));
        }
        from = end;
    }
    let key = |r: &(u32, u32)| (at(r), seq(r), *r);
    if !rows.windows(2).all(|w| key(&w[0]) <= key(&w[1])) {
        rows.sort_unstable_by_key(key);
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

/// The newest `at` (µs) of `files`, from their footers' statistics.
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
