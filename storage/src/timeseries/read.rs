//! What `queries` sees: a consistent snapshot of one table.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::partition::{PartitionDate, SegmentRange};

/// One Parquet file the engine believes in. When a compaction or the
/// retention replaces it, it is marked obsolete and deleted from disk once
/// the last snapshot holding it is dropped.
#[derive(Debug)]
pub struct PersistedFile {
    pub(crate) path: PathBuf,
    pub(crate) date: PartitionDate,
    pub(crate) range: SegmentRange,
    pub(crate) bytes: u64,
    /// Written by a persist, not yet by a compaction.
    pub(crate) fresh: bool,
    obsolete: AtomicBool,
}

impl PersistedFile {
    pub(crate) fn new(
        path: PathBuf,
        date: PartitionDate,
        range: SegmentRange,
        bytes: u64,
        fresh: bool,
    ) -> Self {
        Self {
            path,
            date,
            range,
            bytes,
            fresh,
            obsolete: AtomicBool::new(false),
        }
    }

    /// Absolute path of the file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Partition the file belongs to.
    pub fn date(&self) -> PartitionDate {
        self.date
    }

    /// Size on disk in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::SeqCst);
    }
}

impl Drop for PersistedFile {
    fn drop(&mut self) {
        if !self.obsolete.load(Ordering::SeqCst) {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "removing obsolete file")
            }
        }
        if let Some(dir) = self.path.parent() {
            // Succeeds only once the partition is empty (retention).
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A consistent view of one table: the head rows and the Parquet files
/// that together hold every committed row exactly once. Holding it keeps
/// its files on disk.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) schema: SchemaRef,
    pub(crate) head: Vec<RecordBatch>,
    pub(crate) files: Vec<Arc<PersistedFile>>,
}

impl Snapshot {
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Rows not yet persisted, as in-memory batches.
    pub fn head(&self) -> &[RecordBatch] {
        &self.head
    }

    /// Persisted files, oldest partition first.
    pub fn files(&self) -> &[Arc<PersistedFile>] {
        &self.files
    }

    /// Rows in the head.
    pub fn head_rows(&self) -> usize {
        self.head.iter().map(RecordBatch::num_rows).sum()
    }
}
