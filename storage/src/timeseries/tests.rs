//! Engine tests on real files: write → WAL → head → Parquet → compaction →
//! retention, and recovery from crashes at each step.

use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use datafusion::arrow::array::{Array, Float64Array, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;

use super::parquet_file::read_file;
use super::*;

fn t(day: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 10, min, 0).unwrap()
}

fn host(pc: &str, at: DateTime<Utc>, cpu: f64) -> HostPerfRow {
    HostPerfRow {
        pc_id: pc.into(),
        at,
        cpu_pct: Some(cpu),
        cpu_count: Some(8),
        mem_used_bytes: Some(1 << 30),
        mem_total_bytes: Some(1 << 33),
        swap_used_bytes: None,
        swap_total_bytes: None,
        disk_read_bytes_per_sec: Some(1.5),
        disk_written_bytes_per_sec: None,
        net_rx_bytes_per_sec: Some(10.0),
        net_tx_bytes_per_sec: Some(20.0),
    }
}

fn open(dir: &Path) -> TimeSeriesTable {
    TimeSeriesTable::open(&HOST_PERF, dir, TimeSeriesConfig::for_tests()).unwrap()
}

fn write(table: &TimeSeriesTable, rows: &[HostPerfRow]) -> WriteOutcome {
    table.write(&HostPerfRow::to_batch(rows).unwrap()).unwrap()
}

/// Every row visible in a snapshot, as (pc_id, at µs, cpu) sorted.
fn rows_of(table: &TimeSeriesTable) -> Vec<(String, i64, f64)> {
    let snap = table.snapshot(None);
    let mut batches: Vec<RecordBatch> = snap.head().to_vec();
    for f in snap.files() {
        batches.push(read_file(&HOST_PERF, f.path()).unwrap());
    }
    let all = concat_batches(&HOST_PERF.schema(), &batches).unwrap();
    let pc = all
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let at = super::table::ts_column(&all);
    let cpu = all
        .column(2)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    let mut out: Vec<_> = (0..all.num_rows())
        .map(|i| (pc.value(i).to_string(), at.value(i), cpu.value(i)))
        .collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn parquet_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let root = dir.join("host_perf");
    for p in std::fs::read_dir(&root).unwrap() {
        let p = p.unwrap().path();
        for f in std::fs::read_dir(&p).unwrap() {
            let f = f.unwrap().path();
            out.push(f.strip_prefix(&root).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn duplicates_are_dropped_first_writer_wins() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    let first = write(
        &table,
        &[host("a", t(1, 0), 10.0), host("a", t(1, 0), 99.0)],
    );
    assert_eq!(
        first,
        WriteOutcome {
            inserted: 1,
            duplicates: 1
        }
    );
    let again = write(&table, &[host("a", t(1, 0), 50.0), host("b", t(1, 0), 5.0)]);
    assert_eq!(
        again,
        WriteOutcome {
            inserted: 1,
            duplicates: 1
        }
    );
    table.persist().unwrap();
    // The key is remembered past the persist too (dedup window).
    let late = write(&table, &[host("a", t(1, 0), 77.0)]);
    assert_eq!(
        late.duplicates, 0,
        "old sample falls outside the dedup window"
    );
    // ...but compaction still resolves it, keeping the first copy.
    table.persist().unwrap();
    table.compact(PartitionDate::of(t(30, 0))).unwrap();
    let rows = rows_of(&table);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].2, 10.0);
}

#[test]
fn recent_duplicate_after_persist_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    let now = Utc::now();
    write(&table, &[host("a", now, 10.0)]);
    table.persist().unwrap();
    let again = write(&table, &[host("a", now, 11.0)]);
    assert_eq!(
        again,
        WriteOutcome {
            inserted: 0,
            duplicates: 1
        }
    );
}

#[test]
fn persist_writes_sorted_hive_partitions_and_empties_wal() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    write(
        &table,
        &[
            host("z", t(2, 5), 1.0),
            host("a", t(2, 1), 2.0),
            host("m", t(3, 0), 3.0),
        ],
    );
    let out = table.persist().unwrap();
    assert_eq!(out.rows, 3);
    assert_eq!(table.head_rows(), 0);
    let files = parquet_files(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].starts_with("date=2026-11-02/"), "{files:?}");
    assert!(files[1].starts_with("date=2026-11-03/"), "{files:?}");
    let day2 = read_file(&HOST_PERF, &dir.path().join("host_perf").join(&files[0])).unwrap();
    let pcs = day2
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!((pcs.value(0), pcs.value(1)), ("a", "z"));
    let wal: Vec<_> = std::fs::read_dir(dir.path().join("wal/host_perf"))
        .unwrap()
        .collect();
    assert!(
        wal.is_empty(),
        "sealed WAL segments are deleted after a persist"
    );
}

