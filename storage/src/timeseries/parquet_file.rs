//! The Parquet file writer and readers of the engine: a batch split by
//! date partition, written sorted with statistics and the page index under
//! a temporary name, fsynced and renamed into place. How a file is encoded
//! follows what it is for ([`FileKind`]): a persist's fresh file is cheap
//! to write (numbers plain, LZ4), a compaction's output is encoded for size
//! (zstd, dictionary and delta encodings), a rollup file is LZ4 (read a few
//! columns at a time).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::metadata::SortingColumn;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use super::config::TimeSeriesConfig;
use super::partition::{fsync_dir, partition_dir, PartitionDate, SegmentRange, TMP_SUFFIX};
use super::read::PersistedFile;
use super::table::{ts_column, TableSpec};
use crate::{Error, Result};

/// Splits a batch into one batch per date partition of its `at` column.
pub fn split_by_date(
    spec: &TableSpec,
    batch: &RecordBatch,
) -> Result<BTreeMap<PartitionDate, RecordBatch>> {
    let at = ts_column(batch);
    let mut rows: BTreeMap<PartitionDate, Vec<u32>> = BTreeMap::new();
    for i in 0..batch.num_rows() {
        let micros = at.value(i);
        let date = PartitionDate::of_micros(micros).ok_or(Error::TimestampOutOfRange {
            table: spec.name,
            micros,
        })?;
        rows.entry(date).or_default().push(i as u32);
    }
    rows.into_iter()
        .map(|(date, idx)| {
            let taken = take_record_batch(batch, &UInt32Array::from(idx))
                .map_err(Error::arrow(spec.name))?;
            Ok((date, taken))
        })
        .collect()
}

/// Rows per data page of the perf tables' files.
const PAGE_ROWS: usize = 1_024;
/// Rows per data page of an hourly rollup's files.
const HOURLY_PAGE_ROWS: usize = 128;
/// Most rows in a rollup's row group. A rollup is written beside the
/// compaction that feeds it, and a row group is held encoded until it
/// closes: at 65,536 rows a host day's two rollups (38 columns each)
/// were 39 MB of the compaction pass's peak heap.
const ROLLUP_ROW_GROUP_ROWS: usize = 16_384;

/// What a file is for, which decides how much work its encoding is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Written by a persist: read for a while, then merged by a
    /// compaction (a closed day's lone fresh file too). Cheap to write:
    /// numbers plain, LZ4. Named `<range>.fresh.parquet`.
    Fresh,
    /// A compaction's output or a rollup: kept for the table's retention,
    /// so encoded for size.
    Final,
}

fn writer_properties(
    spec: &TableSpec,
    config: &TimeSeriesConfig,
    kind: FileKind,
) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(config.zstd_level)
        .map_err(|e| Error::InvalidConfig(format!("storage.zstd_level: {e}")))?;
    let schema = spec.schema();
    let sorting: Vec<SortingColumn> = spec
        .key_columns()
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    // An hourly rollup holds 24 rows per PC-day: smaller pages, so a PC's
    // month decodes a page per column and day, not 1,024 rows of them.
    let page_rows = if spec.window_secs >= 3_600 {
        HOURLY_PAGE_ROWS
    } else {
        PAGE_ROWS
    };
    let mut b = WriterProperties::builder();
    // Dictionaries only where values repeat (PC ids, process names, the
    // inventory's kinds and fields): a number column's dictionary page is
    // read and decoded whole by every query that touches one of its pages,
    // which made a one-PC hour cost a millisecond. Timestamps and integers
    // go delta-encoded, floats byte-stream-split (their exponent bytes
    // compress well apart from the mantissas).
    // Process samples too: with an agent's values (CPU an f32 widened,
    // rates full-mantissa) their dictionaries saved nothing (full-scale
    // process_perf 144.2 MB with them, 145.5 MB without) and cost every
    // one-PC read that touches a row group its numbers' whole dictionary
    // page, zstd-decompressed: the 24-hour process timeline spent 28 % of
    // its time there for one ragged minute of yesterday.
    // A fresh file (see `FileKind`) keeps the string dictionaries (cheap,
    // and they keep it small) and writes numbers plain: measured on the
    // full-scale process load, persist 5.8-7.4 s -> 3.7-4.3 s and the
    // compaction reading it back 0.5-1 s faster.
    for field in schema.fields() {
        let path = ColumnPath::from(field.name().as_str());
        let encoding = match field.data_type() {
            DataType::Utf8 => continue,
            _ if kind == FileKind::Fresh => Encoding::PLAIN,
            // A rollup's integers (window starts, counts) go plain: they
            // are under 1 % of its bytes however encoded (host_perf_5m: 1.3
            // of 175 MB), plain decodes fastest (dictionaries slowed every
            // rollup read 2-3x, as for raw numbers above), and a delta
            // encoder reserves 1 MiB per row group (parquet's bit writer),
            // which made a host day's two rollups 20 MiB of the compaction
            // pass's peak heap.
            DataType::Int64 | DataType::Timestamp(..) if spec.window_secs > 0 => Encoding::PLAIN,
            DataType::Float64 => Encoding::BYTE_STREAM_SPLIT,
            _ => Encoding::DELTA_BINARY_PACKED,
        };
        b = b
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, encoding);
    }
    // Rollups are LZ4 as well: parquet builds a zstd codec per column
    // chunk it opens, with a compression and a decompression context,
    // each a `cpuid` (a trap to the hypervisor on a VM); a one-PC week
    // opens a chunk per day and column, and the profile of that
    // question was two thirds context creation. Their floats are sums
    // (full mantissas), which zstd hardly shrinks: at full scale LZ4
    // made the rollups 12-18 % bigger (host_perf_5m 185 -> 207 MB).
    let compression = match kind {
        FileKind::Fresh => Compression::LZ4_RAW,
        FileKind::Final if spec.window_secs > 0 => Compression::LZ4_RAW,
        FileKind::Final => Compression::ZSTD(level),
    };
    Ok(b.set_compression(compression)
        .set_statistics_enabled(EnabledStatistics::Page)
        // Pages of at most 1,024 rows: the page index then narrows one
        // PC's hour (60 rows) to a page or two per column instead of the
        // default 20,000-row pages.
        .set_data_page_row_count_limit(page_rows)
        .set_write_batch_size(page_rows)
        .set_max_row_group_row_count(Some(if spec.window_secs > 0 {
            config.row_group_rows.min(ROLLUP_ROW_GROUP_ROWS)
        } else {
            config.row_group_rows
        }))
        .set_sorting_columns(Some(sorting))
        .build())
}

