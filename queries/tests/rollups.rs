//! The host timeline and the fleet series read rollups for the whole
//! windows of closed days, and must give the raw answer (DataFusion SQL
//! over every raw row) on any window, step and PC: on random windows,
//! after late samples (in the head, persisted, compacted), and after the
//! raw rows of a day are gone (the rollup still answers what it answered
//! before).

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use kanade_queries::{Aggregate, HostMetric, PerfQueries};
use kanade_storage::{
    HostPerfRow, PartitionDate, RelationalStore, TimeSeriesConfig, TimeSeriesTable, HOST_PERF,
};

use common::{same_fleet, same_host, Rng};

/// Midnight of the first of the four days; the fourth is "today".
fn day0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

fn today() -> PartitionDate {
    PartitionDate::of(day0() + Duration::days(3))
}

const PCS: usize = 5;

/// A sample as an agent sends it: jittered time, f32-widened CPU,
/// full-mantissa rates, whole bytes, nulls and missed ticks.
fn sample(rng: &mut Rng, pc: usize, at: DateTime<Utc>) -> HostPerfRow {
    // Each value is drawn, then dropped one time in ten (a null).
    let cpu = f64::from((rng.unit() * 100.0) as f32);
    let cpu = (rng.below(10) != 0).then_some(cpu);
    let read = (rng.unit() * 16e6).floor() / (0.9 + rng.unit() * 0.2);
    let read = (rng.below(10) != 0).then_some(read);
    let swap = (rng.unit() * 1e6) as i64;
    let swap = (rng.below(10) != 0).then_some(swap);
    HostPerfRow {
        pc_id: format!("pc{pc}"),
        at,
        cpu_pct: cpu,
        cpu_count: Some(8),
        mem_used_bytes: Some(4_000_000_000 + (rng.unit() * 1e9) as i64),
        mem_total_bytes: Some(16_000_000_000),
        swap_used_bytes: swap,
        swap_total_bytes: None,
        disk_read_bytes_per_sec: read,
        disk_written_bytes_per_sec: Some(rng.unit() * 4e6 / 1.0037),
        net_rx_bytes_per_sec: Some(rng.unit() * 1e6),
        net_tx_bytes_per_sec: None,
    }
}

