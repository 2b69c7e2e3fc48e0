//! The one-PC host and process timelines answered without the SQL planner
//! must give the DataFusion SQL answer on any window, step and PC (a
//! property test over real Parquet files and the head), and must open only
//! the row groups and pages that can hold the PC's window.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use kanade_queries::{PerfQueries, ProcessMetric};
use kanade_storage::{
    HostPerfRow, ProcessPerfRow, RelationalStore, TimeSeriesConfig, TimeSeriesTable, HOST_PERF,
    PROCESS_PERF,
};

use common::{close, same_host, same_timeline, Rng};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 20, 0, 0).unwrap()
}

const PCS: usize = 12;
const MINUTES: i64 = 8 * 60;

/// A sample per PC per minute over 8 hours across midnight, with gaps and
/// nulls and full-mantissa rates, as an agent sends them.
fn row(rng: &mut Rng, pc: usize, min: i64) -> Option<HostPerfRow> {
    if rng.below(20) == 0 {
        return None; // a missed tick
    }
    // Each value is drawn, then dropped one time in ten (a null).
    let mut maybe = |v: f64| (rng.below(10) != 0).then_some(v);
    let cpu = maybe(f64::from((rng_unit(7, pc, min) * 100.0) as f32));
    let swap = maybe(0.0).map(|_| (rng_unit(8, pc, min) * 1e6) as i64);
    let read = maybe((rng_unit(9, pc, min) * 16e6).floor() / (0.9 + rng_unit(10, pc, min) * 0.2));
    let written = maybe((rng_unit(11, pc, min) * 4e6).floor() / 1.0037);
    let rx = maybe(rng_unit(12, pc, min) * 1e6);
    Some(HostPerfRow {
        pc_id: format!("pc{pc:02}"),
        at: t0()
            + Duration::minutes(min)
            + Duration::milliseconds((rng_unit(13, pc, min) * 900.0) as i64),
        cpu_pct: cpu,
        cpu_count: Some(8),
        mem_used_bytes: Some(4_000_000_000 + (rng_unit(14, pc, min) * 1e9) as i64),
        mem_total_bytes: Some(16_000_000_000),
        swap_used_bytes: swap,
        swap_total_bytes: None,
        disk_read_bytes_per_sec: read,
        disk_written_bytes_per_sec: written,
        net_rx_bytes_per_sec: rx,
        net_tx_bytes_per_sec: Some(rng_unit(15, pc, min) * 1e5),
    })
}

/// A value in [0, 1) determined by (what, pc, minute).
fn rng_unit(what: u64, pc: usize, min: i64) -> f64 {
    Rng(what << 40 ^ (pc as u64) << 20 ^ min as u64).unit()
}

/// Several persisted files per partition, two partitions, and a head.
fn load(dir: &std::path::Path) -> (PerfQueries, Arc<TimeSeriesTable>, usize) {
    load_with(dir, TimeSeriesConfig::for_tests())
}

/// The tests' settings: they persist when they mean to, so no threshold
/// and no hard cap.
fn driven(config: TimeSeriesConfig) -> TimeSeriesConfig {
    TimeSeriesConfig {
        persist_max_rows: usize::MAX,
        persist_max_bytes: usize::MAX,
        ..config
    }
}

