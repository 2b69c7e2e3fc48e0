//! JetStream RESULTS / EVENTS → redb execution_results → `/api/results*`,
//! through a real broker (durable consumers), the binary and HTTP; and the
//! replay guarantees: restart resumes without duplicates, a wiped data
//! directory replays the streams into the same rows.

use crate::common::{eventually, js_publish_bytes as publish_raw, Backend, Nats};
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use kanade_shared::wire::{EventStarted, ExecResult, JobTailReply};
use serde_json::Value;

fn started(id: &str, pc: &str, job: &str, at: DateTime<Utc>) -> EventStarted {
    serde_json::from_value(serde_json::json!({
        "result_id": id, "request_id": format!("req-{id}"), "exec_id": format!("ex-{id}"),
        "pc_id": pc, "started_at": at, "manifest_id": job, "version": "1.4.2",
    }))
    .unwrap()
}

fn result(
    id: &str,
    pc: &str,
    job: Option<&str>,
    code: i32,
    out: &str,
    err: &str,
    at: DateTime<Utc>,
) -> ExecResult {
    serde_json::from_value(serde_json::json!({
        "result_id": id, "request_id": format!("req-{id}"),
        "exec_id": if job.is_some() { Some(format!("ex-{id}")) } else { None },
        "pc_id": pc, "exit_code": code, "stdout": out, "stderr": err,
        "started_at": at, "finished_at": at + Duration::seconds(2), "manifest_id": job,
    }))
    .unwrap()
}

/// Publishes into a stream and waits for the broker's ack (retrying
/// until the backend has created the streams).
async fn js_publish(
    js: &async_nats::jetstream::Context,
    subject: String,
    value: &impl serde::Serialize,
) {
    let payload: Vec<u8> = serde_json::to_vec(value).unwrap();
    publish_raw(js, subject, payload).await;
}

fn ids(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"))
        .iter()
        .map(|r| r["result_id"].as_str().unwrap().to_string())
        .collect()
}

