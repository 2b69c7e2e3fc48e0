//! Reading: snapshots of head and files for a range (raw or through the
//! rollups), the in-memory indexes (recent rows, fleet windows, latest
//! tick), and counts.

use super::*;

impl TimeSeriesTable {
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

    pub(super) fn latest_mut(&self) -> std::sync::RwLockWriteGuard<'_, LatestIndex> {
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
    pub(super) fn snapshot_of(
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

    pub(super) fn rolled_snapshot_of(
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
}