fn load_with(
    dir: &std::path::Path,
    config: TimeSeriesConfig,
) -> (PerfQueries, Arc<TimeSeriesTable>, usize) {
    let mut rng = Rng(7);
    let table = Arc::new(TimeSeriesTable::open(&HOST_PERF, dir, driven(config)).unwrap());
    let mut rows_total = 0;
    for chunk in 0..6 {
        let rows: Vec<HostPerfRow> = (0..PCS)
            .flat_map(|pc| (chunk * 80..(chunk + 1) * 80).map(move |m| (pc, m)))
            .filter_map(|(pc, m)| row(&mut rng, pc, m))
            .collect();
        rows_total += rows.len();
        table.write(&HostPerfRow::to_batch(&rows).unwrap()).unwrap();
        if chunk < 5 {
            table.persist().unwrap();
        }
    }
    assert!(table.head_rows() > 0, "the last chunk stays in the head");
    let store = RelationalStore::open(dir).unwrap();
    let q = PerfQueries::new(Arc::clone(&table), Arc::clone(&table), store).unwrap();
    (q, table, rows_total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_host_timeline_equals_sql_on_random_windows() {
    let dir = tempfile::tempdir().unwrap();
    let (q, table, _) = load(dir.path());
    same_timelines_on_random_windows(&q, &table).await;
}

/// The production row groups (65,536 rows, pages of 1,024) after
/// compaction: each day is one row group of several pages, and the scans
/// select pages inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_host_timeline_equals_sql_when_pages_are_selected_in_big_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let config = TimeSeriesConfig {
        row_group_rows: 65_536,
        ..TimeSeriesConfig::for_tests()
    };
    let (q, table, _) = load_with(dir.path(), config);
    same_timelines_on_random_windows(&q, &table).await;
    table.persist().unwrap();
    table
        .compact(kanade_storage::PartitionDate::of(t0() + Duration::days(2)))
        .unwrap();
    let files = table.snapshot(None).files().len();
    assert_eq!(files, 2, "one file per day");
    same_timelines_on_random_windows(&q, &table).await;
}

async fn same_timelines_on_random_windows(q: &PerfQueries, table: &TimeSeriesTable) {
    let files = table.snapshot(None).files().len();
    assert!(files >= 2, "{files} files");
    let mut rng = Rng(42);
    let steps = [60, 300, 600, 3600, 7 * 60 + 13];
    let mut nonempty = 0;
    for case in 0..150 {
        let pc = format!("pc{:02}", rng.below(PCS as u64 + 1)); // pc12 has no rows
        let from = t0() + Duration::seconds(rng.below(MINUTES as u64 * 60) as i64 - 1800);
        let to = from + Duration::seconds(1 + rng.below(4 * 3600) as i64);
        let step = steps[rng.below(steps.len() as u64) as usize];
        let fast = q.host_timeline(&pc, from, to, step).await.unwrap();
        let sql = q.host_timeline_sql(&pc, from, to, step).await.unwrap();
        assert!(
            same_host(&fast, &sql),
            "case {case}: {pc} [{from}, {to}) @ {step}s\nfast {fast:?}\nsql  {sql:?}"
        );
        if !fast.is_empty() {
            nonempty += 1;
        }
    }
    assert!(nonempty > 100, "only {nonempty} of 150 windows held rows");
}

#[tokio::test]
async fn a_one_pc_hour_opens_only_the_row_groups_that_can_hold_it() {
    let dir = tempfile::tempdir().unwrap();
    let (q, table, rows_total) = load(dir.path());
    let today = kanade_storage::PartitionDate::of(t0() + Duration::days(2));
    table.persist().unwrap();
    table.compact(today).unwrap();
    let snapshot = table.snapshot(None);
    assert_eq!(snapshot.head_rows(), 0);
    let from = t0() + Duration::hours(2);
    let (points, stats) = q
        .host_timeline_read("pc05", from, from + Duration::hours(1), 300)
        .unwrap();
    assert_eq!(points.len(), 12, "twelve 5-minute buckets");
    // Row groups hold 16 rows (the test config); the PC's hour is about
    // 57 rows: at most 5 row groups for it, plus the two where pc05 meets
    // its neighbours (their `at` ranges span the whole day), plus one for
    // misalignment. One file, not the table.
    assert_eq!(stats.files, 1, "{stats:?}");
    assert!(stats.row_groups <= 8, "{stats:?}");
    assert!(stats.rows_read <= 8 * 16, "{stats:?} of {rows_total} rows");
    assert!(rows_total > 5_000);
    // The file's footer and page index are parsed once, then cached.
    let loads = q.file_metadata_loads();
    q.host_timeline_read("pc05", from, from + Duration::hours(1), 300)
        .unwrap();
    assert_eq!(q.file_metadata_loads(), loads, "no footer re-read");
    assert!(loads >= 1);
}

