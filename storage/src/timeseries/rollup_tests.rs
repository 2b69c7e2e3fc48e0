//! Rollups on real files: what a window holds, when a day is answered by
//! its rollup and when it falls back to raw rows (late samples, the
//! head), and that rollups outlive the raw retention, restarts and
//! backups.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use datafusion::arrow::array::{Array, Float64Array, Int64Array, StringArray};
use datafusion::arrow::compute::concat_batches;

use super::parquet_file::read_file;
use super::*;

fn at(day: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, h, m, s).unwrap()
}

fn row(pc: &str, t: DateTime<Utc>, cpu: Option<f64>, mem: i64) -> HostPerfRow {
    HostPerfRow {
        pc_id: pc.into(),
        at: t,
        cpu_pct: cpu,
        cpu_count: Some(4),
        mem_used_bytes: Some(mem),
        mem_total_bytes: Some(1 << 33),
        swap_used_bytes: None,
        swap_total_bytes: None,
        disk_read_bytes_per_sec: Some(0.5),
        disk_written_bytes_per_sec: None,
        net_rx_bytes_per_sec: None,
        net_tx_bytes_per_sec: None,
    }
}

fn open(dir: &Path, config: TimeSeriesConfig) -> TimeSeriesTable {
    TimeSeriesTable::open(&HOST_PERF, dir, config).unwrap()
}

fn write(table: &TimeSeriesTable, rows: &[HostPerfRow]) {
    table.write(&HostPerfRow::to_batch(rows).unwrap()).unwrap();
}

/// Samples of two PCs every 2 minutes on Nov 10, 11 and (today) 12.
fn three_days(table: &TimeSeriesTable) -> usize {
    let mut n = 0;
    for day in 10..=12 {
        let rows: Vec<HostPerfRow> = (0..720)
            .flat_map(|i| {
                let t = at(day, 0, 0, 0) + Duration::minutes(2 * i);
                let cpu = (i % 7 != 0).then_some(f64::from(i as u32 % 100) + 0.25);
                [
                    row("pc-a", t, cpu, 1_000 + i),
                    row("pc-b", t + Duration::seconds(30), Some(50.0), 7),
                ]
            })
            .collect();
        n += rows.len();
        write(table, &rows);
        table.persist().unwrap();
    }
    n
}

fn rollup_rows(
    table: &TimeSeriesTable,
    name: &str,
) -> datafusion::arrow::record_batch::RecordBatch {
    let (_, files) = table
        .rollup_files()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap();
    let spec = [&HOST_PERF_5M, &HOST_PERF_1H, &HOST_PERF_FLEET_1M]
        .into_iter()
        .find(|s| s.name == name)
        .unwrap();
    let batches: Vec<_> = files
        .iter()
        .map(|f| read_file(spec, f.path()).unwrap())
        .collect();
    concat_batches(&spec.schema(), &batches).unwrap()
}

fn days_of(table: &TimeSeriesTable, name: &str) -> Vec<String> {
    let (_, files) = table
        .rollup_files()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap();
    files.iter().map(|f| f.date().to_string()).collect()
}

