//! What the readers know of a Parquet file before reading its rows: its
//! footer and page index (cached for immutable files in [`FileCache`],
//! read from disk or through the session's object store with
//! [`StoreReader`]), and the row groups and pages of it that can hold a PC
//! in a time range ([`plan_row_groups`]). Used by the fast paths and the
//! DataFusion table provider alike; depends on neither.
//!
//! Files are immutable and their names never reused, so a file's parsed
//! metadata is read once and kept; the cache is bounded (64 files) and
//! simply emptied when it outgrows its bound.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::file::metadata::{
    PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader,
};
use datafusion::parquet::file::page_index::column_index::ColumnIndexMetaData;
use datafusion::parquet::file::statistics::Statistics;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::{Error, Result};

/// Parsed metadata kept at most for this many files. A day file's page
/// index is about 1 MB at full scale (1,400 pages × 12 columns), so the
/// bound is also a memory bound; one-PC questions mostly touch the
/// newest days.
const CACHE_FILES: usize = 64;

/// Footers and page indexes of immutable files, by path.
#[derive(Debug, Default)]
pub struct FileCache {
    files: Mutex<HashMap<PathBuf, ArrowReaderMetadata>>,
    /// Files whose metadata was read (not found in the cache).
    pub(crate) loads: std::sync::atomic::AtomicU64,
}

impl FileCache {
    pub(crate) fn get(&self, table: &'static str, path: &Path) -> Result<ArrowReaderMetadata> {
        if let Some(m) = self.cached(path) {
            return Ok(m);
        }
        let file = File::open(path).map_err(|e| io(table, path, e))?;
        let meta = ArrowReaderMetadata::load(&file, Self::options())
            .map_err(|e| shape(table, format!("{}: {e}", path.display())))?;
        Ok(self.insert(path, meta))
    }

    /// As [`FileCache::get`], the footer and page index read through
    /// `reader` (the session's object store for the file) on a miss.
    pub(crate) async fn get_from_store(
        &self,
        table: &'static str,
        path: &Path,
        mut reader: StoreReader,
    ) -> Result<ArrowReaderMetadata> {
        if let Some(m) = self.cached(path) {
            return Ok(m);
        }
        let meta = ArrowReaderMetadata::load_async(&mut reader, Self::options())
            .await
            .map_err(|e| shape(table, format!("{}: {e}", path.display())))?;
        Ok(self.insert(path, meta))
    }

    fn cached(&self, path: &Path) -> Option<ArrowReaderMetadata> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }

    fn options() -> ArrowReaderOptions {
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional)
    }

    fn insert(&self, path: &Path, meta: ArrowReaderMetadata) -> ArrowReaderMetadata {
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.len() >= CACHE_FILES {
            files.clear();
        }
        files.insert(path.to_path_buf(), meta.clone());
        meta
    }
}

pub(crate) fn shape(table: &'static str, message: String) -> Error {
    Error::Shape { table, message }
}

pub(crate) fn io(table: &'static str, path: &Path, e: std::io::Error) -> Error {
    shape(table, format!("{}: {e}", path.display()))
}

