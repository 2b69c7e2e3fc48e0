//! Rollups: a raw table's closed partitions summarised per PC per window
//! (5 minutes, 1 hour), and per process name for the process table, with
//! sum, count, min and max of every metric, so a long range reads a few
//! rows per PC-hour instead of every sample.
//!
//! A rollup file is derived from exactly one raw file, whose segment
//! range it carries in its name: each file a persist writes is rolled up
//! on its own, and a compaction rolls its output up as it writes it,
//! replacing the rollups of its inputs. A raw file with a rollup of its
//! range is answered by that rollup; the raw rows no rollup has seen
//! (files not rolled up yet, the head) are read raw over the same
//! windows and added, so the sum is the raw answer. Once retention has
//! dropped the raw partition, the day's rollup files are all there is
//! and answer alone.
//! Rollups keep their own, longer retention.
//!
//! A fleet-wide level (`TableSpec::fleet`) sums every PC's rows of a
//! window into one row (pc_id ""): the same machinery, read only by
//! fleet-wide questions.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ProjectionMask;

use super::config::TimeSeriesConfig;
use super::parquet_file::{FileKind, FileWriter};
use super::partition::{scan, PartitionDate, SegmentRange};
use super::read::{PersistedFile, Snapshot};
use super::retention::RetentionPolicy;
use super::table::{string_column, ts_column, TableSpec, UTC};
use crate::{Error, Result};

/// Rows read from the raw file, and rows per written rollup batch.
const BATCH: usize = 8_192;

/// A group value without a slot in the open window.
const NO_SLOT: u32 = u32::MAX;

const MICROS: i64 = 1_000_000;

/// One rollup table of a raw table: per partition, the rollup files of
/// its raw files (disjoint segment ranges).
#[derive(Debug)]
pub(crate) struct RollupLevel {
    pub spec: &'static TableSpec,
    pub root: PathBuf,
    pub retention: RetentionPolicy,
    pub files: RwLock<BTreeMap<PartitionDate, Vec<Arc<PersistedFile>>>>,
}

impl RollupLevel {
    /// Opens the rollup `spec` under `data_dir`, deleting every file whose
    /// range another file of its partition covers (the rollups of a
    /// compaction's inputs, left by a stop before it removed them).
    pub fn open(
        spec: &'static TableSpec,
        data_dir: &Path,
        config: &TimeSeriesConfig,
    ) -> Result<Self> {
        let root = data_dir.join(spec.name);
        std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
        let mut by_date: BTreeMap<PartitionDate, Vec<Arc<PersistedFile>>> = BTreeMap::new();
        for f in scan(&root)? {
            by_date
                .entry(f.date)
                .or_default()
                .push(Arc::new(PersistedFile::new(
                    f.path, f.date, f.range, f.bytes, f.fresh,
                )));
        }
        for files in by_date.values_mut() {
            let ranges: Vec<SegmentRange> = files.iter().map(|f| f.range).collect();
            files.retain(|f| {
                let superseded = ranges.iter().any(|r| r.covers(f.range));
                if superseded {
                    tracing::warn!(path = %f.path.display(), "removing a superseded rollup file");
                    f.mark_obsolete();
                }
                !superseded
            });
            files.sort_by_key(|f| f.range);
        }
        Ok(Self {
            spec,
            root,
            retention: RetentionPolicy {
                days: (spec.retention_days)(config),
            },
            files: RwLock::new(by_date),
        })
    }

    /// Whether the partition holds a rollup of the raw file of `range`.
    pub fn has(&self, date: PartitionDate, range: SegmentRange) -> bool {
        self.read()
            .get(&date)
            .is_some_and(|files| files.iter().any(|f| f.range == range))
    }