#[test]
fn unpersisted_rows_survive_a_crash_via_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let table = open(dir.path());
        write(&table, &[host("a", t(1, 0), 1.0)]);
        table.persist().unwrap();
        write(&table, &[host("a", t(1, 1), 2.0), host("b", t(1, 1), 3.0)]);
        // Dropped without a persist: the process died.
    }
    let table = open(dir.path());
    assert_eq!(table.head_rows(), 2);
    assert_eq!(rows_of(&table).len(), 3);
}

#[test]
fn torn_wal_tail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let table = open(dir.path());
        write(&table, &[host("a", t(1, 0), 1.0)]);
    }
    let seg = std::fs::read_dir(dir.path().join("wal/host_perf"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]);
    std::fs::write(&seg, bytes).unwrap();
    let table = open(dir.path());
    assert_eq!(rows_of(&table).len(), 1);
}

#[test]
fn crash_between_parquet_rename_and_wal_delete_does_not_double_rows() {
    let dir = tempfile::tempdir().unwrap();
    {
        let table = open(dir.path());
        write(&table, &[host("a", t(1, 0), 1.0), host("b", t(2, 0), 2.0)]);
    }
    let wal_dir = dir.path().join("wal/host_perf");
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    {
        let table = open(dir.path());
        table.persist().unwrap();
    }
    // Put the WAL back as if the process died before deleting it, and
    // remove one of the two partition files as if it died mid-persist.
    for (p, b) in &saved {
        std::fs::write(p, b).unwrap();
    }
    let day2 = dir.path().join("host_perf/date=2026-11-02");
    std::fs::remove_dir_all(&day2).unwrap();
    let table = open(dir.path());
    let rows = rows_of(&table);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        table.head_rows(),
        1,
        "only the missing partition is replayed"
    );
}

#[test]
fn interrupted_compaction_leftovers_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("host_perf/date=2026-11-01");
    {
        let table = open(dir.path());
        write(&table, &[host("a", t(1, 0), 1.0)]);
        table.persist().unwrap();
        write(&table, &[host("a", t(1, 1), 2.0)]);
        table.persist().unwrap();
        let inputs: Vec<_> = std::fs::read_dir(&part)
            .unwrap()
            .map(|e| {
                (
                    e.as_ref().unwrap().path(),
                    std::fs::read(e.unwrap().path()).unwrap(),
                )
            })
            .collect();
        table.compact(PartitionDate::of(t(20, 0))).unwrap();
        drop(table);
        // The compaction's inputs come back: the crash hit before their
        // deletion. A temporary file is also left behind.
        for (p, b) in inputs {
            std::fs::write(p, b).unwrap();
        }
        std::fs::write(
            part.join("00000000000000000009-00000000000000000009.parquet.tmp"),
            b"partial",
        )
        .unwrap();
    }
    assert_eq!(std::fs::read_dir(&part).unwrap().count(), 4);
    let table = open(dir.path());
    assert_eq!(std::fs::read_dir(&part).unwrap().count(), 1);
    assert_eq!(rows_of(&table).len(), 2);
}

#[test]
fn compaction_merges_sorts_and_dedups_closed_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    for i in 0..3u32 {
        write(
            &table,
            &[host("b", t(1, i), f64::from(i)), host("a", t(1, i), 1.0)],
        );
        table.persist().unwrap();
    }
    assert_eq!(table.snapshot(None).files().len(), 3);
    let before = rows_of(&table);
    let held = table.snapshot(None);
    let out = table.compact(PartitionDate::of(t(2, 0))).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].input_files, 3);
    assert_eq!(table.snapshot(None).files().len(), 1);
    assert_eq!(rows_of(&table), before);
    // An older snapshot still reads its files until dropped.
    assert_eq!(held.files().len(), 3);
    for f in held.files() {
        assert!(f.path().exists());
    }
    let old: Vec<_> = held
        .files()
        .iter()
        .map(|f| f.path().to_path_buf())
        .collect();
    drop(held);
    assert!(old.iter().all(|p| !p.exists()));
}