/// Processes of 4 PCs every minute: some names come and go, two pids
/// share a name, values at agent precision.
fn load_processes(dir: &std::path::Path) -> PerfQueries {
    let mut rng = Rng(11);
    let table = Arc::new(
        TimeSeriesTable::open(&PROCESS_PERF, dir, driven(TimeSeriesConfig::for_tests())).unwrap(),
    );
    let names = [
        "chrome", "chrome", "svchost", "teams", "defender", "explorer", "zoom", "java",
    ];
    for chunk in 0..4 {
        let mut rows = Vec::new();
        for pc in 0..4 {
            for m in chunk * 120..(chunk + 1) * 120 {
                for (pid, name) in names.iter().enumerate() {
                    // zoom only in the afternoon, java now and then.
                    if (*name == "zoom" && m < 200) || (*name == "java" && rng.below(3) == 0) {
                        continue;
                    }
                    rows.push(ProcessPerfRow {
                        pc_id: format!("pc{pc:02}"),
                        at: t0() + Duration::minutes(m),
                        pid: pid as i64 + 100,
                        name: (*name).to_string(),
                        cpu_pct: f64::from((rng.unit() * 50.0) as f32),
                        rss_bytes: (rng.below(1 << 30)) as i64,
                        disk_read_bytes_per_sec: (rng.below(4) != 0).then(|| rng.unit() * 1e6),
                        disk_written_bytes_per_sec: None,
                    });
                }
            }
        }
        table
            .write(&ProcessPerfRow::to_batch(&rows).unwrap())
            .unwrap();
        if chunk < 3 {
            table.persist().unwrap();
        }
    }
    let store = RelationalStore::open(dir).unwrap();
    PerfQueries::new(Arc::clone(&table), table, store).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_process_timeline_equals_sql_on_random_windows() {
    let dir = tempfile::tempdir().unwrap();
    let q = load_processes(dir.path());
    let mut rng = Rng(5);
    let metrics = [
        ProcessMetric::CpuPct,
        ProcessMetric::RssBytes,
        ProcessMetric::DiskReadBytesPerSec,
        ProcessMetric::DiskWrittenBytesPerSec,
    ];
    let mut nonempty = 0;
    for case in 0..80 {
        let pc = format!("pc{:02}", rng.below(5));
        let metric = metrics[rng.below(4) as usize];
        let from = t0() + Duration::seconds(rng.below(MINUTES as u64 * 60) as i64 - 1800);
        let to = from + Duration::seconds(1 + rng.below(5 * 3600) as i64);
        let step = [60, 300, 900, 3600][rng.below(4) as usize];
        let top = 1 + rng.below(6) as usize;
        let fast = q
            .process_timeline(&pc, metric, from, to, step, top)
            .await
            .unwrap();
        let sql = q
            .process_timeline_sql(&pc, metric, from, to, step, top)
            .await
            .unwrap();
        let why = format!("case {case}: {pc} {metric:?} [{from}, {to}) @ {step}s top {top}");
        if let Err(e) = same_timeline(&fast, &sql) {
            panic!("{why}: {e}");
        }
        if !fast.points.is_empty() {
            nonempty += 1;
        }
    }
    assert!(nonempty > 40, "only {nonempty} of 80 windows held rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_top_pcs_equal_sql_on_random_windows() {
    use kanade_queries::HostMetric;
    let dir = tempfile::tempdir().unwrap();
    let (_, table, _) = load(dir.path());
    // Half the PCs have sent a heartbeat (with a hostname), half not.
    let store = RelationalStore::open(dir.path()).unwrap();
    let beats: Vec<kanade_storage::HeartbeatUpdate> = (0..PCS / 2)
        .map(|pc| kanade_storage::HeartbeatUpdate {
            pc_id: format!("pc{pc:02}"),
            at: t0(),
            hostname: Some(format!("host-{pc}")),
            os_family: None,
            agent_version: "0.43.56".into(),
            agent_cpu_pct: None,
            agent_rss_bytes: None,
            agent_disk_read_bytes: None,
            agent_disk_written_bytes: None,
            quarantined_versions: vec![],
            reported: Default::default(),
        })
        .collect();
    store.upsert_heartbeats(&beats, t0()).unwrap();
    let q = PerfQueries::new(Arc::clone(&table), table, store).unwrap();
    let metrics = [
        HostMetric::CpuPct,
        HostMetric::MemUsedBytes,
        HostMetric::DiskReadBytesPerSec,
        HostMetric::NetRxBytesPerSec,
    ];
    let mut rng = Rng(77);
    let (mut ranked, mut mixed) = (0, 0);
    for case in 0..60 {
        let since = t0() + Duration::seconds(rng.below(MINUTES as u64 * 60 + 600) as i64 - 300);
        let now = since + Duration::minutes(5);
        let metric = metrics[rng.below(metrics.len() as u64) as usize];
        let limit = 1 + rng.below(PCS as u64 + 2) as usize;
        let direct = q.top_pcs(metric, since, now, limit).await.unwrap();
        let sql = q.top_pcs_sql(metric, since, now, limit).await.unwrap();
        let why = format!("case {case}: {metric:?} since {since} top {limit}");
        assert_eq!(direct.len(), sql.len(), "{why}");
        for (a, b) in direct.iter().zip(&sql) {
            assert_eq!((&a.pc_id, &a.hostname), (&b.pc_id, &b.hostname), "{why}");
            assert!(close(Some(a.value), Some(b.value)), "{why}");
        }
        if !direct.is_empty() {
            ranked += 1;
        }
        if direct.iter().any(|r| r.hostname.is_some())
            && direct.iter().any(|r| r.hostname.is_none())
        {
            mixed += 1;
        }
    }
    assert!(ranked > 40, "only {ranked} of 60 windows held samples");
    assert!(
        mixed > 5,
        "only {mixed} rankings mixed PCs with and without a hostname"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_pc_sql_query_scans_only_the_files_and_row_groups_that_can_hold_it() {
    let dir = tempfile::tempdir().unwrap();
    let (q, table, _) = load(dir.path());
    // Each persisted file holds 80 minutes of every PC; the first three
    // (minutes 0–240) lie in the first day's partition.
    let first_day = table.snapshot(Some((t0(), t0() + Duration::minutes(1))));
    assert_eq!(first_day.files().len(), 3);
    let before = q.provider_stats();
    let from = t0() + Duration::minutes(170);
    let sql = q
        .host_timeline_sql("pc05", from, from + Duration::minutes(30), 300)
        .await
        .unwrap();
    assert_eq!(sql.len(), 6, "six 5-minute buckets");
    let s = q.provider_stats();
    assert_eq!(s.scans - before.scans, 1, "{s:?}");
    assert_eq!(s.files_in_snapshots - before.files_in_snapshots, 3, "{s:?}");
    assert_eq!(s.files_scanned - before.files_scanned, 1, "{s:?}");
    // DataFusion may split the file into two byte ranges, one reader each.
    assert!(
        (1..=2).contains(&(s.readers_opened - before.readers_opened)),
        "{s:?}"
    );
    // 16-row groups: the file's ~900 rows make ~57; the PC's half hour
    // (about 29 rows) lies in 2 or 3 of them, plus those where it meets
    // its neighbours and where the window's ends cut a group.
    let in_files = s.row_groups_in_files - before.row_groups_in_files;
    let scanned = s.row_groups_scanned - before.row_groups_scanned;
    assert!(in_files > 150, "{s:?}");
    assert!(
        (2..=6).contains(&scanned),
        "{scanned} of {in_files} row groups"
    );

    // A PC with no rows: every file is pruned, none is opened.
    let before = q.provider_stats();
    let none = q
        .host_timeline_sql("pc99", from, from + Duration::minutes(30), 300)
        .await
        .unwrap();
    assert!(none.is_empty());
    let s = q.provider_stats();
    assert_eq!(s.files_scanned - before.files_scanned, 0, "{s:?}");
    assert_eq!(s.readers_opened - before.readers_opened, 0, "{s:?}");

    // The whole fleet over the same half hour still reads one file, but
    // every PC's row groups in it.
    let before = q.provider_stats();
    let fleet = q
        .fleet_series_sql(
            kanade_queries::HostMetric::CpuPct,
            kanade_queries::Aggregate::Avg,
            from,
            from + Duration::minutes(30),
            300,
        )
        .await
        .unwrap();
    assert_eq!(fleet.len(), 6);
    let s = q.provider_stats();
    assert_eq!(s.files_scanned - before.files_scanned, 1, "{s:?}");
    assert!(
        s.row_groups_scanned - before.row_groups_scanned > 10,
        "{s:?}"
    );
}
