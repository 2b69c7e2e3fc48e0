//! Questions over redb snapshots: scan-duration percentiles (computed
//! directly, checked against the SQL answer) and the hostname join, on a
//! real redb file.

use std::sync::Arc;

use chrono::{Duration, Utc};
use kanade_queries::{HostMetric, PerfQueries};
use kanade_storage::{
    FinishedRun, HeartbeatUpdate, HostPerfRow, RelationalStore, TimeSeriesConfig, TimeSeriesTable,
    HOST_PERF, PROCESS_PERF,
};

fn open(dir: &std::path::Path) -> (PerfQueries, RelationalStore, Arc<TimeSeriesTable>) {
    let host =
        Arc::new(TimeSeriesTable::open(&HOST_PERF, dir, TimeSeriesConfig::for_tests()).unwrap());
    let process =
        Arc::new(TimeSeriesTable::open(&PROCESS_PERF, dir, TimeSeriesConfig::for_tests()).unwrap());
    let store = RelationalStore::open(dir).unwrap();
    (
        PerfQueries::new(Arc::clone(&host), process, store.clone()).unwrap(),
        store,
        host,
    )
}

fn run(id: &str, job: &str, ms: i64) -> FinishedRun {
    let finished = Utc::now() - Duration::minutes(1);
    FinishedRun {
        result_id: id.into(),
        request_id: id.into(),
        exec_id: None,
        pc_id: "pc".into(),
        exit_code: 0,
        stdout: String::new(),
        stderr: String::new(),
        started_at: finished - Duration::milliseconds(ms),
        finished_at: finished,
        job_id: Some(job.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn nearest_rank_percentiles_in_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    let (q, store, _) = open(dir.path());
    let mut runs: Vec<FinishedRun> = (1..=100)
        .map(|i| run(&format!("h{i}"), "hundred", i))
        .collect();
    runs.extend((1..=10).map(|i| run(&format!("t{i}"), "ten", i * 1000)));
    runs.push(run("neg", "clock-skew", -500));
    store.apply_finished(&runs, Utc::now(), None).unwrap();
    let stats = q
        .scan_durations(Utc::now() - Duration::hours(1))
        .await
        .unwrap();
    let jobs: Vec<&str> = stats.iter().map(|s| s.job_id.as_str()).collect();
    assert_eq!(jobs, vec!["ten", "hundred", "clock-skew"], "p95 descending");
    let ten = &stats[0];
    assert_eq!(
        (
            ten.count,
            ten.min_ms,
            ten.p50_ms,
            ten.p95_ms,
            ten.p99_ms,
            ten.max_ms,
            ten.mean_ms
        ),
        (10, 1000, 5000, 10000, 10000, 10000, 5500)
    );
    assert_eq!(ten.max_result_id.as_deref(), Some("t10"));
    let hundred = &stats[1];
    assert_eq!(
        (hundred.p50_ms, hundred.p95_ms, hundred.p99_ms),
        (50, 95, 99)
    );
    assert_eq!(stats[2].max_ms, 0, "negative durations count as 0");
    assert!(q.scan_durations(Utc::now()).await.unwrap().is_empty());
}

#[tokio::test]
async fn rankings_carry_hostnames_joined_in_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    let (q, store, host) = open(dir.path());
    let now = Utc::now();
    store
        .upsert_heartbeats(
            &[HeartbeatUpdate {
                pc_id: "a".into(),
                at: now,
                hostname: Some("alpha".into()),
                os_family: None,
                agent_version: "1".into(),
                agent_cpu_pct: None,
                agent_rss_bytes: None,
                agent_disk_read_bytes: None,
                agent_disk_written_bytes: None,
                quarantined_versions: vec![],
                reported: Default::default(),
            }],
            now,
        )
        .unwrap();
    let sample = |pc: &str, cpu: f64| HostPerfRow {
        pc_id: pc.into(),
        at: now - Duration::seconds(10),
        cpu_pct: Some(cpu),
        cpu_count: None,
        mem_used_bytes: None,
        mem_total_bytes: None,
        swap_used_bytes: None,
        swap_total_bytes: None,
        disk_read_bytes_per_sec: None,
        disk_written_bytes_per_sec: None,
        net_rx_bytes_per_sec: None,
        net_tx_bytes_per_sec: None,
    };
    host.write(&HostPerfRow::to_batch(&[sample("a", 10.0), sample("b", 90.0)]).unwrap())
        .unwrap();
    let top = q
        .top_pcs(HostMetric::CpuPct, now - Duration::minutes(5), now, 5)
        .await
        .unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(
        (top[0].pc_id.as_str(), top[0].hostname.as_deref()),
        ("b", None)
    );
    assert_eq!(
        (top[1].pc_id.as_str(), top[1].hostname.as_deref()),
        ("a", Some("alpha"))
    );
}

#[tokio::test]
async fn direct_scan_durations_equal_the_sql_answer_on_random_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (q, store, _) = open(dir.path());
    let mut x: u64 = 3;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Ties on purpose (durations from a small set), a negative one, jobs
    // of 1 to ~200 runs.
    let runs: Vec<FinishedRun> = (0..1_500)
        .map(|i| {
            let job = format!("job-{}", next() % 13);
            let ms = (next() % 40) as i64 * 250 - 100;
            run(&format!("r{i:05}"), &job, ms)
        })
        .collect();
    store.apply_finished(&runs, Utc::now(), None).unwrap();
    let since = Utc::now() - Duration::hours(1);
    let direct = q.scan_durations(since).await.unwrap();
    let sql = q.scan_durations_sql(since).await.unwrap();
    assert_eq!(direct.len(), 13);
    assert_eq!(direct, sql);
}