#[test]
fn open_partition_waits_for_enough_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TimeSeriesConfig::for_tests();
    config.compaction_min_files = 3;
    let table = TimeSeriesTable::open(&HOST_PERF, dir.path(), config).unwrap();
    for i in 0..2u32 {
        write(&table, &[host("a", t(1, i), 1.0)]);
        table.persist().unwrap();
    }
    assert!(table
        .compact(PartitionDate::of(t(1, 0)))
        .unwrap()
        .is_empty());
    assert_eq!(table.compact(PartitionDate::of(t(2, 0))).unwrap().len(), 1);
}

#[test]
fn retention_drops_whole_expired_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    let today = Utc::now();
    write(
        &table,
        &[
            host("a", today - Duration::days(40), 1.0),
            host("a", today, 2.0),
        ],
    );
    table.persist().unwrap();
    let old_dir = dir
        .path()
        .join("host_perf")
        .join(PartitionDate::of(today - Duration::days(40)).dir_name());
    assert!(old_dir.exists());
    let dropped = table.drop_expired(PartitionDate::of(today)).unwrap();
    assert_eq!(dropped, vec![PartitionDate::of(today - Duration::days(40))]);
    assert!(
        !old_dir.exists(),
        "partition directory removed, space freed"
    );
    assert_eq!(rows_of(&table).len(), 1);
    let reopened = open(dir.path());
    assert_eq!(reopened.partitions(), vec![PartitionDate::of(today)]);
}

#[test]
fn snapshot_prunes_partitions_by_time_range() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    write(&table, &[host("a", t(1, 0), 1.0), host("a", t(5, 0), 1.0)]);
    table.persist().unwrap();
    let snap = table.snapshot(Some((t(4, 0), t(6, 0))));
    assert_eq!(snap.files().len(), 1);
    assert_eq!(snap.files()[0].date(), PartitionDate::of(t(5, 0)));
    let none = table.snapshot(Some((t(2, 0), t(3, 0))));
    assert!(none.files().is_empty() && none.head().is_empty());
}

#[test]
fn a_compacted_process_file_keeps_dictionaries_for_its_texts_only() {
    use datafusion::parquet::basic::Encoding;
    let dir = tempfile::tempdir().unwrap();
    let table =
        TimeSeriesTable::open(&PROCESS_PERF, dir.path(), TimeSeriesConfig::for_tests()).unwrap();
    for minute in 0..4 {
        table
            .write(&tick("a", t(1, minute), &[1, 2, 3, 4, 5, 6, 7, 8]))
            .unwrap();
        table.persist().unwrap();
    }
    let out = table.compact(PartitionDate::of(t(2, 0))).unwrap();
    assert_eq!(out.len(), 1);
    let files = table.snapshot(None).files().to_vec();
    assert_eq!(files.len(), 1);
    let chunks = chunk_encodings(files[0].path(), 2);
    assert_eq!(chunks.len(), PROCESS_PERF.schema().fields().len());
    for (col, _, encodings) in &chunks {
        let dictionary = encodings.contains(&Encoding::RLE_DICTIONARY);
        assert_eq!(
            dictionary,
            col == "pc_id" || col == "name",
            "{col}: {encodings:?}"
        );
    }
    let cpu = chunks.iter().find(|(c, ..)| c == "cpu_pct").unwrap();
    assert!(cpu.2.contains(&Encoding::BYTE_STREAM_SPLIT), "{:?}", cpu.2);
}

/// The encodings of every column chunk of a file's first row group, and
/// its compression, by column name; the file must hold `min_row_groups`.
fn chunk_encodings(
    path: &Path,
    min_row_groups: usize,
) -> Vec<(
    String,
    datafusion::parquet::basic::Compression,
    Vec<datafusion::parquet::basic::Encoding>,
)> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let meta = reader.metadata();
    assert!(
        meta.num_row_groups() >= min_row_groups,
        "row groups of for_tests size"
    );
    let rg = meta.row_group(0);
    assert!(rg.column(0).statistics().is_some(), "statistics written");
    assert!(
        rg.column(0).column_index_offset().is_some(),
        "page index written"
    );
    assert!(rg.sorting_columns().is_some(), "sort order declared");
    rg.columns()
        .iter()
        .map(|c| {
            (
                c.column_path().string(),
                c.compression(),
                c.encodings().collect(),
            )
        })
        .collect()
}

