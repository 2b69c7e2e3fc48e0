//! One PC's rows without the SQL planner: the fixed-shape questions (a
//! PC's host timeline) read the head with Arrow kernels and each sorted
//! Parquet file through its cached footer and page index, opening only
//! the row groups and pages whose pc_id and `at` ranges can hold the PC's
//! window, then bucket the rows in one pass.
//!
//! The footers, the cache of them and the row-group and page planning are
//! `footer.rs`'s, shared with the DataFusion table provider.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::kernels::cmp::{eq, gt_eq, lt};
use datafusion::arrow::compute::{and, cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReaderBuilder, RowSelection,
};
use datafusion::parquet::arrow::ProjectionMask;
use kanade_storage::Snapshot;

use crate::footer::{io, plan_row_groups, shape, FileCache};
use crate::Result;

const BATCH_ROWS: usize = 8_192;

/// What a file read for one PC touched (for tests and profiles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub files: usize,
    pub row_groups: usize,
    pub rows_read: usize,
    /// Rollup rows of the PC used (one per window).
    pub rollup_rows: usize,
    /// Answered from the table's in-memory recent rows alone.
    pub recent: bool,
}

impl std::ops::AddAssign for ReadStats {
    fn add_assign(&mut self, o: Self) {
        self.files += o.files;
        self.row_groups += o.row_groups;
        self.rows_read += o.rows_read;
        self.rollup_rows += o.rollup_rows;
        self.recent &= o.recent;
    }
}

/// The rows of `pc_id` with `at` in `[from, to)` (micros), `columns`
/// (after pc_id and at) only, from the head and the files of `snapshot`.
pub(crate) fn pc_rows(
    table: &'static str,
    cache: &FileCache,
    snapshot: &Snapshot,
    pc_id: &str,
    from: i64,
    to: i64,
    columns: &[&str],
) -> Result<(Vec<RecordBatch>, ReadStats)> {
    rows(table, cache, snapshot, Some(pc_id), from, to, columns)
}

/// The rows with `at` in `[from, to)` (micros) of one PC (pc_id, at,
/// `columns`) or of every PC (at, `columns`), from the head and the
/// files of `snapshot`, pruned by the files' statistics and page index.
pub(crate) fn rows(
    table: &'static str,
    cache: &FileCache,
    snapshot: &Snapshot,
    pc_id: Option<&str>,
    from: i64,
    to: i64,
    columns: &[&str],
) -> Result<(Vec<RecordBatch>, ReadStats)> {
    let (parts, stats) = scan(
        table,
        cache,
        snapshot,
        pc_id,
        (from, to),
        columns,
        Vec::new,
        |out: &mut Vec<RecordBatch>, b: &RecordBatch| {
            out.push(b.clone());
            Ok(())
        },
    )?;
    Ok((parts.into_iter().flatten().collect(), stats))
}

