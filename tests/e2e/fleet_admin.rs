//! Fleet administration end to end: agent config at each level and the
//! effective config, concurrent edits (one 409), group membership, run /
//! ping / logs answered by a stand-in agent (and 504s when nobody
//! answers), checks, notifications and their acks. Real nats-server, the
//! real binary, real HTTP.

use std::time::Duration;

use crate::common::{eventually, js_publish_bytes, stand_in_agent, Backend, Nats, TOKEN};
use chrono::Utc;
use futures::StreamExt;
use kanade_shared::wire::Command;
use reqwest::Method;
use serde_json::{json, Value};

/// A request with the service token (or `token`), optional JSON body and
/// extra headers: (status, headers, body).
async fn req(
    b: &Backend,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", b.base))
        .bearer_auth(TOKEN);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(body) = body {
        r = r.json(&body);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, h, v)
}

fn etag(h: &reqwest::header::HeaderMap) -> String {
    h.get("etag").unwrap().to_str().unwrap().to_string()
}

fn error_of(v: &Value) -> String {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error in {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn config_groups_and_agent_requests() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    stand_in_agent(&nats, "PC-1").await;

    // Config at each level, with revisions.
    let (status, h, global) = eventually("agent_config ready", || async {
        let r = req(&b, Method::GET, "/api/config", None, &[]).await;
        (r.0 == 200).then_some(r)
    })
    .await;
    assert_eq!((status, global), (200, json!({})));
    assert_eq!(etag(&h), "\"0\"");
    let (status, h, body) = req(
        &b,
        Method::PUT,
        "/api/config",
        Some(json!({"heartbeat_interval": "20s", "target_version": "0.43.56"})),
        &[("if-match", "\"0\"")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let rev = etag(&h);
    // Two operators edit the same revision: one wins, one gets a 409.
    let (a, _, _) = req(
        &b,
        Method::PUT,
        "/api/config",
        Some(json!({"heartbeat_interval": "25s"})),
        &[("if-match", &rev)],
    )
    .await;
    let (second, _, conflict) = req(
        &b,
        Method::PUT,
        "/api/config",
        Some(json!({"heartbeat_interval": "30s"})),
        &[("if-match", &rev)],
    )
    .await;
    assert_eq!((a, second), (200, 409), "{conflict}");
    assert!(error_of(&conflict).contains("revision"), "{conflict}");
    assert_eq!(
        req(&b, Method::GET, "/api/config", None, &[]).await.2,
        json!({"heartbeat_interval": "25s"})
    );
    // Bad values and unknown keys are named.
    for (body, needle) in [
        (json!({"heartbeat_interval": "often"}), "heartbeat_interval"),
        (json!({"heartbeat_intervall": "5s"}), "heartbeat_intervall"),
    ] {
        let (status, _, err) = req(&b, Method::PUT, "/api/config", Some(body), &[]).await;
        assert_eq!(status, 400);
        assert!(error_of(&err).contains(needle), "{err}");
    }
    let (status, _, _) = req(
        &b,
        Method::PUT,
        "/api/groups/canary/config",
        Some(json!({"target_version": "0.44.0"})),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = req(
        &b,
        Method::PUT,
        "/api/groups/wave1/config",
        Some(json!({"target_version": "0.44.1", "host_perf_interval": "30s"})),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = req(
        &b,
        Method::PUT,
        "/api/pcs/PC-1/config",
        Some(json!({"heartbeat_interval": "5s"})),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, err) = req(
        &b,
        Method::PUT,
        "/api/groups/a.b/config",
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_of(&err).contains("group"));

    // Membership: add, replace, remove.
    let (_, _, g) = req(
        &b,
        Method::POST,
        "/api/agents/PC-1/groups",
        Some(json!({"group": "wave1"})),
        &[],
    )
    .await;
    assert_eq!(g, json!({"groups": ["wave1"]}));
    let (_, _, g) = req(
        &b,
        Method::POST,
        "/api/agents/PC-1/groups",
        Some(json!({"group": "canary"})),
        &[],
    )
    .await;
    assert_eq!(g, json!({"groups": ["canary", "wave1"]}));
    let (status, _, err) = req(
        &b,
        Method::POST,
        "/api/agents/PC-1/groups",
        Some(json!({"group": " "})),
        &[],
    )
    .await;
    assert_eq!(status, 400, "{err}");
    let (_, _, eff) = req(
        &b,
        Method::GET,
        "/api/agents/PC-1/effective_config",
        None,
        &[],
    )
    .await;
    assert_eq!(eff["effective"]["target_version"], "0.44.1", "{eff}");
    assert_eq!(eff["effective"]["heartbeat_interval"], "5s");
    assert_eq!(eff["effective"]["host_perf_interval"], "30s");
    assert_eq!(eff["effective"]["target_version_jitter"], "10m");
    assert_eq!(eff["sources"]["target_version"], "group:wave1");
    assert_eq!(eff["sources"]["heartbeat_interval"], "pc");
    assert_eq!(eff["sources"]["target_version_jitter"], "default");
    assert_eq!(eff["warnings"].as_array().unwrap().len(), 1, "{eff}");
    let (_, _, groups) = req(&b, Method::GET, "/api/groups", None, &[]).await;
    assert_eq!(
        groups,
        json!({"groups": [
            {"name": "canary", "members": ["PC-1"], "has_config": true, "emails": []},
            {"name": "wave1", "members": ["PC-1"], "has_config": true, "emails": []},
        ]})
    );
    let (status, h, _) = req(&b, Method::GET, "/api/agents/PC-1/groups", None, &[]).await;
    assert_eq!(status, 200);
    let (status, _, g) = req(
        &b,
        Method::PUT,
        "/api/agents/PC-1/groups",
        Some(json!({"groups": ["wave2", "canary", "wave2"]})),
        &[("if-match", &etag(&h))],
    )
    .await;
    assert_eq!((status, g), (200, json!({"groups": ["canary", "wave2"]})));
    let (_, _, g) = req(
        &b,
        Method::DELETE,
        "/api/agents/PC-1/groups/canary",
        None,
        &[],
    )
    .await;
    assert_eq!(g, json!({"groups": ["wave2"]}));
    assert_eq!(
        req(&b, Method::DELETE, "/api/groups/canary/config", None, &[])
            .await
            .0,
        204
    );
    assert_eq!(
        req(&b, Method::GET, "/api/groups/canary/config", None, &[])
            .await
            .2,
        json!({})
    );

    // Run, ping and logs answered by the agent; 504 when nobody answers.
    let (status, _, result) = req(
        &b,
        Method::POST,
        "/api/run",
        Some(json!({"pc_id": "PC-1", "script": "hostname", "timeout_secs": 5})),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        (result["stdout"].as_str(), result["exit_code"].as_i64()),
        (Some("ran: hostname"), Some(0))
    );
    let (status, _, pong) = req(&b, Method::POST, "/api/agents/PC-1/ping", None, &[]).await;
    assert_eq!(
        (status, pong["heartbeat"]["pc_id"].as_str()),
        (200, Some("PC-1")),
        "{pong}"
    );
    let (status, h, text) = req(&b, Method::GET, "/api/agents/PC-1/logs?tail=3", None, &[]).await;
    assert_eq!(
        (status, text),
        (200, Value::String("line 1\nline 2\nline 3\n".into()))
    );
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for (method, path, body) in [
        (Method::POST, "/api/agents/PC-GONE/ping?wait_secs=1", None),
        (Method::GET, "/api/agents/PC-GONE/logs", None),
        (
            Method::POST,
            "/api/run",
            Some(json!({"pc_id": "PC-GONE", "script": "hostname", "timeout_secs": 1})),
        ),
    ] {
        let (status, _, err) = req(&b, method, path, body, &[]).await;
        assert_eq!(status, 504, "{path}: {err}");
        assert!(error_of(&err).contains("PC-GONE"), "{err}");
    }
    let (status, _, err) = req(
        &b,
        Method::POST,
        "/api/run",
        Some(json!({"pc_id": "PC-1", "script": "x", "shell": "bash"})),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_of(&err).contains("shell"));

    // Every mutation is audited.
    let actions = eventually("mutations audited", || async {
        let (_, audit) = b.get("/api/audit?limit=200").await;
        let actions: Vec<String> = audit
            .as_array()?
            .iter()
            .filter_map(|a| a["action"].as_str().map(String::from))
            .collect();
        actions.contains(&"run".to_string()).then_some(actions)
    })
    .await;
    for a in [
        "config_set",
        "config_clear",
        "group_add",
        "group_remove",
        "groups_set",
        "run",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_and_notifications() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let client = nats.client().await;
    let mut delivered = client.subscribe("notifications.>").await.unwrap();
    client.flush().await.unwrap();

    // A notification to a group and a PC.
    let body = json!({"priority": "warn", "title": "Reboot tonight", "body": "at 22:00", "require_ack": true,
                      "target": {"groups": ["eng"], "pcs": ["PC-1"]}});
    let (status, _, sent) = eventually("NOTIFICATIONS ready", || async {
        let r = req(
            &b,
            Method::POST,
            "/api/notifications",
            Some(body.clone()),
            &[],
        )
        .await;
        (r.0 == 200).then_some(r)
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        sent["subjects"],
        json!(["notifications.group.eng", "notifications.pc.PC-1"])
    );
    let id = sent["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(30), delivered.next())
            .await
            .unwrap()
            .unwrap();
        assert!(m.subject.starts_with("notifications."));
    }
    for (body, needle) in [
        (
            json!({"priority": "info", "title": "t", "body": "b", "target": {}}),
            "target",
        ),
        (
            json!({"priority": "info", "title": " ", "body": "b", "target": {"all": true}}),
            "title",
        ),
        (
            json!({"priority": "loud", "title": "t", "body": "b", "target": {"all": true}}),
            "priority",
        ),
        (
            json!({"priority": "info", "title": "t", "body": "b", "target": {"all": true}, "expires_at": "2020-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let (status, _, err) = req(&b, Method::POST, "/api/notifications", Some(body), &[]).await;
        assert_eq!(status, 400, "{err}");
        assert!(error_of(&err).contains(needle), "{err}");
    }
    let (_, _, history) = req(&b, Method::GET, "/api/notifications", None, &[]).await;
    let history = history.as_array().unwrap().clone();
    assert_eq!(history.len(), 1, "one entry per id: {history:?}");
    assert_eq!(
        (history[0]["id"].as_str(), history[0]["title"].as_str()),
        (Some(id.as_str()), Some("Reboot tonight"))
    );

    // An ack from an agent, projected from EVENTS.
    let js = async_nats::jetstream::new(client.clone());
    let ack = json!({"notification_id": id, "pc_id": "PC-1", "user_sid": "S-1-5-21-1", "acked_at": Utc::now()});
    js_publish_bytes(
        &js,
        format!("events.notifications.acked.PC-1.S-1-5-21-1.{id}"),
        ack.to_string().into_bytes(),
    )
    .await;
    let acks = eventually("ack projected", || async {
        let (_, _, s) = req(
            &b,
            Method::GET,
            &format!("/api/notifications/{id}/ack_status"),
            None,
            &[],
        )
        .await;
        (s["acks"].as_array()?.len() == 1).then_some(s)
    })
    .await;
    assert_eq!(acks["acks"][0]["pc_id"], "PC-1");

    // Checks from results of a job that declares one.
    let manifest = json!({"id": "bitlocker-check", "version": "1",
        "execute": {"shell": "powershell", "script": "manage-bde -status", "timeout": "1m"},
        "check": {"name": "bitlocker", "fleet": true}});
    assert_eq!(
        req(&b, Method::POST, "/api/jobs", Some(manifest), &[])
            .await
            .0,
        200
    );
    let now = Utc::now();
    for (pc, status) in [
        ("PC-1", "ok"),
        ("PC-2", "fail"),
        ("PC-3", "warn"),
        ("PC-4", "ok"),
    ] {
        let result = json!({"result_id": format!("c-{pc}"), "request_id": format!("q-{pc}"),
            "pc_id": pc, "exit_code": 0, "stdout": json!({"status": status, "detail": format!("{pc} {status}")}).to_string(),
            "stderr": "", "started_at": now, "finished_at": now, "manifest_id": "bitlocker-check"});
        js_publish_bytes(
            &js,
            format!("results.q-{pc}"),
            result.to_string().into_bytes(),
        )
        .await;
    }
    let checks = eventually("check states projected", || async {
        let (_, _, c) = req(&b, Method::GET, "/api/checks", None, &[]).await;
        (c["counts"].as_array()?.len() == 1 && c["counts"][0]["ok"] == 2).then_some(c)
    })
    .await;
    assert_eq!(
        checks["counts"],
        json!([{"check_name": "bitlocker", "ok": 2, "warn": 1, "fail": 1, "unknown": 0}])
    );
    let pcs: Vec<&str> = checks["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pc_id"].as_str().unwrap())
        .collect();
    assert_eq!(pcs, ["PC-2", "PC-3"], "ok rows left out by default");
    let (_, _, all) = req(
        &b,
        Method::GET,
        "/api/checks?check=bitlocker&include_ok=true",
        None,
        &[],
    )
    .await;
    assert_eq!(all["rows"].as_array().unwrap().len(), 4);
    let (_, _, none) = req(&b, Method::GET, "/api/checks?check=defender", None, &[]).await;
    assert_eq!(none, json!({"counts": [], "rows": []}));
    let (status, _, err) = req(&b, Method::GET, "/api/checks?include_ok=maybe", None, &[]).await;
    assert_eq!(status, 400);
    assert!(error_of(&err).contains("include_ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_input_is_a_json_error_and_the_server_stays_up() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let long = "x".repeat(60_000);
    let cases: Vec<(Method, String, u16)> = vec![
        (Method::GET, "/api/perf/top?window=1000000y".into(), 400),
        (Method::GET, "/api/perf/top?window=-5m".into(), 400),
        (
            Method::GET,
            "/api/agents/PC-1/perf?from=0001-01-01T00:00:00Z".into(),
            400,
        ),
        (
            Method::GET,
            "/api/perf/fleet?to=9999-12-31T23:59:59-23:00".into(),
            400,
        ),
        (
            Method::GET,
            "/api/health/scan_durations?since=0001-01-01T00:00:00Z".into(),
            400,
        ),
        (Method::GET, "/api/jobs/%FF/yaml".into(), 400),
        (Method::GET, format!("/api/schedules/{long}/preview"), 400),
        (
            Method::GET,
            "/api/schedules/s/preview?count=99999999999999999999".into(),
            400,
        ),
        (
            Method::POST,
            "/api/agents/PC-1/ping?wait_secs=soon".into(),
            400,
        ),
        (Method::DELETE, "/api/jobs".into(), 405),
        (Method::PATCH, "/api/freeze".into(), 405),
    ];
    assert_eq!(cases.len(), 11);
    for (method, path, want) in cases {
        let (status, headers, body) = req(&b, method.clone(), &path, None, &[]).await;
        let shown = &path[..path.len().min(80)];
        assert_eq!(status, want, "{method} {shown}: {body}");
        assert!(
            body["error"].is_string(),
            "{method} {shown}: not a JSON error: {body}"
        );
        if want == 405 {
            assert!(
                headers.contains_key("allow"),
                "{method} {shown}: no Allow header"
            );
        }
    }
    assert_eq!(b.get("/health").await, (200, Value::String("ok".into())));
}

#[tokio::test(flavor = "multi_thread")]
async fn offloaded_output_is_stored_like_inline_output() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let js = async_nats::jetstream::new(nats.client().await);
    let store = eventually("result_output store", || {
        let js = js.clone();
        async move { js.get_object_store("result_output").await.ok() }
    })
    .await;
    // 300 KiB of stdout, past the agent's inline threshold.
    let big: String = (0..30_000).map(|i| format!("line {i:05}\n")).collect();
    store
        .put("req-big/stdout", &mut big.as_bytes())
        .await
        .unwrap();
    let now = Utc::now();
    let result = json!({"result_id": "big-1", "request_id": "req-big", "pc_id": "PC-1", "exit_code": 0,
        "stdout": "", "stderr": "", "stdout_object": "req-big/stdout", "stderr_object": "req-big/missing",
        "started_at": now, "finished_at": now});
    js_publish_bytes(
        &js,
        "results.req-big".into(),
        result.to_string().into_bytes(),
    )
    .await;
    let row = eventually("the result lands", || async {
        let (status, row) = b.get("/api/results/big-1").await;
        (status == 200).then_some(row)
    })
    .await;
    let stdout = row["stdout"].as_str().unwrap_or_else(|| panic!("{row}"));
    assert_eq!(stdout.len(), big.len());
    assert!(stdout == big, "stdout read back whole");
    let stderr = row["stderr"].as_str().unwrap();
    assert!(
        stderr.contains("result_output/req-big/missing"),
        "an unreadable object is named, not dropped: {stderr}"
    );
}

/// A `multipart/form-data` body with one field (`name`) holding `data`.
fn multipart(name: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "kanade-test-boundary-7d1f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub(crate) async fn upload(b: &Backend, path: &str, field: &str, data: &[u8]) -> (u16, Value) {
    let (ctype, body) = multipart(field, data);
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", b.base))
        .bearer_auth(TOKEN)
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `kanade agent publish` as the 0.101 CLI sends it: the declared
/// version, then the binary.
async fn upload_declared(b: &Backend, data: &[u8], version: &str) -> (u16, Value) {
    let boundary = "kanade-test-boundary-7d1f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n{version}\r\n"
    )
    .into_bytes();
    let (_, file) = multipart("file", data);
    body.extend_from_slice(&file);
    let resp = reqwest::Client::new()
        .post(format!("{}/api/agents/publish", b.base))
        .bearer_auth(TOKEN)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn packages_and_script_objects_stream_in_and_out() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (status, stored) = eventually("app_packages ready", || async {
        let r = upload(&b, "/api/app-packages/webex/2025.03", "file", &data).await;
        (r.0 != 503).then_some(r)
    })
    .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        (stored["name"].as_str(), stored["size"].as_u64()),
        (Some("webex"), Some(data.len() as u64))
    );
    let digest = stored["digest"].as_str().unwrap().to_string();
    let (_, _, list) = req(&b, Method::GET, "/api/app-packages", None, &[]).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        (list[0]["version"].as_str(), list[0]["digest"].as_str()),
        (Some("2025.03"), Some(digest.as_str()))
    );

    // Whole, ranged, and refused downloads.
    let get = |range: Option<&'static str>, if_match: Option<String>| {
        let mut r = reqwest::Client::new()
            .get(format!("{}/api/app-packages/webex/2025.03", b.base))
            .bearer_auth(TOKEN);
        if let Some(v) = range {
            r = r.header("range", v);
        }
        if let Some(v) = if_match {
            r = r.header("if-match", v);
        }
        r.send()
    };
    let whole = get(None, None).await.unwrap();
    assert_eq!(whole.status().as_u16(), 200);
    assert_eq!(
        whole.headers()["etag"].to_str().unwrap(),
        format!("\"{digest}\"")
    );
    assert_eq!(whole.bytes().await.unwrap().as_ref(), data.as_slice());
    let part = get(Some("bytes=1000-1999"), Some(format!("\"{digest}\"")))
        .await
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        format!("bytes 1000-1999/{}", data.len())
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), &data[1000..2000]);
    let bad = get(Some("bytes=9999999-"), None).await.unwrap();
    assert_eq!(bad.status().as_u16(), 416);
    assert_eq!(
        bad.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{}", data.len())
    );
    assert!(bad.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("Range"));
    assert_eq!(
        get(None, Some("\"SHA-256=other\"".into()))
            .await
            .unwrap()
            .status()
            .as_u16(),
        412
    );

    // Bad uploads: named, nothing replaced.
    for (path, field, body, code, needle) in [
        (
            "/api/app-packages/webex/2025.03",
            "file",
            &b""[..],
            400,
            "empty",
        ),
        (
            "/api/app-packages/webex/2025.03",
            "other",
            &b"x"[..],
            400,
            "file",
        ),
        (
            "/api/app-packages/we%22bex/1",
            "file",
            &b"x"[..],
            400,
            "name",
        ),
    ] {
        let (status, err) = upload(&b, path, field, body).await;
        assert_eq!(status, code, "{path}: {err}");
        assert!(error_of(&err).contains(needle), "{err}");
    }
    let over = vec![7u8; 5 << 20];
    let (status, err) = upload(&b, "/api/script-objects/inv/1", "file", &over).await;
    assert_eq!(status, 413, "{err}");
    let (_, _, list) = req(&b, Method::GET, "/api/app-packages", None, &[]).await;
    assert_eq!(
        list[0]["size"].as_u64(),
        Some(data.len() as u64),
        "still the first upload"
    );

    // A script object used by a job: exec sends its key and sha256.
    let script = b"Get-CimInstance Win32_OperatingSystem".to_vec();
    let (status, s) = upload(&b, "/api/script-objects/inv-os/3", "file", &script).await;
    assert_eq!(status, 200, "{s}");
    let job = json!({"id": "inv-os", "version": "3", "execute": {"shell": "powershell", "script_object": "inv-os/3", "timeout": "1m"}});
    assert_eq!(
        req(&b, Method::POST, "/api/jobs", Some(job), &[]).await.0,
        200
    );
    let client = nats.client().await;
    let mut commands = client.subscribe("commands.pc.PC-9").await.unwrap();
    client.flush().await.unwrap();
    let (status, _, exec) = req(
        &b,
        Method::POST,
        "/api/exec/inv-os",
        Some(json!({"target": {"pcs": ["PC-9"]}})),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{exec}");
    let msg = tokio::time::timeout(Duration::from_secs(5), commands.next())
        .await
        .unwrap()
        .unwrap();
    let cmd: Command = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(
        (cmd.script.as_str(), cmd.script_object.as_deref()),
        ("", Some("inv-os/3"))
    );
    let sha = cmd.script_object_sha256.unwrap();
    assert_eq!(sha.len(), 64);
    use base64::Engine;
    let b64 = s["digest"].as_str().unwrap().trim_start_matches("SHA-256=");
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(b64)
        .unwrap();
    assert_eq!(
        sha,
        raw.iter().map(|x| format!("{x:02x}")).collect::<String>()
    );

    // Delete: 204, then 404.
    assert_eq!(
        req(
            &b,
            Method::DELETE,
            "/api/app-packages/webex/2025.03",
            None,
            &[]
        )
        .await
        .0,
        204
    );
    assert_eq!(
        req(
            &b,
            Method::GET,
            "/api/app-packages/webex/2025.03",
            None,
            &[]
        )
        .await
        .0,
        404
    );
    assert_eq!(
        req(
            &b,
            Method::DELETE,
            "/api/app-packages/webex/2025.03",
            None,
            &[]
        )
        .await
        .0,
        404
    );
    assert_eq!(
        req(&b, Method::GET, "/api/app-packages", None, &[]).await.2,
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_releases_publish_rollout_and_guarded_delete() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let exe = crate::common::agent_binary::windows("1.4.2");
    let (status, published) = eventually("agent_releases ready", || async {
        let r = upload(&b, "/api/agents/publish", "file", &exe).await;
        (r.0 != 503).then_some(r)
    })
    .await;
    assert_eq!(status, 200, "{published}");
    assert_eq!(
        (published["version"].as_str(), published["size"].as_u64()),
        (Some("1.4.2"), Some(exe.len() as u64)),
        "named by the binary's own release metadata"
    );
    assert_eq!(
        (published["key"].as_str(), published["platform"].as_str()),
        (Some("1.4.2"), Some("windows-x86_64")),
        "{published}"
    );
    let newer = crate::common::agent_binary::windows("1.5.0");
    assert_eq!(
        upload(&b, "/api/agents/publish", "file", &newer).await.0,
        200
    );
    let (_, _, list) = req(&b, Method::GET, "/api/agents/releases", None, &[]).await;
    let versions: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.5.0", "1.4.2"], "newest first: {list}");
    assert!(list[0]["digest"].as_str().unwrap().starts_with("SHA-256="));

    // What is not an agent binary is refused, naming the field.
    for (field, body, code) in [
        ("file", &b"#!/bin/sh\necho not a PE\n"[..], 400),
        ("file", &b""[..], 400),
        ("binary", &exe[..], 400),
    ] {
        let (status, err) = upload(&b, "/api/agents/publish", field, body).await;
        assert_eq!(status, code, "{err}");
        assert!(error_of(&err).contains("file"), "{err}");
    }
    // Linux and macOS builds are releases too, under their platform keys,
    // and the version the CLI declares must be the binary's own.
    for (exe, key, platform) in [
        (
            crate::common::agent_binary::linux("2.0.0"),
            "2.0.0-linux-x86_64",
            "linux-x86_64",
        ),
        (
            crate::common::agent_binary::macos("2.0.0"),
            "2.0.0-macos-aarch64",
            "macos-aarch64",
        ),
    ] {
        let (status, out) = upload_declared(&b, &exe, "v2.0.0").await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(
            (
                out["key"].as_str(),
                out["platform"].as_str(),
                out["version"].as_str()
            ),
            (Some(key), Some(platform), Some("2.0.0"))
        );
    }
    let (status, err) =
        upload_declared(&b, &crate::common::agent_binary::linux("2.0.1"), "2.0.2").await;
    assert_eq!(status, 400, "{err}");
    assert!(error_of(&err).contains("2.0.2"), "{err}");
    let (_, _, list) = req(&b, Method::GET, "/api/agents/releases", None, &[]).await;
    let platforms: std::collections::BTreeSet<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["platform"].as_str().unwrap())
        .collect();
    assert_eq!(
        platforms,
        ["linux-x86_64", "macos-aarch64", "windows"].into(),
        "{list}"
    );
    // A version only Linux and macOS builds carry rolls out by its base.
    let body = json!({"version": "2.0.0", "scope": {"type": "pc", "value": "PC-LINUX"}});
    let (status, _, out) = req(&b, Method::POST, "/api/agents/rollout", Some(body), &[]).await;
    assert_eq!(status, 200, "{out}");
    for key in ["2.0.0-linux-x86_64", "2.0.0-macos-aarch64"] {
        let path = format!("/api/agents/releases/{key}");
        assert_eq!(
            req(&b, Method::DELETE, &path, None, &[]).await.0,
            409,
            "{key} is targeted"
        );
    }
    let body = json!({"version": "1.4.2", "scope": {"type": "pc", "value": "PC-LINUX"}});
    assert_eq!(
        req(&b, Method::POST, "/api/agents/rollout", Some(body), &[])
            .await
            .0,
        200
    );
    for key in ["2.0.0-linux-x86_64", "2.0.0-macos-aarch64"] {
        let path = format!("/api/agents/releases/{key}");
        assert_eq!(
            req(&b, Method::DELETE, &path, None, &[]).await.0,
            204,
            "{key}"
        );
    }

    let over = vec![0u8; (64 << 20) + 1];
    let (status, err) = upload(&b, "/api/agents/publish", "file", &over).await;
    assert_eq!(status, 413, "{err}");

    // A scope's config edit and a rollout of the same scope both survive.
    let (_, h, _) = req(&b, Method::GET, "/api/config", None, &[]).await;
    let rev = etag(&h);
    let put = json!({"heartbeat_interval": "20s"});
    let (status, _, _) = req(
        &b,
        Method::PUT,
        "/api/config",
        Some(put),
        &[("if-match", &rev)],
    )
    .await;
    assert_eq!(status, 200);
    let body = json!({"version": "1.4.2", "scope": {"type": "global"}, "jitter": "10m"});
    let (status, _, out) = req(&b, Method::POST, "/api/agents/rollout", Some(body), &[]).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        (out["scope_key"].as_str(), out["scope_label"].as_str()),
        (Some("global"), Some("global"))
    );
    let (_, _, global) = req(&b, Method::GET, "/api/config", None, &[]).await;
    assert_eq!(
        (
            global["target_version"].as_str(),
            global["target_version_jitter"].as_str(),
            global["heartbeat_interval"].as_str()
        ),
        (Some("1.4.2"), Some("10m"), Some("20s")),
        "the rollout kept the other fields: {global}"
    );
    let body = json!({"version": "1.5.0", "scope": {"type": "group", "value": "canary"}});
    let (status, _, out) = req(&b, Method::POST, "/api/agents/rollout", Some(body), &[]).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["scope_label"], "group:canary");
    let (_, _, eff) = req(
        &b,
        Method::GET,
        "/api/agents/PC-01/effective_config",
        None,
        &[],
    )
    .await;
    assert_eq!(
        eff["effective"]["target_version"], "1.4.2",
        "PC-01 is not in canary: {eff}"
    );
    let (status, _, _) = req(
        &b,
        Method::POST,
        "/api/agents/PC-01/groups",
        Some(json!({"group": "canary"})),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, eff) = req(
        &b,
        Method::GET,
        "/api/agents/PC-01/effective_config",
        None,
        &[],
    )
    .await;
    assert_eq!(eff["effective"]["target_version"], "1.5.0", "{eff}");
    assert_eq!(eff["sources"]["target_version"], "group:canary", "{eff}");

    // Bad rollouts: each named, nothing written.
    for (body, code, needle) in [
        (
            json!({"version": "9.9.9", "scope": {"type": "global"}}),
            404,
            "9.9.9",
        ),
        (
            json!({"version": "1.5.0", "scope": {"type": "global"}, "jitter": "soon"}),
            400,
            "jitter",
        ),
        (
            json!({"version": "1.5.0", "scope": {"type": "group", "value": "a.b"}}),
            400,
            "scope.value",
        ),
        (
            json!({"version": "1.5.0", "scope": {"type": "fleet"}}),
            400,
            "scope",
        ),
        (
            json!({"version": "1.5.0", "scope": {"type": "global"}, "jiter": "5m"}),
            400,
            "jiter",
        ),
    ] {
        let (status, _, err) = req(
            &b,
            Method::POST,
            "/api/agents/rollout",
            Some(body.clone()),
            &[],
        )
        .await;
        assert_eq!(status, code, "{body}: {err}");
        assert!(error_of(&err).contains(needle), "{body}: {err}");
    }
    let (_, _, global) = req(&b, Method::GET, "/api/config", None, &[]).await;
    assert_eq!(global["target_version"], "1.4.2");

    // Delete is refused while targeted, naming the scope; allowed after.
    let (status, _, err) = req(&b, Method::DELETE, "/api/agents/releases/1.5.0", None, &[]).await;
    assert_eq!(status, 409, "{err}");
    assert!(error_of(&err).contains("group:canary"), "{err}");
    let body = json!({"version": "1.4.2", "scope": {"type": "group", "value": "canary"}});
    assert_eq!(
        req(&b, Method::POST, "/api/agents/rollout", Some(body), &[])
            .await
            .0,
        200
    );
    let (status, _, _) = req(&b, Method::DELETE, "/api/agents/releases/1.5.0", None, &[]).await;
    assert_eq!(status, 204);
    let (status, _, err) = req(&b, Method::DELETE, "/api/agents/releases/1.5.0", None, &[]).await;
    assert_eq!(status, 404, "{err}");
    let (_, _, list) = req(&b, Method::GET, "/api/agents/releases", None, &[]).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["version"], "1.4.2");

    // The stored bytes are the binary, as an agent fetching it sees them.
    let js = async_nats::jetstream::new(nats.client().await);
    let store = js.get_object_store("agent_releases").await.unwrap();
    let mut object = store.get("1.4.2").await.unwrap();
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
        .await
        .unwrap();
    assert!(bytes == exe, "the release holds the uploaded binary");

    // Audited.
    eventually("release mutations audited", || async {
        let (_, audit) = b.get("/api/audit?limit=100").await;
        let actions: Vec<String> = audit
            .as_array()?
            .iter()
            .filter_map(|e| e["action"].as_str().map(String::from))
            .collect();
        ["agent_publish", "agent_rollout", "agent_release_delete"]
            .iter()
            .all(|a| actions.iter().any(|x| x == a))
            .then_some(())
    })
    .await;
}

/// A 96 MiB package goes in and comes back out (whole and ranged) while
/// the backend's resident set grows by far less than the package: the
/// bytes stream through, they are never held whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_package_streams_through_in_bounded_memory() {
    const SIZE: usize = 96 << 20;
    /// What the backend may grow by while one passes through.
    const BOUND: u64 = 16 << 20;
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let data: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    // Warm the route (and the store) with a small upload first.
    let (status, _) = eventually("app_packages ready", || async {
        let r = upload(&b, "/api/app-packages/warm/1", "file", b"x").await;
        (r.0 != 503).then_some(r)
    })
    .await;
    assert_eq!(status, 200);
    let (before, _) = b.rss();
    b.reset_peak_rss();
    let (status, stored) = upload(&b, "/api/app-packages/big/1", "file", &data).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["size"].as_u64(), Some(SIZE as u64));
    let (_, upload_peak) = b.rss();
    b.reset_peak_rss();
    let client = reqwest::Client::new();
    let whole = client
        .get(format!("{}/api/app-packages/big/1", b.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status().as_u16(), 200);
    let mut seen = 0usize;
    let mut same = true;
    let mut whole = whole;
    while let Some(chunk) = whole.chunk().await.unwrap() {
        same &= chunk[..] == data[seen..seen + chunk.len()];
        seen += chunk.len();
    }
    assert_eq!(seen, SIZE);
    assert!(same, "the download is the upload");
    let tail = client
        .get(format!("{}/api/app-packages/big/1", b.base))
        .bearer_auth(TOKEN)
        .header("range", format!("bytes={}-", SIZE - 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status().as_u16(), 206);
    assert!(tail.bytes().await.unwrap()[..] == data[SIZE - 1000..]);
    let (_, download_peak) = b.rss();
    println!(
        "rss before {before} B; peak while uploading {upload_peak} B, while downloading {download_peak} B; package {SIZE} B"
    );
    for (what, peak) in [("upload", upload_peak), ("download", download_peak)] {
        let growth = peak.saturating_sub(before);
        assert!(
            growth < BOUND,
            "the {what} grew the backend by {growth} bytes for a {SIZE}-byte package"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_gets_403_on_every_fleet_mutation() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let viewer = crate::common::viewer_token(&b).await;
    let reads = [
        "/api/config",
        "/api/groups",
        "/api/agents/releases",
        "/api/app-packages",
        "/api/script-objects",
        "/api/checks",
    ];
    for path in reads {
        let (status, _, body) = b.call(Method::GET, path, Some(&viewer), None).await;
        assert!(status == 200 || status == 503, "{path}: {status} {body}");
    }
    let mutations: [(Method, &str); 18] = [
        (Method::PUT, "/api/config"),
        (Method::PUT, "/api/groups/canary/config"),
        (Method::DELETE, "/api/groups/canary/config"),
        (Method::PUT, "/api/pcs/PC-01/config"),
        (Method::DELETE, "/api/pcs/PC-01/config"),
        (Method::PUT, "/api/agents/PC-01/groups"),
        (Method::POST, "/api/agents/PC-01/groups"),
        (Method::DELETE, "/api/agents/PC-01/groups/canary"),
        (Method::POST, "/api/run"),
        (Method::POST, "/api/agents/PC-01/ping"),
        (Method::POST, "/api/notifications"),
        (Method::POST, "/api/agents/publish"),
        (Method::DELETE, "/api/agents/releases/1.0.0"),
        (Method::POST, "/api/agents/rollout"),
        (Method::POST, "/api/app-packages/webex/1"),
        (Method::DELETE, "/api/app-packages/webex/1"),
        (Method::POST, "/api/script-objects/inv/1"),
        (Method::DELETE, "/api/script-objects/inv/1"),
    ];
    for (m, path) in mutations {
        let (status, _, body) = b
            .call(m.clone(), path, Some(&viewer), Some(json!({})))
            .await;
        assert_eq!(status, 403, "{m} {path}: {body}");
        assert!(error_of(&body).contains("operator role required"), "{body}");
    }
}

/// Every query parameter of the read API, given each absurd value: huge,
/// negative, zero, past f64, invalid UTF-8, 60 KB. The answer is a
/// success or a JSON 400 naming the parameter (never a 5xx or a dropped
/// connection), and the server keeps answering.
#[tokio::test(flavor = "multi_thread")]
async fn a_corpus_of_absurd_parameters_never_breaks_the_api() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let endpoints: [(&str, &[&str]); 18] = [
        ("/api/agents", &["q", "status", "limit", "offset"]),
        ("/api/agents/PC-1/perf", &["from", "to", "step"]),
        (
            "/api/agents/PC-1/processes/timeline",
            &["metric", "from", "to", "step", "top"],
        ),
        ("/api/perf/fleet", &["metric", "agg", "from", "to", "step"]),
        ("/api/perf/top", &["metric", "window", "limit"]),
        ("/api/health/scan_durations", &["since"]),
        (
            "/api/results",
            &["limit", "since", "status", "pc_id", "job_id", "stdout"],
        ),
        (
            "/api/audit",
            &["limit", "since", "actor", "action", "payload"],
        ),
        ("/api/executions", &["limit", "job_id", "status"]),
        (
            "/api/obs_events",
            &["pc_id", "from", "to", "kind", "kinds", "payload_key"],
        ),
        ("/api/checks", &["check", "include_ok"]),
        ("/api/export/host_perf", &["from", "to", "pc_id"]),
        ("/api/schedules/s/preview", &["count"]),
        ("/api/agents/PC-1/logs", &["tail"]),
        ("/api/inventory/by-job/inv", &["limit", "offset", "q"]),
        (
            "/api/inventory/inv/history/pc/PC-1",
            &["field", "since", "limit"],
        ),
        (
            "/api/inventory/inv/history/search",
            &["kind", "since", "until", "field", "limit", "offset"],
        ),
        (
            "/api/inventory/inv/history/first_seen",
            &["since", "field", "limit", "offset"],
        ),
    ];
    let long = "9".repeat(60_000);
    let values = [
        "99999999999999999999999999",
        "-1",
        "0",
        "1e309",
        "%FF%FE",
        "%00",
        long.as_str(),
    ];
    let mut asked = 0;
    for (path, params) in endpoints {
        for param in params {
            for value in values {
                let url = format!("{path}?{param}={value}");
                let (status, _, body) = req(&b, Method::GET, &url, None, &[]).await;
                let shown = &url[..url.len().min(90)];
                asked += 1;
                match status {
                    200 => assert!(
                        body.is_object()
                            || body.is_array()
                            || path.contains("export")
                            || path.ends_with("logs"),
                        "{shown}: {body}"
                    ),
                    400 => {
                        let e = error_of(&body);
                        assert!(
                            e.contains(param) || e.contains("query"),
                            "{shown}: the error does not name `{param}`: {e}"
                        );
                    }
                    // An absent agent, schedule or check: a JSON error too.
                    404 | 504 | 503 => {
                        error_of(&body);
                    }
                    other => panic!("{shown}: {other} {body}"),
                }
            }
        }
        assert_eq!(b.get("/health").await.0, 200, "after {path}");
    }
    assert_eq!(asked, 7 * (48 + 16));
}