#[test]
fn a_persist_writes_a_cheap_fresh_file_and_compaction_a_compact_one() {
    use datafusion::parquet::basic::{Compression, Encoding};
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    let rows: Vec<_> = (0..40)
        .map(|i| host(&format!("pc{i:02}"), t(1, 0), f64::from(i)))
        .collect();
    write(&table, &rows);
    table.persist().unwrap();
    let before = rows_of(&table);
    assert_eq!(before.len(), 40);
    let files = table.snapshot(None).files().to_vec();
    assert_eq!(files.len(), 1);
    let fresh = files[0].path().to_path_buf();
    drop(files);
    assert!(
        fresh.to_string_lossy().ends_with(".fresh.parquet"),
        "{fresh:?}"
    );
    let chunks = chunk_encodings(&fresh, 2);
    assert_eq!(chunks.len(), HOST_PERF.schema().fields().len());
    for (col, compression, encodings) in &chunks {
        assert_eq!(*compression, Compression::LZ4_RAW, "{col}");
        if col != "pc_id" {
            assert!(
                !encodings.contains(&Encoding::RLE_DICTIONARY),
                "{col}: {encodings:?}"
            );
        }
    }
    // Today keeps it; once the day is closed, its lone fresh file is
    // compacted into the table's final encoding.
    assert!(table
        .compact(PartitionDate::of(t(1, 0)))
        .unwrap()
        .is_empty());
    let out = table.compact(PartitionDate::of(t(2, 0))).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].input_files, 1);
    let files = table.snapshot(None).files().to_vec();
    assert_eq!(files.len(), 1);
    let last = files[0].path().to_path_buf();
    assert!(!last.to_string_lossy().contains(".fresh"), "{last:?}");
    assert!(!fresh.exists(), "the fresh file is gone");
    let chunks = chunk_encodings(&last, 2);
    assert_eq!(chunks.len(), HOST_PERF.schema().fields().len());
    for (col, compression, encodings) in &chunks {
        assert!(matches!(compression, Compression::ZSTD(_)), "{col}");
        if col == "cpu_pct" {
            assert!(
                encodings.contains(&Encoding::BYTE_STREAM_SPLIT),
                "{encodings:?}"
            );
        }
    }
    assert_eq!(rows_of(&table), before);
    // Rollup files are LZ4 too: a one-PC read opens a column chunk per
    // file and column, and a zstd chunk costs two fresh zstd contexts.
    let rollups = table.rollup_files();
    assert_eq!(rollups.len(), 3, "5 min, 1 h and the fleet's minutes");
    for (name, files) in &rollups {
        assert_eq!(files.len(), 1, "{name}");
        // The fleet's minutes: one row (every sample is of one minute).
        let groups = if *name == "host_perf_fleet_1m" { 1 } else { 2 };
        let chunks = chunk_encodings(files[0].path(), groups);
        assert!(chunks.len() > 4, "{name}: {chunks:?}");
        for (col, compression, _) in &chunks {
            assert_eq!(*compression, Compression::LZ4_RAW, "{name}.{col}");
        }
    }
    drop(rollups);
    // A final file is not compacted again.
    assert!(table
        .compact(PartitionDate::of(t(3, 0)))
        .unwrap()
        .is_empty());
    let _ = Array::len(&Float64Array::from(vec![1.0]));
}

#[test]
fn a_lone_fresh_file_left_beside_its_compaction_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("host_perf/date=2026-11-01");
    {
        let table = open(dir.path());
        write(&table, &[host("a", t(1, 0), 1.0), host("b", t(1, 0), 2.0)]);
        table.persist().unwrap();
        let fresh = table.snapshot(None).files()[0].path().to_path_buf();
        let bytes = std::fs::read(&fresh).unwrap();
        assert_eq!(table.compact(PartitionDate::of(t(2, 0))).unwrap().len(), 1);
        drop(table);
        // The crash hit after the compaction's rename, before the input's
        // deletion: both files have the same segment range.
        std::fs::write(&fresh, bytes).unwrap();
    }
    assert_eq!(std::fs::read_dir(&part).unwrap().count(), 2);
    let table = open(dir.path());
    let left: Vec<_> = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!left[0].contains(".fresh"), "{left:?}");
    assert_eq!(rows_of(&table).len(), 2, "no row counted twice");
}