    pub fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<PartitionDate, Vec<Arc<PersistedFile>>>> {
        self.files.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<PartitionDate, Vec<Arc<PersistedFile>>>> {
        self.files.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `file`, in place of the partition's rollups of the raw files
    /// it was merged from (those whose range its range covers).
    pub fn install(&self, file: PersistedFile) {
        let mut all = self.write();
        let files = all.entry(file.date).or_default();
        files.retain(|f| {
            let replaced = file.range.covers(f.range);
            if replaced {
                f.mark_obsolete();
            }
            !replaced
        });
        files.push(Arc::new(file));
        files.sort_by_key(|f| f.range);
    }

    /// Drops the partitions past this rollup's retention on `today`.
    pub fn drop_expired(&self, today: PartitionDate) -> Vec<PartitionDate> {
        let mut files = self.write();
        let expired: Vec<PartitionDate> = files
            .keys()
            .copied()
            .filter(|d| self.retention.is_expired(*d, today))
            .collect();
        for d in &expired {
            for f in files.remove(d).into_iter().flatten() {
                f.mark_obsolete();
            }
            tracing::info!(table = self.spec.name, date = %d, "dropped expired partition");
        }
        expired
    }
}

/// What one rollup pass built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupOutcome {
    pub table: &'static str,
    pub date: PartitionDate,
    pub input_rows: usize,
    /// Rows written: one per PC per window (per group value, for a
    /// rollup with a group column; one per window for a fleet-wide one).
    pub windows: usize,
}

/// The accumulation of one rollup level while the raw file streams by:
/// the open window (per group value, when the level has a group column),
/// and the finished rows waiting to be written.
struct Level<'a> {
    level: &'a RollupLevel,
    window: i64,
    width: usize,
    /// pc_id and window start (µs) of the open window, if any.
    key_pc: String,
    key_start: Option<i64>,
    /// The group values ("" without a group column) seen in the file, by
    /// number, and the number of each: a window's values are the same
    /// few again and again, so none is copied per window.
    names: Vec<String>,
    ids: HashMap<String, u32>,
    /// The open window's slot in the accumulators below of each number
    /// (`NO_SLOT` if none), and the number of each slot.
    slot_of_id: Vec<u32>,
    slot_ids: Vec<u32>,
    /// The slots in output order (reused).
    order: Vec<usize>,
    /// The slot of the previous row.
    last: usize,
    /// A fleet-wide level's windows: every window of the file stays open
    /// until the end, since the rows come PC by PC; per slot its start
    /// (µs), and the slot of each start.
    starts: Vec<i64>,
    start_slots: HashMap<i64, usize>,
    /// Per slot and metric (index `slot * width + metric`): sum, count,
    /// min and max of the non-null values.
    sums: Vec<f64>,
    counts: Vec<i64>,
    mins: Vec<Option<f64>>,
    maxs: Vec<Option<f64>>,
    out_pc: StringBuilder,
    out_at: Vec<i64>,
    out_group: StringBuilder,
    /// Per metric: sum, count, min, max columns of the pending rows.
    out_sum: Vec<Vec<f64>>,
    out_count: Vec<Vec<i64>>,
    out_min: Vec<Vec<Option<f64>>>,
    out_max: Vec<Vec<Option<f64>>>,
    writer: FileWriter,
    rows: usize,
}

impl<'a> Level<'a> {
    fn new(level: &'a RollupLevel, width: usize, writer: FileWriter) -> Self {
        Self {
            level,
            window: level.spec.window_secs * MICROS,
            width,
            key_pc: String::new(),
            key_start: None,
            names: Vec::new(),
            ids: HashMap::new(),
            slot_of_id: Vec::new(),
            slot_ids: Vec::new(),
            order: Vec::new(),
            last: 0,
            starts: Vec::new(),
            start_slots: HashMap::new(),
            sums: Vec::new(),
            counts: Vec::new(),
            mins: Vec::new(),
            maxs: Vec::new(),
            out_pc: StringBuilder::new(),
            out_at: Vec::new(),
            out_group: StringBuilder::new(),
            out_sum: vec![Vec::new(); width],
            out_count: vec![Vec::new(); width],
            out_min: vec![Vec::new(); width],
            out_max: vec![Vec::new(); width],
            writer,
            rows: 0,
        }
    }

    /// The accumulators' slot of the row of pc `pc` at `at` µs (a raw
    /// sample's time or a finer window's start) and group value `group`,
    /// ending the open window first when the row starts another.
    fn slot(&mut self, pc: &str, at: i64, group: &str) -> usize {
        let start = at.div_euclid(self.window) * self.window;
        if self.level.spec.fleet {
            return self.fleet_slot(start);
        }
        if self.key_start != Some(start) || self.key_pc != pc {
            self.close();
            self.key_pc.clear();
            self.key_pc.push_str(pc);
            self.key_start = Some(start);
        }
        self.slot_of(group)
    }

    /// Adds raw row `i` (of pc `pc` at `at` µs, group value `group`) with
    /// the metric values.
    fn add(&mut self, pc: &str, at: i64, group: &str, values: &[&Float64Array], i: usize) {
        let slot = self.slot(pc, at, group);
        for (k, v) in values.iter().enumerate() {
            if v.is_valid(i) {
                let x = v.value(i);
                self.accumulate(slot * self.width + k, x, 1, x, x);
            }
        }
    }

