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
    assert_eq!(jobs[0]["pc_count"], 2, "PCs with facts: {jobs}");

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

/// The 0.101 dashboard's fleet table: typed column sorts (empty and
/// wrong-kind cells last both ways, ties by PC), filters (text checklists
/// without regard to case, numbers as SQLite writes them, a table by its
/// length), candidates per column, and the page around them.
#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_table_sorts_filters_and_lists_candidates_as_0101_does() {
    use crate::common::{publish_json, urlencode};
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let job = json!({
        "id": "hw", "version": "1",
        "execute": {"shell": "powershell", "script": "Get-Hardware", "timeout": "1m"},
        "inventory": {"display": [
            {"field": "os", "label": "OS"},
            {"field": "n", "label": "N", "type": "number"},
            {"field": "apps", "label": "Apps", "type": "table"},
            {"field": "seen", "label": "Seen", "type": "timestamp"},
        ]},
    });
    let (status, body) = eventually("jobs KV ready", || async {
        let r = call(&b, Method::POST, "/api/jobs", Some(job.clone())).await;
        (r.0 != 503).then_some(r)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    let js = async_nats::jetstream::new(nats.client().await);
    let t = Utc::now() - Duration::hours(1);
    let facts = [
        (
            "a",
            json!({"os": "Windows 11", "n": 10, "apps": [1, 2, 3], "seen": "2026-01-02 00:00:00"}),
        ),
        (
            "b",
            json!({"os": "windows 11", "n": 2, "apps": [], "seen": "2026-01-01T01:00:00+02:00"}),
        ),
        ("c", json!({"os": "Ubuntu", "apps": "none"})),
        (
            "d",
            json!({"os": "macOS", "n": "invalid", "seen": "yesterday"}),
        ),
        ("e", json!({"n": 2.0, "apps": [1], "seen": "2026-01-01"})),
    ];
    for (i, (pc, f)) in facts.iter().enumerate() {
        let id = format!("t{i}");
        js_publish_bytes(
            &js,
            format!("results.q-{id}"),
            result(&id, &format!("PC-{pc}"), "hw", 0, &f.to_string(), t),
        )
        .await;
    }
    let c = nats.client().await;
    let hb: kanade_shared::wire::Heartbeat = serde_json::from_value(json!({
        "pc_id": "PC-a", "at": Utc::now(), "agent_version": "0.101.0", "hostname": "pc-a",
        "os_family": "windows", "last_logon_user": "CORP\\ann", "last_logon_display_name": "Ann",
    }))
    .unwrap();
    let table = |state: Value, extra: &'static str| {
        let b = &b;
        async move {
            let (status, body) = call(
                b,
                Method::GET,
                &format!(
                    "/api/inventory/by-job/hw?table={}{extra}",
                    urlencode(&state.to_string())
                ),
                None,
            )
            .await;
            assert_eq!(status, 200, "{state}{extra}: {body}");
            body
        }
    };
    eventually("five PCs and a logon", || async {
        publish_json(&c, "heartbeat.PC-a".to_string(), &hb).await;
        let page = table(json!({}), "").await;
        (page["total"] == 5 && page["rows"][0]["@account_user"] == "CORP\\ann").then_some(())
    })
    .await;

    let page = table(json!({}), "").await;
    assert_eq!(page["manifest_id"], "hw");
    assert_eq!(page["display"][1]["type"], "number");
    assert_eq!(page["summary"], Value::Null);
    assert_eq!((&page["limit"], &page["offset"]), (&json!(100), &json!(0)));
    assert_eq!(page["rows"][0]["last_logon_display_name"], "Ann");
    assert_eq!(page["rows"][0]["facts"]["n"], 10);
    let sorted = |id: &'static str, dir: &'static str| {
        let table = &table;
        async move {
            let page = table(json!({"sort": {"id": id, "dir": dir}}), "").await;
            pcs(&page)
                .iter()
                .map(|p| p.trim_start_matches("PC-"))
                .collect::<String>()
        }
    };
    assert_eq!(
        sorted("f:n", "asc").await,
        "beacd",
        "numbers; empty and wrong kind last"
    );
    assert_eq!(
        sorted("f:n", "desc").await,
        "abecd",
        "still last descending; ties by PC"
    );
    assert_eq!(
        sorted("f:apps", "asc").await,
        "beacd",
        "a table by its length"
    );
    assert_eq!(
        sorted("f:seen", "asc").await,
        "beacd",
        "times by instant, offsets honoured"
    );
    assert_eq!(
        sorted("f:os", "asc").await,
        "dcabe",
        "text without regard to case"
    );
    assert_eq!(sorted("lastLogon", "asc").await, "abcde");

    let filtered = |state: Value| {
        let table = &table;
        async move {
            let page = table(state, "").await;
            pcs(&page)
                .iter()
                .map(|p| p.trim_start_matches("PC-"))
                .collect::<String>()
        }
    };
    assert_eq!(
        filtered(json!({"filters": {"f:os": {"values": ["WINDOWS 11"]}}})).await,
        "ab"
    );
    assert_eq!(
        filtered(
            json!({"filters": {"f:os": {"contains": " dow", "values": ["windows 11", null]}}})
        )
        .await,
        "ab"
    );
    assert_eq!(
        filtered(json!({"filters": {"f:os": {"values": [null]}}})).await,
        "e"
    );
    assert_eq!(
        filtered(json!({"filters": {"f:n": {"values": ["2.0"]}}})).await,
        "be"
    );
    assert_eq!(
        filtered(json!({"filters": {"f:n": {"values": [null]}}})).await,
        "cd",
        "wrong kind is empty"
    );
    assert_eq!(
        filtered(json!({"filters": {"f:apps": {"values": ["3", "0"]}}})).await,
        "ab"
    );
    assert_eq!(
        filtered(json!({"filters": {"lastLogon": {"contains": "ann"}}})).await,
        "a"
    );
    assert_eq!(
        filtered(json!({"filters": {"pcId": {"values": ["pc-c"]}}})).await,
        "c"
    );

    let paged = table(
        json!({"sort": {"id": "f:n", "dir": "asc"}}),
        "&format=page&limit=2&offset=1&q=pc",
    )
    .await;
    assert_eq!(
        (pcs(&paged), &paged["total"]),
        (vec!["PC-e", "PC-a"], &json!(5))
    );

    let os = table(
        json!({"filters": {"f:os": {"values": ["Ubuntu"]}}}),
        "&distinct=f:os",
    )
    .await;
    assert_eq!(
        os,
        json!({"values": [
            {"value": "macOS", "count": 1},
            {"value": "Ubuntu", "count": 1},
            {"value": "Windows 11", "count": 2},
            {"value": null, "count": 1},
        ], "overflow": false}),
        "its own filter left out; case variants one value"
    );
    let n = table(
        json!({"filters": {"f:os": {"contains": "win"}}}),
        "&distinct=f:n",
    )
    .await;
    assert_eq!(
        n,
        json!({"values": [{"value": "10.0", "count": 1}, {"value": "2.0", "count": 1}], "overflow": false})
    );

    for (query, status, needle) in [
        (
            "table=%7B%22filters%22%3A%7B%22f%3Anope%22%3A%7B%7D%7D%7D",
            400,
            "unknown table column",
        ),
        ("distinct=meta:site", 400, "unknown metadata column"),
        (
            "table=%7B%22sort%22%3A%7B%22id%22%3A%22pcId%22%7D%7D",
            400,
            "invalid table state",
        ),
        ("table=%7B%7D&limit=x", 400, "limit"),
    ] {
        let (s, body) = call(
            &b,
            Method::GET,
            &format!("/api/inventory/by-job/hw?{query}"),
            None,
        )
        .await;
        assert_eq!(s, status, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{query}: {body}"
        );
    }
    let (s, body) = call(
        &b,
        Method::GET,
        "/api/inventory/by-job/nope?table=%7B%7D",
        None,
    )
    .await;
    assert_eq!(s, 404, "{body}");

    // The scalar search: first its plain form (the fields but tables,
    // booleans as 1 / 0, legacy filters), then the dashboard's page.
    let scalars = |query: String| {
        let b = &b;
        async move {
            let (s, body) = call(
                b,
                Method::GET,
                &format!("/api/inventory/hw/search-scalars?{query}"),
                None,
            )
            .await;
            assert_eq!(s, 200, "{query}: {body}");
            body
        }
    };
    let plain = scalars("n__ge=2&limit=2".into()).await;
    assert_eq!(
        plain
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["pc_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["PC-a", "PC-b"]
    );
    let row = &plain[0];
    assert_eq!(
        (&row["os"], &row["n"], &row["seen"]),
        (
            &json!("Windows 11"),
            &json!(10),
            &json!("2026-01-02 00:00:00")
        )
    );
    assert!(row.get("apps").is_none(), "a table is no scalar: {row}");
    assert_eq!(row["@account_user"], "CORP\\ann");
    let ids = |v: &Value| -> String {
        v.as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|r| {
                r["pc_id"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("PC-")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(ids(&scalars("os__contains=WIN".into()).await), "ab");
    assert_eq!(
        ids(&scalars("os=windows%2011".into()).await),
        "ab",
        "text eq without regard to case"
    );
    assert_eq!(ids(&scalars("n__lt=5".into()).await), "be");
    assert_eq!(ids(&scalars("pc_id__suffix=C".into()).await), "c");
    assert_eq!(
        ids(&scalars("seen__gt=2026-01-01T12:00:00Z".into()).await),
        "a"
    );
    let page = scalars(format!(
        "format=page&limit=1&table={}",
        urlencode(&json!({"sort": {"id": "f:n", "dir": "desc"}}).to_string())
    ))
    .await;
    assert_eq!(
        (ids(&page["rows"]), &page["total"]),
        ("a".to_string(), &json!(5))
    );
    let os = scalars(format!("distinct=f:os&n__ge=2&table={}", urlencode("{}"))).await;
    assert_eq!(
        os,
        json!({"values": [{"value": "Windows 11", "count": 2}, {"value": null, "count": 1}], "overflow": false})
    );
    for (query, needle) in [
        ("bogus=1", "unknown table column"),
        ("os__like=x", "unknown filter operator"),
        ("n__gt=lots", "number"),
        ("seen__gt=soon", "time"),
        (
            "table=%7B%22filters%22%3A%7B%22f%3Aapps%22%3A%7B%7D%7D%7D",
            "unknown table column",
        ),
    ] {
        let (s, body) = call(
            &b,
            Method::GET,
            &format!("/api/inventory/hw/search-scalars?{query}"),
            None,
        )
        .await;
        assert_eq!(s, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{query}: {body}"
        );
    }
}