/// What [`rows`] reads, handed batch by batch to `sink` as it is decoded
/// instead of collected: two or more files are decoded on two threads
/// (this machine's cores, alternating files so each gets a share of the
/// days), each feeding its own state from `init`; the states come back
/// for the caller to merge.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan<S: Send>(
    table: &'static str,
    cache: &FileCache,
    snapshot: &Snapshot,
    pc_id: Option<&str>,
    (from, to): (i64, i64),
    columns: &[&str],
    init: impl Fn() -> S + Sync,
    sink: impl Fn(&mut S, &RecordBatch) -> Result<()> + Sync,
) -> Result<(Vec<S>, ReadStats)> {
    let mut wanted = if pc_id.is_some() {
        vec!["pc_id", "at"]
    } else {
        vec!["at"]
    };
    wanted.extend(columns.iter().copied());
    let mut stats = ReadStats::default();
    let mut head_state = init();
    for b in snapshot.head() {
        if let Some(b) = select(table, b, pc_id, from, to)? {
            sink(&mut head_state, &project(table, &b, &wanted)?)?;
        }
    }
    let mut halves: [Vec<_>; 2] = [Vec::new(), Vec::new()];
    for f in snapshot.files() {
        let meta = cache.get(table, f.path())?;
        let Some((row_groups, selection)) = plan_file(&meta, pc_id, from, to) else {
            continue;
        };
        stats.files += 1;
        stats.row_groups += row_groups.len();
        halves[(stats.files - 1) % 2].push((f.path(), meta, row_groups, selection));
    }
    let read_all = |state: &mut S,
                    files: Vec<(&Path, ArrowReaderMetadata, Vec<usize>, RowSelection)>|
     -> Result<usize> {
        let mut rows_read = 0;
        for (path, meta, row_groups, selection) in files {
            let file = File::open(path).map_err(|e| io(table, path, e))?;
            let mask = ProjectionMask::columns(
                meta.metadata().file_metadata().schema_descr(),
                wanted.iter().copied(),
            );
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
                .with_row_groups(row_groups)
                .with_row_selection(selection)
                .with_projection(mask)
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| shape(table, e.to_string()))?;
            for b in reader {
                let b = b.map_err(|e| shape(table, e.to_string()))?;
                rows_read += b.num_rows();
                if let Some(b) = select(table, &b, pc_id, from, to)? {
                    sink(state, &project(table, &b, &wanted)?)?;
                }
            }
        }
        Ok(rows_read)
    };
    let [first, second] = halves;
    if second.is_empty() {
        stats.rows_read += read_all(&mut head_state, first)?;
        return Ok((vec![head_state], stats));
    }
    let (mine, other) = std::thread::scope(|s| {
        let other = s.spawn(|| {
            let mut state = init();
            read_all(&mut state, second).map(|n| (state, n))
        });
        let mine = read_all(&mut head_state, first);
        let other = other
            .join()
            .unwrap_or_else(|_| Err(shape(table, "a file read panicked".into())));
        (mine, other)
    });
    let (other_state, other_rows) = other?;
    stats.rows_read += mine? + other_rows;
    Ok((vec![head_state, other_state], stats))
}

