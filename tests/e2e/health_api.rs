//! Fleet health and scan durations through a real broker and HTTP.

use crate::common::{eventually, publish_json, Backend, Nats};
use chrono::{Duration, Utc};
use kanade_shared::wire::{ExecResult, Heartbeat};
use serde_json::Value;

fn heartbeat(pc: &str, minutes_ago: i64) -> Heartbeat {
    serde_json::from_value(serde_json::json!({
        "pc_id": pc, "at": Utc::now() - Duration::minutes(minutes_ago), "agent_version": "0.43.56",
    }))
    .unwrap()
}

fn run(id: &str, job: &str, millis: i64, code: i32) -> ExecResult {
    let finished = Utc::now() - Duration::minutes(5);
    serde_json::from_value(serde_json::json!({
        "result_id": id, "request_id": id, "pc_id": "pc1", "exit_code": code,
        "stdout": "", "stderr": "", "manifest_id": job,
        "started_at": finished - Duration::milliseconds(millis), "finished_at": finished,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_health_and_scan_durations() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let c = nats.client().await;

    // JetStream ready, no agents yet: unknown, 200.
    let unknown = eventually("resources bootstrapped", || async {
        let (s, body) = b.get("/api/health/fleet").await;
        (body["jetstream"]["all_ok"] == true).then_some((s, body))
    })
    .await;
    assert_eq!(unknown.0, 200);
    assert_eq!(unknown.1["status"], "unknown");
    assert_eq!(unknown.1["jetstream"]["total"], 12);
    let (_, js) = b.get("/api/jetstream/status").await;
    let streams = js["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 5, "{js}");
    assert!(streams.iter().all(|p| p["exists"] == true), "{js}");

    // A live agent: ok.
    publish_json(&c, "heartbeat.pc1".into(), &heartbeat("pc1", 0)).await;
    let ok = eventually("ok", || async {
        let (s, body) = b.get("/api/health/fleet").await;
        (body["status"] == "ok").then_some((s, body))
    })
    .await;
    assert_eq!(ok.0, 200);
    assert_eq!(
        ok.1["agents"],
        serde_json::json!({"known": 1, "active": 1, "stale": 0})
    );

    // A stale agent: degraded, 503, with the counts.
    publish_json(&c, "heartbeat.pc2".into(), &heartbeat("pc2", 10)).await;
    let degraded = eventually("degraded", || async {
        let (s, body) = b.get("/api/health/fleet").await;
        (s == 503).then_some(body)
    })
    .await;
    assert_eq!(degraded["status"], "degraded");
    assert_eq!(
        degraded["agents"],
        serde_json::json!({"known": 2, "active": 1, "stale": 1})
    );

    // Scan durations: 1..=10 s for one job, one quick run of another.
    let js = async_nats::jetstream::new(c.clone());
    let mut runs: Vec<ExecResult> = (1..=10)
        .map(|s| run(&format!("scan-{s}"), "scan", s * 1000, 0))
        .collect();
    runs.push(run("quick-1", "quick", 250, 3));
    for r in &runs {
        let ack = js
            .publish(
                format!("results.{}", r.result_id),
                serde_json::to_vec(r).unwrap().into(),
            )
            .await
            .unwrap();
        ack.await.unwrap();
    }
    let stats = eventually("scan durations", || async {
        let (_, body) = b.get("/api/health/scan_durations").await;
        (body.as_array()?.len() == 2 && body[0]["count"] == 10).then_some(body)
    })
    .await;
    let scan = &stats[0];
    assert_eq!(scan["job_id"], "scan");
    assert_eq!(scan["p50_ms"], 5000);
    assert_eq!(scan["p95_ms"], 10000);
    assert_eq!(scan["p99_ms"], 10000);
    assert_eq!(scan["min_ms"], 1000);
    assert_eq!(scan["max_ms"], 10000);
    assert_eq!(scan["mean_ms"], 5500);
    assert_eq!(scan["max_result_id"], "scan-10");
    assert_eq!(
        stats[1]["p50_ms"], 250,
        "exact milliseconds, no float rounding"
    );
    let since =
        (Utc::now() - Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, none) = b
        .get(&format!("/api/health/scan_durations?since={since}"))
        .await;
    assert_eq!(none, Value::Array(vec![]));
    let (s, bad) = b.get("/api/health/scan_durations?since=yesterday").await;
    assert_eq!(s, 400);
    assert!(bad["error"].as_str().unwrap().contains("`since`"));

    let (_, h) = b.get("/api/health/fleet").await;
    assert_eq!(
        h["recent_results"],
        serde_json::json!({"window_hours": 24, "total": 11, "failed": 1})
    );
}

/// `/readyz` (no credentials, as `/health`): ready, then not ready naming
/// an unwritable write-ahead log and a lost broker, ready again after
/// each comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_what_is_wrong_and_recovers() {
    let port = crate::common::free_port();
    let nats = Nats::start_on(port);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = Backend::start(&nats.url, &data, "");
    let readyz = || async {
        let resp = reqwest::get(format!("{}/readyz", b.base)).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap())
    };
    eventually("ready", || async {
        let (s, v) = readyz().await;
        (s == 200 && v["status"] == "ready").then_some(())
    })
    .await;

    // The host_perf log's directory replaced by a file: not writable.
    let wal = data.join("wal").join("host_perf");
    let aside = data.join("wal").join("host_perf.aside");
    std::fs::rename(&wal, &aside).unwrap();
    std::fs::write(&wal, b"not a directory").unwrap();
    let (s, v) = readyz().await;
    assert_eq!(s, 503, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("host_perf: write-ahead log not writable"),
        "{v}"
    );
    assert!(
        !error.contains("process_perf"),
        "only the broken table: {v}"
    );
    std::fs::remove_file(&wal).unwrap();
    std::fs::rename(&aside, &wal).unwrap();
    let (s, v) = readyz().await;
    assert_eq!(s, 200, "{v}");

    // The broker goes, then comes back on its port.
    drop(nats);
    eventually("broker named", || async {
        let (s, v) = readyz().await;
        (s == 503 && v["error"].as_str()?.contains("broker: not connected")).then_some(())
    })
    .await;
    let (_, metrics) = b.get("/metrics").await;
    assert!(
        metrics.as_str().unwrap().contains("kanade_ready 0"),
        "{metrics}"
    );
    let _nats = Nats::start_on(port);
    eventually("ready again", || async {
        (readyz().await.0 == 200).then_some(())
    })
    .await;
}

/// A tmpfs mounted for a test; unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` (the test is skipped) where mounting is not allowed, unless
    /// `KANADE_TEST_TMPFS=required` (scripts/test.sh sets it for root).
    fn mount(at: &std::path::Path, size: &str) -> Option<Self> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        let required = std::env::var("KANADE_TEST_TMPFS").is_ok_and(|v| v == "required");
        assert!(
            ok || !required,
            "KANADE_TEST_TMPFS=required but mount failed"
        );
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        }
        ok.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The host_perf log's file system fills: `/readyz` names it, the samples
/// sent meanwhile wait in the capture stream, and once space returns
/// ingest resumes and every one of them is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_turns_readiness_red_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let wal = data.join("wal").join("host_perf");
    std::fs::create_dir_all(&wal).unwrap();
    let Some(_mount) = Tmpfs::mount(&wal, "1m") else {
        return;
    };
    let nats = Nats::start();
    let b = Backend::start(&nats.url, &data, "");
    let readyz = || async {
        let resp = reqwest::get(format!("{}/readyz", b.base)).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap())
    };
    eventually("ready", || async {
        (readyz().await.0 == 200).then_some(())
    })
    .await;

    // Fill the file system to the last byte.
    let filler = wal.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).and_then(|()| f.flush()).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
    }
    let (s, v) = readyz().await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("host_perf: write-ahead log not writable"),
        "{v}"
    );

    let c = nats.client().await;
    let t0 = Utc::now();
    for m in 1..=10 {
        let sample = serde_json::json!({"pc_id": "pc-full", "at": t0 - Duration::minutes(m), "cpu_pct": m as f64});
        publish_json(&c, "host_perf.pc-full".into(), &sample).await;
    }
    let perf = format!(
        "/api/agents/pc-full/perf?from={}&step=1m",
        (t0 - Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // The commit is refused while the disk is full.
    eventually("a refused commit", || async {
        let (_, m) = b.get("/metrics").await;
        m.as_str()?
            .lines()
            .any(|l| {
                l.starts_with("kanade_ingest_messages_total")
                    && l.contains("host_perf")
                    && l.contains("commit_failure")
                    && !l.ends_with(" 0")
            })
            .then_some(())
    })
    .await;
    let (_, body) = b.get(&perf).await;
    assert_eq!(body["points"].as_array().map_or(0, Vec::len), 0, "{body}");

    // Space returns: ready again, and all ten are stored.
    std::fs::remove_file(&filler).unwrap();
    eventually("ready again", || async {
        (readyz().await.0 == 200).then_some(())
    })
    .await;
    eventually("the ten samples", || async {
        let (_, body) = b.get(&perf).await;
        (body["points"].as_array()?.len() == 10).then_some(())
    })
    .await;
}