#[test]
fn recent_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    {
        let table = open(dir.path());
        write(&table, &[host("a", now, 10.0)]);
        table.persist().unwrap();
    }
    let table = open(dir.path());
    let again = write(
        &table,
        &[
            host("a", now, 11.0),
            host("a", now - Duration::seconds(1), 1.0),
        ],
    );
    assert_eq!(
        again,
        WriteOutcome {
            inserted: 1,
            duplicates: 1
        }
    );
}

use super::test_util::process_tick as tick;

fn latest_of(table: &TimeSeriesTable, pc: &str) -> Option<(i64, usize)> {
    table.latest_rows(pc).map(|l| {
        (
            l.at_micros,
            l.batches.iter().map(RecordBatch::num_rows).sum(),
        )
    })
}

#[test]
fn latest_rows_follow_writes_restarts_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let open_p = || TimeSeriesTable::open(&PROCESS_PERF, dir.path(), TimeSeriesConfig::for_tests());
    let table = open_p().unwrap();
    // A fresh table knows every row it holds.
    table.write(&tick("a", t(20, 1), &[1, 2])).unwrap();
    table.write(&tick("a", t(20, 2), &[3, 4, 5])).unwrap();
    table.write(&tick("a", t(20, 0), &[9])).unwrap(); // late, older
    let at2 = t(20, 2).timestamp_micros();
    assert_eq!(latest_of(&table, "a"), Some((at2, 3)));
    assert_eq!(latest_of(&table, "b"), None);
    // Duplicates dropped by the engine do not reach the index.
    table.write(&tick("a", t(20, 2), &[3])).unwrap();
    assert_eq!(latest_of(&table, "a"), Some((at2, 3)));

    // Unpersisted rows come back from the WAL; with no files, complete.
    drop(table);
    let table = open_p().unwrap();
    assert_eq!(latest_of(&table, "a"), Some((at2, 3)));

    // Once files predate the process, an entry waits for a reader's scan.
    table.persist().unwrap();
    drop(table);
    let table = open_p().unwrap();
    table.write(&tick("a", t(20, 1), &[7])).unwrap(); // already known key? no: new pid
    assert_eq!(latest_of(&table, "a"), None);
    let scanned = LatestRows {
        at_micros: at2,
        batches: vec![tick("a", t(20, 2), &[3, 4, 5])],
    };
    table.record_latest_scan("a", Some(scanned));
    assert_eq!(latest_of(&table, "a"), Some((at2, 3)));
    table.write(&tick("a", t(21, 0), &[1])).unwrap();
    assert_eq!(
        latest_of(&table, "a"),
        Some((t(21, 0).timestamp_micros(), 1))
    );

    // Retention that drops the entry's day forgets it.
    table.persist().unwrap();
    let today = PartitionDate::of(t(21, 0));
    let far = PartitionDate::of(t(21, 0) + Duration::days(400));
    assert!(table.drop_expired(today).unwrap().is_empty());
    assert!(latest_of(&table, "a").is_some());
    assert!(!table.drop_expired(far).unwrap().is_empty());
    assert_eq!(latest_of(&table, "a"), None);
}

#[test]
fn compaction_streams_a_partition_larger_than_its_batches_and_keeps_first_copies() {
    // Three files of one (old) day, 30,000 rows each, interleaved keys
    // and every third key repeated in a later file with another value: the
    // merge crosses its 8,192-row batches many times in every input.
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    let pcs = 50;
    let mut expected = std::collections::BTreeMap::new();
    for generation in 0..3u32 {
        let rows: Vec<HostPerfRow> = (0..30_000u32)
            .map(|i| {
                let k = if i % 3 == 0 && generation > 0 {
                    i / 3 // a key an earlier file already has
                } else {
                    i + generation * 30_000
                };
                let pc = format!("pc{:02}", k % pcs);
                let at = t(2, 0) + Duration::seconds(i64::from(k / pcs));
                (pc, at, k, f64::from(generation))
            })
            .map(|(pc, at, _, cpu)| host(&pc, at, cpu))
            .collect();
        for r in &rows {
            expected
                .entry((r.pc_id.clone(), r.at.timestamp_micros()))
                .or_insert(r.cpu_pct.unwrap());
        }
        // Outside the dedup window, so the repeats reach the files.
        write(&table, &rows);
        table.persist().unwrap();
    }
    let before = table.snapshot(None).files().len();
    assert!(before >= 3, "{before} files");
    let out = table.compact(PartitionDate::of(t(30, 0))).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].output_rows, expected.len());
    assert!(out[0].input_rows > out[0].output_rows, "{out:?}");
    assert_eq!(table.snapshot(None).files().len(), 1);
    let rows = rows_of(&table);
    let want: Vec<(String, i64, f64)> = expected
        .into_iter()
        .map(|((pc, at), cpu)| (pc, at, cpu))
        .collect();
    assert_eq!(rows.len(), want.len());
    assert!(rows == want, "sorted, each key once, the oldest copy");
}

