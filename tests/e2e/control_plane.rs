//! The control plane end to end: the `kanade` CLI's exact requests, exec
//! through a stand-in agent (subscribed to `commands.>`, answering with
//! real `ExecResult`s on RESULTS), the scheduler's fires, the freeze, the
//! leader lease between two backends, and rollout waves across a restart.
//! Real nats-server, the real binary, real HTTP.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{
    error_of, eventually, js_publish_bytes, json_body, publish_json, send, yaml, Backend, Nats,
    TOKEN,
};
use chrono::Utc;
use futures::StreamExt;
use kanade_shared::wire::Command;
use reqwest::Method;
use serde_json::{json, Value};

const JOB_YAML: &str = "id: inventory-hw\nversion: 1.4.2\ndescription: hardware inventory\nexecute:\n  shell: powershell\n  script: Get-CimInstance Win32_ComputerSystem\n  timeout: 5m\n";

/// Scheduler cadences for tests (appended to the config).
const FAST: &str = "[scheduler]\nreconcile_interval_secs = 1\nlease_ttl_secs = 3\n";

async fn heartbeat(client: &async_nats::Client, pc: &str) {
    publish_json(
        client,
        format!("heartbeat.{pc}"),
        &json!({"pc_id": pc, "at": Utc::now(), "agent_version": "0.43.56", "hostname": pc}),
    )
    .await;
}

/// A stand-in fleet: records every command per subject and, for the PCs
/// it plays, answers each with an `ExecResult` (exit code `code`).
#[derive(Clone, Default)]
struct Fleet {
    seen: Arc<Mutex<Vec<(String, Command)>>>,
}

impl Fleet {
    async fn start(nats: &Nats, members: BTreeMap<String, Vec<String>>, code: i32) -> Self {
        let fleet = Fleet::default();
        let client = nats.client().await;
        let mut sub = client.subscribe("commands.>").await.unwrap();
        client.flush().await.unwrap();
        let seen = Arc::clone(&fleet.seen);
        let js = async_nats::jetstream::new(client.clone());
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let subject = msg.subject.to_string();
                let Ok(cmd) = serde_json::from_slice::<Command>(&msg.payload) else {
                    continue;
                };
                seen.lock().unwrap().push((subject.clone(), cmd.clone()));
                let pcs: Vec<String> = match subject.strip_prefix("commands.") {
                    Some("all") => members.keys().cloned().collect(),
                    Some(rest) if rest.starts_with("pc.") => vec![rest[3..].to_string()]
                        .into_iter()
                        .filter(|p| members.contains_key(p))
                        .collect(),
                    Some(rest) if rest.starts_with("group.") => members
                        .iter()
                        .filter(|(_, g)| g.iter().any(|g| g == &rest[6..]))
                        .map(|(p, _)| p.clone())
                        .collect(),
                    _ => vec![],
                };
                for pc in pcs {
                    let now = Utc::now();
                    let exec_id = cmd.exec_id.clone().unwrap_or_default();
                    let started = json!({
                        "result_id": format!("{}-{pc}", cmd.request_id), "request_id": cmd.request_id,
                        "exec_id": exec_id, "pc_id": pc, "started_at": now,
                        "manifest_id": cmd.id, "version": cmd.version,
                    });
                    js_publish_bytes(
                        &js,
                        format!("events.started.{exec_id}.{pc}"),
                        serde_json::to_vec(&started).unwrap(),
                    )
                    .await;
                    let result = json!({
                        "result_id": format!("{}-{pc}", cmd.request_id), "request_id": cmd.request_id,
                        "exec_id": cmd.exec_id, "pc_id": pc, "exit_code": code,
                        "stdout": "ok", "stderr": "", "started_at": now, "finished_at": now,
                        "manifest_id": cmd.id,
                    });
                    js_publish_bytes(
                        &js,
                        format!("results.{}", cmd.request_id),
                        serde_json::to_vec(&result).unwrap(),
                    )
                    .await;
                }
            }
        });
        fleet
    }

    fn subjects(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn count(&self, subject: &str) -> usize {
        self.subjects().iter().filter(|s| *s == subject).count()
    }
}