#[test]
fn a_window_holds_sum_count_min_and_max_of_its_samples() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path(), TimeSeriesConfig::for_tests());
    three_days(&table);
    let today = PartitionDate::of(at(12, 12, 0, 0));
    table.compact(today).unwrap();
    // Every day held in one file, today too (the rows it gets later are
    // read raw beside it).
    let days = ["2026-11-10", "2026-11-11", "2026-11-12"];
    assert_eq!(days_of(&table, "host_perf_5m"), days);
    assert_eq!(days_of(&table, "host_perf_1h"), days);

    let hourly = rollup_rows(&table, "host_perf_1h");
    // 2 PCs × 24 hours × 3 days.
    assert_eq!(hourly.num_rows(), 144);
    let col = |n: &str| hourly.column_by_name(n).unwrap().clone();
    let pc = col("pc_id");
    let pc = pc.as_any().downcast_ref::<StringArray>().unwrap();
    let (sum, count, min, max) = (
        col("cpu_pct_sum"),
        col("cpu_pct_count"),
        col("cpu_pct_min"),
        col("cpu_pct_max"),
    );
    let f =
        |a: &std::sync::Arc<dyn Array>| a.as_any().downcast_ref::<Float64Array>().unwrap().clone();
    let (sum, min, max) = (f(&sum), f(&min), f(&max));
    let count = count.as_any().downcast_ref::<Int64Array>().unwrap().clone();
    // pc-a's first hour of Nov 10: samples i = 0..30, cpu null where i % 7 == 0.
    assert_eq!(pc.value(0), "pc-a");
    let values: Vec<f64> = (0..30u32)
        .filter(|i| i % 7 != 0)
        .map(|i| f64::from(i) + 0.25)
        .collect();
    assert_eq!(count.value(0), values.len() as i64);
    assert_eq!(sum.value(0), values.iter().sum::<f64>());
    assert_eq!(min.value(0), 1.25);
    assert_eq!(max.value(0), 29.25);
    // mem is an integer column: summed exactly.
    let mem_sum = f(&col("mem_used_bytes_sum"));
    assert_eq!(mem_sum.value(0), (1_000..1_030).sum::<i64>() as f64);
    // A metric with no value in the window: count 0, min/max null.
    let swap_count = col("swap_used_bytes_count");
    let swap_count = swap_count.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(swap_count.value(0), 0);
    assert!(f(&col("swap_used_bytes_max")).is_null(0));

    // 5-minute windows: 2 PCs × 288 × 3 days; a 5-minute window of pc-a
    // holds 2 or 3 samples (every 2 minutes).
    let fine = rollup_rows(&table, "host_perf_5m");
    assert_eq!(fine.num_rows(), 2 * 288 * 3);
    let counts = fine.column_by_name("mem_used_bytes_count").unwrap();
    let counts = counts.as_any().downcast_ref::<Int64Array>().unwrap();
    let total: i64 = counts.iter().flatten().sum();
    assert_eq!(total, 2 * 720 * 3, "every sample counted once");
}

