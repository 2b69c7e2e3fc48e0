//! The perf path end to end: real kanade_shared wire messages published to
//! a real nats-server, projected by the real binary into real files, read
//! back over real HTTP.

use crate::common::{eventually, parquet_files, publish_json, Backend, Nats};
use chrono::{DateTime, Duration, DurationRound, Utc};
use kanade_shared::wire::{HostPerf, ProcessPerf, ProcessSnapshot};
use serde_json::Value;

fn host(pc: &str, at: DateTime<Utc>, cpu: f64) -> HostPerf {
    HostPerf {
        pc_id: pc.into(),
        at,
        cpu_pct: Some(cpu),
        cpu_count: Some(8),
        mem_used_bytes: Some((cpu as i64) * 1_000),
        mem_total_bytes: Some(16_000),
        swap_used_bytes: None,
        swap_total_bytes: None,
        disk_read_bytes_per_sec: Some(cpu * 2.0),
        disk_written_bytes_per_sec: Some(1.0),
        net_rx_bytes_per_sec: Some(3.0),
        net_tx_bytes_per_sec: Some(4.0),
    }
}

fn proc_(pid: u32, name: &str, cpu: f64) -> ProcessSnapshot {
    ProcessSnapshot {
        pid,
        name: name.into(),
        cpu_pct: cpu,
        rss_bytes: 1_000 * i64::from(pid),
        disk_read_bytes_per_sec: None,
        disk_written_bytes_per_sec: Some(5.0),
    }
}

async fn publish_host(c: &async_nats::Client, s: &HostPerf) {
    publish_json(c, format!("host_perf.{}", s.pc_id), s).await;
}

async fn publish_tick(
    c: &async_nats::Client,
    pc: &str,
    at: DateTime<Utc>,
    procs: Vec<ProcessSnapshot>,
) {
    let tick = ProcessPerf {
        pc_id: pc.into(),
        at,
        processes: procs,
    };
    publish_json(c, format!("process_perf.{pc}"), &tick).await;
}

