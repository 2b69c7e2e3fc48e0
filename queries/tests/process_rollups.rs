//! The process timeline reads the per-name rollups for the whole windows
//! of closed days, and must give the raw answer (DataFusion SQL over every
//! raw row) on any window, step, metric, top-N and PC: on random windows,
//! after late samples (in the head, persisted, compacted), and after the
//! raw rows of a day are gone.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use kanade_queries::{PerfQueries, ProcessMetric};
use kanade_storage::{
    PartitionDate, ProcessPerfRow, RelationalStore, TimeSeriesConfig, TimeSeriesTable, PROCESS_PERF,
};

use common::{same_timeline, Rng};

/// Midnight of the first of the four days; the fourth is "today".
fn day0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

fn today() -> PartitionDate {
    PartitionDate::of(day0() + Duration::days(3))
}

const PCS: usize = 3;

/// Two pids share a name; zoom runs only in working hours, java now and
/// then.
const NAMES: [&str; 6] = ["chrome", "chrome", "svchost", "teams", "zoom", "java"];

const METRICS: [ProcessMetric; 4] = [
    ProcessMetric::CpuPct,
    ProcessMetric::RssBytes,
    ProcessMetric::DiskReadBytesPerSec,
    ProcessMetric::DiskWrittenBytesPerSec,
];

/// One tick's processes of a PC, at agent precision (f32-widened CPU,
/// whole bytes, full-mantissa rates, nulls).
fn tick(rng: &mut Rng, pc: usize, at: DateTime<Utc>) -> Vec<ProcessPerfRow> {
    let hour = (at - day0()).num_hours() % 24;
    let mut rows = Vec::new();
    for (pid, name) in NAMES.iter().enumerate() {
        if (*name == "zoom" && !(9..17).contains(&hour)) || (*name == "java" && rng.below(3) == 0) {
            continue;
        }
        let read = (rng.unit() * 16e6).floor() / (0.9 + rng.unit() * 0.2);
        rows.push(ProcessPerfRow {
            pc_id: format!("pc{pc}"),
            at,
            pid: 100 + pid as i64,
            name: (*name).to_string(),
            cpu_pct: f64::from((rng.unit() * 50.0) as f32),
            rss_bytes: rng.below(1 << 30) as i64,
            disk_read_bytes_per_sec: (rng.below(4) != 0).then_some(read),
            disk_written_bytes_per_sec: (rng.below(2) == 0).then(|| rng.unit() * 1e5 / 1.0037),
        });
    }
    rows
}

/// Four days of ticks every 2 minutes (three closed, compacted and rolled
/// up; today persisted in parts with its last hours in the head).
fn load(dir: &std::path::Path, config: TimeSeriesConfig) -> (PerfQueries, Arc<TimeSeriesTable>) {
    let mut rng = Rng(17);
    let table = Arc::new(TimeSeriesTable::open(&PROCESS_PERF, dir, config).unwrap());
    let ticks = (3 * 1440 + 18 * 60) / 2;
    let chunk = 180;
    for c in 0..ticks / chunk {
        let mut rows = Vec::new();
        for t in c * chunk..(c + 1) * chunk {
            for pc in 0..PCS {
                if rng.below(25) == 0 {
                    continue; // a missed tick
                }
                let at = day0()
                    + Duration::minutes(2 * t)
                    + Duration::milliseconds(rng.below(59_000) as i64);
                rows.extend(tick(&mut rng, pc, at));
            }
        }
        table
            .write(&ProcessPerfRow::to_batch(&rows).unwrap())
            .unwrap();
        if c < ticks / chunk - 2 {
            table.persist().unwrap();
        }
    }
    table.compact(today()).unwrap();
    assert!(table.head_rows() > 0, "today's last hours stay in the head");
    let store = RelationalStore::open(dir).unwrap();
    let q = PerfQueries::new(Arc::clone(&table), Arc::clone(&table), store).unwrap();
    (q, table)
}

fn config() -> TimeSeriesConfig {
    TimeSeriesConfig {
        row_group_rows: 1_024,
        // The test persists when it means to: no threshold, no hard cap.
        persist_max_rows: usize::MAX,
        persist_max_bytes: usize::MAX,
        ..TimeSeriesConfig::for_tests()
    }
}

