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
//!
//! Replay stops at the first bad record of a segment, so nothing may ever
//! be appended after one: an append that fails (a short write on a full
//! disk, an fsync error) cuts the segment back to its last good record
//! and moves on to a fresh segment, so the next acknowledged append can
//! never land behind torn bytes.

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
    /// Bytes of whole, fsynced records in the open segment.
    good_len: u64,
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
            good_len: 0,
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
                if let Err(e) = super::partition::fsync_dir(&self.dir) {
                    // Not known to be durable: never appended to again.
                    self.rotate();
                    return Err(e);
                }
                self.good_len = f.metadata().map_err(Error::io(&path))?.len();
                self.file.insert(f)
            }
        };
        let written = write_record(file, &record).and_then(|()| sync(file));
        match written {
            Ok(()) => {
                self.good_len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Whatever reached the file of this record goes (it was not
                // acknowledged); the segment is sealed either way.
                let cut = file.set_len(self.good_len).and_then(|()| file.sync_data());
                if let Err(cut) = cut {
                    tracing::error!(path = %path.display(), error = %cut, "cannot cut a failed write-ahead append back; the segment is sealed and replay ignores its torn tail");
                }
                let sealed = self.rotate();
                tracing::error!(table = self.table, segment = sealed, error = %e, "write-ahead append failed; the batch was refused and appends moved to a new segment");
                Err(Error::io(&path)(e))
            }
        }
    }

    /// Seals the current segment and starts a new one; returns the sealed
    /// segment's number.
    pub fn rotate(&mut self) -> u64 {
        let sealed = self.current;
        self.current += 1;
        self.file = None;
        self.good_len = 0;
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

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
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

/// Writes one record (through the test failpoint in test builds).
fn write_record(file: &mut File, record: &[u8]) -> std::io::Result<()> {
    #[cfg(test)]
    if let Some(fail) = failpoint::take() {
        return fail.write(file, record);
    }
    file.write_all(record)
}

fn sync(file: &File) -> std::io::Result<()> {
    file.sync_data()
}

/// Faults a test injects into the next append of this thread.
#[cfg(test)]
pub(crate) mod failpoint {
    use std::cell::Cell;
    use std::fs::File;
    use std::io::Write;

    #[derive(Clone, Copy, Debug)]
    pub enum Fail {
        /// The first `n` bytes land, then the disk is full.
        ShortWrite(usize),
        /// The whole record is written but its fsync fails.
        Fsync,
    }

    thread_local!(static NEXT: Cell<Option<Fail>> = const { Cell::new(None) });

    pub fn set(fail: Fail) {
        NEXT.with(|n| n.set(Some(fail)));
    }

    pub(super) fn take() -> Option<Fail> {
        NEXT.with(|n| n.take())
    }

    impl Fail {
        pub(super) fn write(self, file: &mut File, record: &[u8]) -> std::io::Result<()> {
            match self {
                Fail::ShortWrite(n) => {
                    file.write_all(&record[..n.min(record.len())])?;
                    Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
                }
                Fail::Fsync => {
                    file.write_all(record)?;
                    Err(std::io::Error::from_raw_os_error(5)) // EIO
                }
            }
        }
    }
}

/// Whether a log can be written in `dir` now: a small file is created,
/// written, fsynced and removed (a full disk or a read-only or missing
/// directory fails here as an append would).
pub fn probe(dir: &Path) -> Result<()> {
    let path = dir.join(".probe");
    let written = File::create(&path).and_then(|mut f| {
        f.write_all(b"kanade readiness probe\n")
            .and_then(|()| f.sync_data())
    });
    let _ = fs::remove_file(&path);
    written.map_err(Error::io(&path))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::failpoint::{set, Fail};
    use super::*;

    fn batch(v: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap()
    }

    fn replayed_values(dir: &Path) -> Vec<i64> {
        let (_, segments) = Wal::open(dir, "t", 0).unwrap();
        segments
            .iter()
            .flat_map(|s| &s.batches)
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn an_append_after_a_failed_one_survives_replay() {
        for fail in [Fail::ShortWrite(5), Fail::ShortWrite(200), Fail::Fsync] {
            let dir = tempfile::tempdir().unwrap();
            let (mut wal, _) = Wal::open(dir.path(), "t", 0).unwrap();
            wal.append(&batch(1)).unwrap();
            set(fail);
            assert!(wal.append(&batch(2)).is_err(), "{fail:?}");
            // Acknowledged after the failure: must come back.
            wal.append(&batch(3)).unwrap();
            wal.append(&batch(4)).unwrap();
            drop(wal);
            assert_eq!(
                replayed_values(dir.path()),
                [1, 3, 4],
                "{fail:?}: every acknowledged append, the refused one not"
            );
        }
    }

    #[test]
    fn a_failed_append_leaves_no_torn_bytes_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), "t", 0).unwrap();
        wal.append(&batch(1)).unwrap();
        let first = wal.segment_path(wal.current_seq());
        let good = fs::metadata(&first).unwrap().len();
        set(Fail::ShortWrite(7));
        assert!(wal.append(&batch(2)).is_err());
        assert_eq!(fs::metadata(&first).unwrap().len(), good, "cut back");
        assert_ne!(wal.segment_path(wal.current_seq()), first, "moved on");
    }
}