async fn all_ids(b: &Backend) -> Vec<String> {
    ids(&b.get("/api/results?limit=1000").await.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_flow_from_streams_to_the_api_and_survive_restart_and_wipe() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, "");
    let c = nats.client().await;
    let js = async_nats::jetstream::new(c.clone());
    let t = Utc::now() - Duration::minutes(30);

    // In flight first.
    js_publish(
        &js,
        "events.started.ex-r1.pc1".into(),
        &started("r1", "pc1", "inventory", t),
    )
    .await;
    let running = eventually("in-flight row", || async {
        let (_, body) = b.get("/api/results?status=running").await;
        (ids(&body) == vec!["r1"]).then_some(body)
    })
    .await;
    assert_eq!(running[0]["exit_code"], Value::Null);
    assert_eq!(running[0]["finished_at"], Value::Null);
    assert_eq!(running[0]["version"], "1.4.2");
    // No agent answers the live tail: the waiting shape.
    let (s, tail) = b.get("/api/results/r1/tail").await;
    assert_eq!(s, 200);
    assert_eq!(
        tail,
        serde_json::json!({"running": true, "live": false, "stdout": "", "stderr": "",
        "stdout_truncated": false, "stderr_truncated": false, "exit_code": null})
    );

    // Then finished, plus more runs; garbage in the stream blocks nothing.
    let long = "x".repeat(300);
    js_publish(
        &js,
        "results.req-r1".into(),
        &result(
            "r1",
            "pc1",
            Some("inventory"),
            0,
            "line one\nERROR: disk full\nline three",
            "",
            t,
        ),
    )
    .await;
    publish_raw(
        &js,
        "results.garbage".into(),
        b"{not an ExecResult".to_vec(),
    )
    .await;
    js_publish(
        &js,
        "results.req-r2".into(),
        &result(
            "r2",
            "pc2",
            None,
            1,
            &long,
            "boom",
            t + Duration::minutes(1),
        ),
    )
    .await;
    js_publish(
        &js,
        "results.req-r3".into(),
        &result(
            "r3",
            "pc2",
            Some("patch"),
            0,
            "fine",
            "",
            t + Duration::minutes(2),
        ),
    )
    .await;
    eventually("three finished rows", || async {
        let (_, body) = b.get("/api/results?status=running").await;
        (body.as_array()?.is_empty() && all_ids(&b).await.len() == 3).then_some(())
    })
    .await;

    assert_eq!(all_ids(&b).await, vec!["r3", "r2", "r1"], "started_at desc");
    assert_eq!(
        ids(&b.get("/api/results?status=success").await.1),
        vec!["r3", "r1"]
    );
    assert_eq!(
        ids(&b.get("/api/results?status=failure").await.1),
        vec!["r2"]
    );
    assert_eq!(ids(&b.get("/api/results?limit=1").await.1), vec!["r3"]);
    let since = (t + Duration::seconds(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        ids(&b.get(&format!("/api/results?since={since}")).await.1),
        vec!["r3", "r2"]
    );
    assert_eq!(
        ids(&b.get("/api/results?pc_id=%5Epc2%24").await.1),
        vec!["r3", "r2"]
    );
    assert_eq!(ids(&b.get("/api/results?job_id=inv").await.1), vec!["r1"]);
    assert_eq!(
        ids(&b.get("/api/results?exec_id=%5E%24").await.1),
        vec!["r2"],
        "NULL exec_id matches as \"\""
    );
    assert_eq!(
        ids(&b.get("/api/results?job_id=%5E%24").await.1),
        vec!["r2"],
        "NULL job_id matches as \"\""
    );
    assert_eq!(
        ids(&b.get("/api/results?stderr=%5Eboom%24").await.1),
        vec!["r2"]
    );
    let (_, ml) = b.get("/api/results?stdout=(%3Fm)%5EERROR%3A.*%24").await;
    assert_eq!(ids(&ml), vec!["r1"], "multiline stdout regex");
    assert_eq!(ml[0]["stdout_match"]["matched"], "ERROR: disk full");
    assert_eq!(ml[0]["stdout_match"]["before"], "line one\n");

    let (s, bad) = b.get("/api/results?stdout=(unclosed").await;
    assert_eq!(s, 400);
    assert!(
        bad["error"].as_str().unwrap().contains("(unclosed"),
        "{bad}"
    );
    let (s, _) = b.get("/api/results?status=done").await;
    assert_eq!(s, 400);

    let (_, r2_list) = b.get("/api/results?status=failure").await;
    assert_eq!(r2_list[0]["stdout"].as_str().unwrap().len(), 200);
    assert_eq!(r2_list[0]["stdout_truncated"], true);
    let (s, r2) = b.get("/api/results/r2").await;
    assert_eq!(s, 200);
    assert_eq!(
        r2["stdout"].as_str().unwrap().len(),
        300,
        "detail carries the whole output"
    );
    let (_, r1) = b.get("/api/results/r1").await;
    assert_eq!(r1["version"], "1.4.2", "kept from events.started");
    assert_eq!(r1["exit_code"], 0);
    let (s, _) = b.get("/api/results/nope").await;
    assert_eq!(s, 404);
    let (_, tail) = b.get("/api/results/r1/tail").await;
    assert_eq!(tail["running"], false);
    assert_eq!(tail["exit_code"], 0);
    assert!(tail["stdout"]
        .as_str()
        .unwrap()
        .contains("ERROR: disk full"));

    // Restart: resumes without duplicating; new messages still land.
    assert!(b.sigterm().success());
    let mut b = Backend::start(&nats.url, &data, "");
    js_publish(
        &js,
        "results.req-r4".into(),
        &result(
            "r4",
            "pc3",
            Some("patch"),
            0,
            "",
            "",
            t + Duration::minutes(3),
        ),
    )
    .await;
    eventually("r4 after restart", || async {
        (all_ids(&b).await.len() == 4).then_some(())
    })
    .await;
    assert_eq!(all_ids(&b).await, vec!["r4", "r3", "r2", "r1"]);
    let before = b.get("/api/results?limit=1000").await.1;

    // Wipe the data directory: the streams replay into the same rows.
    assert!(b.sigterm().success());
    std::fs::remove_dir_all(&data).unwrap();
    let b = Backend::start(&nats.url, &data, "");
    eventually("replayed rows", || async {
        (all_ids(&b).await.len() == 4).then_some(())
    })
    .await;
    let after = b.get("/api/results?limit=1000").await.1;
    assert_eq!(ids(&after), ids(&before));
    assert_eq!(after[3]["version"], "1.4.2");
    assert_eq!(after[3]["stdout"], before[3]["stdout"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tail_asks_the_agent() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let c = nats.client().await;
    let js = async_nats::jetstream::new(c.clone());
    // A stand-in agent answering job.tail for pc9.
    let mut sub = c.subscribe("job.tail.pc9").await.unwrap();
    let agent = c.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let reply = JobTailReply {
                found: true,
                running: true,
                stdout: "50% done".into(),
                stderr: String::new(),
                stdout_truncated: false,
                stderr_truncated: false,
            };
            if let Some(inbox) = msg.reply {
                agent
                    .publish(inbox, serde_json::to_vec(&reply).unwrap().into())
                    .await
                    .unwrap();
            }
        }
    });
    js_publish(
        &js,
        "events.started.ex-r9.pc9".into(),
        &started("r9", "pc9", "scan", Utc::now()),
    )
    .await;
    eventually("in-flight r9", || async {
        (b.get("/api/results/r9").await.0 == 200).then_some(())
    })
    .await;
    let (_, tail) = b.get("/api/results/r9/tail").await;
    assert_eq!(tail["live"], true, "{tail}");
    assert_eq!(tail["running"], true);
    assert_eq!(tail["stdout"], "50% done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_runs_are_reaped_and_a_late_result_still_finishes_them() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(
        &nats.url,
        &dir.path().join("data"),
        "\n[housekeeping]\ninterval_secs = 1\n",
    );
    let js = async_nats::jetstream::new(nats.client().await);
    let long_ago = Utc::now() - Duration::hours(25);
    js_publish(
        &js,
        "events.started.ex-old.pc1".into(),
        &started("old", "pc1", "scan", long_ago),
    )
    .await;
    js_publish(
        &js,
        "events.started.ex-new.pc1".into(),
        &started("new", "pc1", "scan", Utc::now()),
    )
    .await;
    let reaped = eventually("reaped", || async {
        let (_, r) = b.get("/api/results/old").await;
        (r["exit_code"] == -1).then_some(r)
    })
    .await;
    assert!(
        reaped["stderr"]
            .as_str()
            .unwrap()
            .contains("no ExecResult within 24h"),
        "{reaped}"
    );
    assert!(reaped["finished_at"].is_string());
    assert_eq!(
        b.get("/api/results/new").await.1["finished_at"],
        Value::Null,
        "recent runs stay in flight"
    );
    js_publish(
        &js,
        "results.req-old".into(),
        &result("old", "pc1", Some("scan"), 0, "late but real", "", long_ago),
    )
    .await;
    let finished = eventually("late result", || async {
        let (_, r) = b.get("/api/results/old").await;
        (r["exit_code"] == 0).then_some(r)
    })
    .await;
    assert_eq!(finished["stdout"], "late but real");
    assert_eq!(finished["stderr"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_count_against_their_execution() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Executions are written by the control plane; seed one in the real
    // redb file before the backend opens it.
    {
        std::fs::create_dir_all(&data).unwrap();
        let store = kanade_storage::RelationalStore::open(&data).unwrap();
        store
            .insert_execution(&kanade_storage::ExecutionRecord {
                exec_id: "ex-fan".into(),
                job_id: "patch".into(),
                version: "2.0.0".into(),
                initiated_by: "alice".into(),
                initiated_at: Utc::now() - Duration::minutes(5),
                target_count: 2,
                status: "pending".into(),
                ..Default::default()
            })
            .unwrap();
    }
    let b = Backend::start(&nats.url, &data, "");
    let js = async_nats::jetstream::new(nats.client().await);
    let t = Utc::now() - Duration::minutes(4);
    let mut ok = result("fan-1", "pc1", Some("patch"), 0, "", "", t);
    ok.exec_id = Some("ex-fan".into());
    let mut bad = result("fan-2", "pc2", Some("patch"), 2, "", "", t);
    bad.exec_id = Some("ex-fan".into());
    js_publish(&js, "results.req-fan-1".into(), &ok).await;
    js_publish(&js, "results.req-fan-2".into(), &bad).await;
    let detail = eventually("execution completed", || async {
        let (_, d) = b.get("/api/executions/ex-fan").await;
        (d["execution"]["status"] == "completed").then_some(d)
    })
    .await;
    assert_eq!(detail["execution"]["success_count"], 1);
    assert_eq!(detail["execution"]["failure_count"], 1);
    assert_eq!(detail["results"].as_array().unwrap().len(), 2);
    let (_, list) = b.get("/api/executions?job_id=patch&status=completed").await;
    assert_eq!(list[0]["exec_id"], "ex-fan");
    assert_eq!(
        b.get("/api/executions?status=pending").await.1,
        Value::Array(vec![])
    );
    assert_eq!(b.get("/api/executions/nope").await.0, 404);
}

/// A regex filter over large outputs runs off the async workers: `/health`
/// and other requests answer while it scans, and it stops at its budget
/// with a 503 naming what to narrow. Oversized patterns are a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_regex_scan_neither_stalls_others_nor_runs_forever() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start_configured(
        &nats.url,
        &dir.path().join("data"),
        "scan_budget_secs = 2",
        "",
        &[],
    );
    let js = async_nats::jetstream::new(nats.client().await);
    // ~900 KB of non-ASCII words per output: Unicode word boundaries keep
    // the regex engine off its fast paths.
    let words = ["café", "naïve", "Zürich", "東京", "façade", "über"];
    let mut out = String::new();
    let mut i = 0usize;
    while out.len() < 900_000 {
        out.push_str(words[i % words.len()]);
        out.push(if i.is_multiple_of(13) { '\n' } else { ' ' });
        i += 1;
    }
    const RESULTS: usize = 24;
    let t = Utc::now() - Duration::hours(1);
    for n in 0..RESULTS {
        let id = format!("big-{n:02}");
        let r = result(
            &id,
            "PC-1",
            Some("inv"),
            0,
            &out,
            "",
            t + Duration::seconds(n as i64),
        );
        js_publish(&js, format!("results.{id}"), &r).await;
    }
    eventually("every large result stored", || async {
        (all_ids(&b).await.len() == RESULTS).then_some(())
    })
    .await;

    let slow = "(?:\\b\\w+\\b\\W+){8}\\d{12}";
    let client = reqwest::Client::new();
    let url = format!(
        "{}/api/results?stdout={}&limit=5",
        b.base,
        slow.replace('\\', "%5C")
            .replace('+', "%2B")
            .replace('{', "%7B")
            .replace('}', "%7D")
    );
    // As many scans as the machine has cores (and one more), so that
    // scans on the async workers would leave none for anything else.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let scans: Vec<_> = (0..=cores)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let r = client
                    .get(url)
                    .bearer_auth(crate::common::TOKEN)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    // Other requests are answered while the scans run.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for path in ["/health", "/api/results/big-00"] {
        let (status, _) = b.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            scans.iter().all(|s| !s.is_finished()),
            "{path} answered only after a scan finished"
        );
    }
    assert_eq!(scans.len(), cores + 1);
    for scan in scans {
        let (status, body) = scan.await.unwrap();
        assert_eq!(status, 503, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("scan_budget_secs") && error.contains("since"),
            "{error}"
        );
    }

    // Patterns past the size limits are refused before anything runs.
    let long = "a".repeat(1_001);
    let (status, body) = b.get(&format!("/api/results?stdout={long}")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`stdout`"),
        "{body}"
    );
    let (status, body) = b.get("/api/results?pc_id=%5Cw%7B500%7D%5Cw%7B500%7D").await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("`pc_id`") && error.contains("limit"),
        "{error}"
    );
    // A cheap filter over the same rows still answers.
    let (status, body) = b.get("/api/results?stdout=Z%C3%BCrich&limit=3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body).len(), 3);
}