/// Four days of samples every minute (three closed, compacted and rolled
/// up; today persisted in parts with its last hours in the head).
fn load(dir: &std::path::Path, config: TimeSeriesConfig) -> (PerfQueries, Arc<TimeSeriesTable>) {
    let mut rng = Rng(3);
    let table = Arc::new(TimeSeriesTable::open(&HOST_PERF, dir, config).unwrap());
    let minutes = 3 * 1440 + 18 * 60;
    for chunk in 0..(minutes / 360) {
        let mut rows = Vec::new();
        for m in chunk * 360..(chunk + 1) * 360 {
            for pc in 0..PCS {
                if rng.below(25) == 0 {
                    continue; // a missed tick
                }
                let at = day0()
                    + Duration::minutes(m)
                    + Duration::milliseconds(rng.below(59_000) as i64);
                rows.push(sample(&mut rng, pc, at));
            }
        }
        table.write(&HostPerfRow::to_batch(&rows).unwrap()).unwrap();
        if chunk < minutes / 360 - 2 {
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

const METRICS: [HostMetric; 4] = [
    HostMetric::CpuPct,
    HostMetric::MemUsedBytes,
    HostMetric::DiskReadBytesPerSec,
    HostMetric::NetTxBytesPerSec,
];

/// `cases` random questions, each asked of the rollup-aware paths and of
/// raw SQL; returns how many read rollup rows, and how many fleet
/// questions the fleet-wide rollup answered in part.
async fn compare(
    q: &PerfQueries,
    table: &TimeSeriesTable,
    rng: &mut Rng,
    cases: usize,
    around: Option<DateTime<Utc>>,
) -> (usize, usize) {
    let mut fleet_rolled = 0;
    let steps = [60, 300, 600, 900, 3_600, 7_200, 86_400, 7 * 60];
    let mut rolled = 0;
    let mut nonempty = 0;
    for case in 0..cases {
        let pc = format!("pc{}", rng.below(PCS as u64 + 1)); // pc5 has no rows
        let span = 4 * 86_400;
        let from = match around {
            Some(t) => t - Duration::seconds(rng.below(3 * 3_600) as i64),
            None => day0() + Duration::seconds(rng.below(span) as i64 - 3_600),
        };
        let to = from + Duration::seconds(1 + rng.below(span / 2) as i64);
        let step = steps[rng.below(steps.len() as u64) as usize];
        let why = format!("case {case}: {pc} [{from}, {to}) @ {step}s");
        let (fast, stats) = q.host_timeline_read(&pc, from, to, step).unwrap();
        let sql = q.host_timeline_sql(&pc, from, to, step).await.unwrap();
        assert!(
            same_host(&fast, &sql),
            "{why}\nrolled {fast:?}\nraw    {sql:?}"
        );
        if stats.rollup_rows > 0 {
            rolled += 1;
        }
        if !fast.is_empty() {
            nonempty += 1;
        }
        let metric = METRICS[rng.below(METRICS.len() as u64) as usize];
        for agg in [Aggregate::Avg, Aggregate::Max] {
            let fleet = q.fleet_series(metric, agg, from, to, step).await.unwrap();
            let stored = q
                .fleet_series_stored(metric, agg, from, to, step)
                .await
                .unwrap();
            let sql = q
                .fleet_series_sql(metric, agg, from, to, step)
                .await
                .unwrap();
            assert!(
                same_fleet(&fleet, &sql),
                "{why} {metric:?} {agg:?}\nrolled {fleet:?}\nraw    {sql:?}"
            );
            assert!(
                same_fleet(&stored, &sql),
                "{why} {metric:?} {agg:?}\nstored {stored:?}\nraw    {sql:?}"
            );
        }
        if !table
            .rolled_fleet_snapshot(from, to, step)
            .rolled_ranges
            .is_empty()
        {
            fleet_rolled += 1;
        }
    }
    assert!(
        nonempty * 2 > cases,
        "only {nonempty} of {cases} windows held rows"
    );
    (rolled, fleet_rolled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_answer_as_raw_rows_do_on_random_windows_and_after_late_samples() {
    let dir = tempfile::tempdir().unwrap();
    let (q, table) = load(dir.path(), config());
    let mut rng = Rng(42);
    let (rolled, fleet) = compare(&q, &table, &mut rng, 100, None).await;
    assert!(rolled >= 25, "only {rolled} of 100 questions read a rollup");
    assert!(
        fleet >= 25,
        "only {fleet} of 100 fleet questions read its rollup"
    );

    // Late samples for day 1 (one of them a new maximum): in the head,
    // persisted as a second file, then compacted and rolled up again.
    let late_at = day0() + Duration::days(1) + Duration::hours(9);
    let late: Vec<HostPerfRow> = (0..PCS)
        .map(|pc| {
            let mut r = sample(&mut rng, pc, late_at + Duration::seconds(17 + pc as i64));
            r.cpu_pct = Some(1e3);
            r.disk_read_bytes_per_sec = Some(1e12);
            r
        })
        .collect();
    table.write(&HostPerfRow::to_batch(&late).unwrap()).unwrap();
    let day1 = |q: &PerfQueries| {
        let from = day0() + Duration::days(1);
        q.host_timeline_read("pc1", from, from + Duration::days(1), 3_600)
            .unwrap()
    };
    let (points, stats) = day1(&q);
    assert_eq!(
        stats.rollup_rows, 24,
        "day 1's rollup answers, the late sample read from the head"
    );
    assert_eq!(
        points[9].get("cpu_pct").map(|c| c > 10.0),
        Some(true),
        "{:?}",
        points[9]
    );
    compare(&q, &table, &mut rng, 30, Some(late_at)).await;
    table.persist().unwrap();
    let (persisted, stats) = day1(&q);
    assert_eq!(stats.rollup_rows, 24, "{stats:?}");
    assert_eq!(
        stats.files, 2,
        "the rollup's and the late sample's: {stats:?}"
    );
    assert!(same_host(&persisted, &points));
    compare(&q, &table, &mut rng, 30, Some(late_at)).await;
    table.compact(today()).unwrap();
    let (again, stats) = day1(&q);
    assert_eq!(stats.rollup_rows, 24, "rolled up again: one row per hour");
    assert!(same_host(&again, &points));
    let (rolled, fleet) = compare(&q, &table, &mut rng, 30, Some(late_at)).await;
    assert!(rolled >= 5, "only {rolled} of 30 questions read a rollup");
    assert!(
        fleet >= 5,
        "only {fleet} of 30 fleet questions read its rollup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_series_of_more_buckets_than_the_dense_read_holds_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _table) = load(dir.path(), config());
    // Over a million buckets: 1-second ones over 14 days (raw rows only),
    // 5-minute ones over ten years (the closed days from the rollup).
    for (from, step) in [
        (day0() - Duration::days(10), 1),
        (day0() - Duration::days(3_660), 300),
    ] {
        let to = day0() + Duration::days(4);
        for agg in [Aggregate::Avg, Aggregate::Max] {
            let fleet = q
                .fleet_series(HostMetric::CpuPct, agg, from, to, step)
                .await
                .unwrap();
            let sql = q
                .fleet_series_sql(HostMetric::CpuPct, agg, from, to, step)
                .await
                .unwrap();
            assert!(fleet.len() > 1_000, "{} points", fleet.len());
            assert!(same_fleet(&fleet, &sql), "@ {step}s {agg:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_answer_for_days_whose_raw_rows_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (q, table) = load(
        dir.path(),
        TimeSeriesConfig {
            host_perf_retention_days: 2,
            ..config()
        },
    );
    // Whole hours of day 0, asked before and after its raw rows expire.
    let mut rng = Rng(9);
    let mut questions = Vec::new();
    for _ in 0..40 {
        let from = day0() + Duration::hours(rng.below(20) as i64);
        let to = from + Duration::hours(1 + rng.below(4) as i64);
        let step = [300, 900, 3_600, 7_200][rng.below(4) as usize];
        let pc = format!("pc{}", rng.below(PCS as u64));
        let metric = METRICS[rng.below(METRICS.len() as u64) as usize];
        questions.push((pc, from, to, step, metric));
    }
    let mut before = Vec::new();
    for (pc, from, to, step, metric) in &questions {
        let tl = q.host_timeline_sql(pc, *from, *to, *step).await.unwrap();
        let fleet = q
            .fleet_series_sql(*metric, Aggregate::Avg, *from, *to, *step)
            .await
            .unwrap();
        assert!(!tl.is_empty() && !fleet.is_empty());
        before.push((tl, fleet));
    }
    assert_eq!(
        table.drop_expired(today()).unwrap(),
        vec![PartitionDate::of(day0())]
    );
    for ((pc, from, to, step, metric), (tl, fleet)) in questions.iter().zip(&before) {
        let why = format!("{pc} [{from}, {to}) @ {step}s");
        assert!(
            q.host_timeline_sql(pc, *from, *to, *step)
                .await
                .unwrap()
                .is_empty(),
            "{why}: the raw rows are gone"
        );
        let (now, stats) = q.host_timeline_read(pc, *from, *to, *step).unwrap();
        assert!(stats.rollup_rows > 0, "{why}");
        assert!(same_host(&now, tl), "{why}\nnow    {now:?}\nbefore {tl:?}");
        let now = q
            .fleet_series(*metric, Aggregate::Avg, *from, *to, *step)
            .await
            .unwrap();
        assert!(same_fleet(&now, fleet), "{why} {metric:?}");
        let stored = q
            .fleet_series_stored(*metric, Aggregate::Avg, *from, *to, *step)
            .await
            .unwrap();
        assert!(same_fleet(&stored, fleet), "{why} {metric:?}");
        assert!(
            !table
                .rolled_fleet_snapshot(*from, *to, *step)
                .rolled_ranges
                .is_empty(),
            "{why}: the fleet-wide rollup answers"
        );
    }

    // A data directory from before the fleet-wide rollup: day 0 has only
    // the per-PC rollups, which answer its fleet questions instead.
    drop((q, table));
    let fleet_day0 = dir
        .path()
        .join("host_perf_fleet_1m")
        .join(format!("date={}", day0().format("%Y-%m-%d")));
    assert!(fleet_day0.is_dir(), "{}", fleet_day0.display());
    std::fs::remove_dir_all(&fleet_day0).unwrap();
    let table = Arc::new(
        TimeSeriesTable::open(
            &HOST_PERF,
            dir.path(),
            TimeSeriesConfig {
                host_perf_retention_days: 2,
                ..config()
            },
        )
        .unwrap(),
    );
    let store = RelationalStore::open(dir.path()).unwrap();
    let q = PerfQueries::new(Arc::clone(&table), Arc::clone(&table), store).unwrap();
    let mut asked = 0;
    for ((pc, from, to, step, metric), (_, fleet)) in questions.iter().zip(&before) {
        let why = format!("{pc} [{from}, {to}) @ {step}s");
        let plan = table.rolled_fleet_snapshot(*from, *to, *step);
        assert!(plan.rolled_ranges.is_empty(), "{why}: {plan:?}");
        let stored = q
            .fleet_series_stored(*metric, Aggregate::Avg, *from, *to, *step)
            .await
            .unwrap();
        assert!(same_fleet(&stored, fleet), "{why} {metric:?}");
        asked += 1;
    }
    assert_eq!(asked, 40);
}