/// A file of one partition written batch by batch (sorted, deduplicated
/// batches in key order); it appears under its name only when finished.
pub struct FileWriter {
    writer: ArrowWriter<File>,
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
    dir: std::path::PathBuf,
    date: PartitionDate,
    range: SegmentRange,
    fresh: bool,
}

impl FileWriter {
    pub fn create(
        spec: &TableSpec,
        config: &TimeSeriesConfig,
        root: &Path,
        date: PartitionDate,
        range: SegmentRange,
        kind: FileKind,
    ) -> Result<Self> {
        let dir = partition_dir(root, date);
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let fresh = kind == FileKind::Fresh;
        let path = dir.join(range.file_name(fresh));
        let tmp = dir.join(format!("{}{TMP_SUFFIX}", range.file_name(fresh)));
        let file = File::create(&tmp).map_err(Error::io(&tmp))?;
        let props = writer_properties(spec, config, kind)?;
        let writer =
            ArrowWriter::try_new(file, spec.schema(), Some(props)).map_err(Error::parquet(&tmp))?;
        Ok(Self {
            writer,
            tmp,
            path,
            dir,
            date,
            range,
            fresh,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(Error::parquet(&self.tmp))
    }

    /// Closes, fsyncs and renames the file into place.
    pub fn finish(self) -> Result<PersistedFile> {
        let Self {
            writer,
            tmp,
            path,
            dir,
            date,
            range,
            fresh,
        } = self;
        let file = writer.into_inner().map_err(Error::parquet(&tmp))?;
        file.sync_all().map_err(Error::io(&tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        fsync_dir(&dir)?;
        if let Some(root_dir) = dir.parent() {
            fsync_dir(root_dir)?;
        }
        let bytes = fs::metadata(&path).map_err(Error::io(&path))?.len();
        Ok(PersistedFile::new(path, date, range, bytes, fresh))
    }
}

/// Reads a whole Parquet file back into one batch.
pub fn read_file(spec: &TableSpec, path: &Path) -> Result<RecordBatch> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = File::open(path).map_err(Error::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(Error::parquet(path))?
        .build()
        .map_err(Error::parquet(path))?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::arrow(spec.name))?;
    datafusion::arrow::compute::concat_batches(&spec.schema(), &batches)
        .map_err(Error::arrow(spec.name))
}

/// Reads only the key columns (pc_id, at and, where present, the sequence) of a file.
pub fn read_key_columns(spec: &TableSpec, path: &Path) -> Result<Vec<RecordBatch>> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use datafusion::parquet::arrow::ProjectionMask;
    let file = File::open(path).map_err(Error::io(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(Error::parquet(path))?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), spec.key_columns());
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(Error::parquet(path))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::arrow(spec.name))
}
