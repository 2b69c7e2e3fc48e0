//! Start-up and shutdown: config errors, a broker that is down or goes
//! away, and SIGTERM without a broker.

mod common;

use std::process::Command;

use chrono::{Duration, Utc};
use common::{eventually, free_port, publish_json, Backend, Nats};
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
    assert!(!common::parquet_files(&dir.path().join("data")).is_empty());

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
