//! `/api/export/{table}`: a streamed Parquet file that reads back, with the
//! parquet crate, as exactly the rows the API serves, head and files alike.

use crate::common::{eventually, js_publish_bytes, Backend, Nats, TOKEN};
use chrono::{Duration, DurationRound, Utc};
use kanade_storage::arrow::array::{Array, Float64Array, StringArray};
use kanade_storage::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn sample(pc: &str, at: chrono::DateTime<Utc>, cpu: f64) -> serde_json::Value {
    serde_json::json!({"pc_id": pc, "at": at, "cpu_pct": cpu, "mem_used_bytes": 1000})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_the_filtered_rows_as_parquet() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, "");
    // Through the capture stream, acknowledged: a sample sent before the
    // backend listens is kept, not lost.
    let js = async_nats::jetstream::new(nats.client().await);
    let t0 = (Utc::now() - Duration::hours(30))
        .duration_trunc(Duration::hours(1))
        .unwrap();
    // Yesterday's samples go to Parquet (SIGTERM persists), today's stay in the head.
    for i in 0..5 {
        js_publish_bytes(
            &js,
            "host_perf.pc-a".into(),
            serde_json::to_vec(&sample("pc-a", t0 + Duration::minutes(i), i as f64)).unwrap(),
        )
        .await;
        js_publish_bytes(
            &js,
            "host_perf.pc-b".into(),
            serde_json::to_vec(&sample("pc-b", t0 + Duration::minutes(i), 50.0)).unwrap(),
        )
        .await;
    }
    let q = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let perf = format!(
        "/api/agents/pc-a/perf?from={}&to={}&step=1m",
        q(t0),
        q(t0 + Duration::hours(1))
    );
    eventually("first samples", || async {
        (b.get(&perf).await.1["points"].as_array()?.len() == 5).then_some(())
    })
    .await;
    assert!(b.sigterm().success());
    let b = Backend::start(&nats.url, &data, "");
    let late = Utc::now() - Duration::minutes(5);
    eventually("head sample", || async {
        js_publish_bytes(
            &js,
            "host_perf.pc-a".into(),
            serde_json::to_vec(&sample("pc-a", late, 99.0)).unwrap(),
        )
        .await;
        let p = format!(
            "/api/agents/pc-a/perf?from={}&step=1m",
            q(late - Duration::minutes(1))
        );
        (b.get(&p).await.1["points"].as_array()?.len() == 1).then_some(())
    })
    .await;

    let url = format!(
        "{}/api/export/host_perf?from={}&to={}&pc_id=pc-a",
        b.base,
        q(t0),
        q(Utc::now())
    );
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"host_perf_"),
        "{disposition}"
    );
    let bytes = resp.bytes().await.unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let mut cpus = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let pcs = batch
            .column_by_name("pc_id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let cpu = batch
            .column_by_name("cpu_pct")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        for i in 0..batch.num_rows() {
            assert_eq!(pcs.value(i), "pc-a");
            cpus.push(cpu.value(i));
        }
        assert!(batch.column_by_name("mem_used_bytes").unwrap().is_valid(0));
    }
    assert_eq!(
        cpus,
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 99.0],
        "persisted and head rows, sorted by time"
    );

    // The CLI gets the same rows into a file, and refuses what the API
    // refuses without leaving a partial file.
    let config = data.with_extension("toml");
    let out_file = dir.path().join("pc-a.parquet");
    let cli = |from: String, out: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kanade-backend"))
            .arg("--config")
            .arg(&config)
            .args([
                "export",
                "host_perf",
                "--from",
                &from,
                "--to",
                &q(Utc::now()),
                "--pc-id",
                "pc-a",
                "-o",
            ])
            .arg(out)
            .env("KANADE_AUTH_STATIC_TOKEN", TOKEN)
            .env_remove("KANADE_BACKEND_CONFIG")
            .output()
            .unwrap()
    };
    let out = cli(q(t0), &out_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::File::open(&out_file).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut cli_cpus = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let cpu = batch
            .column_by_name("cpu_pct")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        cli_cpus.extend(cpu.iter().map(Option::unwrap));
    }
    assert_eq!(cli_cpus, cpus);
    let refused = dir.path().join("refused.parquet");
    let out = cli("soon".into(), &refused);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("400") && stderr.contains("`from`"),
        "{stderr}"
    );
    assert!(!refused.exists() && !dir.path().join("refused.parquet.partial").exists());

    let (s, body) = b.get("/api/export/agents").await;
    assert_eq!(s, 400);
    assert!(body["error"].as_str().unwrap().contains("`table`"));
    let (s, body) = b.get("/api/export/process_perf?from=soon").await;
    assert_eq!(s, 400);
    assert!(body["error"].as_str().unwrap().contains("`from`"));
    let (s, _) = b.get_with("/api/export/host_perf", None).await;
    assert_eq!(s, 401);
}