#[test]
fn inventory_history_keeps_its_own_ninety_days() {
    // Host retention (30 d) must not apply: a 60-day-old change stays, a
    // 100-day-old one goes with its partition.
    let dir = tempfile::tempdir().unwrap();
    let table = TimeSeriesTable::open(
        &INVENTORY_HISTORY,
        dir.path(),
        TimeSeriesConfig::for_tests(),
    )
    .unwrap();
    let today = PartitionDate::of(t(28, 0));
    let change = |days_ago: i64, seq: i64| InventoryHistoryRow {
        pc_id: "pc".into(),
        at: t(28, 0) - Duration::days(days_ago),
        seq,
        job_id: "inv".into(),
        field_path: "apps".into(),
        identity_json: Some(r#"{"name":"zoom"}"#.into()),
        change_kind: "added".into(),
        before_json: None,
        after_json: Some(r#"{"name":"zoom"}"#.into()),
    };
    let rows = [change(60, 1), change(100, 2), change(60, 3)];
    table
        .write(&InventoryHistoryRow::to_batch(&rows).unwrap())
        .unwrap();
    table.persist().unwrap();
    assert_eq!(table.partitions().len(), 2);
    let dropped = table.drop_expired(today).unwrap();
    assert_eq!(
        dropped,
        vec![PartitionDate::of(t(28, 0) - Duration::days(100))]
    );
    assert_eq!(
        table.stored_rows().unwrap(),
        2,
        "both 60-day-old changes kept"
    );
}

#[test]
fn a_persist_writes_large_heads_sorted_in_slices() {
    let dir = tempfile::tempdir().unwrap();
    let config = TimeSeriesConfig {
        persist_max_rows: 1_000_000,
        persist_max_bytes: 1 << 30,
        row_group_rows: 4_096,
        ..TimeSeriesConfig::for_tests()
    };
    let table = TimeSeriesTable::open(&HOST_PERF, dir.path(), config).unwrap();
    // 12 chunks of 3,000 rows, PCs and minutes interleaved across chunks,
    // 48 hours from 10:00 (three days): 36,000 rows, 12,000 a day, so a
    // day is written in two slices.
    for chunk in 0..12u32 {
        let rows: Vec<HostPerfRow> = (0..3_000u32)
            .map(|i| {
                let n = i * 12 + chunk;
                let pc = format!("pc{:03}", (n * 7919) % 97);
                host(
                    &pc,
                    t(9, 0)
                        + Duration::minutes(i64::from(n % 2_880))
                        + Duration::seconds(i64::from(n / 2_880)),
                    f64::from(n),
                )
            })
            .collect();
        write(&table, &rows);
    }
    assert_eq!(table.head_rows(), 36_000);
    let out = table.persist().unwrap();
    assert_eq!(out.rows, 36_000);
    assert_eq!(out.files.len(), 3, "one file per day");
    let mut total = 0;
    for f in &out.files {
        total += read_sorted(&HOST_PERF, f).num_rows();
    }
    assert_eq!(total, 36_000);
    assert_eq!(rows_of(&table).len(), 36_000);
}

/// The rows of the file at `path`, asserted sorted by key (pc_id, at,
/// sequence) with no key twice.
fn read_sorted(spec: &TableSpec, path: &Path) -> RecordBatch {
    let b = read_file(spec, path).unwrap();
    let keys = spec.keys(&b);
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "{} sorted by key, no repeats: {keys:?}",
        path.display()
    );
    b
}

/// 300 rows of one PC a minute apart from `start` minutes past t(10, 0).
fn minutes(start: u32) -> Vec<HostPerfRow> {
    (start..start + 300)
        .map(|m| {
            host(
                "pc1",
                t(10, 0) + Duration::minutes(i64::from(m)),
                f64::from(m),
            )
        })
        .collect()
}

#[test]
fn a_write_persists_inline_once_the_head_holds_twice_its_thresholds() {
    // Rows: the threshold is 1,000, so the cap is 2,000; 20 writes of 300
    // rows and no persist pass: the 7th and 14th writes persist inline.
    let dir = tempfile::tempdir().unwrap();
    let config = TimeSeriesConfig {
        persist_max_rows: 1_000,
        persist_max_bytes: 1 << 30,
        ..TimeSeriesConfig::for_tests()
    };
    let table = TimeSeriesTable::open(&HOST_PERF, dir.path(), config).unwrap();
    let mut heads = Vec::new();
    for w in 0..20 {
        write(&table, &minutes(w * 300));
        heads.push(table.head_rows());
    }
    assert_eq!(heads.len(), 20);
    assert_eq!(heads.iter().max(), Some(&1_800), "{heads:?}");
    assert_eq!(heads[6], 0, "the write that reached 2,100 rows persisted");
    assert_eq!(heads[13], 0);
    assert_eq!(table.head_rows(), 1_800);
    let stored = table.snapshot(None).files().len();
    assert!(stored >= 2, "two inline persists wrote files: {stored}");
    assert_eq!(table.stored_rows().unwrap(), 6_000);
    assert_eq!(rows_of(&table).len(), 6_000);

    // Bytes: the threshold is three writes' worth, so the sixth write
    // persists inline.
    let dir = tempfile::tempdir().unwrap();
    let one = HostPerfRow::to_batch(&minutes(0))
        .unwrap()
        .get_array_memory_size();
    let config = TimeSeriesConfig {
        persist_max_rows: 1_000_000,
        persist_max_bytes: 3 * one,
        ..TimeSeriesConfig::for_tests()
    };
    let table = TimeSeriesTable::open(&HOST_PERF, dir.path(), config).unwrap();
    let mut heads = Vec::new();
    for w in 0..8 {
        write(&table, &minutes(w * 300));
        heads.push(table.head_rows());
    }
    assert_eq!(heads, [300, 600, 900, 1_200, 1_500, 0, 300, 600]);
    assert_eq!(table.stored_rows().unwrap(), 2_400);
}

#[test]
fn persists_beside_a_compaction_keep_every_row_once() {
    // Compaction holds its own lock: a persist in the middle of it adds a
    // file to the partition being compacted, and the swap keeps it.
    let dir = tempfile::tempdir().unwrap();
    let table = std::sync::Arc::new(open(dir.path()));
    let today = PartitionDate::of(t(20, 0));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let compactions = std::thread::scope(|s| {
        let compactor = s.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += table.compact(today).unwrap().len();
            }
            n
        });
        for w in 0..40 {
            // Days 10 to 18, closed partitions every pass compacts.
            write(&table, &minutes(w * 300));
            table.persist().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        compactor.join().unwrap()
    });
    assert!(compactions > 0, "the compactor ran");
    let written = 300 * 40;
    assert_eq!(rows_of(&table).len(), written);
    assert_eq!(table.stored_rows().unwrap(), written as u64);
    table.compact(today).unwrap();
    drop(table);
    let reopened = open(dir.path());
    assert_eq!(rows_of(&reopened).len(), written);
}