/// Per row group that can hold `pc_id` (any PC when `None`) in
/// `[from, to)` by its statistics: its index, its row count and the row
/// ranges (within it) of the pages whose pc_id and `at` ranges both can.
pub(crate) fn plan_row_groups(
    meta: &ArrowReaderMetadata,
    pc_id: Option<&str>,
    from: i64,
    to: i64,
) -> Vec<(usize, usize, Vec<Range<usize>>)> {
    let md = meta.metadata();
    let schema = md.file_metadata().schema_descr();
    let col = |name: &str| (0..schema.num_columns()).find(|i| schema.column(*i).name() == name);
    let (Some(pc_col), Some(at_col)) = (col("pc_id"), col("at")) else {
        return (0..md.num_row_groups())
            .map(|rg| {
                let rows = md.row_group(rg).num_rows() as usize;
                (rg, rows, std::iter::once(0..rows).collect())
            })
            .collect();
    };
    let pc = pc_id.map(str::as_bytes);
    let mut groups = Vec::new();
    for (rg, rgm) in md.row_groups().iter().enumerate() {
        let rows = rgm.num_rows() as usize;
        let pc_ok = match (pc, rgm.column(pc_col).statistics()) {
            (Some(pc), Some(Statistics::ByteArray(s))) => {
                s.min_opt().is_none_or(|m| m.data() <= pc)
                    && s.max_opt().is_none_or(|m| m.data() >= pc)
            }
            _ => true,
        };
        let at_ok = match rgm.column(at_col).statistics() {
            Some(Statistics::Int64(s)) => {
                s.min_opt().is_none_or(|m| *m < to) && s.max_opt().is_none_or(|m| *m >= from)
            }
            _ => true,
        };
        if !(pc_ok && at_ok) {
            continue;
        }
        let pages = |c: usize| -> Option<Vec<(Range<usize>, bool)>> {
            let locations = md.offset_index()?.get(rg)?.get(c)?.page_locations();
            let index = md.column_index()?.get(rg)?.get(c)?;
            let starts: Vec<usize> = locations
                .iter()
                .map(|l| l.first_row_index as usize)
                .collect();
            Some(
                (0..starts.len())
                    .map(|p| {
                        let range = starts[p]..starts.get(p + 1).copied().unwrap_or(rows);
                        let ok = match index {
                            ColumnIndexMetaData::BYTE_ARRAY(ix) if c == pc_col => {
                                pc.is_none_or(|pc| {
                                    ix.min_value(p).is_none_or(|m| m <= pc)
                                        && ix.max_value(p).is_none_or(|m| m >= pc)
                                })
                            }
                            ColumnIndexMetaData::INT64(ix) if c == at_col => {
                                ix.min_value(p).is_none_or(|m| *m < to)
                                    && ix.max_value(p).is_none_or(|m| *m >= from)
                            }
                            _ => true,
                        };
                        (range, ok)
                    })
                    .collect(),
            )
        };
        let mut keep = vec![true; rows];
        let indexed = if pc.is_some() {
            vec![pc_col, at_col]
        } else {
            vec![at_col]
        };
        for c in indexed {
            if let Some(p) = pages(c) {
                for (range, ok) in p {
                    if !ok {
                        keep[range.start.min(rows)..range.end.min(rows)].fill(false);
                    }
                }
            }
        }
        let mut kept = Vec::new();
        let mut i = 0;
        while i < rows {
            if keep[i] {
                let start = i;
                while i < rows && keep[i] {
                    i += 1;
                }
                kept.push(start..i);
            } else {
                i += 1;
            }
        }
        if !kept.is_empty() {
            groups.push((rg, rows, kept));
        }
    }
    groups
}

/// A file read through an object store; its metadata given, or read
/// (with the page index, when the file has one) on first request.
pub(crate) struct StoreReader {
    store: Arc<dyn ObjectStore>,
    location: object_store::path::Path,
    size: u64,
    pub(crate) metadata: Option<Arc<ParquetMetaData>>,
}

impl StoreReader {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        location: object_store::path::Path,
        size: u64,
    ) -> Self {
        Self {
            store,
            location,
            size,
            metadata: None,
        }
    }
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(
        &mut self,
        range: Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.location, range)
                .await
                .map_err(|e| datafusion::parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.location, &ranges)
                .await
                .map_err(|e| datafusion::parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            if let Some(m) = &self.metadata {
                return Ok(Arc::clone(m));
            }
            let size = self.size;
            let m = Arc::new(
                ParquetMetaDataReader::new()
                    .with_page_index_policy(PageIndexPolicy::Optional)
                    .load_and_finish(&mut *self, size)
                    .await?,
            );
            self.metadata = Some(Arc::clone(&m));
            Ok(m)
        }
        .boxed()
    }
}