#[test]
fn a_fleet_window_sums_every_pcs_samples_of_its_minute_and_only_fleet_questions_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path(), TimeSeriesConfig::for_tests());
    let written = three_days(&table);
    table.compact(PartitionDate::of(at(12, 12, 0, 0))).unwrap();
    let days = ["2026-11-10", "2026-11-11", "2026-11-12"];
    assert_eq!(days_of(&table, "host_perf_fleet_1m"), days);

    // pc-a samples at :00 of every even minute, pc-b 30 s later: one row
    // per even minute (odd minutes hold no sample, so no row), 720 a day.
    let fleet = rollup_rows(&table, "host_perf_fleet_1m");
    assert_eq!(fleet.num_rows(), 720 * 3);
    let col = |n: &str| fleet.column_by_name(n).unwrap().clone();
    let pc = col("pc_id");
    let pc = pc.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(
        pc.iter().flatten().filter(|p| p.is_empty()).count(),
        720 * 3
    );
    let at_col = col("at");
    let starts = at_col
        .as_any()
        .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
        .unwrap();
    let f = |n: &str| {
        col(n)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .clone()
    };
    let i = |n: &str| {
        col(n)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone()
    };
    let (mem_sum, mem_count) = (f("mem_used_bytes_sum"), i("mem_used_bytes_count"));
    let (cpu_sum, cpu_count) = (f("cpu_pct_sum"), i("cpu_pct_count"));
    let (cpu_min, cpu_max) = (f("cpu_pct_min"), f("cpu_pct_max"));
    let mut checked = 0;
    for day in 0..3 {
        for k in 0..720 {
            let r = day * 720 + k;
            let start = at(10 + day as u32, 0, 0, 0) + Duration::minutes(2 * k as i64);
            assert_eq!(starts.value(r), start.timestamp_micros(), "row {r}");
            // Both PCs' samples of the minute, in one row.
            assert_eq!(mem_count.value(r), 2, "row {r}");
            assert_eq!(mem_sum.value(r), (1_000 + k as i64 + 7) as f64, "row {r}");
            let a = (k % 7 != 0).then_some(f64::from(k as u32 % 100) + 0.25);
            let values: Vec<f64> = a.into_iter().chain([50.0]).collect();
            assert_eq!(cpu_count.value(r), values.len() as i64, "row {r}");
            assert_eq!(cpu_sum.value(r), values.iter().sum::<f64>(), "row {r}");
            assert_eq!(
                cpu_min.value(r),
                values.iter().copied().fold(f64::MAX, f64::min)
            );
            assert_eq!(
                cpu_max.value(r),
                values.iter().copied().fold(f64::MIN, f64::max)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, written / 2, "a row per pair of samples");

    // A fleet question at a whole-minute step reads it; a PC's question
    // never does, whatever its step.
    let (from, to) = (at(10, 0, 0, 0), at(12, 0, 0, 0));
    for step in [60, 300, 3_600] {
        let plan = table.rolled_fleet_snapshot(from, to, step);
        assert_eq!(plan.window_secs, 60, "@ {step}s");
        assert_eq!(
            plan.rolled_ranges,
            vec![(from.timestamp_micros(), to.timestamp_micros())]
        );
        assert!(
            plan.raw_ranges.is_empty(),
            "@ {step}s: {:?}",
            plan.raw_ranges
        );
        assert_eq!(plan.rollup.files().len(), 2, "a file per closed day");
    }
    assert_eq!(table.rolled_snapshot(from, to, 60).window_secs, 0);
    assert_eq!(table.rolled_snapshot(from, to, 300).window_secs, 300);
    assert_eq!(table.rolled_snapshot(from, to, 3_600).window_secs, 3_600);
    // Off the minute the ragged ends are left raw (for a PC plan).
    let plan = table.rolled_fleet_snapshot(from + Duration::seconds(30), to, 60);
    let f_us = from.timestamp_micros();
    assert_eq!(
        plan.raw_ranges,
        vec![(f_us + 30_000_000, f_us + 60_000_000)]
    );
    // A step that is not a whole number of minutes: no fleet rollup.
    assert_eq!(table.rolled_fleet_snapshot(from, to, 90).window_secs, 0);
}

#[test]
fn late_samples_are_read_raw_beside_their_days_rollup_until_it_is_rolled_up_again() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path(), TimeSeriesConfig::for_tests());
    three_days(&table);
    let today = PartitionDate::of(at(12, 12, 0, 0));
    table.compact(today).unwrap();

    let (from, to) = (at(10, 6, 20, 0), at(12, 3, 0, 0));
    let mut plan = table.rolled_snapshot(from, to, 3_600);
    assert_eq!(plan.window_secs, 3_600);
    let us = |t: DateTime<Utc>| t.timestamp_micros();
    // Whole hours of every day from the rollup (today's too: it is one
    // file); the ragged start from raw rows.
    assert_eq!(plan.rolled_ranges, vec![(us(at(10, 7, 0, 0)), us(to))]);
    assert_eq!(plan.raw_ranges, vec![(us(from), us(at(10, 7, 0, 0)))]);
    assert_eq!(plan.rollup.files().len(), 3);
    // The raw side opens only the partition it reads: Nov 10 (the ragged
    // start); the rollups have seen every row of their days.
    assert_eq!(plan.raw.files().len(), 1);
    assert_eq!(plan.unseen.files().len() + plan.unseen.head_rows(), 0);

    // A step no rollup divides is all raw.
    plan = table.rolled_snapshot(from, to, 420);
    assert!(plan.rolled_ranges.is_empty());
    assert_eq!(plan.raw_ranges, vec![(us(from), us(to))]);
    // A 10-minute step reads the 5-minute rollup.
    assert_eq!(table.rolled_snapshot(from, to, 600).window_secs, 300);

    // A late sample for Nov 11 in the head: the rollup still answers its
    // day, and the sample is read raw over the rolled windows.
    write(&table, &[row("pc-a", at(11, 9, 0, 30), Some(1.0), 1)]);
    plan = table.rolled_snapshot(from, to, 3_600);
    assert_eq!(plan.rolled_ranges, vec![(us(at(10, 7, 0, 0)), us(to))]);
    assert_eq!(plan.unseen.head_rows(), 1);
    assert_eq!(plan.unseen.files().len(), 0);
    // Persisted as a second file of Nov 11: that file is read raw.
    table.persist().unwrap();
    plan = table.rolled_snapshot(from, to, 3_600);
    assert_eq!(plan.rolled_ranges, vec![(us(at(10, 7, 0, 0)), us(to))]);
    assert_eq!(plan.unseen.head_rows(), 0);
    assert_eq!(plan.unseen.files().len(), 1);
    // Compacted: the day's old file is gone, so until its rollup is
    // rebuilt the day would be raw; the same pass rebuilds it from the new
    // file, late sample included, and nothing is left unseen.
    let before: Vec<_> = table.rollup_files()[1]
        .1
        .iter()
        .map(|f| f.path().to_path_buf())
        .collect();
    drop(plan);
    table.compact(today).unwrap();
    let plan = table.rolled_snapshot(from, to, 3_600);
    assert_eq!(plan.rolled_ranges, vec![(us(at(10, 7, 0, 0)), us(to))]);
    assert_eq!(plan.rollup.files().len(), 3);
    assert_eq!(plan.unseen.files().len() + plan.unseen.head_rows(), 0);
    let after: Vec<_> = table.rollup_files()[1]
        .1
        .iter()
        .map(|f| f.path().to_path_buf())
        .collect();
    assert_eq!(before.len(), 3);
    assert_eq!(after.len(), 3);
    assert_ne!(before[1], after[1], "Nov 11's rollup was rebuilt");
    assert_eq!(before[2], after[2], "today's was current");
    assert!(!before[1].exists(), "the superseded rollup file is deleted");
    let hourly = rollup_rows(&table, "host_perf_1h");
    let counts = hourly.column_by_name("mem_used_bytes_count").unwrap();
    let counts = counts.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(counts.iter().flatten().sum::<i64>(), 2 * 720 * 3 + 1);
}