    /// Adds values of one metric (their sum, count, min and max) to
    /// accumulator `j`.
    fn accumulate(&mut self, j: usize, sum: f64, count: i64, min: f64, max: f64) {
        self.sums[j] += sum;
        self.counts[j] += count;
        self.mins[j] = Some(self.mins[j].map_or(min, |m| m.min(min)));
        self.maxs[j] = Some(self.maxs[j].map_or(max, |m| m.max(max)));
    }

    /// Adds the rows of `batch`, windows of a finer level of the same
    /// group (`metrics` in order), each into the window holding its start:
    /// sums and counts add up, min and max of the windows' min and max,
    /// so the result is that of the raw rows.
    fn add_rolled(&mut self, batch: &RecordBatch, metrics: &[&str]) -> Result<()> {
        let spec = self.level.spec;
        let pc = string_column(batch, "pc_id");
        let at = ts_column(batch);
        let groups = spec.group.map(|g| string_column(batch, g));
        let column = |name: String| {
            batch
                .column_by_name(&name)
                .ok_or_else(|| Error::InvalidConfig(format!("{}: {name} missing", spec.name)))
        };
        let floats = |name: String| -> Result<Float64Array> {
            Ok(column(name)?
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("rollup schema: Float64 sums, mins and maxs")
                .clone())
        };
        let mut parts = Vec::with_capacity(metrics.len());
        for m in metrics {
            let count = column(format!("{m}_count"))?
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("rollup schema: Int64 counts")
                .clone();
            parts.push((
                floats(format!("{m}_sum"))?,
                count,
                floats(format!("{m}_min"))?,
                floats(format!("{m}_max"))?,
            ));
        }
        for i in 0..batch.num_rows() {
            let g = groups.map_or("", |g| g.value(i));
            let slot = self.slot(pc.value(i), at.value(i), g);
            for (k, (sum, count, min, max)) in parts.iter().enumerate() {
                // A window without a value of the metric: count 0, min
                // and max null.
                if count.value(i) > 0 {
                    let j = slot * self.width + k;
                    self.accumulate(j, sum.value(i), count.value(i), min.value(i), max.value(i));
                }
            }
        }
        Ok(())
    }

    /// A fleet-wide level's slot of the window starting at `start`, made
    /// if new. A PC's rows come in time order, so the previous row's
    /// window or the next one is nearly always it.
    fn fleet_slot(&mut self, start: i64) -> usize {
        for s in [self.last, self.last + 1] {
            if self.starts.get(s) == Some(&start) {
                self.last = s;
                return s;
            }
        }
        let s = match self.start_slots.get(&start) {
            Some(&s) => s,
            None => {
                let s = self.starts.len();
                self.start_slots.insert(start, s);
                self.starts.push(start);
                self.grow(s + 1);
                s
            }
        };
        self.last = s;
        s
    }

    /// Room in the accumulators for `slots` slots.
    fn grow(&mut self, slots: usize) {
        let n = slots * self.width;
        self.sums.resize(n, 0.0);
        self.counts.resize(n, 0);
        self.mins.resize(n, None);
        self.maxs.resize(n, None);
    }

    /// The open window's slot of `group`, made if new. The rows of a
    /// window repeat their groups in the same order every tick (a PC's
    /// processes by pid), so the previous row's slot or the next one is
    /// nearly always it and the map is the fallback.
    fn slot_of(&mut self, group: &str) -> usize {
        for s in [self.last, self.last + 1] {
            let id = self.slot_ids.get(s).map(|&id| id as usize);
            if id.is_some_and(|id| self.names[id] == group) {
                self.last = s;
                return s;
            }
        }
        let id = match self.ids.get(group) {
            Some(&id) => id as usize,
            None => {
                let id = self.names.len();
                self.ids.insert(group.to_string(), id as u32);
                self.names.push(group.to_string());
                self.slot_of_id.push(NO_SLOT);
                id
            }
        };
        let s = match self.slot_of_id[id] {
            NO_SLOT => {
                let s = self.slot_ids.len();
                self.slot_ids.push(id as u32);
                self.slot_of_id[id] = s as u32;
                self.grow(s + 1);
                s
            }
            s => s as usize,
        };
        self.last = s;
        s
    }

