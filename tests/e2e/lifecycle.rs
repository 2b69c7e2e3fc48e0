//! Start-up and shutdown: config errors, a broker that is down or goes
//! away, and SIGTERM without a broker.

use std::process::Command;

use crate::common::{eventually, free_port, publish_json, Backend, Nats};
use chrono::{Duration, Utc};
use kanade_shared::wire::HostPerf;

fn sample(pc: &str, minutes_ago: i64, cpu: f64) -> HostPerf {
    HostPerf {
        pc_id: pc.into(),
        at: Utc::now() - Duration::minutes(minutes_ago),
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
    }
}

async fn points(b: &Backend, pc: &str) -> usize {
    let (_, body) = b
        .get(&format!(
            "/api/agents/{pc}/perf?from={}&step=1m",
            (Utc::now() - Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))
        .await;
    body["points"].as_array().map_or(0, Vec::len)
}

#[test]
fn config_mistakes_stop_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (file, key) in [
        (
            "[storage]\nhost_perf_retention_dys = 3\n",
            "storage.host_perf_retention_dys",
        ),
        ("[server]\nbind = 8080\n", "server.bind"),
        ("[capture]\nmax_age_secs = 5\n", "capture.max_age_secs"),
        ("[capture]\nmax_bytes = -1\n", "capture.max_bytes"),
    ] {
        let path = dir.path().join("backend.toml");
        std::fs::write(&path, file).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_kanade-backend"))
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{file:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_without_a_broker_and_projects_once_it_comes_and_returns() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let mut b = Backend::start(&url, &dir.path().join("data"), "");

    // No broker: HTTP still answers from storage.
    let (s, _) = b.get_with("/health", None).await;
    assert_eq!(s, 200);
    assert_eq!(points(&b, "pc-1").await, 0);
    let (s, health) = b.get("/api/health/fleet").await;
    assert_eq!(s, 503, "{health}");
    assert_eq!(health["jetstream"]["all_ok"], false);

    // The broker comes up: the projectors subscribe by themselves.
    let nats = Nats::start_on(port);
    let c = nats.client().await;
    eventually("first sample after the broker came up", || async {
        publish_json(&c, "host_perf.pc-1".into(), &sample("pc-1", 5, 1.0)).await;
        (points(&b, "pc-1").await == 1).then_some(())
    })
    .await;

    // The broker goes away and comes back: the projectors resubscribe.
    drop(c);
    drop(nats);
    let nats = Nats::start_on(port);
    let c = nats.client().await;
    eventually("sample after the broker returned", || async {
        publish_json(&c, "host_perf.pc-1".into(), &sample("pc-1", 3, 2.0)).await;
        (points(&b, "pc-1").await == 2).then_some(())
    })
    .await;

    // SIGTERM with the broker gone still persists and exits 0.
    drop(c);
    drop(nats);
    assert!(b.sigterm().success());
    assert!(!crate::common::parquet_files(&dir.path().join("data")).is_empty());

    // `[log] path` got the same story, in a daily file without colour codes.
    let files = b.log_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let today = chrono::Utc::now().date_naive();
    assert!(
        [today, today.pred_opt().unwrap()]
            .iter()
            .any(|d| name == format!("backend.{}.log", d.format("%Y-%m-%d"))),
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("NATS connection lost"), "{text}");
    assert!(text.contains("head persisted; bye"), "{text}");
    assert!(!text.contains('\u{1b}'), "no ANSI escapes in the file");
}

/// Rows of `pc` in the persisted raw `host_perf` files.
fn stored_rows(data: &std::path::Path) -> i64 {
    use kanade_storage::parquet::file::reader::{FileReader, SerializedFileReader};
    crate::common::parquet_files(data)
        .iter()
        .filter(|f| f.starts_with("host_perf/"))
        .map(|f| {
            let file = std::fs::File::open(data.join(f)).unwrap();
            SerializedFileReader::new(file)
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_samples_sent_while_no_backend_runs_or_at_a_kill_are_stored_once() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, "");
    let c = nats.client().await;
    // Samples at whole minutes before t0: one chart point each, and a
    // sample sent twice is one row.
    let t0 = Utc::now();
    let at = |m: i64| HostPerf {
        at: t0 - Duration::minutes(m),
        ..sample("pc-cap", 0, m as f64)
    };
    eventually("the first sample stored", || async {
        publish_json(&c, "host_perf.pc-cap".into(), &at(100)).await;
        (points(&b, "pc-cap").await == 1).then_some(())
    })
    .await;
    // The broker keeps the samples in our stream, 6 h by default.
    let js = async_nats::jetstream::new(c.clone());
    let mut stream = js.get_stream("COLUMNAR_PERF").await.unwrap();
    let info = stream.info().await.unwrap().config.clone();
    assert_eq!(info.max_age, std::time::Duration::from_secs(6 * 3600));
    assert_eq!(info.max_bytes, 1 << 30);

    // Sent while no backend runs: stored when one is back.
    assert!(b.sigterm().success());
    for m in 1..=20 {
        publish_json(&c, "host_perf.pc-cap".into(), &at(m)).await;
    }
    let mut b = Backend::start(&nats.url, &data, "");
    eventually("the samples sent while down", || async {
        (points(&b, "pc-cap").await == 21).then_some(())
    })
    .await;

    // A burst and at once kill -9: nothing of it lost, nothing twice.
    for m in 21..=60 {
        publish_json(&c, "host_perf.pc-cap".into(), &at(m)).await;
    }
    b.kill9();
    let mut b = Backend::start(&nats.url, &data, "");
    eventually("the burst around the kill", || async {
        (points(&b, "pc-cap").await == 61).then_some(())
    })
    .await;
    assert!(b.sigterm().success());
    assert_eq!(stored_rows(&data), 61, "every sample once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_capture_stream_samples_come_over_core_nats() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = Backend::start(&nats.url, &data, "[capture]\nenabled = false\n");
    let c = nats.client().await;
    let one = sample("pc-core", 3, 1.0);
    eventually("a sample over core NATS", || async {
        publish_json(&c, "host_perf.pc-core".into(), &one).await;
        (points(&b, "pc-core").await == 1).then_some(())
    })
    .await;
    let js = async_nats::jetstream::new(c.clone());
    assert!(
        js.get_stream("COLUMNAR_PERF").await.is_err(),
        "no stream made"
    );
}