fn members(pcs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pcs.iter()
        .map(|(p, g)| (p.to_string(), g.iter().map(|g| g.to_string()).collect()))
        .collect()
}

/// Registers [`JOB_YAML`] once the backend has its buckets.
async fn register_job(b: &Backend) {
    eventually("jobs bucket ready", || async {
        (send(b, Method::POST, "/api/jobs", TOKEN, yaml(JOB_YAML))
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
}

async fn create_schedule(b: &Backend, text: &str) {
    let (status, body) = send(b, Method::POST, "/api/schedules", TOKEN, yaml(text)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_calls_and_exec_drive_the_fleet() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start_with_env(
        &nats.url,
        &dir.path().join("data"),
        "",
        &[("KANADE_JWT_SECRET", "s3cret-s3cret-s3cret-s3cret-32b!")],
    );
    let client = nats.client().await;
    let fleet = Fleet::start(&nats, members(&[("PC-1", &["canary"]), ("PC-2", &[])]), 0).await;
    for pc in ["PC-1", "PC-2"] {
        heartbeat(&client, pc).await;
    }

    // job create / list / yaml, as the CLI sends them.
    let (status, body) = eventually("jobs bucket ready", || async {
        let r = send(&b, Method::POST, "/api/jobs", TOKEN, yaml(JOB_YAML)).await;
        (r.0 != 503 && r.0 != 502).then_some(r)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": "inventory-hw", "version": "1.4.2", "description": "hardware inventory", "inventory": false})
    );
    let (status, list) = send(&b, Method::GET, "/api/jobs", TOKEN, None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["live"], json!({"running": 0, "pending": 0}));
    assert_eq!(
        send(&b, Method::GET, "/api/jobs/inventory-hw/yaml", TOKEN, None)
            .await
            .1,
        Value::String(JOB_YAML.into())
    );

    // Bad input: JSON errors naming what was wrong.
    for (path, body, code, needle) in [
        ("/api/jobs", yaml("id: x\nversion: 1\nexecute: [\n"), 400, "YAML"),
        ("/api/jobs", yaml("id: x\nversion: '1'\nexecute: {shell: cmd, script: dir, timeout: 1m}\ncolour: red\n"), 400, "colour"),
        ("/api/jobs", yaml("id: x\nversion: '1'\nexecute: {shell: cmd, timeout: 1m}\n"), 400, "execute"),
        ("/api/jobs", yaml("id: 'a b'\nversion: '1'\nexecute: {shell: cmd, script: dir, timeout: 1m}\n"), 400, "`id`"),
        ("/api/schedules", yaml("id: s\njob_id: nope\nwhen: {per_pc: once}\ntarget: {all: true}\n"), 400, "job_id"),
        ("/api/schedules", yaml("id: s\njob_id: inventory-hw\nwhen: {calendar: {at: '25:99'}}\n"), 400, "when.at"),
        ("/api/exec/nope", json_body(json!({"target": {"all": true}})), 404, "nope"),
        ("/api/exec/inventory-hw", json_body(json!({"target": {}})), 400, "target"),
        ("/api/exec/inventory-hw", json_body(json!({"target": {"pcs": ["a.b"]}})), 400, "target.pcs"),
    ] {
        let (status, resp) = send(&b, Method::POST, path, TOKEN, body).await;
        assert_eq!(status, code, "{path}: {resp}");
        assert!(error_of(&resp).contains(needle), "{path}: {resp}");
    }

    // schedule create / list / preview / status / coverage.
    create_schedule(&b, "id: nightly\njob_id: inventory-hw\nwhen: {calendar: {at: '03:00'}}\ntz: utc\ntarget: {all: true}\nenabled: false\n").await;
    let (_, list) = send(&b, Method::GET, "/api/schedules", TOKEN, None).await;
    assert_eq!(list[0]["id"], "nightly");
    let (status, preview) = send(
        &b,
        Method::GET,
        "/api/schedules/nightly/preview?count=3",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    let fires = preview["fires"].as_array().unwrap();
    assert_eq!(fires.len(), 3);
    assert!(
        fires
            .iter()
            .all(|f| f.as_str().unwrap().ends_with("T03:00:00Z")),
        "{preview}"
    );
    assert_eq!(
        (preview["when"].as_str(), preview["tz"].as_str()),
        (Some("at 03:00"), Some("utc"))
    );
    let (_, status_body) = send(
        &b,
        Method::GET,
        "/api/schedules/nightly/status",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status_body["last_run"], Value::Null);
    assert_eq!(
        status_body["recent"],
        json!({"window_hours": 24, "ok": 0, "fail": 0})
    );

    // exec → commands on the right subject → results → completed.
    let (status, exec) = send(
        &b,
        Method::POST,
        "/api/exec/inventory-hw",
        TOKEN,
        json_body(json!({"target": {"groups": [], "pcs": ["PC-1"], "all": false}})),
    )
    .await;
    assert_eq!(status, 200, "{exec}");
    assert_eq!(exec["subjects"], json!(["commands.pc.PC-1"]));
    assert_eq!(exec["target_count"], 1);
    let exec_id = exec["exec_id"].as_str().unwrap().to_string();
    eventually("the execution completes", || async {
        let (_, e) = b.get(&format!("/api/executions/{exec_id}")).await;
        (e["execution"]["status"] == "completed").then_some(())
    })
    .await;
    let (_, e) = b.get(&format!("/api/executions/{exec_id}")).await;
    assert_eq!(
        (
            e["execution"]["success_count"].as_i64(),
            e["execution"]["initiated_by"].as_str()
        ),
        (Some(1), Some("operator"))
    );
    let cmd = fleet
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|(s, _)| s == "commands.pc.PC-1")
        .unwrap()
        .1
        .clone();
    assert_eq!(
        (cmd.id.as_str(), cmd.version.as_str(), cmd.timeout_secs),
        ("inventory-hw", "1.4.2", 300)
    );
    let (_, js) = eventually("script_current pinned", || async {
        let kv = async_nats::jetstream::new(client.clone())
            .get_key_value("script_current")
            .await
            .ok()?;
        kv.get("inventory-hw").await.ok()?.map(|v| ((), v))
    })
    .await;
    assert_eq!(&js[..], b"1.4.2");

    // Coverage after the run: PC-1 ok, PC-2 pending.
    let (_, cov) = send(
        &b,
        Method::GET,
        "/api/schedules/nightly/coverage",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(
        (
            cov["total"].as_u64(),
            cov["ok"].as_u64(),
            cov["pending"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{cov}"
    );
    assert_eq!(cov["agents"][0]["pc_id"], "PC-1");
    assert_eq!(cov["agents"][0]["version"], "1.4.2");
    let (_, all) = send(&b, Method::GET, "/api/schedules/coverage", TOKEN, None).await;
    assert_eq!(
        all,
        json!([{"id": "nightly", "total": 2, "ok": 1, "fail": 0, "running": 0, "pending": 1}])
    );
    let (_, st) = send(
        &b,
        Method::GET,
        "/api/schedules/nightly/status",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(
        (
            st["recent"]["ok"].as_u64(),
            st["last_run"]["pc_id"].as_str()
        ),
        (Some(1), Some("PC-1")),
        "{st}"
    );

    // kill publishes kill.<exec> for an execution still pending.
    let mut kills = client.subscribe("kill.>").await.unwrap();
    client.flush().await.unwrap();
    let (_, slow) = send(
        &b,
        Method::POST,
        "/api/exec/inventory-hw",
        TOKEN,
        json_body(json!({"target": {"pcs": ["PC-OFFLINE"]}})),
    )
    .await;
    let (status, _) = send(&b, Method::POST, "/api/jobs/inventory-hw/kill", TOKEN, None).await;
    assert_eq!(status, 204);
    let msg = tokio::time::timeout(Duration::from_secs(10), kills.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        msg.subject.as_str(),
        format!("kill.{}", slow["exec_id"].as_str().unwrap())
    );

    // Freeze set / status / clear.
    let (status, f) = send(
        &b,
        Method::PUT,
        "/api/freeze",
        TOKEN,
        json_body(json!({"reason": "quarter close", "tz": "utc"})),
    )
    .await;
    assert_eq!((status, f["reason"].as_str()), (200, Some("quarter close")));
    assert_eq!(
        send(&b, Method::GET, "/api/freeze", TOKEN, None).await.1["reason"],
        "quarter close"
    );
    let (status, bad) = send(
        &b,
        Method::PUT,
        "/api/freeze",
        TOKEN,
        json_body(json!({"from": "tomorrow"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_of(&bad).contains("freeze"), "{bad}");
    assert_eq!(
        send(&b, Method::DELETE, "/api/freeze", TOKEN, None).await.0,
        204
    );
    assert_eq!(
        send(&b, Method::GET, "/api/freeze", TOKEN, None).await.1,
        Value::Null
    );

    // Scripts: revoke / unrevoke / status.
    assert_eq!(
        send(
            &b,
            Method::POST,
            "/api/scripts/inventory-hw/revoke",
            TOKEN,
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        send(&b, Method::GET, "/api/scripts/status", TOKEN, None)
            .await
            .1["inventory-hw"],
        "REVOKED"
    );
    assert_eq!(
        send(
            &b,
            Method::POST,
            "/api/scripts/inventory-hw/unrevoke",
            TOKEN,
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        send(&b, Method::GET, "/api/scripts/status", TOKEN, None)
            .await
            .1["inventory-hw"],
        "ACTIVE"
    );
    let (status, schema) = send(&b, Method::GET, "/api/schemas/manifest.json", TOKEN, None).await;
    assert_eq!(status, 200);
    assert!(schema["properties"]["execute"].is_object(), "{schema}");

    // A viewer reads but gets 403 on every mutation.
    let viewer = crate::common::viewer_token(&b).await;
    assert_eq!(
        send(&b, Method::GET, "/api/jobs", &viewer, None).await.0,
        200
    );
    assert_eq!(
        send(
            &b,
            Method::GET,
            "/api/schedules/nightly/coverage",
            &viewer,
            None
        )
        .await
        .0,
        200
    );
    let mutations: [(Method, &str); 12] = [
        (Method::POST, "/api/jobs"),
        (Method::DELETE, "/api/jobs/inventory-hw"),
        (Method::POST, "/api/jobs/inventory-hw/kill"),
        (Method::POST, "/api/exec/inventory-hw"),
        (Method::POST, "/api/scripts/inventory-hw/revoke"),
        (Method::POST, "/api/scripts/inventory-hw/unrevoke"),
        (Method::POST, "/api/schedules"),
        (Method::DELETE, "/api/schedules/nightly"),
        (Method::POST, "/api/schedules/nightly/enable"),
        (
            Method::POST,
            "/api/schedules/nightly/disable?cascade=false&cascade_kill=false",
        ),
        (Method::PUT, "/api/freeze"),
        (Method::DELETE, "/api/freeze"),
    ];
    for (m, path) in mutations {
        let (status, body) = send(&b, m.clone(), path, &viewer, json_body(json!({}))).await;
        assert_eq!(status, 403, "{m} {path}: {body}");
        assert!(error_of(&body).contains("operator role required"), "{body}");
    }

    // job delete: 409 while the schedule uses it; schedule disable with
    // cascade revokes; schedule delete, then job delete.
    let (status, body) = send(&b, Method::DELETE, "/api/jobs/inventory-hw", TOKEN, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(error_of(&body).contains("nightly"));
    assert_eq!(
        send(
            &b,
            Method::POST,
            "/api/schedules/nightly/enable",
            TOKEN,
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        send(&b, Method::GET, "/api/schedules", TOKEN, None).await.1[0]["enabled"],
        true
    );
    assert_eq!(
        send(
            &b,
            Method::POST,
            "/api/schedules/nightly/disable?cascade=true&cascade_kill=false",
            TOKEN,
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        send(&b, Method::GET, "/api/scripts/status", TOKEN, None)
            .await
            .1["inventory-hw"],
        "REVOKED"
    );
    let (_, y) = send(&b, Method::GET, "/api/schedules/nightly/yaml", TOKEN, None).await;
    assert!(y.as_str().unwrap().contains("enabled: false"), "{y}");
    let (status, bad) = send(
        &b,
        Method::POST,
        "/api/schedules/nightly/disable?cascade=yes",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_of(&bad).contains("cascade"));
    assert_eq!(
        send(&b, Method::DELETE, "/api/schedules/nightly", TOKEN, None)
            .await
            .0,
        204
    );
    assert_eq!(
        send(
            &b,
            Method::GET,
            "/api/schedules/nightly/preview",
            TOKEN,
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        send(&b, Method::DELETE, "/api/jobs/inventory-hw", TOKEN, None)
            .await
            .0,
        204
    );
    assert_eq!(
        send(&b, Method::GET, "/api/jobs", TOKEN, None).await.1,
        json!([])
    );
    assert_eq!(
        send(&b, Method::GET, "/api/jobs/inventory-hw/yaml", TOKEN, None)
            .await
            .0,
        404
    );

    // Every mutation is in the audit log.
    let actions = eventually("mutations audited", || async {
        let (_, audit) = b.get("/api/audit?limit=200").await;
        let actions: Vec<String> = audit
            .as_array()?
            .iter()
            .filter_map(|a| a["action"].as_str().map(String::from))
            .collect();
        actions
            .contains(&"job_delete".to_string())
            .then_some(actions)
    })
    .await;
    for a in [
        "job_upsert",
        "schedule_upsert",
        "exec",
        "freeze_set",
        "freeze_clear",
        "script_revoke",
        "schedule_disable",
        "schedule_delete",
        "job_kill",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    let subjects = fleet.subjects();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn per_pc_fires_once_per_pc_and_freeze_holds_it() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), FAST);
    let client = nats.client().await;
    let fleet = Fleet::start(&nats, members(&[("PC-1", &[]), ("PC-2", &[])]), 0).await;
    for pc in ["PC-1", "PC-2"] {
        heartbeat(&client, pc).await;
    }
    register_job(&b).await;
    // Frozen: nothing fires.
    assert_eq!(
        send(&b, Method::PUT, "/api/freeze", TOKEN, json_body(json!({})))
            .await
            .0,
        200
    );
    create_schedule(
        &b,
        "id: hw\njob_id: inventory-hw\nwhen: {per_pc: {every: 6h}}\ntarget: {all: true}\n",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(fleet.subjects(), Vec::<String>::new());
    assert!(b.log_text().contains("change-freeze active"));
    // Thawed: once per PC, and not again inside the cooldown.
    assert_eq!(
        send(&b, Method::DELETE, "/api/freeze", TOKEN, None).await.0,
        204
    );
    eventually("both PCs fired", || async {
        (fleet.count("commands.pc.PC-1") == 1 && fleet.count("commands.pc.PC-2") == 1).then_some(())
    })
    .await;
    eventually("both PCs covered", || async {
        let (_, cov) = send(&b, Method::GET, "/api/schedules/hw/coverage", TOKEN, None).await;
        (cov["ok"] == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(fleet.subjects().len(), 2, "{:?}", fleet.subjects());
    let (_, execs) = b.get("/api/executions?job_id=inventory-hw").await;
    let execs = execs.as_array().unwrap();
    assert!(
        !execs.is_empty() && execs.iter().all(|e| e["initiated_by"] == "scheduler"),
        "{execs:?}"
    );
    // A new PC joins: only it is fired at.
    heartbeat(&client, "PC-3").await;
    eventually("the new PC fired", || async {
        (fleet.count("commands.pc.PC-3") == 1).then_some(())
    })
    .await;
    assert_eq!(fleet.subjects().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_backends_fire_each_tick_once_and_the_survivor_takes_over() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Backend::start(&nats.url, &dir.path().join("a"), FAST);
    let b = Backend::start(&nats.url, &dir.path().join("b"), FAST);
    // A third backend kept out of the election (as beside a reference
    // backend during a migration): it never fires, even without a leader.
    let bystander = Backend::start(
        &nats.url,
        &dir.path().join("c"),
        "[scheduler]\nenabled = false\n",
    );
    let fleet = Fleet::start(&nats, BTreeMap::new(), 0).await;
    register_job(&a).await;
    // No agent answers, so each backend that fired would fire again
    // after its marks expire; with one leader there is one command.
    create_schedule(
        &a,
        "id: once\njob_id: inventory-hw\nwhen: {per_target: once}\ntarget: {pcs: [PC-X]}\n",
    )
    .await;
    eventually("the target fired", || async {
        (fleet.count("commands.pc.PC-X") == 1).then_some(())
    })
    .await;
    // A calendar tick at the next minute fires once.
    let tick = (Utc::now() + chrono::Duration::seconds(65))
        .format("%H:%M")
        .to_string();
    create_schedule(&a, &format!("id: cal\njob_id: inventory-hw\nwhen: {{calendar: {{at: '{tick}'}}}}\ntz: utc\ntarget: {{groups: [night]}}\n")).await;
    eventually_long("the calendar tick", || {
        fleet.count("commands.group.night") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fleet.count("commands.pc.PC-X"), 1, "{:?}", fleet.subjects());
    assert_eq!(
        fleet.count("commands.group.night"),
        1,
        "{:?}",
        fleet.subjects()
    );
    let leaders = [a.log_text(), b.log_text()]
        .iter()
        .filter(|l| l.contains("now leads the scheduler"))
        .count();
    assert_eq!(leaders, 1);
    // Kill the leader; the other takes over once the lease expires.
    let a_led = a.log_text().contains("now leads the scheduler");
    let (survivor, _dead) = if a_led {
        a.kill9();
        (&b, ())
    } else {
        drop(b);
        (&a, ())
    };
    create_schedule(
        survivor,
        "id: after\njob_id: inventory-hw\nwhen: {per_target: once}\ntarget: {pcs: [PC-Y]}\n",
    )
    .await;
    eventually("the survivor fires", || async {
        (fleet.count("commands.pc.PC-Y") == 1).then_some(())
    })
    .await;
    assert!(survivor.log_text().contains("now leads the scheduler"));
    assert_eq!(fleet.count("commands.pc.PC-Y"), 1);
    let log = bystander.log_text();
    assert!(
        log.contains("scheduler disabled") && !log.contains("leads the scheduler"),
        "{log}"
    );
}

/// Like `eventually`, for waits up to 2.5 minutes (a calendar minute).
async fn eventually_long(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_rollout_wave_survives_a_restart() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, FAST);
    let fleet = Fleet::start(&nats, BTreeMap::new(), 0).await;
    register_job(&b).await;
    let plan = json!({"rollout": {"waves": [{"group": "canary", "delay": "0s"}, {"group": "rest", "delay": "6s"}]}});
    let (status, exec) = send(
        &b,
        Method::POST,
        "/api/exec/inventory-hw",
        TOKEN,
        json_body(plan),
    )
    .await;
    assert_eq!(status, 200, "{exec}");
    assert_eq!(
        exec["subjects"],
        json!(["commands.group.canary", "commands.group.rest"])
    );
    eventually("the first wave", || async {
        (fleet.count("commands.group.canary") == 1).then_some(())
    })
    .await;
    assert!(b.sigterm().success());
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(fleet.count("commands.group.rest"), 0);
    let b = Backend::start(&nats.url, &data, FAST);
    eventually("the second wave after the restart", || async {
        (fleet.count("commands.group.rest") == 1).then_some(())
    })
    .await;
    let exec_id = exec["exec_id"].as_str().unwrap();
    let seen = fleet.seen.lock().unwrap().clone();
    assert!(seen
        .iter()
        .all(|(_, c)| c.exec_id.as_deref() == Some(exec_id)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fleet.count("commands.group.rest"), 1, "published once");
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_calendar_tick_missed_while_down_fires_once_inside_its_deadline() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, FAST);
    let fleet = Fleet::start(&nats, BTreeMap::new(), 0).await;
    register_job(&b).await;
    let tick = (Utc::now() + chrono::Duration::seconds(65))
        .format("%H:%M")
        .to_string();
    create_schedule(&b, &format!("id: missed\njob_id: inventory-hw\nwhen: {{calendar: {{at: '{tick}'}}}}\ntz: utc\nstarting_deadline: 10m\ntarget: {{groups: [late]}}\n")).await;
    // The leader records the schedule's cursor, then goes down over the tick.
    eventually("cursor recorded", || async {
        let kv = async_nats::jetstream::new(nats.client().await)
            .get_key_value("kanade_scheduler")
            .await
            .ok()?;
        kv.get("tick.6.missed").await.ok()?.map(|_| ())
    })
    .await;
    assert!(b.sigterm().success());
    let due = chrono::NaiveTime::parse_from_str(&tick, "%H:%M").unwrap();
    // Down over the tick and some seconds beyond it.
    eventually_long("the tick passes", || {
        Utc::now().time() > due + chrono::Duration::seconds(10)
            || Utc::now().time() < due - chrono::Duration::minutes(5)
    })
    .await;
    assert_eq!(fleet.count("commands.group.late"), 0);
    let b = Backend::start(&nats.url, &data, FAST);
    eventually("the missed tick fires after start-up", || async {
        (fleet.count("commands.group.late") == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fleet.count("commands.group.late"), 1);
    assert!(b.log_text().contains("missed while down"));
    // Its deadline counts from the tick, not from the late fire.
    let fired = fleet.seen.lock().unwrap()[0].1.clone();
    let mut tick_at = Utc::now().date_naive().and_time(due).and_utc();
    if tick_at > Utc::now() {
        tick_at -= chrono::Duration::days(1);
    }
    assert_eq!(
        fired.deadline_at,
        Some(tick_at + chrono::Duration::minutes(10))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_whose_times_cannot_be_computed_never_stops_the_scheduler() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), FAST);
    let client = nats.client().await;
    let fleet = Fleet::start(&nats, members(&[("PC-1", &[]), ("PC-2", &[])]), 0).await;
    for pc in ["PC-1", "PC-2"] {
        heartbeat(&client, pc).await;
    }
    register_job(&b).await;
    let poison =
        "id: a-poison\njob_id: inventory-hw\nwhen: {per_pc: once}\nstarting_deadline: 1000000y\ntarget: {pcs: [PC-1]}\n";
    // The API refuses it, naming the field.
    let (status, body) = send(&b, Method::POST, "/api/schedules", TOKEN, yaml(poison)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("starting_deadline"),
        "{body}"
    );
    // Written behind the API's back (a hand edit, another backend), it is
    // skipped with a warning; every other schedule still fires.
    let schedule: kanade_shared::manifest::Schedule = serde_yaml::from_str(poison).unwrap();
    let kv = async_nats::jetstream::new(client.clone())
        .get_key_value("schedules")
        .await
        .unwrap();
    kv.put("a-poison", serde_json::to_vec(&schedule).unwrap().into())
        .await
        .unwrap();
    eventually("the poison is seen and skipped", || async {
        b.log_text().contains("starting_deadline").then_some(())
    })
    .await;
    create_schedule(
        &b,
        "id: z-good\njob_id: inventory-hw\nwhen: {per_pc: once}\ntarget: {pcs: [PC-2]}\n",
    )
    .await;
    eventually("the good schedule fires", || async {
        (fleet.count("commands.pc.PC-2") == 1).then_some(())
    })
    .await;
    assert_eq!(fleet.count("commands.pc.PC-1"), 0, "{:?}", fleet.subjects());
    assert!(!b.log_text().contains("panicked"), "{}", b.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_or_a_re_enable_never_fires_a_tick_of_the_past() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), FAST);
    let client = nats.client().await;
    let fleet = Fleet::start(&nats, members(&[("PC-1", &[])]), 0).await;
    heartbeat(&client, "PC-1").await;
    register_job(&b).await;
    // A minute boundary 20 to 80 s away: time to disable before it.
    let next = (Utc::now() + chrono::Duration::seconds(80))
        .format("%H:%M")
        .to_string();
    let far = (Utc::now() + chrono::Duration::hours(6))
        .format("%H:%M")
        .to_string();
    let calendar = |id: &str, at: &str, group: &str| {
        format!("id: {id}\njob_id: inventory-hw\nwhen: {{calendar: {{at: '{at}'}}}}\ntz: utc\nstarting_deadline: 10m\ntarget: {{groups: [{group}]}}\n")
    };
    // `paused` would tick at `next`; `edited` far from now.
    create_schedule(&b, &calendar("paused", &next, "p")).await;
    create_schedule(&b, &calendar("edited", &far, "e")).await;
    let kv = async_nats::jetstream::new(client.clone());
    for key in ["tick.6.paused", "tick.6.edited"] {
        eventually("cursor recorded", || async {
            let kv = kv.get_key_value("kanade_scheduler").await.ok()?;
            kv.get(key).await.ok()?.map(|_| ())
        })
        .await;
    }
    let (status, _) = send(
        &b,
        Method::POST,
        "/api/schedules/paused/disable",
        TOKEN,
        None,
    )
    .await;
    assert!((200..300).contains(&status), "{status}");
    eventually("the leader saw it disabled", || async {
        b.log_text()
            .contains("disabled: its ticks are skipped")
            .then_some(())
    })
    .await;
    // Both stand still over `next`.
    let due = chrono::NaiveTime::parse_from_str(&next, "%H:%M").unwrap();
    eventually_long("the tick passes", || {
        Utc::now().time() > due + chrono::Duration::seconds(3)
            || Utc::now().time() < due - chrono::Duration::minutes(5)
    })
    .await;
    // The edit names the tick that just passed: a past tick of the new
    // expression, not to be fired. Re-enabling skips the disabled period.
    create_schedule(&b, &calendar("edited", &next, "e")).await;
    let (status, _) = send(
        &b,
        Method::POST,
        "/api/schedules/paused/enable",
        TOKEN,
        None,
    )
    .await;
    assert!((200..300).contains(&status), "{status}");
    // The scheduler is alive and leading: a per_pc schedule made now fires.
    create_schedule(
        &b,
        "id: alive\njob_id: inventory-hw\nwhen: {per_pc: once}\ntarget: {pcs: [PC-1]}\n",
    )
    .await;
    eventually("the scheduler still fires", || async {
        (fleet.count("commands.pc.PC-1") == 1).then_some(())
    })
    .await;
    eventually("both seen", || async {
        let log = b.log_text();
        (log.contains("re-enabled: the ticks of the disabled period are skipped")
            && log.contains("when / tz changed"))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fleet.count("commands.group.p"), 0, "{:?}", fleet.subjects());
    assert_eq!(fleet.count("commands.group.e"), 0, "{:?}", fleet.subjects());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lease_is_fenced_and_marks_outlive_their_window() {
    let nats = Nats::start();
    let js = async_nats::jetstream::new(nats.client().await);
    // A dispatch bucket made with the reference's 1 h.
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: "scheduler_dispatch".into(),
        history: 1,
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), FAST);
    eventually("marks kept a week", || async {
        let mut stream = js.get_stream("KV_scheduler_dispatch").await.ok()?;
        let age = stream.info().await.ok()?.config.max_age;
        (age == Duration::from_secs(7 * 24 * 3600)).then_some(())
    })
    .await;
    eventually("leading", || async {
        b.log_text()
            .contains("this backend now leads the scheduler")
            .then_some(())
    })
    .await;
    // Another backend takes the lease over ours: we follow and say who leads.
    let kv = js.get_key_value("kanade_scheduler").await.unwrap();
    let intruder =
        json!({"holder": "intruder-1", "expires_at": Utc::now() + chrono::Duration::minutes(5)});
    kv.put("leader", intruder.to_string().into()).await.unwrap();
    eventually("following the intruder", || async {
        let log = b.log_text();
        (log.contains("no longer leads the scheduler")
            && log.contains("another backend leads the scheduler")
            && log.contains("intruder-1"))
        .then_some(())
    })
    .await;
    let fleet = Fleet::start(&nats, members(&[("PC-1", &[])]), 0).await;
    heartbeat(&nats.client().await, "PC-1").await;
    register_job(&b).await;
    create_schedule(
        &b,
        "id: follower\njob_id: inventory-hw\nwhen: {per_pc: once}\ntarget: {pcs: [PC-1]}\n",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        fleet.subjects(),
        Vec::<String>::new(),
        "a follower fires nothing"
    );
}
