//! The fleet series takes its whole 5-minute windows of the last days
//! from the host table's in-memory windows and must still give the raw
//! answer (DataFusion SQL over every raw row): on random windows and
//! steps around now, after late samples, across persist and compaction,
//! and after a restart (when they are filled again from the files).

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use kanade_queries::{Aggregate, HostMetric, PerfQueries};
use kanade_storage::{
    HostPerfRow, PartitionDate, RelationalStore, TimeSeriesConfig, TimeSeriesTable, HOST_PERF,
};

use common::{same_fleet, Rng};

const PCS: usize = 6;

fn sample(rng: &mut Rng, pc: &str, at: DateTime<Utc>) -> HostPerfRow {
    let mut maybe = |v: f64| (rng.below(10) != 0).then_some(v);
    HostPerfRow {
        pc_id: pc.to_string(),
        at,
        cpu_pct: maybe(f64::from(
            (Rng(at.timestamp_micros() as u64).unit() * 100.0) as f32,
        )),
        cpu_count: Some(8),
        mem_used_bytes: Some(4_000_000_000 + at.timestamp() % 1_000_000),
        mem_total_bytes: Some(16_000_000_000),
        swap_used_bytes: None,
        swap_total_bytes: None,
        disk_read_bytes_per_sec: maybe((at.timestamp() % 16_000_000) as f64 / 1.0037),
        disk_written_bytes_per_sec: None,
        net_rx_bytes_per_sec: None,
        net_tx_bytes_per_sec: None,
    }
}

/// Samples of every PC each minute over `[from, to)`, with missed ticks
/// and jitter.
fn minutes(rng: &mut Rng, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<HostPerfRow> {
    let mut rows = Vec::new();
    let mut t = from;
    while t < to {
        for pc in 0..PCS {
            if rng.below(25) != 0 {
                let at = t + Duration::milliseconds(rng.below(59_000) as i64);
                rows.push(sample(rng, &format!("pc{pc}"), at));
            }
        }
        t += Duration::minutes(1);
    }
    rows
}

/// `cases` random questions ending within `[start, end)`, asked of the
/// fleet series and of raw SQL; returns how many the in-memory windows
/// served.
async fn compare(
    q: &PerfQueries,
    rng: &mut Rng,
    cases: usize,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> u64 {
    let before = q.fleet_answers_from_memory();
    let steps = [300, 600, 900, 3_600, 7_200, 86_400, 7 * 60];
    let metrics = [
        HostMetric::CpuPct,
        HostMetric::MemUsedBytes,
        HostMetric::DiskReadBytesPerSec,
    ];
    let span = (end - start).num_seconds() as u64;
    let mut nonempty = 0;
    for case in 0..cases {
        let to = start + Duration::seconds(rng.below(span) as i64 + 1);
        let from = to - Duration::seconds(1 + rng.below(span) as i64);
        let step = steps[rng.below(steps.len() as u64) as usize];
        let metric = metrics[rng.below(metrics.len() as u64) as usize];
        for agg in [Aggregate::Avg, Aggregate::Max] {
            let fleet = q.fleet_series(metric, agg, from, to, step).await.unwrap();
            let sql = q
                .fleet_series_sql(metric, agg, from, to, step)
                .await
                .unwrap();
            assert!(
                same_fleet(&fleet, &sql),
                "case {case}: {metric:?} {agg:?} [{from}, {to}) @ {step}s\nfleet {fleet:?}\nraw   {sql:?}"
            );
            if !fleet.is_empty() {
                nonempty += 1;
            }
        }
    }
    assert!(
        nonempty > cases,
        "only {nonempty} of {} answers held points",
        2 * cases
    );
    q.fleet_answers_from_memory() - before
}

fn queries(dir: &std::path::Path, table: &Arc<TimeSeriesTable>) -> PerfQueries {
    let store = RelationalStore::open(dir).unwrap();
    PerfQueries::new(Arc::clone(table), Arc::clone(table), store).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_series_from_memory_equals_raw_sql() {
    let dir = tempfile::tempdir().unwrap();
    let config = TimeSeriesConfig {
        row_group_rows: 1_024,
        ..TimeSeriesConfig::for_tests()
    };
    let now = Utc::now().duration_trunc(Duration::minutes(1)).unwrap();
    let start = now - Duration::hours(30);
    let mut rng = Rng(17);
    let table = Arc::new(TimeSeriesTable::open(&HOST_PERF, dir.path(), config.clone()).unwrap());
    // Thirty hours in six-hour writes, persisted but the last; closed days
    // compacted and rolled up.
    for k in 0..5 {
        let a = start + Duration::hours(6 * k);
        let rows = minutes(&mut rng, a, a + Duration::hours(6));
        table.write(&HostPerfRow::to_batch(&rows).unwrap()).unwrap();
        if k < 4 {
            table.persist().unwrap();
        }
    }
    table.compact(PartitionDate::of(now)).unwrap();
    let q = queries(dir.path(), &table);
    let served = compare(&q, &mut rng, 60, start, now + Duration::minutes(10)).await;
    assert!(served >= 40, "memory served {served} of 120");

    // Late samples: a PC that reports two hours and a day late, into
    // windows the memory already holds.
    for late in [Duration::hours(2), Duration::hours(26)] {
        let a = now - late;
        let rows: Vec<HostPerfRow> = (0..30)
            .map(|m| sample(&mut rng, "late", a + Duration::minutes(m)))
            .collect();
        table.write(&HostPerfRow::to_batch(&rows).unwrap()).unwrap();
    }
    let served = compare(&q, &mut rng, 30, start, now).await;
    assert!(
        served >= 20,
        "memory served {served} of 60 after late samples"
    );
    table.persist().unwrap();
    table.compact(PartitionDate::of(now)).unwrap();
    let served = compare(&q, &mut rng, 30, start, now).await;
    assert!(
        served >= 20,
        "memory served {served} of 60 after compaction"
    );

    // A restart: the windows are filled again from the files (and the
    // write-ahead log's rows), so they answer at once.
    let last = minutes(&mut rng, now, now + Duration::minutes(1));
    table.write(&HostPerfRow::to_batch(&last).unwrap()).unwrap();
    assert!(table.head_rows() > 0, "some rows come back from the log");
    drop(q);
    drop(table);
    let table = Arc::new(TimeSeriesTable::open(&HOST_PERF, dir.path(), config).unwrap());
    let q = queries(dir.path(), &table);
    let served = compare(&q, &mut rng, 30, start, now + Duration::minutes(1)).await;
    assert!(
        served >= 20,
        "memory served {served} of 60 right after the restart"
    );
    let rows = minutes(
        &mut rng,
        now + Duration::minutes(1),
        now + Duration::minutes(40),
    );
    table.write(&HostPerfRow::to_batch(&rows).unwrap()).unwrap();
    let served = compare(
        &q,
        &mut rng,
        30,
        now + Duration::minutes(15),
        now + Duration::minutes(45),
    )
    .await;
    assert!(
        served >= 10,
        "memory served {served} of 60 after the restart"
    );
}
