//! The head buffer: rows committed to the WAL but not yet persisted, kept
//! as immutable Arrow batches so a snapshot is a cheap list of `Arc`s.

use datafusion::arrow::compute::{max, min};
use datafusion::arrow::record_batch::RecordBatch;

use super::table::ts_column;

/// One committed write, tagged with the WAL segment that holds it.
#[derive(Debug, Clone)]
pub struct HeadChunk {
    pub segment: u64,
    pub batch: RecordBatch,
    pub min_at: i64,
    pub max_at: i64,
    /// Arrow memory of the batch.
    pub bytes: usize,
}

impl HeadChunk {
    pub fn new(segment: u64, batch: RecordBatch) -> Self {
        let at = ts_column(&batch);
        let (min_at, max_at) = if at.is_empty() {
            (i64::MAX, i64::MIN)
        } else {
            (min(at).unwrap_or(i64::MAX), max(at).unwrap_or(i64::MIN))
        };
        Self {
            segment,
            bytes: batch.get_array_memory_size(),
            batch,
            min_at,
            max_at,
        }
    }

    /// Whether any row of the chunk may fall in `[from, to)` (µs).
    pub fn overlaps(&self, from: i64, to: i64) -> bool {
        self.min_at < to && self.max_at >= from
    }
}
