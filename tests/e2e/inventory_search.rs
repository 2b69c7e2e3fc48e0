//! Exploded inventory rows and their history end to end: a manifest with
//! an explode spec registered through the API (the real `jobs` KV),
//! results published on RESULTS, the fleet-wide search with every
//! operator, CSV and Parquet downloads, the history routes, a spec that
//! changes between manifest versions, and a wiped data directory that
//! replays into the same answers.

use crate::common::{eventually, js_publish_bytes, Backend, Nats, TOKEN};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use reqwest::Method;
use serde_json::{json, Value};

const JOB: &str = "inv-sw";

fn manifest(version: &str, columns: Value) -> Value {
    json!({
        "id": JOB, "version": version, "description": "installed software",
        "execute": {"shell": "powershell", "script": "Get-Apps | ConvertTo-Json", "timeout": "1m"},
        "inventory": {
            "display": [{"field": "os", "label": "OS"}],
            "explode": [{
                "field": "apps", "table": "inventory_sw_apps", "primary_key": ["name"],
                "columns": columns, "track_history": true,
            }],
            "history_scalars": ["os"],
        },
    })
}

fn v1_columns() -> Value {
    json!([
        {"field": "name"}, {"field": "version", "type": "text"},
        {"field": "size_mb", "type": "integer", "index": true}, {"field": "rating", "type": "real"},
    ])
}

fn result(id: &str, pc: &str, stdout: &Value, at: DateTime<Utc>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "result_id": id, "request_id": format!("q-{id}"), "exec_id": format!("x-{id}"),
        "pc_id": pc, "exit_code": 0, "stdout": stdout.to_string(), "stderr": "",
        "started_at": at - Duration::seconds(5), "finished_at": at, "manifest_id": JOB,
    }))
    .unwrap()
}

async fn get(b: &Backend, path: &str) -> (u16, Value) {
    b.get(path).await
}