#[test]
fn every_file_of_today_is_rolled_up_on_its_own_until_compaction_merges_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = TimeSeriesConfig {
        compaction_min_files: 3,
        ..TimeSeriesConfig::for_tests()
    };
    let table = open(dir.path(), config.clone());
    three_days(&table);
    // A few more of today's samples, persisted as a second, smaller file
    // before any maintenance pass: today holds two files, no rollup.
    write(&table, &[row("pc-c", at(12, 23, 0, 0), Some(5.0), 1)]);
    table.persist().unwrap();
    let today = PartitionDate::of(at(12, 23, 30, 0));
    let us = |t: DateTime<Utc>| t.timestamp_micros();
    let (from, to) = (at(12, 0, 0, 0), at(13, 0, 0, 0));
    // Before the pass, today is all raw.
    let plan = table.rolled_snapshot(from, to, 3_600);
    assert_eq!(plan.raw_ranges, vec![(us(from), us(to))]);
    drop(plan);
    table.compact(today).unwrap();
    assert_eq!(table.snapshot(None).files().len(), 4, "today not compacted");
    let plan = table.rolled_snapshot(from, to, 3_600);
    assert_eq!(plan.rolled_ranges, vec![(us(from), us(to))]);
    assert!(plan.raw_ranges.is_empty());
    assert_eq!(plan.rollup.files().len(), 2, "one rollup per file of today");
    assert_eq!(plan.unseen.files().len() + plan.unseen.head_rows(), 0);
    drop(plan);
    let count = |table: &TimeSeriesTable| {
        let hourly = rollup_rows(table, "host_perf_1h");
        let counts = hourly.column_by_name("mem_used_bytes_count").unwrap();
        let counts = counts.as_any().downcast_ref::<Int64Array>().unwrap();
        counts.iter().flatten().sum::<i64>()
    };
    assert_eq!(count(&table), 2 * 720 * 3 + 1, "every row rolled up once");
    // A second pass leaves them.
    let before = table.rollup_files()[1].1.clone();
    assert_eq!(before.len(), 4);
    table.compact(today).unwrap();
    let same = table.rollup_files()[1].1.clone();
    assert!(before.iter().zip(&same).all(|(a, b)| Arc::ptr_eq(a, b)));
    assert_eq!(same.len(), 4);

    // A third file reaches compaction_min_files: today is merged, and its
    // three rollups give way to the merged file's.
    write(&table, &[row("pc-c", at(12, 23, 10, 0), Some(6.0), 1)]);
    table.persist().unwrap();
    assert_eq!(table.compact(today).unwrap().len(), 1);
    let merged = table.rollup_files()[1].1.clone();
    assert_eq!(merged.len(), 3, "one rollup a day");
    // Replaced files go once no reader holds them.
    let replaced: Vec<_> = before[2..].iter().map(|f| f.path().to_path_buf()).collect();
    assert_eq!(replaced.len(), 2);
    drop((before, same));
    for p in &replaced {
        assert!(!p.exists(), "{} replaced", p.display());
    }
    assert_eq!(count(&table), 2 * 720 * 3 + 2);
    let plan = table.rolled_snapshot(from, to, 3_600);
    assert_eq!(plan.rollup.files().len(), 1);
    assert_eq!(plan.unseen.files().len() + plan.unseen.head_rows(), 0);
    drop(plan);
    drop(merged);

    // A rollup of a compaction's input left beside the merged one (a stop
    // between the swap and the removal) is deleted on open, not counted.
    let hourly_root = dir.path().join("host_perf_1h");
    let today_dir = std::fs::read_dir(&hourly_root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("2026-11-12"))
        .unwrap();
    let kept: Vec<_> = std::fs::read_dir(&today_dir).unwrap().flatten().collect();
    assert_eq!(kept.len(), 1);
    let name = kept[0].file_name().to_string_lossy().to_string();
    let (first, rest) = name.split_once('-').unwrap();
    let inner = today_dir.join(format!("{first}-{first}.parquet"));
    std::fs::copy(kept[0].path(), &inner).unwrap();
    assert!(rest.starts_with(char::is_numeric));
    drop(table);
    let reopened = open(dir.path(), config);
    assert!(!inner.exists(), "the covered rollup is removed");
    assert_eq!(count(&reopened), 2 * 720 * 3 + 2);
}

