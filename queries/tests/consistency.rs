//! Every query sees one consistent snapshot: results do not change while
//! a persist and a compaction run underneath, on real Parquet files.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use kanade_queries::{Aggregate, HostMetric, PerfQueries, ProcessMetric};
use kanade_storage::{
    HostPerfRow, PartitionDate, ProcessPerfRow, TimeSeriesConfig, TimeSeriesTable, HOST_PERF,
    PROCESS_PERF,
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 23, 0, 0).unwrap()
}

fn host(pc: usize, min: i64) -> HostPerfRow {
    HostPerfRow {
        pc_id: format!("pc{pc:03}"),
        at: t0() + Duration::minutes(min),
        cpu_pct: Some(((pc * 7 + min as usize) % 100) as f64),
        cpu_count: Some(4),
        mem_used_bytes: Some((pc as i64 + 1) * 1_000),
        mem_total_bytes: Some(1 << 20),
        swap_used_bytes: None,
        swap_total_bytes: None,
        disk_read_bytes_per_sec: Some(min as f64),
        disk_written_bytes_per_sec: None,
        net_rx_bytes_per_sec: None,
        net_tx_bytes_per_sec: Some(1.0),
    }
}

fn procs(min: i64) -> Vec<ProcessPerfRow> {
    (0..6)
        .map(|pid| ProcessPerfRow {
            pc_id: "pc000".into(),
            at: t0() + Duration::minutes(min),
            pid,
            name: format!("p{pid}"),
            cpu_pct: (pid * 10 + min % 7) as f64,
            rss_bytes: 1_000 * pid,
            disk_read_bytes_per_sec: None,
            disk_written_bytes_per_sec: None,
        })
        .collect()
}

/// Three generations of data: two persisted files per partition (the
/// window straddles midnight, so two partitions) and one in the head.
fn load(dir: &std::path::Path) -> (Arc<TimeSeriesTable>, Arc<TimeSeriesTable>) {
    let config = TimeSeriesConfig::for_tests();
    let host_t = Arc::new(TimeSeriesTable::open(&HOST_PERF, dir, config.clone()).unwrap());
    let proc_t = Arc::new(TimeSeriesTable::open(&PROCESS_PERF, dir, config).unwrap());
    for generation in 0..3i64 {
        let rows: Vec<HostPerfRow> = (0..40)
            .flat_map(|pc| (0..40).map(move |m| host(pc, generation * 40 + m)))
            .collect();
        host_t
            .write(&HostPerfRow::to_batch(&rows).unwrap())
            .unwrap();
        let p: Vec<ProcessPerfRow> = (0..40).flat_map(|m| procs(generation * 40 + m)).collect();
        proc_t
            .write(&ProcessPerfRow::to_batch(&p).unwrap())
            .unwrap();
        if generation < 2 {
            host_t.persist().unwrap();
            proc_t.persist().unwrap();
        }
    }
    (host_t, proc_t)
}

#[derive(Debug, PartialEq)]
struct Answers {
    timeline: Vec<kanade_queries::HostPoint>,
    fleet: Vec<kanade_queries::FleetPoint>,
    process: kanade_queries::Timeline,
    latest: kanade_queries::LatestTick,
}

async fn ask(q: &PerfQueries) -> Answers {
    let (from, to) = (t0(), t0() + Duration::hours(3));
    Answers {
        timeline: q.host_timeline("pc007", from, to, 600).await.unwrap(),
        fleet: q
            .fleet_series(HostMetric::CpuPct, Aggregate::Avg, from, to, 300)
            .await
            .unwrap(),
        process: q
            .process_timeline("pc000", ProcessMetric::CpuPct, from, to, 900, 3)
            .await
            .unwrap(),
        latest: q.latest_tick("pc000").await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_do_not_change_while_persist_and_compaction_run() {
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let (host_t, proc_t) = load(dir.path());
        let store = kanade_storage::RelationalStore::open(dir.path()).unwrap();
        let q = PerfQueries::new(Arc::clone(&host_t), Arc::clone(&proc_t), store).unwrap();
        let expected = ask(&q).await;
        assert_eq!(
            expected.timeline.len(),
            12,
            "120 minutes of pc007 in 10-minute buckets"
        );
        assert_eq!(expected.process.names, vec!["p5", "p4", "p3", "other"]);
        assert!(expected.latest.latest_at.is_some());

        // Persist, then wait for the test's go before compacting, so that
        // at least one query sees each state: heads being persisted, files
        // persisted but not compacted, compaction running.
        let (persisted_tx, persisted_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let maintenance = tokio::task::spawn_blocking(move || {
            let later = PartitionDate::of(t0() + Duration::days(5));
            host_t.persist().unwrap();
            proc_t.persist().unwrap();
            persisted_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            let a = host_t.compact(later).unwrap();
            let b = proc_t.compact(later).unwrap();
            (a.len(), b.len(), host_t.snapshot(None).files().len())
        });
        let mut asked = 0;
        loop {
            assert_eq!(ask(&q).await, expected, "round {round}, query {asked}");
            asked += 1;
            if persisted_rx.try_recv().is_ok() {
                break;
            }
        }
        assert_eq!(
            ask(&q).await,
            expected,
            "round {round}: persisted, not compacted"
        );
        asked += 1;
        go_tx.send(()).unwrap();
        while !maintenance.is_finished() {
            assert_eq!(ask(&q).await, expected, "round {round}, query {asked}");
            asked += 1;
        }
        assert!(asked >= 2, "queries ran while maintenance did: {asked}");
        let (host_compactions, proc_compactions, files_left) = maintenance.await.unwrap();
        assert_eq!((host_compactions, proc_compactions), (2, 2));
        assert_eq!(files_left, 2, "one file per partition");
        assert_eq!(ask(&q).await, expected, "after maintenance");
    }
}
