//! Write-ahead log: a sample that `TimeSeriesTable::write` accepted is in
//! here, fsynced, before the call returns, so it survives `kill -9`.
//!
//! The log is a directory of numbered segments. Each record is
//! `[len: u32 LE][crc32: u32 LE][Arrow IPC stream of one batch]`. Appends go
//! to the newest segment; a persist seals it (`rotate`) and, once the rows
//! are in Parquet, deletes every sealed segment (`remove_through`). A torn
//! tail record (crash mid-append) fails its length or checksum test and is
//! ignored on replay: its write never returned, so nobody was told it was
//! durable.

use std::fs::{self, File, OpenOptions};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::{Error, Result};

const HEADER_LEN: usize = 8;
const SUFFIX: &str = ".wal";

/// The rows of one segment found on start-up.
#[derive(Debug)]
pub struct ReplayedSegment {
    pub seq: u64,
    pub batches: Vec<RecordBatch>,
}

/// An open write-ahead log of one table.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    table: &'static str,
    current: u64,
    file: Option<File>,
}

impl Wal {
    /// Opens the log in `dir`, returning every intact record of the
    /// segments already there. New appends go to a fresh segment numbered
    /// above both those segments and `min_next_seq`.
    pub fn open(
        dir: &Path,
        table: &'static str,
        min_next_seq: u64,
    ) -> Result<(Self, Vec<ReplayedSegment>)> {
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let mut replayed = Vec::new();
        for (seq, path) in list_segments(dir)? {
            let batches = read_segment(&path, table)?;
            replayed.push(ReplayedSegment { seq, batches });
        }
        let next = replayed
            .last()
            .map_or(min_next_seq, |s| s.seq + 1)
            .max(min_next_seq);
        let wal = Self {
            dir: dir.to_path_buf(),
            table,
            current: next,
            file: None,
        };
        Ok((wal, replayed))
    }

    /// The segment appends currently go to.
    pub fn current_seq(&self) -> u64 {
        self.current
    }

    /// Appends one batch and fsyncs it: when this returns `Ok` the batch
    /// survives a crash.
    pub fn append(&mut self, batch: &RecordBatch) -> Result<()> {
        let payload = encode(batch, self.table)?;
        let mut record = Vec::with_capacity(HEADER_LEN + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let path = self.segment_path(self.current);
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(Error::io(&path))?;
                super::partition::fsync_dir(&self.dir)?;
                self.file.insert(f)
            }
        };
        file.write_all(&record).map_err(Error::io(&path))?;
        file.sync_data().map_err(Error::io(&path))
    }

    /// Seals the current segment and starts a new one; returns the sealed
    /// segment's number.
    pub fn rotate(&mut self) -> u64 {
        let sealed = self.current;
        self.current += 1;
        self.file = None;
        sealed
    }

    /// Deletes every segment numbered `seq` or lower.
    pub fn remove_through(&self, seq: u64) -> Result<()> {
        for (s, path) in list_segments(&self.dir)? {
            if s <= seq {
                fs::remove_file(&path).map_err(Error::io(&path))?;
            }
        }
        super::partition::fsync_dir(&self.dir)
    }

    /// Copies every segment into `dest` (the caller holds the writer, so
    /// none is being appended to); returns the bytes copied.
    pub fn copy_to(&self, dest: &Path) -> Result<u64> {
        fs::create_dir_all(dest).map_err(Error::io(dest))?;
        let mut bytes = 0;
        for (_, path) in list_segments(&self.dir)? {
            let to = dest.join(path.file_name().unwrap_or_default());
            bytes += fs::copy(&path, &to).map_err(Error::io(&to))?;
        }
        super::partition::fsync_dir(dest)?;
        Ok(bytes)
    }

    /// Segments on disk and their total size in bytes.
    pub fn disk_usage(&self) -> Result<(u64, u64)> {
        let mut bytes = 0;
        let segments = list_segments(&self.dir)?;
        for (_, path) in &segments {
            bytes += fs::metadata(path).map_err(Error::io(path))?.len();
        }
        Ok((segments.len() as u64, bytes))
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(seq) = name.strip_suffix(SUFFIX).and_then(|s| s.parse().ok()) {
            segs.push((seq, entry.path()));
        }
    }
    segs.sort();
    Ok(segs)
}

fn encode(batch: &RecordBatch, table: &'static str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut writer =
        StreamWriter::try_new(&mut buf, &batch.schema()).map_err(Error::arrow(table))?;
    writer.write(batch).map_err(Error::arrow(table))?;
    writer.finish().map_err(Error::arrow(table))?;
    drop(writer);
    Ok(buf)
}

fn decode(payload: &[u8], table: &'static str) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(Cursor::new(payload), None).map_err(Error::arrow(table))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::arrow(table))
}

fn read_segment(path: &Path, table: &'static str) -> Result<Vec<RecordBatch>> {
    let bytes = fs::read(path).map_err(Error::io(path))?;
    let mut batches = Vec::new();
    let mut pos = 0;
    while pos + HEADER_LEN <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let start = pos + HEADER_LEN;
        let Some(payload) = bytes.get(start..start + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        batches.extend(decode(payload, table)?);
        pos = start + len;
    }
    if pos < bytes.len() {
        tracing::warn!(
            path = %path.display(),
            ignored_bytes = bytes.len() - pos,
            "write-ahead log ends in a torn record (an append that never completed); ignoring it"
        );
    }
    Ok(batches)
}

/// Schema check used by replay: a segment written for another schema is an
/// operator error worth stopping for.
pub fn check_schema(batch: &RecordBatch, schema: &SchemaRef) -> bool {
    batch.schema().fields() == schema.fields()
}