#[test]
fn rollups_outlive_raw_retention_and_survive_restart_and_backup() {
    let dir = tempfile::tempdir().unwrap();
    let config = TimeSeriesConfig {
        host_perf_retention_days: 1,
        host_perf_5m_retention_days: 2,
        ..TimeSeriesConfig::for_tests()
    };
    let table = open(dir.path(), config.clone());
    three_days(&table);
    let today = PartitionDate::of(at(12, 12, 0, 0));
    table.compact(today).unwrap();
    // Raw keeps Nov 11 and 12; both rollups keep Nov 10 too.
    assert_eq!(table.drop_expired(today).unwrap().len(), 1);
    assert_eq!(table.partitions().len(), 2);
    let days = ["2026-11-10", "2026-11-11", "2026-11-12"];
    assert_eq!(days_of(&table, "host_perf_1h"), days);

    // Nov 10 has no raw rows left: its rollup answers alone, a window
    // overlapping the range counting whole.
    let (from, to) = (at(10, 6, 20, 0), at(10, 9, 0, 0));
    let us = |t: DateTime<Utc>| t.timestamp_micros();
    let plan = table.rolled_snapshot(from, to, 3_600);
    assert_eq!(plan.rolled_ranges, vec![(us(at(10, 6, 0, 0)), us(to))]);
    assert!(plan.raw_ranges.is_empty());

    // A day later the 5-minute rollup of Nov 10 expires, the hourly stays.
    table.drop_expired(today.next()).unwrap();
    assert_eq!(
        days_of(&table, "host_perf_5m"),
        ["2026-11-11", "2026-11-12"]
    );
    assert_eq!(days_of(&table, "host_perf_1h"), days);
    assert_eq!(table.rolled_snapshot(from, to, 300).rolled_ranges, vec![]);

    // A backup carries the rollups; opening it (or reopening the table)
    // finds them.
    let dest = tempfile::tempdir().unwrap();
    table.backup_to(dest.path()).unwrap();
    drop(table);
    for root in [dir.path(), dest.path()] {
        let reopened = open(root, config.clone());
        assert_eq!(days_of(&reopened, "host_perf_1h"), days);
        assert_eq!(
            days_of(&reopened, "host_perf_5m"),
            ["2026-11-11", "2026-11-12"]
        );
        let plan = reopened.rolled_snapshot(from, to, 3_600);
        assert_eq!(plan.rolled_ranges, vec![(us(at(10, 6, 0, 0)), us(to))]);
    }
}