#[test]
fn compaction_persists_a_head_holding_rows_of_a_closed_day_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = TimeSeriesConfig {
        persist_max_rows: 100_000,
        ..TimeSeriesConfig::for_tests()
    };
    let table = TimeSeriesTable::open(&HOST_PERF, dir.path(), config).unwrap();
    // Day 10: two persisted files, then its last rows still in the head
    // beside one row of today (day 11).
    write(&table, &minutes(0)[..100]);
    table.persist().unwrap();
    write(&table, &minutes(100)[..100]);
    table.persist().unwrap();
    write(&table, &minutes(200)[..50]);
    let today_row = host("pc1", t(11, 0) + Duration::hours(16), 1.0);
    write(&table, std::slice::from_ref(&today_row));
    assert_eq!(table.head_rows(), 51);
    let today = PartitionDate::of(today_row.at);
    let done = table.compact(today).unwrap();
    assert_eq!(done.len(), 1, "day 10 compacted once");
    assert_eq!(
        done[0].output_rows, 250,
        "with the rows that were in the head"
    );
    assert_eq!(table.head_rows(), 0);
    let day10 = table.snapshot(Some((t(10, 0), t(10, 0) + Duration::hours(14))));
    assert_eq!(day10.files().len(), 1);
    assert_eq!(rows_of(&table).len(), 251);
}