    /// Ends the open window (if any): one pending row per group value,
    /// in the values' order.
    fn close(&mut self) {
        self.last = 0;
        if self.level.spec.fleet {
            // Every window of the file, in time order, under pc_id "".
            self.start_slots.clear();
            let mut starts: Vec<(i64, usize)> = self
                .starts
                .drain(..)
                .enumerate()
                .map(|(slot, start)| (start, slot))
                .collect();
            starts.sort_unstable();
            for (start, slot) in starts {
                self.emit("", start, "", slot);
            }
        } else {
            let Some(start) = self.key_start.take() else {
                return;
            };
            // Moved out (not copied) while the rows are emitted.
            let pc = std::mem::take(&mut self.key_pc);
            let names = std::mem::take(&mut self.names);
            let mut order = std::mem::take(&mut self.order);
            order.clear();
            order.extend(0..self.slot_ids.len());
            let name = |slot: usize| names[self.slot_ids[slot] as usize].as_str();
            order.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
            for &slot in &order {
                let group = &names[self.slot_ids[slot] as usize];
                self.emit(&pc, start, group, slot);
            }
            for id in self.slot_ids.drain(..) {
                self.slot_of_id[id as usize] = NO_SLOT;
            }
            (self.key_pc, self.names, self.order) = (pc, names, order);
        }
        self.sums.clear();
        self.counts.clear();
        self.mins.clear();
        self.maxs.clear();
    }

    /// Adds the row of `slot`'s accumulators to the pending rows.
    fn emit(&mut self, pc: &str, start: i64, group: &str, slot: usize) {
        self.out_pc.append_value(pc);
        self.out_at.push(start);
        self.out_group.append_value(group);
        for k in 0..self.width {
            let j = slot * self.width + k;
            self.out_sum[k].push(self.sums[j]);
            self.out_count[k].push(self.counts[j]);
            self.out_min[k].push(self.mins[j]);
            self.out_max[k].push(self.maxs[j]);
        }
        self.rows += 1;
    }

    /// Writes the pending rows as one batch, and returns it (none when
    /// nothing was pending).
    fn flush(&mut self) -> Result<Option<RecordBatch>> {
        if self.out_at.is_empty() {
            return Ok(None);
        }
        let spec = self.level.spec;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.out_pc.finish()),
            Arc::new(
                TimestampMicrosecondArray::from(std::mem::take(&mut self.out_at))
                    .with_timezone(UTC),
            ),
        ];
        let group = self.out_group.finish();
        if spec.group.is_some() {
            columns.push(Arc::new(group));
        }
        for k in 0..self.width {
            columns.push(Arc::new(Float64Array::from(std::mem::take(
                &mut self.out_sum[k],
            ))));
            columns.push(Arc::new(Int64Array::from(std::mem::take(
                &mut self.out_count[k],
            ))));
            columns.push(Arc::new(Float64Array::from(std::mem::take(
                &mut self.out_min[k],
            ))));
            columns.push(Arc::new(Float64Array::from(std::mem::take(
                &mut self.out_max[k],
            ))));
        }
        let batch =
            RecordBatch::try_new(spec.schema(), columns).map_err(Error::arrow(spec.name))?;
        self.writer.write(&batch)?;
        Ok(Some(batch))
    }
}

/// Summarises the raw file `source` (of partition `date`, sorted by
/// pc_id then at) into a new file of every level in `levels`, in one
/// streaming pass: one raw batch and at most one output batch per level
/// in memory.
pub(crate) fn build(
    raw: &'static TableSpec,
    config: &TimeSeriesConfig,
    levels: &[&RollupLevel],
    source: &PersistedFile,
) -> Result<(Vec<PersistedFile>, Vec<RollupOutcome>)> {
    let mut builder = RollupBuilder::new(raw, config, levels, source.date, source.range)?;
    let path = &source.path;
    let file = File::open(path).map_err(Error::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(Error::parquet(path))?;
    let mask = ProjectionMask::columns(reader.parquet_schema(), builder.columns());
    let reader = reader
        .with_projection(mask)
        .with_batch_size(BATCH)
        .build()
        .map_err(Error::parquet(path))?;
    for batch in reader {
        builder.push(&batch.map_err(Error::arrow(raw.name))?)?;
    }
    builder.finish()
}

/// The rollups of one raw file, built while its rows go by in key order
/// (pc_id, at): read back from the file ([`build`]), or as a compaction
/// writes them, which spares decoding the file it has just encoded. A
/// level whose window is a multiple of a finer level's (same group) is
/// built from that level's rows rather than the raw ones: an hour from
/// twelve 5-minute windows instead of every sample.
pub(crate) struct RollupBuilder<'a> {
    raw: &'static TableSpec,
    metrics: Vec<&'static str>,
    /// Every level of a table groups by the same column (or none).
    group: Option<&'static str>,
    levels: Vec<Level<'a>>,
    /// Per level, the finer level whose rows it is built from, if any.
    sources: Vec<Option<usize>>,
    /// Every level, finest first.
    finest_first: Vec<usize>,
    date: PartitionDate,
    input_rows: usize,
}