#[test]
fn a_day_that_expires_before_it_was_rolled_up_is_rolled_up_on_its_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let config = TimeSeriesConfig {
        host_perf_retention_days: 1,
        ..TimeSeriesConfig::for_tests()
    };
    let table = open(dir.path(), config);
    three_days(&table);
    // A second file for Nov 10 (never compacted: no compaction pass ran).
    write(&table, &[row("pc-c", at(10, 23, 59, 0), Some(5.0), 1)]);
    table.persist().unwrap();
    assert!(table.rollup_files().iter().all(|(_, f)| f.is_empty()));
    let today = PartitionDate::of(at(12, 12, 0, 0));
    assert_eq!(table.drop_expired(today).unwrap().len(), 1);
    // Nov 10 is gone from the raw table but was compacted and rolled up
    // first, its late row included; Nov 11 waits for the compaction pass.
    assert_eq!(days_of(&table, "host_perf_1h"), ["2026-11-10"]);
    assert_eq!(days_of(&table, "host_perf_5m"), ["2026-11-10"]);
    let hourly = rollup_rows(&table, "host_perf_1h");
    let counts = hourly.column_by_name("mem_used_bytes_count").unwrap();
    let counts = counts.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(counts.iter().flatten().sum::<i64>(), 2 * 720 + 1);
}

#[test]
fn a_lone_fresh_file_rolled_up_as_today_keeps_its_rollup_when_compacted_after_midnight() {
    // Today's only file is rolled up as it is; after midnight the closed
    // day's lone fresh file is compacted into a final file of the same
    // segments. Its rollup (same name) must stay on disk and answer.
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path(), TimeSeriesConfig::for_tests());
    let rows: Vec<HostPerfRow> = (0..60)
        .map(|i| row("pc-a", at(10, 8, 0, 0) + Duration::minutes(i), Some(1.0), i))
        .collect();
    write(&table, &rows);
    table.persist().unwrap();
    let today = PartitionDate::of(at(10, 12, 0, 0));
    assert!(table.compact(today).unwrap().is_empty());
    assert_eq!(days_of(&table, "host_perf_5m"), ["2026-11-10"]);
    let done = table.compact(PartitionDate::of(at(11, 0, 5, 0))).unwrap();
    assert_eq!(done.len(), 1, "the lone fresh file is compacted");
    for (name, files) in table.rollup_files() {
        assert_eq!(files.len(), 1, "{name}");
        for f in files {
            assert!(f.path().exists(), "{name}: {} is gone", f.path().display());
        }
    }
    assert_eq!(rollup_rows(&table, "host_perf_5m").num_rows(), 12);
    assert_eq!(rollup_rows(&table, "host_perf_1h").num_rows(), 1);
}

