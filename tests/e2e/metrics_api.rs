//! `GET /metrics` scraped like Prometheus would and parsed with a
//! Prometheus text parser: counters move as messages and requests arrive,
//! table sizes and stream positions are read at scrape time.

use crate::common::{eventually, js_publish_bytes, publish_json, Backend, Nats, TOKEN};
use chrono::{Duration, Utc};
use serde_json::json;

/// One scrape, parsed.
async fn scrape(b: &Backend) -> prometheus_parse::Scrape {
    let r = reqwest::Client::new()
        .get(format!("{}/metrics", b.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = r.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().copied()
}

fn ingest(s: &prometheus_parse::Scrape, source: &str, outcome: &str) -> f64 {
    value(
        s,
        "kanade_ingest_messages_total",
        &[("source", source), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_ingest_requests_tables_and_streams() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let c = nats.client().await;

    // Token-protected like /api.
    let (status, body) = b.get_with("/metrics", None).await;
    assert_eq!(status, 401, "{body}");

    let sample = |pc: &str, secs: i64| json!({"pc_id": pc, "at": Utc::now() - Duration::seconds(secs), "cpu_pct": 1.5});
    let warm = sample("warm", 60);
    eventually("projector subscribed", || async {
        publish_json(&c, "host_perf.warm".into(), &warm).await;
        let s = scrape(&b).await;
        (ingest(&s, "host_perf.>", "inserted") == 1.0).then_some(())
    })
    .await;
    for i in 0..5 {
        publish_json(&c, "host_perf.pc-1".into(), &sample("pc-1", 10 + i)).await;
    }
    for _ in 0..2 {
        c.publish("host_perf.pc-1", "not json".into())
            .await
            .unwrap();
    }
    let future = json!({"pc_id": "pc-1", "at": Utc::now() + Duration::days(3), "cpu_pct": 1.0});
    publish_json(&c, "host_perf.pc-1".into(), &future).await;
    let js = async_nats::jetstream::new(c.clone());
    let result = json!({
        "result_id": "r-1", "request_id": "q-1", "pc_id": "pc-1", "exit_code": 0,
        "stdout": "", "stderr": "", "started_at": Utc::now(), "finished_at": Utc::now(),
    });
    js_publish_bytes(
        &js,
        "results.q-1".into(),
        serde_json::to_vec(&result).unwrap(),
    )
    .await;

    let s = eventually("every message counted", || async {
        let s = scrape(&b).await;
        let done = ingest(&s, "host_perf.>", "inserted") == 6.0
            && ingest(&s, "host_perf.>", "malformed") == 2.0
            && ingest(&s, "host_perf.>", "rejected") == 1.0
            && ingest(&s, "RESULTS", "inserted") == 1.0
            && value(&s, "kanade_stream_consumer_lag", &[("stream", "RESULTS")]) == Some(0.0)
            // (A scrape reads positions first and counters last: wait for
            // one that saw the commit.)
            && value(&s, "kanade_stream_consumer_position", &[("stream", "RESULTS")])
                .is_some_and(|p| p >= 1.0);
        done.then_some(s)
    })
    .await;
    let received = ingest(&s, "host_perf.>", "received");
    let duplicates = ingest(&s, "host_perf.>", "duplicate");
    assert_eq!(
        received,
        6.0 + duplicates + 2.0 + 1.0,
        "every received message has one outcome"
    );
    assert_eq!(ingest(&s, "RESULTS", "received"), 1.0);
    let table = [("table", "host_perf")];
    assert_eq!(value(&s, "kanade_storage_head_rows", &table), Some(6.0));
    assert!(value(&s, "kanade_storage_head_bytes", &table).unwrap() > 0.0);
    assert!(value(&s, "kanade_storage_wal_bytes", &table).unwrap() > 0.0);
    assert!(value(&s, "kanade_storage_wal_segments", &table).unwrap() >= 1.0);
    assert_eq!(value(&s, "kanade_storage_files", &table), Some(0.0));
    assert_eq!(value(&s, "kanade_nats_connected", &[]), Some(1.0));

    // The fleet chart of the last hour is answered from the in-memory
    // windows, and the query engine says so.
    let (status, body) = b.get("/api/perf/fleet?metric=cpu_pct&step=1m").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body["points"].as_array().unwrap().is_empty(), "{body}");
    let s = scrape(&b).await;
    let engine = |kind: &str| value(&s, "kanade_query_engine", &[("kind", kind)]);
    assert_eq!(engine("fleet_from_memory"), Some(1.0));
    assert_eq!(engine("files_scanned"), Some(0.0), "nothing persisted yet");

    // Requests by route template and status.
    assert_eq!(b.get("/api/results/nope").await.0, 404);
    assert_eq!(b.get("/api/results/r-1").await.0, 200);
    let s = scrape(&b).await;
    let requests = |status: &str| {
        value(
            &s,
            "kanade_http_requests_total",
            &[
                ("route", "/api/results/:result_id"),
                ("method", "GET"),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests("404"), Some(1.0));
    assert_eq!(requests("200"), Some(1.0));
    let scrapes = value(
        &s,
        "kanade_http_requests_total",
        &[("route", "/metrics"), ("status", "200")],
    )
    .unwrap();
    assert!(scrapes >= 2.0, "{scrapes}");
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric.starts_with("kanade_http_request_duration_seconds")),
        "latency histogram present"
    );
}
