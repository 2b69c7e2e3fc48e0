//! What an agent (or anyone who can publish) sends is checked before it
//! names a key, an object or a subject, or creates a partition: each
//! hostile class is refused and counted, the backend's broker connection
//! stays up, and every valid message published alongside is stored.

use crate::common::{eventually, js_publish_bytes, publish_json, Backend, Nats};
use chrono::{DateTime, Duration, Utc};
use kanade_shared::wire::{HostPerf, ProcessPerf, ProcessSnapshot};
use serde_json::{json, Value};

fn host(pc: &str, at: DateTime<Utc>, cpu: f64) -> HostPerf {
    serde_json::from_value(json!({
        "pc_id": pc, "at": at, "cpu_pct": cpu, "cpu_count": 4,
        "mem_used_bytes": 1000, "mem_total_bytes": 8000,
    }))
    .unwrap()
}

fn result(id: &str, pc: &str, manifest: &str, at: DateTime<Utc>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "result_id": id, "request_id": format!("req-{id}"), "exec_id": format!("ex-{id}"),
        "pc_id": pc, "exit_code": 0, "stdout": "ok", "stderr": "",
        "started_at": at, "finished_at": at + Duration::seconds(2),
        "manifest_id": manifest,
    }))
    .unwrap()
}

fn tick(pc: &str, at: DateTime<Utc>) -> Value {
    serde_json::to_value(ProcessPerf {
        pc_id: pc.into(),
        at,
        processes: vec![ProcessSnapshot {
            pid: 1,
            name: "a".into(),
            cpu_pct: 1.0,
            rss_bytes: 1,
            disk_read_bytes_per_sec: None,
            disk_written_bytes_per_sec: None,
        }],
    })
    .unwrap()
}

fn far_future() -> DateTime<Utc> {
    "9999-12-31T23:59:59Z".parse().unwrap()
}

fn q(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_wire_input_is_refused_and_the_connection_stays_up() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, "");
    let c = nats.client().await;
    let js = async_nats::jetstream::new(c.clone());
    let long = "P".repeat(5_000);
    let t0 = Utc::now() - Duration::minutes(20);

    // Subscribed and committing before anything is counted.
    eventually("backend subscribed", || async {
        publish_json(&c, "host_perf.good".into(), &host("good", t0, 1.0)).await;
        let (_, body) = b
            .get(&format!(
                "/api/agents/good/perf?from={}&to={}",
                q(t0 - Duration::minutes(1)),
                q(t0 + Duration::minutes(1))
            ))
            .await;
        (body["points"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;

    // Each hostile class, with valid samples in between.
    let hostile: Vec<(String, Value)> = vec![
        (
            "host_perf.x".into(),
            serde_json::to_value(host(&long, t0, 9.0)).unwrap(),
        ),
        (
            "host_perf.y".into(),
            serde_json::to_value(host("bad pc", t0, 9.0)).unwrap(),
        ),
        (
            "host_perf.clock".into(),
            serde_json::to_value(host("clock", far_future(), 9.0)).unwrap(),
        ),
        (
            "host_perf.clock".into(),
            serde_json::to_value(host("clock", Utc::now() + Duration::days(3), 9.0)).unwrap(),
        ),
        (
            "host_perf.clock".into(),
            serde_json::to_value(host("clock", Utc::now() - Duration::days(400), 9.0)).unwrap(),
        ),
        ("process_perf.x".into(), tick(&long, t0)),
        ("process_perf.clock".into(), tick("clock", far_future())),
        (
            "heartbeat.x".into(),
            json!({"pc_id": long, "agent_version": "1", "at": Utc::now()}),
        ),
    ];
    let mut good = 1;
    for (i, (subject, payload)) in hostile.iter().enumerate() {
        publish_json(&c, subject.clone(), payload).await;
        let at = t0 + Duration::seconds(10 * (i as i64 + 1));
        publish_json(&c, "host_perf.good".into(), &host("good", at, 2.0)).await;
        good += 1;
    }
    // Results and run starts whose ids would name a key or a subject.
    let now = Utc::now() - Duration::minutes(5);
    js_publish_bytes(
        &js,
        "results.r1".into(),
        result("long-manifest", "PC-1", &long, now),
    )
    .await;
    js_publish_bytes(
        &js,
        "results.r2".into(),
        result("long-pc", &long, "inv", now),
    )
    .await;
    js_publish_bytes(
        &js,
        "results.r3".into(),
        result("spaced-pc", "a b", "inv", now),
    )
    .await;
    let started = json!({
        "result_id": "long-start", "request_id": "req", "exec_id": "ex", "pc_id": long,
        "started_at": now, "manifest_id": "inv", "version": "1",
    });
    js_publish_bytes(
        &js,
        format!("events.started.{}", "X"),
        serde_json::to_vec(&started).unwrap(),
    )
    .await;
    js_publish_bytes(&js, "results.r4".into(), result("fine", "PC-1", "inv", now)).await;
    for i in 0..5 {
        let at = t0 + Duration::seconds(500 + 10 * i);
        publish_json(&c, "host_perf.good".into(), &host("good", at, 3.0)).await;
        good += 1;
    }

    // Everything valid is stored: the samples around the hostile ones
    // and the result after them.
    let (_, row) = eventually("the valid result after the hostile ones", || async {
        let r = b.get("/api/results/fine").await;
        (r.0 == 200).then_some(r)
    })
    .await;
    assert_eq!(row["pc_id"], "PC-1", "{row}");
    let points = eventually("every valid sample", || async {
        let (_, body) = b
            .get(&format!(
                "/api/agents/good/perf?from={}&to={}&step=10s",
                q(t0 - Duration::minutes(1)),
                q(t0 + Duration::minutes(15))
            ))
            .await;
        let n = body["points"].as_array().map_or(0, Vec::len);
        (n == good).then_some(n)
    })
    .await;
    assert_eq!(points, 14);
    for id in ["long-manifest", "long-pc", "spaced-pc", "long-start"] {
        assert_eq!(b.get(&format!("/api/results/{id}")).await.0, 404, "{id}");
    }
    let (_, agents) = b.get("/api/agents").await;
    let names: Vec<&str> = agents
        .as_array()
        .unwrap_or_else(|| panic!("{agents}"))
        .iter()
        .filter_map(|a| a["pc_id"].as_str())
        .collect();
    assert!(names.iter().all(|n| n.len() < 100), "{names:?}");
    let (_, clock) = b
        .get(&format!(
            "/api/agents/clock/perf?from={}&to={}",
            q(Utc::now() - Duration::days(2)),
            q(Utc::now() + Duration::days(5))
        ))
        .await;
    assert_eq!(clock["points"].as_array().map(Vec::len), Some(0), "{clock}");

    // The connection never dropped, and every refusal was logged.
    let log = b.log_text();
    assert!(
        !log.contains("NATS connection lost"),
        "the broker connection dropped:\n{log}"
    );
    assert_eq!(
        log.matches("message refused").count(),
        hostile.len() + 4,
        "one refusal per hostile message:\n{log}"
    );

    // No partition outside the retained window was created.
    assert!(b.sigterm().success());
    let dates: Vec<String> = std::fs::read_dir(data.join("host_perf"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("date="))
        .collect();
    assert!(!dates.is_empty(), "the valid samples were persisted");
    let today = Utc::now().date_naive();
    for d in &dates {
        let day = chrono::NaiveDate::parse_from_str(&d[5..], "%Y-%m-%d").unwrap();
        assert!(
            (today - day).num_days().abs() <= 1,
            "partition {d} outside the retained window"
        );
    }
}
