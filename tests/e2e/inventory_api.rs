//! Inventory facts end to end: an inventory job registered through the
//! API (so its manifest is in the real `jobs` KV), results published on
//! RESULTS, facts read back per job and per PC — and the same answers
//! after a wiped data directory replays the stream.

use crate::common::{eventually, js_publish_bytes, Backend, Nats, TOKEN};
use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};

const JOB: &str = "inventory-hw";

fn result(id: &str, pc: &str, job: &str, code: i32, stdout: &str, at: DateTime<Utc>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "result_id": id, "request_id": format!("q-{id}"), "exec_id": format!("x-{id}"),
        "pc_id": pc, "exit_code": code, "stdout": stdout, "stderr": "",
        "started_at": at - Duration::seconds(5), "finished_at": at, "manifest_id": job,
    }))
    .unwrap()
}

async fn call(b: &Backend, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, _, body) = b.call(method, path, Some(TOKEN), body).await;
    (status, body)
}

fn pcs(page: &Value) -> Vec<&str> {
    page["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|r| r["pc_id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn inventory_facts_per_job_and_pc_survive_a_replay() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let job = json!({
        "id": JOB, "version": "1.0.0", "description": "hardware",
        "execute": {"shell": "powershell", "script": "Get-Hardware | ConvertTo-Json", "timeout": "1m"},
        "inventory": {
            "display": [{"field": "hostname", "label": "Host"}, {"field": "ram_gb", "label": "RAM", "type": "number"}],
            "summary": [{"field": "hostname", "label": "Host"}],
        },
    });
    let (status, body) = eventually("jobs KV ready", || async {
        let r = call(&b, Method::POST, "/api/jobs", Some(job.clone())).await;
        (r.0 != 503).then_some(r)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    let plain = json!({
        "id": "plain", "version": "1",
        "execute": {"shell": "powershell", "script": "echo hi", "timeout": "1m"},
    });
    assert_eq!(
        call(&b, Method::POST, "/api/jobs", Some(plain)).await.0,
        200
    );

    let js = async_nats::jetstream::new(nats.client().await);
    let t = Utc::now() - Duration::hours(1);
    let runs = [
        (
            "r1",
            "PC-1",
            JOB,
            0,
            r#"{"hostname":"pc-1","ram_gb":16}"#,
            t,
        ),
        (
            "r2",
            "PC-2",
            JOB,
            0,
            r#"{"hostname":"pc-2","ram_gb":32}"#,
            t,
        ),
        // A failed run and a run with non-JSON output leave no facts.
        ("r3", "PC-3", JOB, 1, r#"{"hostname":"pc-3"}"#, t),
        ("r4", "PC-4", JOB, 0, "Get-Hardware: access denied", t),
        // Not an inventory job.
        ("r5", "PC-5", "plain", 0, r#"{"hostname":"pc-5"}"#, t),
        // PC-2 rescanned: its newer facts win.
        (
            "r6",
            "PC-2",
            JOB,
            0,
            r#"{"hostname":"pc-2","ram_gb":64}"#,
            t + Duration::minutes(30),
        ),
        // An older PC-1 scan published late (an agent's outbox drained)
        // does not replace the newer one.
        (
            "r7",
            "PC-1",
            JOB,
            0,
            r#"{"hostname":"pc-1","ram_gb":8}"#,
            t - Duration::days(2),
        ),
    ];
    for (id, pc, job, code, out, at) in runs {
        js_publish_bytes(
            &js,
            format!("results.q-{id}"),
            result(id, pc, job, code, out, at),
        )
        .await;
    }
    let expect = |b: &Backend| {
        let b = b.base.clone();
        async move {
            let backend = reqwest::Client::new();
            let get = |p: String| {
                let backend = backend.clone();
                let url = format!("{b}{p}");
                async move {
                    backend
                        .get(url)
                        .bearer_auth(TOKEN)
                        .send()
                        .await
                        .unwrap()
                        .json::<Value>()
                        .await
                        .unwrap()
                }
            };
            (
                get(format!("/api/inventory/by-job/{JOB}")).await,
                get("/api/inventory/PC-1".into()).await,
            )
        }
    };
    let (page, pc1) = eventually("all seven results projected", || async {
        let results = b.get("/api/results?limit=100").await.1.as_array()?.len();
        (results == 7).then_some(())?;
        Some(expect(&b).await)
    })
    .await;
    assert_eq!(pcs(&page), ["PC-1", "PC-2"], "{page}");
    assert_eq!(page["total"], 2);
    assert_eq!(
        page["rows"][0]["facts"]["ram_gb"], 16,
        "the older scan lost"
    );
    assert_eq!(page["rows"][1]["facts"]["ram_gb"], 64, "the newer scan won");
    assert_eq!(page["display"][1]["type"], "number");
    assert_eq!(page["summary"][0]["field"], "hostname");
    assert_eq!(
        (page["limit"].as_i64(), page["offset"].as_i64()),
        (Some(100), Some(0))
    );
    assert_eq!(pc1.as_array().unwrap().len(), 1, "{pc1}");
    assert_eq!(pc1[0]["job_id"], JOB);
    assert_eq!(pc1[0]["facts"]["hostname"], "pc-1");
    for pc in ["PC-3", "PC-4", "PC-5", "nobody"] {
        let (status, body) = call(&b, Method::GET, &format!("/api/inventory/{pc}"), None).await;
        assert_eq!(
            (status, body.as_array().map(Vec::len)),
            (200, Some(0)),
            "{pc}"
        );
    }

    // Filters and paging.
    let (_, found) = call(
        &b,
        Method::GET,
        &format!("/api/inventory/by-job/{JOB}?q=pc-2"),
        None,
    )
    .await;
    assert_eq!(
        (pcs(&found), found["total"].as_u64()),
        (vec!["PC-2"], Some(2 - 1))
    );
    let (_, second) = call(
        &b,
        Method::GET,
        &format!("/api/inventory/by-job/{JOB}?limit=1&offset=1"),
        None,
    )
    .await;
    assert_eq!(
        (pcs(&second), second["total"].as_u64()),
        (vec!["PC-2"], Some(2))
    );
    for (query, param) in [("limit=lots", "limit"), ("offset=-x", "offset")] {
        let (status, body) = call(
            &b,
            Method::GET,
            &format!("/api/inventory/by-job/{JOB}?{query}"),
            None,
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(param), "{body}");
    }
    let (status, jobs) = call(&b, Method::GET, "/api/inventory/jobs", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["manifest_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [JOB], "only inventory jobs: {jobs}");
    assert_eq!(jobs[0]["description"], "hardware");

    // A wiped data directory replays RESULTS into the same answers.
    let mut b = b;
    assert!(b.sigterm().success());
    let fresh = tempfile::tempdir().unwrap();
    let replayed = Backend::start(&nats.url, &fresh.path().join("data"), "");
    let again = eventually("the replay", || async {
        let r = expect(&replayed).await;
        (r.0["total"] == 2 && r.0["rows"][1]["facts"]["ram_gb"] == 64).then_some(r)
    })
    .await;
    assert_eq!(again.0["rows"], page["rows"]);
    assert_eq!(again.1[0]["facts"], pc1[0]["facts"]);
}
