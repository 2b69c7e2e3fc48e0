//! `POST /api/query` end to end: heartbeats, perf samples and metadata
//! through a real broker into the real binary, then an operator's SQL over
//! upstream's table names (`agents`, `agent_meta`, `host_perf_samples`),
//! the row cap, refusals of anything but a query, the memory cap and the
//! time budget — with `/health` answering while a runaway query runs.

use std::time::Instant;

use crate::common::{eventually, publish_json, Backend, Nats, TOKEN};
use chrono::{Duration, DurationRound, Utc};
use kanade_shared::wire::{Heartbeat, HostPerf};
use reqwest::Method;
use serde_json::{json, Value};

async fn query(b: &Backend, body: Value) -> (u16, Value) {
    let (s, _, v) = b
        .call(Method::POST, "/api/query", Some(TOKEN), Some(body))
        .await;
    (s, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_the_fleet_answers_caps_and_refuses_what_is_no_query() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    // Small caps, so the runaway and the memory-hungry queries end fast
    // and never starve the tests running beside this one.
    let b = Backend::start_configured(
        &nats.url,
        &dir.path().join("data"),
        "query_budget_secs = 2\nquery_memory_mib = 16",
        "",
        &[],
    );
    let c = nats.client().await;
    let now = Utc::now().duration_trunc(Duration::minutes(1)).unwrap();
    for pc in ["PC-1", "PC-2"] {
        let hb: Heartbeat = serde_json::from_value(json!({
            "pc_id": pc, "at": now, "agent_version": "0.101.0",
            "hostname": pc.to_lowercase(), "os_family": "windows",
        }))
        .unwrap();
        let samples: Vec<HostPerf> = (0..10)
            .map(|i| {
                serde_json::from_value(json!({
                    "pc_id": pc, "at": now - Duration::minutes(i),
                    "cpu_pct": if pc == "PC-1" { 10.0 + i as f64 } else { 50.0 },
                    "mem_used_bytes": 1000, "mem_total_bytes": 2000,
                }))
                .unwrap()
            })
            .collect();
        eventually("agent and samples", || async {
            publish_json(&c, format!("heartbeat.{pc}"), &hb).await;
            for s in &samples {
                publish_json(&c, format!("host_perf.{pc}"), s).await;
            }
            let (s, v) = query(
                &b,
                json!({"sql": format!("SELECT count(*) AS n FROM host_perf_samples WHERE pc_id = '{pc}'")}),
            )
            .await;
            (s == 200 && v["rows"] == json!([[10]])).then_some(())
        })
        .await;
    }
    let (s, _, body) = b
        .call(
            Method::PUT,
            "/api/agents/PC-1/meta/key",
            Some(TOKEN),
            Some(json!({"key": "site", "value": "Osaka"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");

    let (s, v) = query(
        &b,
        json!({"sql": "SELECT a.pc_id, a.hostname, m.value AS site, count(*) AS samples, \
                       max(h.cpu_pct) AS peak \
                       FROM agents a JOIN host_perf_samples h ON h.pc_id = a.pc_id \
                       LEFT JOIN agent_meta m ON m.pc_id = a.pc_id AND m.key = 'site' \
                       GROUP BY a.pc_id, a.hostname, m.value ORDER BY a.pc_id"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["columns"],
        json!(["pc_id", "hostname", "site", "samples", "peak"])
    );
    assert_eq!(
        v["rows"],
        json!([
            ["PC-1", "pc-1", "Osaka", 10, 19.0],
            ["PC-2", "pc-2", null, 10, 50.0]
        ])
    );
    assert_eq!(
        (v["row_count"].as_u64(), v["truncated"].as_bool()),
        (Some(2), Some(false))
    );

    // Runs and the audit log, under upstream's names and columns: two
    // results of one job (one failed), and the audit entry of the
    // metadata edit above with its payload as JSON text.
    let js = async_nats::jetstream::new(c.clone());
    for (id, pc, code) in [("r-1", "PC-1", 0), ("r-2", "PC-2", 3)] {
        let result = json!({
            "result_id": id, "request_id": format!("req-{id}"), "exec_id": "ex-1",
            "pc_id": pc, "exit_code": code, "stdout": "ok", "stderr": "",
            "started_at": now, "finished_at": now + Duration::seconds(2),
            "manifest_id": "patch-check",
        });
        crate::common::js_publish_bytes(
            &js,
            format!("results.req-{id}"),
            serde_json::to_vec(&result).unwrap(),
        )
        .await;
    }
    let failures = json!({"sql": "SELECT job_id, count(*) AS runs, \
        sum(CASE WHEN exit_code <> 0 THEN 1 ELSE 0 END) AS failed, \
        max(finished_at) - min(started_at) AS span \
        FROM execution_results WHERE finished_at > now() - INTERVAL '7 days' GROUP BY job_id"});
    let v = eventually("results projected", || async {
        let (s, v) = query(&b, failures.clone()).await;
        (s == 200 && v["rows"].as_array()?.first()?.get(1) == Some(&json!(2))).then_some(v)
    })
    .await;
    assert_eq!(v["rows"][0][0], "patch-check");
    assert_eq!(v["rows"][0][2], 1, "{v}");
    let v = eventually("audit projected", || async {
        let (s, v) = query(
            &b,
            json!({"sql": "SELECT actor, target, payload FROM audit_log \
                           WHERE action = 'agent_meta_set'"}),
        )
        .await;
        (s == 200 && v["row_count"] == 1).then_some(v)
    })
    .await;
    assert_eq!(v["rows"][0][1], "PC-1");
    let payload: Value = serde_json::from_str(v["rows"][0][2].as_str().unwrap()).unwrap();
    assert_eq!(payload["key"], "site", "{v}");
    // The reference's SQLite idioms run unchanged.
    let (s, v) = query(
        &b,
        json!({"sql": "SELECT pc_id, ifnull(os_family, '?'), instr(pc_id, '-') FROM agents \
                       WHERE last_heartbeat > datetime('now', '-1 day') \
                       AND julianday('now') - julianday(last_heartbeat) < 1 ORDER BY pc_id"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["rows"],
        json!([["PC-1", "windows", 3], ["PC-2", "windows", 3]])
    );
    let (s, v) = query(
        &b,
        json!({"sql": "SELECT strftime('%Y-%m', started_at) AS month, count(*) AS runs \
                       FROM execution_results GROUP BY 1"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rows"], json!([[now.format("%Y-%m").to_string(), 2]]));
    // SQLite's LIKE ignores case; its group_concat takes any value, `,`
    // by default or the separator given (also inside expressions).
    let (s, v) = query(
        &b,
        json!({"sql": "SELECT group_concat(pc_id), group_concat(agent_version, ' | '), \
                       upper(group_concat(hostname, ';')) FROM \
                       (SELECT * FROM agents WHERE hostname LIKE 'PC-%' AND pc_id NOT LIKE '%-9' ORDER BY pc_id)"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let row = v["rows"][0].as_array().unwrap();
    let mut pcs: Vec<&str> = row[0].as_str().unwrap().split(',').collect();
    pcs.sort();
    assert_eq!(pcs, ["PC-1", "PC-2"], "{v}");
    assert_eq!(row[1].as_str().unwrap().split(" | ").count(), 2, "{v}");
    let mut hosts: Vec<&str> = row[2].as_str().unwrap().split(';').collect();
    hosts.sort();
    assert_eq!(hosts, ["PC-1", "PC-2"], "{v}");
    let (s, v) = query(
        &b,
        json!({"sql": "SELECT count(*) FROM agents WHERE pc_id LIKE 'pc-_'"}),
    )
    .await;
    assert_eq!((s, &v["rows"]), (200, &json!([[2]])), "{v}");
    for table in [
        "executions",
        "obs_events",
        "check_status",
        "inventory_facts",
        "notification_acks",
    ] {
        let (s, v) = query(&b, json!({"sql": format!("SELECT * FROM {table} LIMIT 1")})).await;
        assert_eq!(s, 200, "{table}: {v}");
        assert!(!v["columns"].as_array().unwrap().is_empty(), "{table}: {v}");
    }

    let (s, v) = query(
        &b,
        json!({"sql": "SELECT pc_id, at FROM host_perf_samples ORDER BY at, pc_id", "limit": 3}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["row_count"].as_u64(), v["truncated"].as_bool()),
        (Some(3), Some(true))
    );
    let first = v["rows"][0][1].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(first).is_ok(),
        "a time is RFC 3339 text: {first}"
    );

    for (sql, needle) in [
        ("", "sql"),
        ("INSERT INTO agents (pc_id) VALUES ('x')", "not supported"),
        ("DELETE FROM agents", "not supported"),
        ("CREATE TABLE t AS SELECT 1", "not supported"),
        ("DROP TABLE agents", "not supported"),
        (
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "not supported",
        ),
        ("SET datafusion.execution.batch_size = 1", "not supported"),
        ("SELECT 1; SELECT 2", "single"),
        ("ATTACH DATABASE '/tmp/other.db' AS other", "ATTACH"),
        ("COPY (SELECT 1) TO '/tmp/kanade-copy.csv'", "not supported"),
        ("SELECT * FROM users", "users"),
        ("SELEKT 1", "SELEKT"),
    ] {
        let (s, v) = query(&b, json!({"sql": sql})).await;
        assert_eq!(s, 400, "{sql}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(needle), "{sql}: {e}");
    }
    // Still there, unchanged.
    let (_, v) = query(&b, json!({"sql": "SELECT count(*) FROM agents"})).await;
    assert_eq!(v["rows"], json!([[2]]));

    // A query that needs more memory than a query may hold.
    let (s, v) = query(
        &b,
        json!({"sql": "SELECT count(*) FROM generate_series(1, 3000000) a JOIN generate_series(1, 3000000) b ON a.value = b.value"}),
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("MiB"), "{v}");

    // A runaway cross join: cut at the budget, while /health answers.
    let runaway = query(
        &b,
        json!({"sql": "SELECT count(*) FROM generate_series(1, 1000000) a, generate_series(1, 1000000) b"}),
    );
    let probe = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let t = Instant::now();
        let (s, _) = b.get_with("/health", None).await;
        (s, t.elapsed())
    };
    let ((s, v), (health, took)) = tokio::join!(runaway, probe);
    assert_eq!(s, 408, "{v}");
    assert!(v["error"].as_str().unwrap().contains("budget"), "{v}");
    assert_eq!(health, 200, "health answered in {took:?}");

    // An operator is no admin.
    let (s, _, _) = b
        .call(
            Method::POST,
            "/api/accounts",
            Some(TOKEN),
            Some(json!({"username": "op", "password": "op-password-1", "role": "operator"})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, _, login) = b
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "op", "password": "op-password-1"})),
        )
        .await;
    let (s, _, _) = b
        .call(
            Method::POST,
            "/api/query",
            login["token"].as_str(),
            Some(json!({"sql": "SELECT 1"})),
        )
        .await;
    assert_eq!(s, 403);
}
