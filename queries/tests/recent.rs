//! The last two hours of each PC's host and process rows are answered from
//! memory: the same answer as DataFusion SQL over head and files on
//! random windows, no file opened, before and after a persist; after a
//! restart only what the index can vouch for (rows written since) is
//! answered from memory, the rest from files.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use kanade_queries::{HostMetric, PerfQueries, ProcessMetric};
use kanade_storage::{
    HostPerfRow, ProcessPerfRow, RelationalStore, TimeSeriesConfig, TimeSeriesTable, HOST_PERF,
    PROCESS_PERF,
};

use common::{close, same_host, Rng};

const PCS: usize = 4;

fn host(rng: &mut Rng, pc: usize, at: DateTime<Utc>) -> HostPerfRow {
    let cpu = f64::from((rng.unit() * 100.0) as f32);
    HostPerfRow {
        pc_id: format!("pc{pc}"),
        at,
        cpu_pct: (rng.below(10) != 0).then_some(cpu),
        cpu_count: Some(8),
        mem_used_bytes: Some((rng.unit() * 8e9) as i64),
        mem_total_bytes: Some(16_000_000_000),
        swap_used_bytes: None,
        swap_total_bytes: None,
        disk_read_bytes_per_sec: Some(rng.unit() * 1e7 / 60.013),
        disk_written_bytes_per_sec: Some(rng.unit() * 1e6),
        net_rx_bytes_per_sec: None,
        net_tx_bytes_per_sec: Some(rng.unit() * 1e5),
    }
}

fn process(rng: &mut Rng, pc: usize, at: DateTime<Utc>) -> Vec<ProcessPerfRow> {
    ["chrome", "teams", "svchost"]
        .iter()
        .enumerate()
        .map(|(i, name)| ProcessPerfRow {
            pc_id: format!("pc{pc}"),
            at,
            pid: 100 + i as i64,
            name: (*name).to_string(),
            cpu_pct: f64::from((rng.unit() * 30.0) as f32),
            rss_bytes: (rng.unit() * 1e9) as i64,
            disk_read_bytes_per_sec: None,
            disk_written_bytes_per_sec: Some(rng.unit() * 1e5),
        })
        .collect()
}

/// Writes a sample per PC per minute over `[from, to)` in 20-minute
/// writes, to both tables.
fn write(
    rng: &mut Rng,
    host_t: &TimeSeriesTable,
    proc_t: &TimeSeriesTable,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    let mut at = from;
    while at < to {
        let (mut hosts, mut procs) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            if at >= to {
                break;
            }
            for pc in 0..PCS {
                let t = at + Duration::milliseconds(rng.below(50_000) as i64);
                hosts.push(host(rng, pc, t));
                procs.extend(process(rng, pc, t));
            }
            at += Duration::minutes(1);
        }
        host_t
            .write(&HostPerfRow::to_batch(&hosts).unwrap())
            .unwrap();
        proc_t
            .write(&ProcessPerfRow::to_batch(&procs).unwrap())
            .unwrap();
    }
}

fn open(dir: &std::path::Path) -> (PerfQueries, Arc<TimeSeriesTable>, Arc<TimeSeriesTable>) {
    let config = TimeSeriesConfig {
        row_group_rows: 256,
        ..TimeSeriesConfig::for_tests()
    };
    let host_t = Arc::new(TimeSeriesTable::open(&HOST_PERF, dir, config.clone()).unwrap());
    let proc_t = Arc::new(TimeSeriesTable::open(&PROCESS_PERF, dir, config).unwrap());
    let store = RelationalStore::open(dir).unwrap();
    let q = PerfQueries::new(Arc::clone(&host_t), Arc::clone(&proc_t), store).unwrap();
    (q, host_t, proc_t)
}

