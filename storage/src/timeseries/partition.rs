//! Where a table's files live: `<root>/date=YYYY-MM-DD/<first>-<last>.parquet`
//! (Hive style, so DuckDB / Polars / Spark read the directory as one
//! dataset), and the listing of what is on disk.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};

use crate::{Error, Result};

/// A UTC calendar day: the unit of partitioning and of retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionDate(NaiveDate);

impl PartitionDate {
    /// The partition a timestamp (µs since the epoch, UTC) belongs to.
    pub fn of_micros(micros: i64) -> Option<Self> {
        DateTime::<Utc>::from_timestamp_micros(micros).map(|t| Self(t.date_naive()))
    }

    /// The partition of a timestamp.
    pub fn of(at: DateTime<Utc>) -> Self {
        Self(at.date_naive())
    }

    /// Parses `YYYY-MM-DD`.
    pub fn try_parse(s: &str) -> Result<Self> {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Self)
            .map_err(|_| Error::InvalidPartitionDate(s.to_string()))
    }

    pub fn date(self) -> NaiveDate {
        self.0
    }

    /// The first microsecond of the day (UTC), since the epoch.
    pub fn start_micros(self) -> i64 {
        self.0
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_micros()
    }

    /// The partition `days` days before this one.
    pub fn minus_days(self, days: u32) -> Self {
        Self(self.0 - chrono::Days::new(u64::from(days)))
    }

    /// The day after.
    pub fn next(self) -> Self {
        Self(self.0 + chrono::Days::new(1))
    }

    /// The directory name of the partition, `date=YYYY-MM-DD`.
    pub fn dir_name(self) -> String {
        format!("date={self}")
    }

    fn try_from_dir_name(name: &str) -> Option<Self> {
        name.strip_prefix("date=")
            .and_then(|d| Self::try_parse(d).ok())
    }
}

impl fmt::Display for PartitionDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// The inclusive range of WAL segments whose rows a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentRange {
    pub first: u64,
    pub last: u64,
}

impl SegmentRange {
    pub fn contains(self, seg: u64) -> bool {
        self.first <= seg && seg <= self.last
    }

    /// Whether `other` is a different range lying entirely inside this one.
    pub fn covers(self, other: SegmentRange) -> bool {
        self != other && self.first <= other.first && other.last <= self.last
    }

    /// The name of a file of this range: `<first>-<last>.parquet`, or
    /// `<first>-<last>.fresh.parquet` for a persist's file.
    pub fn file_name(self, fresh: bool) -> String {
        let marker = if fresh { FRESH_MARKER } else { "" };
        format!("{:020}-{:020}{marker}.parquet", self.first, self.last)
    }

    /// The range and freshness a file name says.
    fn try_from_file_name(name: &str) -> Option<(Self, bool)> {
        let stem = name.strip_suffix(".parquet")?;
        let (stem, fresh) = match stem.strip_suffix(FRESH_MARKER) {
            Some(s) => (s, true),
            None => (stem, false),
        };
        let (a, b) = stem.split_once('-')?;
        let range = Self {
            first: a.parse().ok()?,
            last: b.parse().ok()?,
        };
        (range.first <= range.last).then_some((range, fresh))
    }
}

const FRESH_MARKER: &str = ".fresh";

/// A Parquet file found on disk.
#[derive(Debug, Clone)]
pub struct FoundFile {
    pub date: PartitionDate,
    pub range: SegmentRange,
    pub path: PathBuf,
    pub bytes: u64,
    /// Written by a persist (see `FileKind::Fresh`).
    pub fresh: bool,
}

/// Suffix of files being written; never read, removed on start-up.
pub const TMP_SUFFIX: &str = ".tmp";

/// The directory of a partition.
pub fn partition_dir(root: &Path, date: PartitionDate) -> PathBuf {
    root.join(date.dir_name())
}

/// Lists every partition file under `root`, removing leftovers of an
/// interrupted write (`*.tmp`) on the way. Files whose name is not ours are
/// left alone and ignored.
pub fn scan(root: &Path) -> Result<Vec<FoundFile>> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(root)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io(root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(date) = PartitionDate::try_from_dir_name(&name) else {
            continue;
        };
        scan_partition(&entry.path(), date, &mut found)?;
    }
    Ok(found)
}

fn scan_partition(dir: &Path, date: PartitionDate, found: &mut Vec<FoundFile>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(TMP_SUFFIX) {
            tracing::warn!(path = %path.display(), "removing unfinished partition file");
            fs::remove_file(&path).map_err(Error::io(&path))?;
            continue;
        }
        let Some((range, fresh)) = SegmentRange::try_from_file_name(&name) else {
            continue;
        };
        let bytes = entry.metadata().map_err(Error::io(&path))?.len();
        found.push(FoundFile {
            date,
            range,
            path,
            bytes,
            fresh,
        });
    }
    Ok(())
}

/// Makes a rename or a create inside `dir` durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}