fn q(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Waits until the backend has subscribed and committed a sample.
async fn warm_up(b: &Backend, c: &async_nats::Client) {
    let at = Utc::now() - Duration::minutes(30);
    eventually("backend subscribed", || async {
        publish_host(c, &host("warmup", at, 1.0)).await;
        let (_, body) = b
            .get(&format!(
                "/api/agents/warmup/perf?from={}&to={}",
                q(at - Duration::minutes(1)),
                q(at + Duration::minutes(1))
            ))
            .await;
        (body["points"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;
}

fn cpu_series(body: &Value) -> Vec<f64> {
    body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["cpu_pct"].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_endpoints_answer_from_published_samples() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let c = nats.client().await;
    warm_up(&b, &c).await;

    // Host timeline: buckets of 5 minutes, AVG per bucket, empty ones absent.
    let t0 = (Utc::now() - Duration::hours(2))
        .duration_trunc(Duration::minutes(5))
        .unwrap();
    for (off, cpu) in [(0, 10.0), (60, 20.0), (300, 40.0), (1200, 80.0)] {
        publish_host(&c, &host("pc-a", t0 + Duration::seconds(off), cpu)).await;
    }
    // Duplicates: the same key again with another value is dropped.
    publish_host(&c, &host("pc-a", t0, 99.0)).await;
    // Garbage on the subject is skipped, a good sample after it lands.
    c.publish("host_perf.pc-b", "{not json".into())
        .await
        .unwrap();
    c.publish("host_perf.pc-b", "[1,2,3]".into()).await.unwrap();
    publish_host(&c, &host("pc-b", t0, 30.0)).await;
    let path = format!(
        "/api/agents/pc-a/perf?from={}&to={}&step=5m",
        q(t0),
        q(t0 + Duration::hours(1))
    );
    let body = eventually("pc-a timeline", || async {
        let (s, body) = b.get(&path).await;
        assert_eq!(s, 200, "{body}");
        (cpu_series(&body).len() == 3).then_some(body)
    })
    .await;
    assert_eq!(cpu_series(&body), vec![15.0, 40.0, 80.0]);
    assert_eq!(body["step_seconds"], 300);
    assert_eq!(body["pc_id"], "pc-a");
    let p0 = &body["points"][0];
    assert_eq!(
        p0["at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(),
        t0
    );
    assert_eq!(p0["mem_used_bytes"], 15_000.0);
    assert_eq!(p0["swap_used_bytes"], Value::Null);
    assert_eq!(p0["disk_read_bytes_per_sec"], 30.0);
    assert_eq!(p0["net_tx_bytes_per_sec"], 4.0);

    // Fleet avg / max over pc-a and pc-b in the first bucket.
    let fleet = |agg: &'static str| {
        format!(
            "/api/perf/fleet?metric=cpu&agg={agg}&from={}&to={}&step=5m",
            q(t0),
            q(t0 + Duration::minutes(5))
        )
    };
    let avg = eventually("pc-b landed", || async {
        let (_, body) = b.get(&fleet("avg")).await;
        let v = body["points"][0]["value"].as_f64()?;
        (v != 15.0).then_some(v)
    })
    .await;
    assert_eq!(avg, 20.0, "avg of 10, 20 (pc-a) and 30 (pc-b)");
    let (_, max) = b.get(&fleet("max")).await;
    assert_eq!(max["points"][0]["value"], 30.0);
    assert_eq!(max["metric"], "cpu_pct");
    assert_eq!(max["agg"], "max");
    let (_, mem) = b
        .get(&fleet("avg").replace("metric=cpu", "metric=mem_used_bytes"))
        .await;
    assert_eq!(mem["points"][0]["value"], 20_000.0);

    // Top-N over the last 5 minutes.
    let now = Utc::now();
    for (pc, cpu) in [("top-a", 90.0), ("top-b", 50.0), ("top-c", 70.0)] {
        publish_host(&c, &host(pc, now - Duration::seconds(30), cpu)).await;
    }
    let top = eventually("top ranking", || async {
        let (_, body) = b.get("/api/perf/top?metric=cpu&limit=2").await;
        let rows = body["rows"].as_array()?.clone();
        (rows.len() == 2 && rows[0]["pc_id"] == "top-a").then_some(body)
    })
    .await;
    assert_eq!(top["rows"][1]["pc_id"], "top-c");
    assert_eq!(top["rows"][1]["value"], 70.0);
    assert_eq!(top["window_seconds"], 300);
    let (_, clamped) = b.get("/api/perf/top?limit=0").await;
    assert_eq!(
        clamped["rows"].as_array().unwrap().len(),
        1,
        "limit clamped to 1"
    );

    // Process ticks: the SPEC example, then the latest tick.
    let p0 = (Utc::now() - Duration::minutes(3))
        .duration_trunc(Duration::minutes(1))
        .unwrap();
    let p1 = p0 + Duration::minutes(1);
    publish_tick(
        &c,
        "pc-p",
        p0,
        vec![
            proc_(1, "chrome", 80.0),
            proc_(2, "defender", 40.0),
            proc_(3, "idle", 5.0),
            proc_(4, "tail", 1.0),
        ],
    )
    .await;
    publish_tick(
        &c,
        "pc-p",
        p1,
        vec![
            proc_(1, "chrome", 60.0),
            proc_(2, "defender", 50.0),
            proc_(3, "idle", 2.0),
            proc_(4, "tail", 0.5),
        ],
    )
    .await;
    let latest = eventually("latest tick", || async {
        let (_, body) = b.get("/api/agents/pc-p/processes").await;
        (body["latest_at"].as_str()?.parse::<DateTime<Utc>>().ok()? == p1).then_some(body)
    })
    .await;
    let names: Vec<&str> = latest["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["chrome", "defender", "idle", "tail"]);
    assert_eq!(latest["processes"][0]["rss_bytes"], 1000);
    assert_eq!(
        latest["processes"][0]["disk_read_bytes_per_sec"],
        Value::Null
    );
    assert_eq!(latest["processes"][0]["disk_written_bytes_per_sec"], 5.0);
    let keys: Vec<&String> = latest["processes"][0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "cpu_pct",
            "disk_read_bytes_per_sec",
            "disk_written_bytes_per_sec",
            "name",
            "pid",
            "rss_bytes"
        ],
        "a row answers as the reference's, without the PC and tick it is under"
    );

    let (s, tl) = b
        .get(&format!(
            "/api/agents/pc-p/processes/timeline?metric=cpu&from={}&to={}&step=1m&top=2",
            q(p0),
            q(p1 + Duration::minutes(1))
        ))
        .await;
    assert_eq!(s, 200, "{tl}");
    assert_eq!(
        tl["names"],
        serde_json::json!(["chrome", "defender", "other"])
    );
    assert_eq!(tl["metric"], "cpu_pct");
    let pts = tl["points"].as_array().unwrap();
    assert_eq!(pts.len(), 2);
    assert_eq!(pts[0]["values"]["chrome"], 80.0);
    assert_eq!(pts[0]["values"]["defender"], 40.0);
    assert_eq!(pts[0]["values"]["other"], 3.0);
    assert_eq!(pts[1]["values"]["other"], 1.25);
    let (_, all) = b
        .get(&format!(
            "/api/agents/pc-p/processes/timeline?from={}&to={}&top=5",
            q(p0),
            q(p1 + Duration::minutes(1))
        ))
        .await;
    assert_eq!(
        all["names"],
        serde_json::json!(["chrome", "defender", "idle", "tail"]),
        "no `other` when all fit"
    );

    let (_, active) = b.get("/api/perf/active-investigations").await;
    assert_eq!(active["rows"][0]["pc_id"], "pc-p");
    assert_eq!(
        active["rows"][0]["latest_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        p1
    );

    // An unknown PC: no samples is not a 404.
    let (s, empty) = b.get("/api/agents/nobody/processes").await;
    assert_eq!(s, 200);
    assert_eq!(empty["latest_at"], Value::Null);
    assert_eq!(empty["processes"], serde_json::json!([]));

    // The garbage did not stop the loop and was logged with its subject.
    assert!(
        b.log_text().contains("undecodable payload skipped"),
        "{}",
        b.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_and_missing_tokens_get_json_errors() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");

    let cases = [
        ("/api/agents/a/perf?from=yesterday", "from"),
        ("/api/agents/a/perf?to=2026-02-30T00:00:00Z", "to"),
        ("/api/agents/a/perf?step=soon", "step"),
        ("/api/agents/a/perf?step=0s", "step"),
        (
            "/api/agents/a/perf?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "from",
        ),
        (
            "/api/agents/a/perf?from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&step=1m",
            "step",
        ),
        ("/api/perf/fleet?metric=temperature", "metric"),
        ("/api/perf/fleet?agg=median", "agg"),
        ("/api/perf/fleet?step=1x", "step"),
        ("/api/perf/top?metric=rss", "metric"),
        ("/api/perf/top?window=forever", "window"),
        ("/api/perf/top?limit=many", "limit"),
        ("/api/agents/a/processes/timeline?metric=net_rx", "metric"),
        ("/api/agents/a/processes/timeline?top=x", "top"),
        ("/api/agents/a/processes/timeline?from=2026-01-01", "from"),
    ];
    for (path, param) in cases {
        let (status, body) = b.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let msg = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no JSON error: {body}"));
        assert!(msg.contains(&format!("`{param}`")), "{path}: {msg}");
    }

    let (s, body) = b.get_with("/api/perf/fleet", None).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"], "missing bearer token");
    let (s, body) = b.get_with("/api/perf/fleet", Some("wrong")).await;
    assert_eq!(s, 401);
    assert!(body["error"].is_string());
    let (s, _) = b.get_with("/api/no-such-thing", None).await;
    assert_eq!(s, 401, "unknown /api paths are protected too");
    let (s, body) = b.get("/api/no-such-thing").await;
    assert_eq!(s, 404);
    assert!(body["error"].is_string());
    let (s, body) = b.get_with("/health", None).await;
    assert_eq!((s, body), (200, Value::String("ok".into())));
    let (s, body) = b.get_with("/api/version", None).await;
    assert_eq!(s, 200);
    assert!(body["version"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_to_parquet_and_kill9_loses_nothing_committed() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, "");
    let c = nats.client().await;
    warm_up(&b, &c).await;
    let t0 = (Utc::now() - Duration::hours(1))
        .duration_trunc(Duration::minutes(1))
        .unwrap();
    for i in 0..10 {
        publish_host(&c, &host("pc-r", t0 + Duration::minutes(i), i as f64)).await;
    }
    let path = format!(
        "/api/agents/pc-r/perf?from={}&to={}&step=1m",
        q(t0),
        q(t0 + Duration::minutes(20))
    );
    eventually("10 samples", || async {
        (cpu_series(&b.get(&path).await.1).len() == 10).then_some(())
    })
    .await;
    assert!(
        parquet_files(&data).is_empty(),
        "still in the head (persist interval 300 s)"
    );

    let status = b.sigterm();
    assert!(status.success(), "exit 0 after SIGTERM, got {status:?}");
    let files = parquet_files(&data);
    assert!(
        files.iter().any(|f| f.starts_with("host_perf/date=")),
        "{files:?}"
    );

    let mut b = Backend::start(&nats.url, &data, "");
    let (_, body) = b.get(&path).await;
    assert_eq!(
        cpu_series(&body),
        (0..10).map(f64::from).collect::<Vec<_>>()
    );

    // Committed (visible) but not persisted, then kill -9.
    warm_up(&b, &c).await;
    for i in 10..15 {
        publish_host(&c, &host("pc-r", t0 + Duration::minutes(i), i as f64)).await;
    }
    eventually("15 samples", || async {
        (cpu_series(&b.get(&path).await.1).len() == 15).then_some(())
    })
    .await;
    b.kill9();
    let b = Backend::start(&nats.url, &data, "");
    let (_, body) = b.get(&path).await;
    assert_eq!(
        cpu_series(&body),
        (0..15).map(f64::from).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_expired_partitions_and_keeps_recent_data() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Kept 60 days while it is written (ingest refuses what is already past
    // retention); the operator then shortens retention to 30.
    let mut b = Backend::start(&nats.url, &data, "host_perf_retention_days = 60");
    let c = nats.client().await;
    warm_up(&b, &c).await;
    let old = Utc::now() - Duration::days(40);
    let recent = Utc::now() - Duration::minutes(10);
    publish_host(&c, &host("pc-old", old, 1.0)).await;
    publish_host(&c, &host("pc-old", recent, 2.0)).await;
    let old_path = format!(
        "/api/agents/pc-old/perf?from={}&to={}",
        q(old - Duration::minutes(5)),
        q(old + Duration::minutes(5))
    );
    eventually("old sample ingested", || async {
        (cpu_series(&b.get(&old_path).await.1) == vec![1.0]).then_some(())
    })
    .await;
    assert!(b.sigterm().success());
    let old_dir = data
        .join("host_perf")
        .join(format!("date={}", old.format("%Y-%m-%d")));
    assert!(old_dir.exists(), "persisted into its own partition");

    let mut b = Backend::start(&nats.url, &data, "host_perf_retention_days = 30");
    assert!(
        !old_dir.exists(),
        "expired partition removed whole at start-up"
    );
    // Rolled up on its way out: the 5-minute and hourly rollups (kept 90
    // and 400 days) still answer for the day, a window counting whole.
    let rollup_dir = |table: &str| {
        data.join(table)
            .join(format!("date={}", old.format("%Y-%m-%d")))
    };
    assert!(rollup_dir("host_perf_5m").exists());
    assert!(rollup_dir("host_perf_1h").exists());
    let (_, body) = b.get(&old_path).await;
    assert_eq!(cpu_series(&body), vec![1.0], "{body}");
    let recent_path = format!(
        "/api/agents/pc-old/perf?from={}&to={}",
        q(recent - Duration::minutes(5)),
        q(recent + Duration::minutes(5))
    );
    assert_eq!(cpu_series(&b.get(&recent_path).await.1), vec![2.0]);
    assert!(b.sigterm().success());

    // With the rollups' retention shortened too, the day is gone.
    let b = Backend::start(
        &nats.url,
        &data,
        "host_perf_retention_days = 30\nhost_perf_5m_retention_days = 30\nhost_perf_1h_retention_days = 30",
    );
    assert!(!rollup_dir("host_perf_5m").exists());
    assert!(!rollup_dir("host_perf_1h").exists());
    let (_, body) = b.get(&old_path).await;
    assert_eq!(body["points"], serde_json::json!([]));
    assert_eq!(cpu_series(&b.get(&recent_path).await.1), vec![2.0]);
}