/// Random windows starting in `[earliest, now)`: the direct answers equal
/// SQL's; returns how many opened no file.
async fn compare(
    q: &PerfQueries,
    rng: &mut Rng,
    earliest: DateTime<Utc>,
    now: DateTime<Utc>,
) -> usize {
    let span = (now - earliest).num_seconds().max(1) as u64;
    let mut from_memory = 0;
    // The top PCs of the last minutes: from memory when they are recent.
    for case in 0..10 {
        let since = earliest + Duration::seconds(rng.below(span) as i64);
        let limit = 1 + rng.below(PCS as u64 + 1) as usize;
        let metric = [HostMetric::CpuPct, HostMetric::DiskReadBytesPerSec][rng.below(2) as usize];
        let until = since + Duration::minutes(5);
        let a = q.top_pcs(metric, since, until, limit).await.unwrap();
        let b = q.top_pcs_sql(metric, since, until, limit).await.unwrap();
        assert_eq!(a.len(), b.len(), "top case {case}");
        assert!(!a.is_empty(), "top case {case}: every PC has samples");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.pc_id, y.pc_id, "top case {case}");
            assert!(close(Some(x.value), Some(y.value)), "top case {case}");
        }
    }
    for case in 0..40 {
        let pc = format!("pc{}", rng.below(PCS as u64 + 1));
        let from = earliest + Duration::seconds(rng.below(span) as i64);
        let to = from + Duration::seconds(60 + rng.below(3_600) as i64);
        let step = [60, 300, 600][rng.below(3) as usize];
        let why = format!("case {case}: {pc} [{from}, {to}) @ {step}s");
        let (fast, stats) = q.host_timeline_read(&pc, from, to, step).unwrap();
        let sql = q.host_timeline_sql(&pc, from, to, step).await.unwrap();
        assert!(same_host(&fast, &sql), "{why}\nfast {fast:?}\nsql  {sql:?}");
        if stats.recent {
            assert_eq!((stats.files, stats.rows_read), (0, 0), "{why}");
            from_memory += 1;
        }
        let metric = [ProcessMetric::CpuPct, ProcessMetric::RssBytes][rng.below(2) as usize];
        let a = q
            .process_timeline(&pc, metric, from, to, step, 2)
            .await
            .unwrap();
        let b = q
            .process_timeline_sql(&pc, metric, from, to, step, 2)
            .await
            .unwrap();
        assert_eq!(a.names, b.names, "{why}");
        assert_eq!(a.points.len(), b.points.len(), "{why}");
        for (x, y) in a.points.iter().zip(&b.points) {
            assert_eq!(x.at, y.at, "{why}");
            assert_eq!(x.values.len(), y.values.len(), "{why}");
            for (k, v) in &x.values {
                assert!(close(Some(*v), y.values.get(k).copied()), "{why}: {k}");
            }
        }
    }
    from_memory
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_hours_are_answered_from_memory_and_equal_sql() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now().duration_trunc(Duration::minutes(1)).unwrap();
    let mut rng = Rng(5);
    let (q, host_t, proc_t) = open(dir.path());
    write(&mut rng, &host_t, &proc_t, now - Duration::hours(3), now);
    // Windows inside the last two hours (less a margin for the clock
    // moving during the test) never open a file.
    let recent = now - Duration::minutes(110);
    assert_eq!(compare(&q, &mut rng, recent, now).await, 40);
    // Older windows go to the head and files, and still agree.
    let older = compare(&q, &mut rng, now - Duration::hours(4), recent).await;
    assert!(older < 40, "{older} of 40 older windows from memory");
    // Persisted: still from memory.
    host_t.persist().unwrap();
    proc_t.persist().unwrap();
    assert_eq!(compare(&q, &mut rng, recent, now).await, 40);

    // A restart: the files hold everything up to `now`, which the new
    // index has not seen; only windows after the newest stored row may be
    // answered from memory.
    drop((q, host_t, proc_t));
    let (q, host_t, proc_t) = open(dir.path());
    // (Windows start a minute before the newest stored row at the latest.)
    assert_eq!(
        compare(&q, &mut rng, recent, now - Duration::minutes(1)).await,
        0
    );
    write(
        &mut rng,
        &host_t,
        &proc_t,
        now + Duration::minutes(1),
        now + Duration::minutes(30),
    );
    let (points, stats) = q
        .host_timeline_read(
            "pc1",
            now + Duration::minutes(1),
            now + Duration::minutes(31),
            300,
        )
        .unwrap();
    assert!(stats.recent, "{stats:?}");
    assert_eq!((stats.files, stats.rows_read), (0, 0), "{stats:?}");
    // Half an hour in 5-minute buckets: 6 or 7 of them (epoch-aligned).
    assert!((6..=7).contains(&points.len()), "{points:?}");
    let sql = q
        .host_timeline_sql(
            "pc1",
            now + Duration::minutes(1),
            now + Duration::minutes(31),
            300,
        )
        .await
        .unwrap();
    assert!(same_host(&points, &sql));
}