#[test]
fn a_persist_orders_each_pcs_rows_by_time_and_pid_whatever_order_they_came_in() {
    let dir = tempfile::tempdir().unwrap();
    let config = TimeSeriesConfig {
        persist_max_rows: 1_000_000,
        persist_max_bytes: 1 << 30,
        ..TimeSeriesConfig::for_tests()
    };
    let table = TimeSeriesTable::open(&PROCESS_PERF, dir.path(), config).unwrap();
    // Three PCs tick every minute from 23:50 on Nov 2 into Nov 3, each
    // tick's pids in another order; one write per minute, the PCs in
    // another order each time; pc-b's 23:55 tick comes late, after
    // 00:05, and pc-c skips a minute.
    let orders: [&[i64]; 3] = [&[30, 10, 20], &[10, 20, 30], &[20, 30, 10, 5]];
    let start = Utc.with_ymd_and_hms(2026, 11, 2, 23, 50, 0).unwrap();
    let late = start + Duration::minutes(5);
    let mut sent = 0;
    for m in 0..20u32 {
        let at = start + Duration::minutes(i64::from(m));
        let mut pcs = vec!["pc-c", "pc-a", "pc-b"];
        pcs.rotate_left(m as usize % 3);
        for pc in pcs {
            if (pc == "pc-b" && at == late) || (pc == "pc-c" && m == 7) {
                continue;
            }
            let pids = orders[(m as usize + pc.len()) % 3];
            table.write(&tick(pc, at, pids)).unwrap();
            sent += pids.len();
        }
        if m == 15 {
            table.write(&tick("pc-b", late, &[40, 2])).unwrap();
            sent += 2;
        }
    }
    let out = table.persist().unwrap();
    assert_eq!(out.rows, sent);
    assert_eq!(out.files.len(), 2, "one file per day");
    let mut total = 0;
    for f in &out.files {
        let b = read_sorted(&PROCESS_PERF, f);
        total += b.num_rows();
        let cpu = b.column_by_name("cpu_pct").unwrap();
        let cpu = cpu.as_any().downcast_ref::<Float64Array>().unwrap();
        // Each row kept its own values (the tick fixture's cpu is its pid).
        let keys = PROCESS_PERF.keys(&b);
        assert!(keys
            .iter()
            .enumerate()
            .all(|(i, (_, _, pid))| cpu.value(i) == *pid as f64));
    }
    assert_eq!(total, sent);
}

/// Rows survive a batch and back, a file's batch included; a batch of
/// another table is refused by name, not misread.
#[test]
fn rows_come_back_from_their_batches() {
    let rows = vec![host("pc1", t(3, 1), 1.0), host("pc2", t(3, 2), 2.0)];
    let batch = HostPerfRow::to_batch(&rows).unwrap();
    assert_eq!(HostPerfRow::from_batch(&batch).unwrap(), rows);
    let projected = batch
        .project(&[1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
        .unwrap();
    assert_eq!(HostPerfRow::from_batch(&projected).unwrap(), rows);
    assert_eq!(
        HostPerfRow::COLUMNS.len(),
        batch.num_columns(),
        "{:?}",
        HostPerfRow::COLUMNS
    );
    assert!(!HostPerfRow::charted().contains(&"cpu_count"));
    assert_eq!(HostPerfRow::charted().len(), 9);

    let tick = super::test_util::process_tick("pc1", t(3, 1), &[7, 9]);
    let back = ProcessPerfRow::from_batch(&tick).unwrap();
    assert_eq!(back.iter().map(|r| r.pid).collect::<Vec<_>>(), [7, 9]);
    let err = ProcessPerfRow::from_batch(&batch).unwrap_err().to_string();
    assert!(err.contains("process_perf") && err.contains("pid"), "{err}");
}