/// The one file of `table`, rolled up into `levels` (specs of its
/// rollups) under `dir`; the rows of each level's file, in `levels`' order.
fn roll_up_into(
    table: &TimeSeriesTable,
    dir: &Path,
    levels: &[&'static TableSpec],
) -> Vec<datafusion::arrow::record_batch::RecordBatch> {
    let config = TimeSeriesConfig::for_tests();
    let snapshot = table.snapshot(None);
    let [source] = snapshot.files() else {
        panic!("{} files", snapshot.files().len());
    };
    let opened: Vec<super::rollup::RollupLevel> = levels
        .iter()
        .map(|s| super::rollup::RollupLevel::open(s, dir, &config).unwrap())
        .collect();
    let refs: Vec<&super::rollup::RollupLevel> = opened.iter().collect();
    let (files, done) = super::rollup::build(table.spec(), &config, &refs, source).unwrap();
    assert_eq!(done.len(), levels.len());
    levels
        .iter()
        .zip(&files)
        .map(|(s, f)| read_file(s, f.path()).unwrap())
        .collect()
}

/// Two rollup batches of the same windows: keys, counts, min and max
/// equal, sums up to the rounding of another summation order.
fn assert_same_windows(
    a: &datafusion::arrow::record_batch::RecordBatch,
    b: &datafusion::arrow::record_batch::RecordBatch,
) {
    assert_eq!(a.schema(), b.schema());
    assert_eq!(a.num_rows(), b.num_rows());
    assert!(a.num_rows() > 0);
    let mut sums = 0;
    for (i, field) in a.schema().fields().iter().enumerate() {
        let (x, y) = (a.column(i), b.column(i));
        if field.name().ends_with("_sum") {
            let x = x.as_any().downcast_ref::<Float64Array>().unwrap();
            let y = y.as_any().downcast_ref::<Float64Array>().unwrap();
            for r in 0..x.len() {
                let (p, q) = (x.value(r), y.value(r));
                assert!(
                    (p - q).abs() <= 1e-12 * p.abs().max(q.abs()).max(1.0),
                    "{} row {r}: {p} vs {q}",
                    field.name()
                );
            }
            sums += 1;
        } else {
            assert_eq!(x, y, "{}", field.name());
        }
    }
    assert!(sums >= 4, "{sums} sum columns");
}

#[test]
fn an_hour_built_from_its_five_minute_windows_equals_the_hour_built_from_raw_rows() {
    let dir = tempfile::tempdir().unwrap();
    let config = TimeSeriesConfig::for_tests();
    // Hosts: full-mantissa values, nulls here and there, samples off the
    // minute, one PC reporting only some hours.
    let host = open(&dir.path().join("host"), config.clone());
    let rows: Vec<HostPerfRow> = (0..1_440i64)
        .flat_map(|i| {
            let t = at(10, 0, 0, 7) + Duration::seconds(60 * i);
            let cpu = (i % 11 != 0).then_some((i as f64 * 0.37).sin().abs() * 100.0);
            let mut a = row("pc-a", t, cpu, 1_000 + i * i);
            a.disk_read_bytes_per_sec = Some(i as f64 / 3.7);
            let b = row(
                "pc-b",
                t + Duration::seconds(13),
                Some(1.0 / (i + 1) as f64),
                9,
            );
            std::iter::once(a).chain(((i / 60) % 3 == 0).then_some(b))
        })
        .collect();
    write(&host, &rows);
    host.persist().unwrap();
    let alone = roll_up_into(&host, &dir.path().join("a"), &[&HOST_PERF_1H]);
    let cascaded = roll_up_into(
        &host,
        &dir.path().join("b"),
        &[&HOST_PERF_5M, &HOST_PERF_1H, &HOST_PERF_FLEET_1M],
    );
    assert_same_windows(&alone[0], &cascaded[1]);
    assert_eq!(alone[0].num_rows(), 24 + 8);

    // Processes: windows per name, two pids of one name adding up.
    let process =
        TimeSeriesTable::open(&PROCESS_PERF, &dir.path().join("process"), config).unwrap();
    let rows: Vec<ProcessPerfRow> = (0..720i64)
        .flat_map(|i| {
            let t = at(10, 0, 0, 0) + Duration::seconds(120 * i + i % 5);
            [(1, "svc"), (2, "svc"), (3, "db"), (4 + i % 2, "agent")].map(|(pid, name)| {
                ProcessPerfRow {
                    pc_id: "pc-a".into(),
                    at: t,
                    pid,
                    name: name.into(),
                    cpu_pct: (i as f64 * 0.11 + pid as f64).cos().abs() * 10.0,
                    rss_bytes: 1 << (10 + pid),
                    disk_read_bytes_per_sec: (pid != 3).then_some(i as f64 / 7.3),
                    disk_written_bytes_per_sec: None,
                }
            })
        })
        .collect();
    process
        .write(&ProcessPerfRow::to_batch(&rows).unwrap())
        .unwrap();
    process.persist().unwrap();
    let alone = roll_up_into(&process, &dir.path().join("c"), &[&PROCESS_PERF_1H]);
    let cascaded = roll_up_into(
        &process,
        &dir.path().join("d"),
        &[&PROCESS_PERF_5M, &PROCESS_PERF_1H],
    );
    assert_same_windows(&alone[0], &cascaded[1]);
    assert_eq!(alone[0].num_rows(), 24 * 3, "one row per hour per name");
}