impl<'a> RollupBuilder<'a> {
    /// Starts a file of every level in `levels` for the raw file of
    /// partition `date` covering WAL segments `range`.
    pub fn new(
        raw: &'static TableSpec,
        config: &TimeSeriesConfig,
        levels: &[&'a RollupLevel],
        date: PartitionDate,
        range: SegmentRange,
    ) -> Result<Self> {
        let metrics = raw.metric_columns();
        let specs: Vec<&'static TableSpec> = levels.iter().map(|l| l.spec).collect();
        let sources = sources(&specs);
        let levels = levels
            .iter()
            .map(|l| {
                if l.spec.fleet && l.spec.group.is_some() {
                    return Err(Error::InvalidConfig(format!(
                        "{}: a fleet-wide rollup groups by its window alone",
                        l.spec.name
                    )));
                }
                let w = FileWriter::create(l.spec, config, &l.root, date, range, FileKind::Final)?;
                Ok(Level::new(l, metrics.len(), w))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut finest_first: Vec<usize> = (0..levels.len()).collect();
        finest_first.sort_by_key(|&i| specs[i].window_secs);
        Ok(Self {
            raw,
            group: levels.first().and_then(|l| l.level.spec.group),
            metrics,
            levels,
            sources,
            finest_first,
            date,
            input_rows: 0,
        })
    }

    /// The raw columns a rollup reads.
    pub fn columns(&self) -> Vec<&'static str> {
        let mut wanted = vec!["pc_id", "at"];
        wanted.extend(self.group);
        wanted.extend(self.metrics.iter().copied());
        wanted
    }

    /// Adds the rows of `batch` (raw rows holding at least
    /// [`Self::columns`], after every row already pushed in key order).
    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let raw = self.raw;
        let pc = string_column(batch, "pc_id");
        let at = ts_column(batch);
        let groups = self.group.map(|g| string_column(batch, g));
        let values: Vec<ArrayRef> = self
            .metrics
            .iter()
            .map(|m| {
                let c = batch
                    .column_by_name(m)
                    .ok_or_else(|| Error::InvalidConfig(format!("{}: {m} missing", raw.name)))?;
                cast(c, &DataType::Float64).map_err(Error::arrow(raw.name))
            })
            .collect::<Result<_>>()?;
        let values: Vec<&Float64Array> = values
            .iter()
            .filter_map(|a| a.as_any().downcast_ref::<Float64Array>())
            .collect();
        for i in 0..batch.num_rows() {
            let g = groups.map_or("", |g| g.value(i));
            // The levels no finer level feeds take the raw rows.
            for (level, source) in self.levels.iter_mut().zip(&self.sources) {
                if source.is_none() {
                    level.add(pc.value(i), at.value(i), g, &values, i);
                }
            }
        }
        self.input_rows += batch.num_rows();
        for k in 0..self.finest_first.len() {
            self.drain(self.finest_first[k], BATCH)?;
        }
        Ok(())
    }

    /// Writes level `i`'s pending rows if there are `at_least` of them
    /// (and any), and hands them to the levels built from them.
    fn drain(&mut self, i: usize, at_least: usize) -> Result<()> {
        if self.levels[i].out_at.len() < at_least {
            return Ok(());
        }
        let Some(batch) = self.levels[i].flush()? else {
            return Ok(());
        };
        for j in 0..self.levels.len() {
            if self.sources[j] == Some(i) {
                self.levels[j].add_rolled(&batch, &self.metrics)?;
            }
        }
        Ok(())
    }

    /// Closes the open windows and finishes every level's file.
    pub fn finish(mut self) -> Result<(Vec<PersistedFile>, Vec<RollupOutcome>)> {
        for k in 0..self.finest_first.len() {
            let i = self.finest_first[k];
            self.levels[i].close();
            self.drain(i, 0)?;
        }
        let mut files = Vec::with_capacity(self.levels.len());
        let mut outcomes = Vec::with_capacity(self.levels.len());
        for level in self.levels {
            outcomes.push(RollupOutcome {
                table: level.level.spec.name,
                date: self.date,
                input_rows: self.input_rows,
                windows: level.rows,
            });
            files.push(level.writer.finish()?);
        }
        Ok((files, outcomes))
    }
}

/// Per level of `specs`, the level whose rows it is built from: the
/// coarsest finer one of the same group whose window divides its own
/// (none for a fleet-wide level, or when no such level is built along).
fn sources(specs: &[&'static TableSpec]) -> Vec<Option<usize>> {
    let source = |coarse: &&TableSpec| {
        specs
            .iter()
            .enumerate()
            .filter(|(_, fine)| !fine.fleet && !coarse.fleet && fine.group == coarse.group)
            .filter(|(_, fine)| {
                fine.window_secs < coarse.window_secs && coarse.window_secs % fine.window_secs == 0
            })
            .max_by_key(|(_, fine)| fine.window_secs)
            .map(|(i, _)| i)
    };
    specs.iter().map(source).collect()
}

/// A consistent view of a range for a bucketed question: which parts a
/// rollup answers exactly and which must be read raw.
#[derive(Debug, Clone)]
pub struct RolledSnapshot {
    /// The raw rows (head and files) of the parts read raw.
    pub raw: Snapshot,
    /// `[from, to)` (µs) parts to read from `raw`, in order, disjoint.
    pub raw_ranges: Vec<(i64, i64)>,
    /// The raw rows the rollup files have not seen in their days (the
    /// days' newer files and the head), read over `rolled_ranges`.
    pub unseen: Snapshot,
    /// The rollup's files for the parts it answers (empty when none).
    pub rollup: Snapshot,
    /// The rollup's window, seconds (0 when no rollup answers).
    pub window_secs: i64,
    /// Window-start (µs) ranges to read from `rollup`, in order.
    pub rolled_ranges: Vec<(i64, i64)>,
}

impl RolledSnapshot {
    /// Every raw read the answer needs, each a snapshot and the ranges
    /// (µs, half-open) to read of it: the raw parts, then the rows of the
    /// rolled windows their rollup has not seen. Their sum with the
    /// rollup rows over `rolled_ranges` is the raw answer.
    pub fn raw_reads(&self) -> [(&Snapshot, &[(i64, i64)]); 2] {
        [
            (&self.raw, &self.raw_ranges),
            (&self.unseen, &self.rolled_ranges),
        ]
    }
}

/// `[from, to)` minus the sorted, disjoint `covered` ranges.
pub(crate) fn complement(from: i64, to: i64, covered: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut at = from;
    for &(a, b) in covered {
        if a > at {
            out.push((at, a.min(to)));
        }
        at = at.max(b);
    }
    if at < to {
        out.push((at, to));
    }
    out.retain(|(a, b)| a < b);
    out
}

/// Sorted ranges with touching neighbours joined.
pub(crate) fn coalesce(ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::table::{
        HOST_PERF_1H, HOST_PERF_5M, HOST_PERF_FLEET_1M, PROCESS_PERF_1H, PROCESS_PERF_5M,
    };
    use super::{coalesce, complement, sources};

    #[test]
    fn an_hour_is_built_from_the_five_minute_windows_built_along() {
        assert_eq!(
            sources(&[&HOST_PERF_5M, &HOST_PERF_1H, &HOST_PERF_FLEET_1M]),
            vec![None, Some(0), None],
            "the fleet minute from raw rows, the hour from 5 minutes"
        );
        assert_eq!(
            sources(&[&HOST_PERF_FLEET_1M, &HOST_PERF_1H]),
            vec![None, None],
            "not from the fleet-wide minute"
        );
        assert_eq!(sources(&[&HOST_PERF_1H]), vec![None]);
        assert_eq!(
            sources(&[&PROCESS_PERF_1H, &PROCESS_PERF_5M]),
            vec![Some(1), None]
        );
    }

    #[test]
    fn touching_ranges_join() {
        assert_eq!(coalesce(vec![]), vec![]);
        assert_eq!(
            coalesce(vec![(0, 10), (10, 20), (30, 40)]),
            vec![(0, 20), (30, 40)]
        );
    }

    #[test]
    fn complement_of_covered_parts() {
        assert_eq!(complement(0, 100, &[]), vec![(0, 100)]);
        assert_eq!(complement(0, 100, &[(0, 100)]), vec![]);
        assert_eq!(
            complement(0, 100, &[(10, 20), (20, 30), (50, 60)]),
            vec![(0, 10), (30, 50), (60, 100)]
        );
        assert_eq!(complement(0, 100, &[(90, 120)]), vec![(0, 90)]);
    }
}
