//! Pick + merge: a partition's files become one sorted file in which every
//! key appears once (the copy from the oldest segment wins), merged as a
//! stream so a day of any size compacts in a few batches of memory.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};

use super::config::TimeSeriesConfig;
use super::parquet_file::{FileKind, FileWriter};
use super::partition::{PartitionDate, SegmentRange};
use super::read::PersistedFile;
use super::table::{string_column, ts_column, TableSpec};
use crate::{Error, Result};

/// What one compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionOutcome {
    pub date: PartitionDate,
    pub input_files: usize,
    pub input_rows: usize,
    pub output_rows: usize,
}

/// Whether a partition holding `files` should be compacted now: a closed
/// day with two files or more, or with one file still fresh from a
/// persist (encoded cheaply, see `FileKind`); today once it holds
/// `compaction_min_files`.
pub fn should_compact(
    config: &TimeSeriesConfig,
    date: PartitionDate,
    today: PartitionDate,
    files: &[Arc<PersistedFile>],
) -> bool {
    match files {
        [] => false,
        [one] => date < today && one.fresh,
        many => date < today || many.len() >= config.compaction_min_files,
    }
}

/// Rows read from each input at a time, and rows per written batch: the
/// merge holds one batch per input and one output batch, whatever the
/// partition's size.
const MERGE_BATCH: usize = 8_192;

/// The key columns of a batch, owned (the arrays share the batch's
/// buffers), so the merge compares keys without borrowing the batch.
struct KeyColumns {
    pc: StringArray,
    at: TimestampMicrosecondArray,
    seq: Option<Int64Array>,
}

/// One input of the merge: its reader and the batch being consumed.
struct Cursor {
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    keys: Option<KeyColumns>,
    row: usize,
}

impl Cursor {
    fn open(path: &Path, spec: &TableSpec) -> Result<(Self, usize)> {
        let file = File::open(path).map_err(Error::io(path))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(Error::parquet(path))?;
        let rows = builder.metadata().file_metadata().num_rows() as usize;
        let reader = builder
            .with_batch_size(MERGE_BATCH)
            .build()
            .map_err(Error::parquet(path))?;
        let mut c = Self {
            reader,
            batch: None,
            keys: None,
            row: 0,
        };
        c.advance(spec)?;
        Ok((c, rows))
    }

    /// Loads the next non-empty batch (or none at the end).
    fn advance(&mut self, spec: &TableSpec) -> Result<()> {
        self.row = 0;
        self.batch = None;
        self.keys = None;
        for b in self.reader.by_ref() {
            let b = b.map_err(Error::arrow(spec.name))?;
            if b.num_rows() > 0 {
                self.keys = Some(KeyColumns {
                    pc: string_column(&b, "pc_id").clone(),
                    at: ts_column(&b).clone(),
                    seq: spec.seq_column().map(|c| {
                        b.column_by_name(c)
                            .and_then(|a| a.as_any().downcast_ref::<Int64Array>())
                            .expect("schema guarantees an Int64 sequence column")
                            .clone()
                    }),
                });
                self.batch = Some(b);
                break;
            }
        }
        Ok(())
    }

    /// The key of the current row (none at the end).
    fn key(&self) -> Option<(&str, i64, i64)> {
        let k = self.keys.as_ref()?;
        let i = self.row;
        Some((
            k.pc.value(i),
            k.at.value(i),
            k.seq.as_ref().map_or(0, |s| s.value(i)),
        ))
    }

    fn exhausted_batch(&self) -> bool {
        self.batch
            .as_ref()
            .is_some_and(|b| self.row >= b.num_rows())
    }
}

/// The WAL segments a merge of `inputs` covers (its file's name).
pub fn merged_range(inputs: &[Arc<PersistedFile>]) -> SegmentRange {
    SegmentRange {
        first: inputs.iter().map(|f| f.range.first).min().unwrap_or(0),
        last: inputs.iter().map(|f| f.range.last).max().unwrap_or(0),
    }
}

/// Merges `inputs` (one partition's files, each sorted and deduplicated)
/// into one new file, streaming: a k-way merge on (pc_id, at[, seq]) in
/// which a key's copy from the oldest file wins. Every batch written is
/// also handed to `sink` (the day's rollups), in order. The inputs stay
/// on disk; the caller swaps them out.
pub fn merge(
    spec: &TableSpec,
    config: &TimeSeriesConfig,
    root: &Path,
    date: PartitionDate,
    inputs: &[Arc<PersistedFile>],
    sink: &mut dyn FnMut(&RecordBatch) -> Result<()>,
) -> Result<(PersistedFile, CompactionOutcome)> {
    let mut ordered: Vec<&Arc<PersistedFile>> = inputs.iter().collect();
    ordered.sort_by_key(|f| f.range);
    let mut cursors = Vec::with_capacity(ordered.len());
    let mut input_rows = 0;
    for f in &ordered {
        let (c, rows) = Cursor::open(&f.path, spec)?;
        cursors.push(c);
        input_rows += rows;
    }
    let range = merged_range(inputs);
    let mut out = FileWriter::create(spec, config, root, date, range, FileKind::Final)?;
    let mut output_rows = 0;
    // Rows picked for the next output batch: (input, row of its batch).
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(MERGE_BATCH);
    // The last key written (its pc_id buffer reused).
    let mut last: Option<(i64, i64)> = None;
    let mut last_pc = String::new();
    loop {
        // The smallest current key; on a tie the oldest input (first in
        // `cursors`) wins.
        let mut best: Option<(usize, (&str, i64, i64))> = None;
        for (i, c) in cursors.iter().enumerate() {
            if let Some(key) = c.key() {
                if best.is_none_or(|(_, b)| key < b) {
                    best = Some((i, key));
                }
            }
        }
        let Some((i, (pc, at, seq))) = best else {
            break;
        };
        let repeat = last == Some((at, seq)) && last_pc == pc;
        if !repeat {
            picks.push((i, cursors[i].row));
            last = Some((at, seq));
            last_pc.clear();
            last_pc.push_str(pc);
        }
        cursors[i].row += 1;
        let exhausted = cursors[i].exhausted_batch();
        // The output is flushed before any input batch it points into is
        // replaced, and whenever it is full.
        if exhausted || picks.len() >= MERGE_BATCH {
            output_rows += flush(spec, &cursors, &mut picks, &mut out, sink)?;
        }
        if exhausted {
            cursors[i].advance(spec)?;
        }
    }
    output_rows += flush(spec, &cursors, &mut picks, &mut out, sink)?;
    let file = out.finish()?;
    let outcome = CompactionOutcome {
        date,
        input_files: inputs.len(),
        input_rows,
        output_rows,
    };
    Ok((file, outcome))
}

/// Writes the picked rows as one batch (and hands it to `sink`); returns
/// how many.
fn flush(
    spec: &TableSpec,
    cursors: &[Cursor],
    picks: &mut Vec<(usize, usize)>,
    out: &mut FileWriter,
    sink: &mut dyn FnMut(&RecordBatch) -> Result<()>,
) -> Result<usize> {
    if picks.is_empty() {
        return Ok(0);
    }
    let empty = RecordBatch::new_empty(spec.schema());
    let batches: Vec<&RecordBatch> = cursors
        .iter()
        .map(|c| c.batch.as_ref().unwrap_or(&empty))
        .collect();
    let merged = interleave_record_batch(&batches, picks).map_err(Error::arrow(spec.name))?;
    out.write(&merged)?;
    sink(&merged)?;
    let n = picks.len();
    picks.clear();
    Ok(n)
}