/// `cases` random questions (starting near `around` if given), each asked
/// of the rollup-aware path and of raw SQL; returns how many read rollup
/// rows.
async fn compare(
    q: &PerfQueries,
    rng: &mut Rng,
    cases: usize,
    around: Option<DateTime<Utc>>,
) -> usize {
    let steps = [60, 300, 600, 900, 3_600, 7_200, 86_400, 7 * 60];
    let (mut rolled, mut nonempty) = (0, 0);
    for case in 0..cases {
        let pc = format!("pc{}", rng.below(PCS as u64 + 1)); // pc3 has no rows
        let span = 4 * 86_400;
        let from = match around {
            Some(t) => t - Duration::seconds(rng.below(3 * 3_600) as i64),
            None => day0() + Duration::seconds(rng.below(span) as i64 - 3_600),
        };
        let to = from + Duration::seconds(1 + rng.below(span / 2) as i64);
        let step = steps[rng.below(steps.len() as u64) as usize];
        let metric = METRICS[rng.below(METRICS.len() as u64) as usize];
        let top = 1 + rng.below(5) as usize;
        let why = format!("case {case}: {pc} {metric:?} [{from}, {to}) @ {step}s top {top}");
        let (fast, stats) = q
            .process_timeline_read(&pc, metric, from, to, step, top)
            .unwrap();
        let sql = q
            .process_timeline_sql(&pc, metric, from, to, step, top)
            .await
            .unwrap();
        if let Err(e) = same_timeline(&fast, &sql) {
            panic!("{why}: {e}");
        }
        rolled += usize::from(stats.rollup_rows > 0);
        nonempty += usize::from(!fast.points.is_empty());
    }
    assert!(
        nonempty * 2 > cases,
        "only {nonempty} of {cases} windows held rows"
    );
    rolled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_rollups_answer_as_raw_rows_do_on_random_windows_and_after_late_samples() {
    let dir = tempfile::tempdir().unwrap();
    let (q, table) = load(dir.path(), config());
    let mut rng = Rng(42);
    let rolled = compare(&q, &mut rng, 80, None).await;
    assert!(rolled >= 20, "only {rolled} of 80 questions read a rollup");

    // A whole closed day by the hour: one rollup row per hour per name
    // (zoom only in its 8 working hours).
    let day1 = |q: &PerfQueries| {
        let from = day0() + Duration::days(1);
        q.process_timeline_read(
            "pc1",
            ProcessMetric::CpuPct,
            from,
            from + Duration::days(1),
            3_600,
            10,
        )
        .unwrap()
    };
    let (before, stats) = day1(&q);
    assert_eq!(stats.rollup_rows, 24 * 4 + 8, "{stats:?}");
    assert_eq!(stats.files, 1, "the rollup's file alone: {stats:?}");

    // A late tick for day 1 with a new process name: in the head,
    // persisted as a second file, then compacted and rolled up again.
    let late_at = day0() + Duration::days(1) + Duration::hours(9) + Duration::seconds(17);
    let mut late = tick(&mut rng, 1, late_at);
    late[0].name = "late-starter".into();
    late[0].cpu_pct = 1e3;
    table
        .write(&ProcessPerfRow::to_batch(&late).unwrap())
        .unwrap();
    let (points, stats) = day1(&q);
    assert_eq!(stats.rollup_rows, 24 * 4 + 8, "the rollup still answers");
    assert_eq!(stats.files, 1, "and the late rows come from the head");
    assert_eq!(points.names[0], "late-starter", "{:?}", points.names);
    assert_ne!(points, before);
    compare(&q, &mut rng, 25, Some(late_at)).await;
    table.persist().unwrap();
    let (persisted, stats) = day1(&q);
    assert_eq!(stats.rollup_rows, 24 * 4 + 8, "{stats:?}");
    assert_eq!(
        stats.files, 2,
        "the rollup's and the late rows' file: {stats:?}"
    );
    if let Err(e) = same_timeline(&persisted, &points) {
        panic!("persisted vs in the head: {e}");
    }
    compare(&q, &mut rng, 25, Some(late_at)).await;
    table.compact(today()).unwrap();
    let (again, stats) = day1(&q);
    assert_eq!(
        stats.rollup_rows,
        24 * 4 + 8 + 1,
        "rolled up again: {stats:?}"
    );
    if let Err(e) = same_timeline(&again, &points) {
        panic!("rolled up again vs raw: {e}");
    }
    let rolled = compare(&q, &mut rng, 25, Some(late_at)).await;
    assert!(rolled >= 5, "only {rolled} of 25 questions read a rollup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_rollups_answer_for_days_whose_raw_rows_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (q, table) = load(
        dir.path(),
        TimeSeriesConfig {
            process_perf_retention_days: 2,
            ..config()
        },
    );
    // Whole hours of day 0, asked before and after its raw rows expire.
    let mut rng = Rng(9);
    let mut questions = Vec::new();
    for _ in 0..30 {
        let from = day0() + Duration::hours(rng.below(20) as i64);
        let to = from + Duration::hours(1 + rng.below(4) as i64);
        let step = [300, 900, 3_600, 7_200][rng.below(4) as usize];
        let pc = format!("pc{}", rng.below(PCS as u64));
        let metric = METRICS[rng.below(METRICS.len() as u64) as usize];
        let top = 1 + rng.below(5) as usize;
        let sql = q
            .process_timeline_sql(&pc, metric, from, to, step, top)
            .await
            .unwrap();
        assert!(!sql.points.is_empty());
        questions.push((pc, metric, from, to, step, top, sql));
    }
    assert_eq!(
        table.drop_expired(today()).unwrap(),
        vec![PartitionDate::of(day0())]
    );
    for (pc, metric, from, to, step, top, before) in &questions {
        let why = format!("{pc} {metric:?} [{from}, {to}) @ {step}s top {top}");
        let sql = q
            .process_timeline_sql(pc, *metric, *from, *to, *step, *top)
            .await
            .unwrap();
        assert!(sql.points.is_empty(), "{why}: the raw rows are gone");
        let (now, stats) = q
            .process_timeline_read(pc, *metric, *from, *to, *step, *top)
            .unwrap();
        assert!(stats.rollup_rows > 0, "{why}");
        if let Err(e) = same_timeline(&now, before) {
            panic!("{why}: {e}");
        }
    }
}