/// `(pc_id, name)` of each row of a search.
fn hits(rows: &Value) -> Vec<(String, String)> {
    rows.as_array()
        .unwrap_or_else(|| panic!("not a list: {rows}"))
        .iter()
        .map(|r| {
            (
                r["pc_id"].as_str().unwrap().to_string(),
                r["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn search(b: &Backend, query: &str) -> Vec<(String, String)> {
    let (status, rows) = get(b, &format!("/api/inventory/{JOB}/search/apps?{query}")).await;
    assert_eq!(status, 200, "{query}: {rows}");
    hits(&rows)
}

#[tokio::test(flavor = "multi_thread")]
async fn exploded_rows_search_export_history_and_replay() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let (status, body) = eventually("jobs KV ready", || async {
        let r = b
            .call(
                Method::POST,
                "/api/jobs",
                Some(TOKEN),
                Some(manifest("1", v1_columns())),
            )
            .await;
        (r.0 != 503).then_some((r.0, r.2))
    })
    .await;
    assert_eq!(status, 200, "{body}");

    let js = async_nats::jetstream::new(nats.client().await);
    let t = (Utc::now() - Duration::hours(2)).trunc_subsecs(0);
    let scans = [
        (
            "a1",
            "PC-1",
            json!({"os": "10", "apps": [
                {"name": "chrome", "version": "119", "size_mb": 9, "rating": 4.5},
                {"name": "firefox", "version": "121", "size_mb": 80, "rating": 4},
                {"name": "zoom", "version": "5.1", "size_mb": 300},
            ]}),
            t,
        ),
        (
            "a2",
            "PC-2",
            json!({"os": "11", "apps": [
                {"name": "chrome", "version": "99.0", "size_mb": "120", "rating": 3.9},
                {"name": "slack", "version": "4", "size_mb": 1000},
            ]}),
            t,
        ),
        (
            "a3",
            "PC-3",
            json!({"os": "11", "apps": [{"name": "Chrome Beta", "version": "122"}]}),
            t,
        ),
    ];
    for (id, pc, out, at) in &scans {
        js_publish_bytes(&js, format!("results.q-{id}"), result(id, pc, out, *at)).await;
    }
    eventually("three PCs exploded", || async {
        (search(&b, "").await.len() == 6).then_some(())
    })
    .await;

    // The exploded table in operator SQL, under its declared name (any
    // case), with the reference's columns: pc_id, job_id, collected_at,
    // the declared ones, typed.
    let sql = |q: &'static str| {
        let b = &b;
        async move {
            let (s, _, v) = b
                .call(
                    Method::POST,
                    "/api/query",
                    Some(TOKEN),
                    Some(json!({"sql": q})),
                )
                .await;
            (s, v)
        }
    };
    let (s, v) = sql("SELECT * FROM inventory_sw_apps WHERE pc_id = 'PC-2' ORDER BY name").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["columns"],
        json!([
            "pc_id",
            "job_id",
            "collected_at",
            "name",
            "version",
            "size_mb",
            "rating"
        ])
    );
    assert_eq!(v["rows"][0][1], JOB);
    assert_eq!(
        (
            &v["rows"][0][3],
            &v["rows"][0][5],
            &v["rows"][1][3],
            &v["rows"][1][5]
        ),
        (&json!("chrome"), &json!(120), &json!("slack"), &json!(1000))
    );
    let (s, v) = sql(
        "SELECT a.pc_id, count(*) AS n FROM Inventory_SW_Apps a JOIN agents g ON g.pc_id = a.pc_id \
         GROUP BY a.pc_id ORDER BY a.pc_id",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rows"], json!([]), "no heartbeats: no agents to join");
    let (s, v) = sql(
        "SELECT pc_id, count(*) AS n FROM Inventory_SW_Apps WHERE name LIKE 'CHROME%' \
         GROUP BY pc_id ORDER BY pc_id",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rows"], json!([["PC-1", 1], ["PC-2", 1], ["PC-3", 1]]));
    // The dashboard's table over exploded rows.
    let table = |query: String| {
        let b = &b;
        async move {
            let (s, v) = get(b, &format!("/api/inventory/{JOB}/search/apps?{query}")).await;
            assert_eq!(s, 200, "{query}: {v}");
            v
        }
    };
    let page = table(format!(
        "format=page&limit=2&table={}",
        crate::common::urlencode(&json!({"sort": {"id": "f:size_mb", "dir": "desc"}}).to_string())
    ))
    .await;
    assert_eq!(page["total"], 6);
    assert_eq!(
        hits(&page["rows"]),
        pairs(&[("PC-2", "slack"), ("PC-1", "zoom")])
    );
    assert!(page["rows"][0].get("@account_user").is_some(), "{page}");
    let chrome = table("name=CHROME&format=page".into()).await;
    assert_eq!(
        hits(&chrome["rows"]),
        pairs(&[("PC-1", "chrome"), ("PC-2", "chrome")]),
        "a text filter without regard to case, as the reference's table"
    );
    assert_eq!(
        search(&b, "offset=9223372036854775807").await,
        pairs(&[]),
        "an offset past every row, however large"
    );
    let names = table("distinct=f:name".into()).await;
    assert_eq!(
        names["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["value"].as_str().unwrap(), v["count"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("chrome", 2),
            ("Chrome Beta", 1),
            ("firefox", 1),
            ("slack", 1),
            ("zoom", 1)
        ]
    );

    let (s, v) = sql("SELECT * FROM inventory_hw_disks").await;
    assert_eq!(s, 400, "an undeclared table: {v}");
    assert!(
        v["error"].as_str().unwrap().contains("inventory_hw_disks"),
        "{v}"
    );

    // Every operator; text compares as text, numbers as numbers.
    let all = search(&b, "").await;
    let names: Vec<&str> = all.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "chrome",
            "firefox",
            "zoom",
            "chrome",
            "slack",
            "Chrome Beta"
        ],
        "by pc_id, then primary key"
    );
    let p = |v: &[(&str, &str)]| pairs(v);
    assert_eq!(
        search(&b, "name=chrome").await,
        p(&[("PC-1", "chrome"), ("PC-2", "chrome")])
    );
    assert_eq!(search(&b, "name__ne=chrome").await.len(), 4);
    assert_eq!(
        search(&b, "name__contains=HROM").await,
        p(&[
            ("PC-1", "chrome"),
            ("PC-2", "chrome"),
            ("PC-3", "Chrome Beta")
        ]),
        "contains ignores case"
    );
    assert_eq!(
        search(&b, "name__prefix=fire").await,
        p(&[("PC-1", "firefox")])
    );
    assert_eq!(
        search(&b, "name__suffix=ME").await,
        p(&[("PC-1", "chrome"), ("PC-2", "chrome")])
    );
    // "99.0" < "120" numerically but not as text: version is text.
    assert_eq!(
        search(&b, "version__lt=120").await,
        p(&[("PC-1", "chrome")])
    );
    // 9 < 10 numerically but "9" > "10" as text: size_mb is an integer
    // (PC-2's "120" was a string and still counts as the number 120).
    assert_eq!(search(&b, "size_mb__lt=10").await, p(&[("PC-1", "chrome")]));
    assert_eq!(
        search(&b, "size_mb__ge=120&size_mb__le=300").await,
        p(&[("PC-1", "zoom"), ("PC-2", "chrome")])
    );
    assert_eq!(
        search(&b, "size_mb__gt=299.5").await.len(),
        2,
        "a fraction against integers"
    );
    assert_eq!(
        search(&b, "rating__gt=3.95").await,
        p(&[("PC-1", "chrome"), ("PC-1", "firefox")])
    );
    assert_eq!(search(&b, "rating__eq=4").await, p(&[("PC-1", "firefox")]));
    assert_eq!(
        search(&b, "name__contains=o&size_mb__gt=50&limit=2&offset=1").await,
        p(&[("PC-1", "zoom"), ("PC-2", "chrome")]),
        "filters AND; paging after the order"
    );
    let (_, rows) = get(&b, &format!("/api/inventory/{JOB}/search/apps?name=zoom")).await;
    assert_eq!(rows[0]["size_mb"], 300);
    assert_eq!(rows[0]["rating"], Value::Null, "absent stays null, never 0");
    assert_eq!(rows[0]["version"], "5.1");
    assert!(
        rows[0]["collected_at"].as_str().unwrap().ends_with('Z'),
        "{rows}"
    );

    // Bad filters are 400s naming what was wrong; unknown things are 404s.
    for (query, named) in [
        ("name__like=x", "like"),
        ("colour=red", "colour"),
        ("size_mb__gt=big", "big"),
        ("limit=lots", "limit"),
        ("name__=x", "name__"),
    ] {
        let (status, body) = get(&b, &format!("/api/inventory/{JOB}/search/apps?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(error.contains(named), "{query}: {error}");
    }
    for path in [
        "/api/inventory/nope/search/apps".to_string(),
        format!("/api/inventory/{JOB}/search/drivers"),
    ] {
        let (status, body) = get(&b, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }

    // Downloads carry every matching row.
    let (status, headers, csv) = b
        .call(
            Method::GET,
            &format!("/api/inventory/{JOB}/search/apps/export?format=csv&name__contains=chrome"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("inventory_sw_apps.csv"));
    let csv = csv.as_str().unwrap().to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert_eq!(lines[0], "pc_id,collected_at,name,version,size_mb,rating");
    assert!(
        lines[3].starts_with("PC-3,") && lines[3].contains(",Chrome Beta,122,,"),
        "{csv}"
    );
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/inventory/{JOB}/search/apps/export?format=parquet",
            b.base
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    let reader = kanade_storage::parquet::file::reader::SerializedFileReader::new(bytes).unwrap();
    use kanade_storage::parquet::file::reader::FileReader;
    assert_eq!(reader.metadata().file_metadata().num_rows(), 6);
    let (status, body) = get(
        &b,
        &format!("/api/inventory/{JOB}/search/apps/export?format=xls"),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // History: the first scans add every element and the scalar once.
    let history = |pc: &'static str| {
        let b = &b;
        async move {
            let (status, rows) = get(b, &format!("/api/inventory/{JOB}/history/pc/{pc}")).await;
            assert_eq!(status, 200, "{rows}");
            rows.as_array().unwrap().clone()
        }
    };
    let first = eventually("PC-1's first history", || async {
        let h = history("PC-1").await;
        (h.len() == 4).then_some(h)
    })
    .await;
    let kinds = |h: &[Value]| -> Vec<(String, String, String)> {
        let mut k: Vec<_> = h
            .iter()
            .map(|e| {
                (
                    e["change_kind"].as_str().unwrap().to_string(),
                    e["field_path"].as_str().unwrap().to_string(),
                    e["identity_json"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        kinds(&first),
        [
            ("added".into(), "apps".into(), r#"{"name":"chrome"}"#.into()),
            (
                "added".into(),
                "apps".into(),
                r#"{"name":"firefox"}"#.into()
            ),
            ("added".into(), "apps".into(), r#"{"name":"zoom"}"#.into()),
            ("added".into(), "os".into(), String::new()),
        ]
    );
    assert_eq!(
        first[0]["observed_at"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
        Some(t),
        "observed when the run finished"
    );

    // An unchanged re-run, with the types drifting (numbers where text
    // was, an undeclared key), records nothing; then zoom goes, vlc
    // comes and firefox changes: one event each.
    let rerun = json!({"os": "10", "apps": [
        {"name": "chrome", "version": 119, "size_mb": 9.0, "rating": 4.5, "path": "C:/chrome"},
        {"name": "firefox", "version": "121", "size_mb": "80", "rating": 4.0},
        {"name": "zoom", "version": "5.1", "size_mb": 300},
    ]});
    let changed = json!({"os": "11", "apps": [
        {"name": "chrome", "version": "119", "size_mb": 9, "rating": 4.5},
        {"name": "firefox", "version": "122", "size_mb": 80, "rating": 4},
        {"name": "vlc", "version": "3", "size_mb": 40},
    ]});
    js_publish_bytes(
        &js,
        "results.q-b1".to_string(),
        result("b1", "PC-1", &rerun, t + Duration::minutes(10)),
    )
    .await;
    js_publish_bytes(
        &js,
        "results.q-b2".to_string(),
        result("b2", "PC-1", &changed, t + Duration::minutes(20)),
    )
    .await;
    // The same result redelivered adds nothing either.
    js_publish_bytes(
        &js,
        "results.q-b2".to_string(),
        result("b2", "PC-1", &changed, t + Duration::minutes(20)),
    )
    .await;
    let later = eventually("PC-1's rescans", || async {
        let h = history("PC-1").await;
        (h.len() >= 8).then_some(h)
    })
    .await;
    let newest: Vec<_> = later[..4].to_vec();
    assert_eq!(
        kinds(&newest),
        [
            ("added".into(), "apps".into(), r#"{"name":"vlc"}"#.into()),
            (
                "changed".into(),
                "apps".into(),
                r#"{"name":"firefox"}"#.into()
            ),
            ("changed".into(), "os".into(), String::new()),
            ("removed".into(), "apps".into(), r#"{"name":"zoom"}"#.into()),
        ]
    );
    // Settle: nothing else arrives.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        history("PC-1").await.len(),
        8,
        "exactly one event per change"
    );
    let firefox = newest
        .iter()
        .find(|e| e["change_kind"] == "changed" && e["field_path"] == "apps")
        .unwrap();
    let before: Value = serde_json::from_str(firefox["before_json"].as_str().unwrap()).unwrap();
    let after: Value = serde_json::from_str(firefox["after_json"].as_str().unwrap()).unwrap();
    assert_eq!(
        (before["version"].clone(), after["version"].clone()),
        (json!("121"), json!("122"))
    );
    assert_eq!(
        search(&b, "name=vlc").await,
        p(&[("PC-1", "vlc")]),
        "the search sees the rescan"
    );
    assert!(search(&b, "name=zoom").await.is_empty());

    // Fleet history and first-seen.
    let (_, removed) = get(
        &b,
        &format!("/api/inventory/{JOB}/history/search?kind=removed"),
    )
    .await;
    assert_eq!(kinds(removed.as_array().unwrap()).len(), 1, "{removed}");
    let (_, chrome) = get(
        &b,
        &format!("/api/inventory/{JOB}/history/first_seen?identity.name=chrome"),
    )
    .await;
    let seen: Vec<&str> = chrome
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pc_id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ["PC-1", "PC-2"], "{chrome}");
    let (_, since) = get(
        &b,
        &format!(
            "/api/inventory/{JOB}/history/search?field=apps&since={}",
            (t + Duration::minutes(15)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
    .await;
    assert_eq!(since.as_array().unwrap().len(), 3, "{since}");
    for (query, named) in [
        ("kind=gone", "kind"),
        ("since=yesterday", "since"),
        ("colour=1", "colour"),
        ("identity.=x", "identity"),
    ] {
        let (status, body) = get(&b, &format!("/api/inventory/{JOB}/history/search?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(named),
            "{query}: {body}"
        );
    }

    // A wiped data directory replays RESULTS into the same answers.
    let (_, all_before) = get(&b, &format!("/api/inventory/{JOB}/search/apps")).await;
    let (_, history_before) = get(&b, &format!("/api/inventory/{JOB}/history/search")).await;
    let mut b = b;
    assert!(b.sigterm().success());
    let fresh = tempfile::tempdir().unwrap();
    let replayed = Backend::start(&nats.url, &fresh.path().join("data"), "");
    let all_after = eventually("the replay", || async {
        let (status, rows) = get(&replayed, &format!("/api/inventory/{JOB}/search/apps")).await;
        (status == 200 && rows == all_before).then_some(rows)
    })
    .await;
    assert_eq!(all_after.as_array().unwrap().len(), 6);
    let (_, history_after) = get(&replayed, &format!("/api/inventory/{JOB}/history/search")).await;
    assert_eq!(history_after, history_before, "history replays identically");
    assert_eq!(history_after.as_array().unwrap().len(), 13);

    // Version 2 of the manifest adds a column and makes size_mb real: the
    // stored inventories answer in the new shape, no migration, no rerun.
    let v2 = json!([
        {"field": "name"}, {"field": "version"}, {"field": "size_mb", "type": "real"},
        {"field": "rating", "type": "real"}, {"field": "path"},
    ]);
    let (status, body, _) = {
        let r = replayed
            .call(
                Method::POST,
                "/api/jobs",
                Some(TOKEN),
                Some(manifest("2", v2)),
            )
            .await;
        (r.0, r.2, ())
    };
    assert_eq!(status, 200, "{body}");
    let rows = eventually("the new spec", || async {
        let (status, rows) = get(
            &replayed,
            &format!("/api/inventory/{JOB}/search/apps?name=chrome"),
        )
        .await;
        (status == 200 && rows[0].get("path").is_some()).then_some(rows)
    })
    .await;
    assert_eq!(rows[0]["size_mb"], 9.0);
    assert_eq!(
        rows[0]["path"],
        Value::Null,
        "PC-1's latest chrome has no path"
    );
    assert_eq!(
        search(&replayed, "size_mb__lt=9.5").await,
        p(&[("PC-1", "chrome")])
    );
}