/// The batch's columns in `names` order.
pub(crate) fn project(table: &'static str, b: &RecordBatch, names: &[&str]) -> Result<RecordBatch> {
    let idx = names
        .iter()
        .map(|n| {
            b.schema()
                .index_of(n)
                .map_err(|e| shape(table, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    b.project(&idx).map_err(|e| shape(table, e.to_string()))
}

/// The rows of `pc_id` (any PC when `None`) with `at` in `[from, to)`,
/// or `None`. The PC test runs first, over the whole batch; the time
/// test only over its rows.
fn select(
    table: &'static str,
    b: &RecordBatch,
    pc_id: Option<&str>,
    from: i64,
    to: i64,
) -> Result<Option<RecordBatch>> {
    let err = |e: datafusion::arrow::error::ArrowError| shape(table, e.to_string());
    let b = match pc_id {
        None => b.clone(),
        Some(pc_id) => {
            let pc = b
                .column_by_name("pc_id")
                .ok_or_else(|| shape(table, "pc_id missing".into()))?;
            let same_pc = eq(pc, &StringArray::new_scalar(pc_id)).map_err(err)?;
            if same_pc.true_count() == 0 {
                return Ok(None);
            }
            if same_pc.true_count() == b.num_rows() {
                b.clone()
            } else {
                filter_record_batch(b, &same_pc).map_err(err)?
            }
        }
    };
    let at = b
        .column_by_name("at")
        .ok_or_else(|| shape(table, "at missing".into()))?;
    let at = cast(at, &DataType::Int64).map_err(err)?;
    let after = gt_eq(&at, &Int64Array::new_scalar(from)).map_err(err)?;
    let before = lt(&at, &Int64Array::new_scalar(to)).map_err(err)?;
    let keep: BooleanArray = and(&after, &before).map_err(err)?;
    Ok(match keep.true_count() {
        0 => None,
        n if n == b.num_rows() => Some(b),
        _ => Some(filter_record_batch(&b, &keep).map_err(err)?),
    })
}

/// The row groups of a file that can hold `pc_id` in `[from, to)`, and
/// within them the pages whose pc_id and `at` ranges both can, as one
/// selection over the chosen row groups.
fn plan_file(
    meta: &ArrowReaderMetadata,
    pc_id: Option<&str>,
    from: i64,
    to: i64,
) -> Option<(Vec<usize>, RowSelection)> {
    let groups = plan_row_groups(meta, pc_id, from, to);
    if groups.is_empty() {
        return None;
    }
    let mut offset = 0;
    let mut ranges = Vec::new();
    for (_, rows, kept) in &groups {
        ranges.extend(kept.iter().map(|r| offset + r.start..offset + r.end));
        offset += rows;
    }
    Some((
        groups.into_iter().map(|(rg, _, _)| rg).collect(),
        RowSelection::from_consecutive_ranges(ranges.into_iter(), offset),
    ))
}

/// The start (unix seconds) of the `step_secs` bucket holding `at_micros`,
/// as SQL's integer arithmetic on the timestamp computes it.
pub(crate) fn bucket_of(at_micros: i64, step_secs: i64) -> i64 {
    let secs = at_micros / 1_000_000;
    (secs / step_secs) * step_secs
}

/// What [`pc_window`] read: raw rows, rollup rows and the read's stats.
pub(crate) struct PcWindow {
    pub raw: Vec<RecordBatch>,
    pub rolled: Vec<RecordBatch>,
    pub stats: ReadStats,
}

/// One PC's rows of `[from, to)` for a question bucketed by `step_secs`:
/// raw rows (pc_id, at, `columns`) and rollup rows (pc_id, at,
/// `rolled_columns`) whose sum per bucket is the raw answer. The part
/// inside the recent rows comes from memory, the whole windows of the
/// rest from the coarsest fitting rollup, everything else from storage.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pc_window(
    (name, rollup): (&'static str, &'static str),
    table: &kanade_storage::TimeSeriesTable,
    cache: &FileCache,
    pc_id: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    step_secs: i64,
    columns: &[&str],
    rolled_columns: &[&str],
) -> Result<PcWindow> {
    let (mut raw, split) = recent_split(name, table, pc_id, from, to, step_secs, columns)?;
    let mut stats = ReadStats::default();
    if split <= from {
        stats.recent = true;
        let rolled = Vec::new();
        return Ok(PcWindow { raw, rolled, stats });
    }
    let plan = table.rolled_snapshot(from, split, step_secs);
    for (snapshot, ranges) in plan.raw_reads() {
        for &(a, b) in ranges {
            let (batches, read) = pc_rows(name, cache, snapshot, pc_id, a, b, columns)?;
            stats += read;
            raw.extend(batches);
        }
    }
    let mut rolled = Vec::new();
    for &(a, b) in &plan.rolled_ranges {
        let (batches, mut read) =
            pc_rows(rollup, cache, &plan.rollup, pc_id, a, b, rolled_columns)?;
        read.rollup_rows = batches.iter().map(|b| b.num_rows()).sum();
        stats += read;
        rolled.extend(batches);
    }
    Ok(PcWindow { raw, rolled, stats })
}

/// Splits one PC's window at the table's in-memory recent rows: the rows
/// of `[split, to)` come from memory (returned), `[from, split)` is left
/// to storage. `split` is on a `step_secs` boundary at or after the
/// point from which memory holds every row, so the stored part ends on
/// whole buckets (and rollup windows): `split == from` when memory holds
/// the whole window, `split == to` when it holds none of it.
fn recent_split(
    name: &'static str,
    table: &kanade_storage::TimeSeriesTable,
    pc_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step_secs: i64,
    columns: &[&str],
) -> Result<(Vec<RecordBatch>, DateTime<Utc>)> {
    let Some(vouched) = table.recent_from() else {
        return Ok((Vec::new(), to));
    };
    let (f, t) = (from.timestamp_micros(), to.timestamp_micros());
    let split = if vouched <= f {
        f
    } else {
        let step = step_secs.max(1).saturating_mul(1_000_000);
        vouched.saturating_add(step - 1).div_euclid(step) * step
    };
    if split >= t {
        return Ok((Vec::new(), to));
    }
    let Some(split) = DateTime::<Utc>::from_timestamp_micros(split) else {
        return Ok((Vec::new(), to));
    };
    // `None`: the horizon moved past `split` meanwhile; storage answers.
    Ok(match recent(name, table, pc_id, split, to, columns)? {
        Some((batches, _)) => (batches, split),
        None => (Vec::new(), to),
    })
}

/// One PC's rows of `[from, to)` (pc_id, at, `columns`) from the table's
/// in-memory recent rows, when they hold the whole window (no file read:
/// `ReadStats` all zero); `None` otherwise.
pub(crate) fn recent(
    name: &'static str,
    table: &kanade_storage::TimeSeriesTable,
    pc_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    columns: &[&str],
) -> Result<Option<(Vec<RecordBatch>, ReadStats)>> {
    let Some(found) = table.recent_rows(pc_id, from, to) else {
        return Ok(None);
    };
    let found = found.map_err(crate::Error::storage(name))?;
    let mut wanted = vec!["pc_id", "at"];
    wanted.extend(columns.iter().copied());
    let batches = match found {
        Some(b) => vec![project(name, &b, &wanted)?],
        None => Vec::new(),
    };
    let stats = ReadStats {
        recent: true,
        ..ReadStats::default()
    };
    Ok(Some((batches, stats)))
}

/// Per-bucket sums and counts of some f64-convertible columns, in one
/// pass; `avg()` divides them (exactly what SQL's AVG does, summation
/// order aside).
pub(crate) struct Buckets {
    step: i64,
    width: usize,
    acc: BTreeMap<i64, Vec<(f64, u64)>>,
}

impl Buckets {
    pub fn new(step_secs: i64, width: usize) -> Self {
        Self {
            step: step_secs.max(1),
            width,
            acc: BTreeMap::new(),
        }
    }

    /// Adds a batch whose column 1 is `at` and columns 2.. the values.
    pub fn add(&mut self, table: &'static str, b: &RecordBatch) -> Result<()> {
        let err = |e: datafusion::arrow::error::ArrowError| shape(table, e.to_string());
        let at = at_micros(table, b.column(1))?;
        let at = at.as_primitive::<Int64Type>();
        let values: Vec<ArrayRef> = (0..self.width)
            .map(|k| cast(b.column(2 + k), &DataType::Float64))
            .collect::<std::result::Result<_, _>>()
            .map_err(err)?;
        let values: Vec<&Float64Array> = values
            .iter()
            .map(|a| a.as_any().downcast_ref::<Float64Array>())
            .collect::<Option<_>>()
            .ok_or_else(|| shape(table, "value columns not numeric".into()))?;
        for i in 0..b.num_rows() {
            let bucket = bucket_of(at.value(i), self.step);
            let slot = self
                .acc
                .entry(bucket)
                .or_insert_with(|| vec![(0.0, 0); self.width]);
            for (k, v) in values.iter().enumerate() {
                if v.is_valid(i) {
                    slot[k].0 += v.value(i);
                    slot[k].1 += 1;
                }
            }
        }
        Ok(())
    }

    /// Adds a rollup batch whose column 1 is the window's start and
    /// columns 2.. pairs of (sum, count) per value: exactly what the
    /// window's raw rows would have added.
    pub fn add_partial(&mut self, table: &'static str, b: &RecordBatch) -> Result<()> {
        let at = at_micros(table, b.column(1))?;
        let at = at.as_primitive::<Int64Type>();
        let pairs = (0..self.width)
            .map(|k| {
                let sum = b.column(2 + 2 * k).as_any().downcast_ref::<Float64Array>();
                let n = b.column(3 + 2 * k).as_any().downcast_ref::<Int64Array>();
                sum.zip(n)
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| shape(table, "rollup columns are not (sum, count)".into()))?;
        for i in 0..b.num_rows() {
            let bucket = bucket_of(at.value(i), self.step);
            let slot = self
                .acc
                .entry(bucket)
                .or_insert_with(|| vec![(0.0, 0); self.width]);
            for (k, (sum, n)) in pairs.iter().enumerate() {
                slot[k].0 += sum.value(i);
                slot[k].1 += n.value(i).max(0) as u64;
            }
        }
        Ok(())
    }

    /// Each bucket's start (unix seconds) and its averages, oldest first.
    pub fn avg(self) -> Vec<(i64, Vec<Option<f64>>)> {
        self.acc
            .into_iter()
            .map(|(b, slots)| {
                let avgs = slots
                    .into_iter()
                    .map(|(sum, n)| (n > 0).then(|| sum / n as f64))
                    .collect();
                (b, avgs)
            })
            .collect()
    }
}

/// A timestamp column as its micros since the epoch.
pub(crate) fn at_micros(table: &'static str, at: &ArrayRef) -> Result<ArrayRef> {
    cast(at, &DataType::Int64).map_err(|e| shape(table, e.to_string()))
}
